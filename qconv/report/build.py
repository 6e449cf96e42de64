"""Assemble a :class:`Report` from a quantization result and the measurements taken after it."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime

import qconv
from qconv.calibrate.histogram import TensorStats
from qconv.data import Feed
from qconv.evaluate import Evaluation, Latency, OutputFidelity
from qconv.model_io import all_nodes, default_opset, serialized_bytes
from qconv.quantize import QuantizationResult
from qconv.report.model import (
    CalibrationSummary,
    EvaluationSummary,
    HistogramData,
    LatencySummary,
    ModelSummary,
    NodeEntry,
    OutputEntry,
    Report,
    RewriteEntry,
    TensorEntry,
)


def op_histogram(model: onnx.ModelProto) -> dict[str, int]:
    """Nodes per op type, subgraphs included (``com.microsoft.QGemm`` for other domains)."""
    counts = Counter(
        (f"{n.domain}." if n.domain not in ("", "ai.onnx") else "") + n.op_type
        for n in all_nodes(model.graph)
    )
    return dict(sorted(counts.items()))


# Below this cosine between float and int8 outputs the model has lost its function (PP-OCRv4's
# recogniser with per-tensor weights: 0.55, every line decoded empty; per-channel: 0.95).
LOW_COSINE = 0.8
# Integer or boolean outputs (class indices, masks): the share of elements that must match.
LOW_MATCH = 0.9


def build_report(
    *,
    float_model: onnx.ModelProto,
    result: QuantizationResult,
    input_path: str,
    output_path: str | None,
    options: dict[str, object],
    calibration_data: str,
    evaluation: Evaluation | None = None,
    evaluation_data: str = "",
    tensor_fidelity: dict[str, OutputFidelity] | None = None,
    latency: dict[str, Latency] | None = None,
    profiles: dict[str, dict[str, float]] | None = None,
    latency_feed: Feed | None = None,
    threads: int = 1,
    synthetic_data: bool = False,
    float_bytes: int | None = None,
) -> Report:
    """Everything the run decided and measured, as one data object.

    ``float_bytes``: the float model's size, when ``float_model`` no longer holds its weights.
    """
    latency_summary = _latency(latency, threads, latency_feed, profiles) if latency else None
    return Report(
        qconv_version=qconv.__version__,
        onnx_version=onnx.__version__,
        onnxruntime_version=onnxruntime.__version__,
        options=options,
        model=_model_summary(float_model, result.model, input_path, output_path, float_bytes),
        calibration=CalibrationSummary(
            method=options.get("calibration", ""),
            samples=result.calibration_samples,
            seconds=result.calibration_seconds,
            data=calibration_data,
            tensors=len(result.ranges),
            passes=result.calibration_passes,
            synthetic=synthetic_data,
        ),
        nodes=[
            NodeEntry(d.node, d.op_type, d.reason.quantized, d.reason.value, d.detail)
            for d in result.decisions
        ],
        rewrites=[
            RewriteEntry(r.pass_name, list(r.nodes), r.applied, r.detail)
            for r in result.log.rewrites
        ],
        tensors=_tensors(result, tensor_fidelity or {}),
        evaluation=_evaluation(evaluation, evaluation_data) if evaluation else None,
        latency=latency_summary,
        notes=[*result.log.notes, *_fidelity_notes(evaluation), *_speed_notes(latency_summary)],
        verified=True,
    )


def _model_summary(
    float_model: onnx.ModelProto,
    int8_model: onnx.ModelProto,
    input_path: str,
    output_path: str | None,
    float_bytes: int | None = None,
) -> ModelSummary:
    return ModelSummary(
        input_path=input_path,
        output_path=output_path,
        float_bytes=serialized_bytes(float_model) if float_bytes is None else float_bytes,
        int8_bytes=serialized_bytes(int8_model),
        opset=default_opset(float_model) or 0,
        float_ops=op_histogram(float_model),
        int8_ops=op_histogram(int8_model),
    )


CHART_BINS = 96
HISTOGRAMS_KEPT = 5


def _tensors(result: QuantizationResult, fidelity: dict[str, OutputFidelity]) -> list[TensorEntry]:
    entries = _tensor_entries(result, fidelity)
    measured = sorted((e for e in entries if e.sqnr_db is not None), key=lambda e: e.sqnr_db)
    for entry in measured[:HISTOGRAMS_KEPT]:
        stats = result.statistics.get(entry.tensor)
        if stats is not None and not stats.empty:
            entry.histogram = chart_histogram(stats)
    return entries


def chart_histogram(stats: TensorStats, bins: int = CHART_BINS) -> HistogramData:
    """The used part of a histogram, regrouped into about ``bins`` bars."""
    edges = stats.bin_edges()
    used = np.flatnonzero(stats.counts)
    first, last = int(used[0]), int(used[-1]) + 1
    group = max(1, -(-(last - first) // bins))
    counts = stats.counts[first:last]
    padded = np.append(counts, np.zeros((-len(counts)) % group, dtype=counts.dtype))
    grouped = padded.reshape(-1, group).sum(axis=1)
    # the last group may run past the histogram's end: its edge is computed, not looked up
    grouped_edges = edges[first] + np.arange(len(grouped) + 1) * group * stats.bin_width
    return HistogramData([float(e) for e in grouped_edges], [int(c) for c in grouped])


def _tensor_entries(
    result: QuantizationResult, fidelity: dict[str, OutputFidelity]
) -> list[TensorEntry]:
    entries = []
    for name, tensor_range in result.ranges.items():
        measured = fidelity.get(name)
        entries.append(
            TensorEntry(
                tensor=name,
                observed=tensor_range.observed,
                chosen=tensor_range.chosen,
                scale=float(tensor_range.params.scale),
                zero_point=int(tensor_range.params.zero_point),
                method=tensor_range.method,
                sqnr_db=measured.sqnr_db if measured else None,
            )
        )
    return entries


def _fidelity_notes(evaluation: Evaluation | None) -> list[str]:
    """A warning per output the int8 model no longer tracks: cosine below LOW_COSINE, or for
    an integer or boolean output, fewer than LOW_MATCH of its elements equal to float's."""
    if evaluation is None:
        return []
    notes = []
    for o in evaluation.outputs:
        if o.exact_match is not None and o.exact_match < LOW_MATCH:
            measured = f"equals float in {o.exact_match:.1%} of its elements"
        elif o.cosine is not None and o.cosine < LOW_COSINE:
            measured = f"has cosine {o.cosine:.3f} (SQNR {o.sqnr_db:.1f} dB) against float"
        else:
            continue
        notes.append(
            f"LOW FIDELITY: output {o.name!r} {measured}; the int8 model is probably unusable. "
            "Per-channel weights (if --per-tensor was given), --calibration auto, or --analyze "
            "then --exclude-from usually help"
        )
    return notes


