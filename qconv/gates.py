"""Quality gates for CI: thresholds a run must meet, checked against its report.

A failed gate does not stop the run: the model and reports are still written, the report says
which gate failed and by how much, and the CLI exits 3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from qconv.errors import ConfigError
from qconv.report.model import GateResult, Report


@dataclass(frozen=True)
class Gates:
    """Thresholds; None means the gate is off.

    Attributes:
        max_accuracy_drop: Largest allowed float-minus-int8 label accuracy (absolute, 0..1).
        min_agreement: Smallest allowed top-1 agreement (0..1).
        min_sqnr: Smallest allowed SQNR (dB) of any model output.
        min_speedup: Smallest allowed float/int8 latency ratio.
        strict: Fail when nothing at all could be quantized.
    """

    max_accuracy_drop: float | None = None
    min_agreement: float | None = None
    min_sqnr: float | None = None
    min_speedup: float | None = None
    strict: bool = False

    def __post_init__(self) -> None:
        for name in ("max_accuracy_drop", "min_agreement", "min_sqnr", "min_speedup"):
            value = getattr(self, name)
            if value is not None:  # -0 would be shown as "-0" in every report
                object.__setattr__(self, name, value + 0.0)

    def check_inputs(self, has_labels: bool, measures_latency: bool) -> None:
        """Refuse gates the run could not evaluate, or limits out of range, before any work."""
        self._check_limits()
        if self.max_accuracy_drop is not None and not has_labels:
            raise ConfigError(
                "--max-accuracy-drop needs labels",
                "pass --eval DATA --labels NAME (or an image folder with classes)",
            )
        if self.min_speedup is not None and not measures_latency:
            raise ConfigError("--min-speedup needs latency runs", "drop --latency-runs 0")

    def _check_limits(self) -> None:
        ranges = {
            "--max-accuracy-drop": (self.max_accuracy_drop, -1.0, 1.0, "an accuracy drop -1..1"),
            "--min-agreement": (self.min_agreement, 0.0, 1.0, "a share 0..1"),
            "--min-sqnr": (self.min_sqnr, -math.inf, math.inf, "a number of dB"),
            "--min-speedup": (self.min_speedup, 1e-6, math.inf, "a ratio above 0"),
        }
        for flag, (value, low, high, expected) in ranges.items():
            if value is not None and not (math.isfinite(value) and low <= value <= high):
                raise ConfigError(f"{flag} {value} is out of range", f"give {expected}")


def evaluate_gates(gates: Gates, report: Report) -> list[GateResult]:
    """The verdict of every gate that is on."""
    results = []
    ev, lat = report.evaluation, report.latency
    if gates.max_accuracy_drop is not None:
        drop = (
            None
            if ev is None or ev.float_accuracy is None
            else (ev.float_accuracy - ev.int8_accuracy)
        )
        results.append(_upper("max-accuracy-drop", gates.max_accuracy_drop, drop))
    if gates.min_agreement is not None:
        agreement = ev.top1_agreement if ev else None
        results.append(_lower("min-agreement", gates.min_agreement, agreement))
    if gates.min_sqnr is not None:
        results.append(_min_sqnr(gates.min_sqnr, report))
    if gates.min_speedup is not None:
        results.append(_lower("min-speedup", gates.min_speedup, lat.speedup if lat else None))
    if gates.strict:
        results.append(_lower("strict", 1, report.quantized_nodes))
    return results


def _min_sqnr(limit: float, report: Report) -> GateResult:
    """The worst float output's SQNR (integer and boolean outputs have none), named."""
    worst = report.evaluation.worst_float_output() if report.evaluation else None
    if worst is None:
        return GateResult("min-sqnr", limit, None, False, "not measured (no float output)")
    result = _lower("min-sqnr", limit, worst.sqnr_db)
    result.detail += f" (output {worst.name!r})"
    return result


# Accuracies are means of float comparisons: 99/100 right minus 100/100 is 0.01 plus 9e-18.
TOLERANCE = 1e-9


def _upper(name: str, limit: float, value: float | None) -> GateResult:
    if value is None:
        return GateResult(name, limit, None, False, "not measured")
    passed = value <= limit + TOLERANCE
    detail = "ok" if passed else f"exceeded by {value - limit:.4g}"
    return GateResult(name, limit, value, passed, detail)


def _lower(name: str, limit: float, value: float | None) -> GateResult:
    if value is None:
        return GateResult(name, limit, None, False, "not measured (not a classifier?)")
    passed = value >= limit - TOLERANCE
    detail = "ok" if passed else f"short by {limit - value:.4g}"
    return GateResult(name, limit, value, passed, detail)
