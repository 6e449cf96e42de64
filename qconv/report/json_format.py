"""JSON rendering of the report (stable keys; non-finite floats become null)."""

from __future__ import annotations

import dataclasses
import json
import math

from qconv.report.model import Report


def to_dict(report: Report) -> dict:
    """The report as plain JSON-compatible data, with derived figures included."""
    data = _clean(dataclasses.asdict(report))
    data["model"]["size_ratio"] = report.model.size_ratio
    data["summary"] = {
        "quantized_nodes": report.quantized_nodes,
        "total_nodes": len(report.nodes),
        "reasons": report.reasons(),
        "speedup": report.latency.speedup if report.latency else None,
        "worst_tensors": [t.tensor for t in report.worst_tensors()],
    }
    return data


def to_json(report: Report) -> str:
    return json.dumps(to_dict(report), indent=2, sort_keys=False) + "\n"


def _clean(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value