def _evaluation(evaluation: Evaluation, data: str) -> EvaluationSummary:
    return EvaluationSummary(
        data=data,
        samples=evaluation.samples,
        outputs=[
            OutputEntry(o.name, o.cosine, o.sqnr_db, o.max_abs_error, o.exact_match)
            for o in evaluation.outputs
        ],
        top1_agreement=evaluation.top1_agreement,
        float_accuracy=evaluation.float_accuracy,
        int8_accuracy=evaluation.int8_accuracy,
    )


def _latency(
    latency: dict[str, Latency],
    threads: int,
    feed: Feed | None,
    profiles: dict[str, dict[str, float]] | None = None,
) -> LatencySummary:
    f, q = latency["float"], latency["int8"]
    profiles = profiles or {}
    return LatencySummary(
        threads,
        f.runs,
        f.median_ms,
        f.p90_ms,
        q.median_ms,
        q.p90_ms,
        float_ops_ms=profiles.get("float", {}),
        int8_ops_ms=profiles.get("int8", {}),
        inputs={name: list(getattr(array, "shape", ())) for name, array in (feed or {}).items()},
    )


# Medians of interleaved runs still move by a percent or two between runs on a busy machine;
# below this margin a slower int8 median is not reported as slower.
SLOWER_MARGIN = 1.02


def _speed_notes(latency: LatencySummary | None) -> list[str]:
    """A warning when the int8 model measured slower than the float one."""
    if latency is None or latency.int8_median_ms <= latency.float_median_ms * SLOWER_MARGIN:
        return []
    costly = sorted(latency.int8_ops_ms.items(), key=lambda item: -item[1])[:3]
    where = ", ".join(f"{op} {ms:.3g} ms" for op, ms in costly)
    return [
        f"SLOWER THAN FLOAT: int8 {latency.int8_median_ms:.3g} ms against float "
        f"{latency.float_median_ms:.3g} ms at {latency.threads} thread(s) on this machine"
        + (
            f"; most int8 time goes to {where} (onnxruntime's profiler, which adds its own "
            "time to every op)"
            if where
            else ""
        )
        + ". --min-speedup 1 turns this into exit code 3"
    ]


def compare_report(
    *,
    float_model: onnx.ModelProto,
    int8_model: onnx.ModelProto,
    float_path: str,
    int8_path: str,
    evaluation: Evaluation,
    evaluation_data: str,
    latency: dict[str, Latency] | None,
    threads: int,
    latency_feed: Feed | None = None,
) -> Report:
    """A report for ``qconv compare``: no calibration or node decisions, just measurements."""
    latency_summary = _latency(latency, threads, latency_feed) if latency else None
    return Report(
        qconv_version=qconv.__version__,
        onnx_version=onnx.__version__,
        onnxruntime_version=onnxruntime.__version__,
        options={"command": "compare"},
        model=_model_summary(float_model, int8_model, float_path, int8_path),
        calibration=None,
        evaluation=_evaluation(evaluation, evaluation_data),
        latency=latency_summary,
        notes=[*_fidelity_notes(evaluation), *_speed_notes(latency_summary)],
        verified=True,
    )
