"""A whole ``qconv quantize`` run with its files: the use case the CLI and scripts call.

Order matters for the "nothing is lost" guarantee: every input is validated before any work,
the model is verified before it is written, and every file is written atomically.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from qconv.calibrate.cache import CalibrationCache, data_key
from qconv.config import DataConfig, QuantizeConfig
from qconv.data import DataReader, input_specs, is_synthetic, open_reader
from qconv.environment import cpu_description, file_sha256
from qconv.evaluate import (
    evaluate,
    first_sample,
    measure_latency,
    profile_ops,
    tensor_fidelity,
)
from qconv.gates import Gates, evaluate_gates
from qconv.model_io import (
    StagedOutputs,
    check_paths,
    load_proto,
    load_proto_and_files,
    serialized_bytes,
    without_weight_data,
)
from qconv.quantize import keep_float_if_larger, quantize_model
from qconv.report import check_report_paths, render_file
from qconv.report.build import build_report
from qconv.report.model import (
    EnvironmentSummary,
    Report,
    SensitivityEntry,
    SensitivitySummary,
)

log = logging.getLogger(__name__)

NO_LAYERS_TO_ANALYZE = (
    "sensitivity analysis: no quantized layer of the main graph to rank (layers inside "
    "If/Loop/Scan bodies are not analysed; see the README's known limits)"
)
# Without --eval, fidelity is measured on this many calibration samples.
FALLBACK_EVAL_SAMPLES = 64


class Progress(Protocol):
    """Receives progress of long steps; the console shows bars, scripts may ignore it."""

    def step(self, description: str, total: int) -> Callable[[int, int], None]: ...


class SilentProgress:
    def step(self, description: str, total: int) -> Callable[[int, int], None]:
        return lambda done, total: None


@dataclass(frozen=True)
class QuantizeJob:
    """Inputs, outputs and options of one run.

    Attributes:
        model: The float model file.
        output: Where the int8 model goes (None: analyze only, write no model).
        data: Calibration/evaluation data.
        config: How to quantize.
        threads: Threads for latency runs (and every other session when set).
        reports: Report files to write (.json, .md).
        latency_runs: Timed runs per model; 0 skips latency measurement.
        calib_cache: File to reuse calibration statistics from (and store them in).
        max_memory: Byte budget for tensors exposed during calibration.
        gates: CI thresholds; failures are recorded in the report (the CLI exits 3).
        analyze: Run the per-layer sensitivity analysis and add it to the report.
    """

    model: Path
    output: Path | None
    data: DataConfig
    config: QuantizeConfig
    threads: int | None = None
    reports: tuple[Path, ...] = ()
    latency_runs: int = 50
    calib_cache: Path | None = None
    max_memory: int | None = None
    gates: Gates = field(default_factory=Gates)
    analyze: bool = False


def run_quantize(job: QuantizeJob, progress: Progress | None = None) -> Report:
    """Quantize ``job.model``, write the model and reports, and return the report."""
    progress = progress or SilentProgress()
    check_report_paths(list(job.reports))
    job.gates.check_inputs(has_labels=True, measures_latency=job.latency_runs > 0)
    with StagedOutputs() as staged:
        report = _quantize_and_report(job, staged, progress)
        staged.commit()
    return report


def _quantize_and_report(job: QuantizeJob, staged: StagedOutputs, progress: Progress) -> Report:
    # Loaded here so that this frame holds the only reference: it drops the weights midway.
    float_model, external_files = load_proto_and_files(job.model)
    check_paths(_inputs(job, external_files), _outputs(job))
    specs = input_specs(float_model)
    calibration = _reader(job.data.calib, job, specs, samples=job.data.samples)
    evaluation_reader = _evaluation_reader(job, specs)
    job.gates.check_inputs(
        has_labels=evaluation_reader.labels() is not None, measures_latency=job.latency_runs > 0
    )
    result = quantize_model(
        float_model,
        calibration,
        job.config,
        threads=job.threads,
        on_batch=progress.step("calibrating", calibration.num_batches),
        cache=_cache(job),
        max_memory=job.max_memory,
    )
    float_bytes = None
    if not keep_float_if_larger(result, float_model):
        # From here on only the report reads the float model's graph (its sessions read
        # job.model): a copy without the weights frees them for fidelity and evaluation.
        float_bytes = serialized_bytes(float_model)
        float_model = without_weight_data(float_model)
        # The onnx-ir graph quantize_model worked on (a reference cycle) still points at the
        # float weights until the cycle collector runs, which may be never before the end.
        gc.collect()
    if unlabelled := getattr(evaluation_reader, "unlabelled", None):
        result.log.note(unlabelled)
    if is_synthetic(calibration):
        result.log.note(
            f"RANGES COME FROM RANDOM DATA ({job.data.calib}): fine for latency, meaningless "
            "for accuracy; calibrate with real inputs before shipping this model"
        )
    if job.output is not None:
        staged.add_model(result.model, job.output)
    fidelity = tensor_fidelity(
        result.prepared,
        result.qdq_model,
        result.dequantized,
        evaluation_reader,
        threads=job.threads,
        max_memory=job.max_memory,
    )
    if not job.analyze:  # nothing reads them any more: free two copies of the weights
        result.prepared = result.qdq_model = None
    # The float model's sessions read its file (job.model is what float_model was loaded
    # from): onnxruntime maps external weights instead of copying the serialized model.
    evaluation = evaluate(
        job.model,
        result.model,
        evaluation_reader,
        threads=job.threads,
        on_batch=progress.step("evaluating", evaluation_reader.num_batches),
    )
    latency, profiles, feed = None, None, None
    if job.latency_runs:
        models = {"float": job.model, "int8": result.model}
        feed = first_sample(evaluation_reader, specs)
        latency = measure_latency(
            models,
            feed,
            threads=job.threads or 1,
            runs=job.latency_runs,
            on_run=progress.step("timing", job.latency_runs),
        )
        profiles = {
            key: profile_ops(model, feed, threads=job.threads or 1) for key, model in models.items()
        }
    report = build_report(
        float_model=float_model,
        result=result,
        input_path=str(job.model),
        output_path=str(job.output) if job.output else None,
        options=_options(job),
        calibration_data=str(job.data.calib),
        evaluation=evaluation,
        evaluation_data=str(job.data.eval or f"{job.data.calib} (calibration slice)"),
        tensor_fidelity=fidelity,
        latency=latency,
        profiles=profiles,
        latency_feed=feed,
        threads=job.threads or 1,
        synthetic_data=is_synthetic(calibration),
        float_bytes=float_bytes,
    )
    if job.analyze:
        report.sensitivity = _sensitivity(result, evaluation_reader, job, progress)
        if not report.sensitivity.layers:
            report.sensitivity = None
            report.notes.append(NO_LAYERS_TO_ANALYZE)
    report.gates = evaluate_gates(job.gates, report)
    report.environment = _environment(job)
    for path in job.reports:
        staged.add_text(path, render_file(report, path))
    return report


def _inputs(job: QuantizeJob, external_files: list[Path]) -> list[Path]:
    return [job.model, *external_files, *_data_paths(job.data.calib, job.data.eval)]


def _data_paths(*locations: Path | str | None) -> list[Path]:
    """The data locations that are files or folders (not ``random`` or absent)."""
    return [location for location in locations if isinstance(location, Path)]


def _outputs(job: QuantizeJob) -> list[tuple[str, Path]]:
    outputs = [("-o", job.output)] if job.output is not None else []
    outputs += [("--report", path) for path in job.reports]
    if job.calib_cache is not None:
        outputs.append(("--calib-cache", job.calib_cache))
    return outputs


def _sensitivity(result, reader: DataReader, job: QuantizeJob, progress) -> SensitivitySummary:
    from qconv.analyze import analyze

    analysis = analyze(
        result.prepared,
        result,
        reader,
        threads=job.threads,
        on_step=progress.step("analyzing", result.quantized_count),
    )
    return SensitivitySummary(
        full_sqnr_db=analysis.full_sqnr_db,
        samples=analysis.samples,
        seconds=analysis.seconds,
        layers=[
            SensitivityEntry(s.node, s.op_type, s.alone_sqnr_db, s.without_sqnr_db, s.gain_db)
            for s in analysis.layers
        ],
    )


def _environment(job: QuantizeJob) -> EnvironmentSummary:
    import platform

    cpu, instructions = cpu_description()
    return EnvironmentSummary(
        cpu=cpu,
        int8_instructions=instructions,
        threads=job.threads or 1,
        python=platform.python_version(),
        model_sha256=file_sha256(job.model),
        calibration_sha256=data_key(job.data.calib, _data_options(job)),
    )


def _data_options(job: QuantizeJob) -> dict[str, object]:
    return {
        "samples": job.data.samples,
        "batch_size": job.data.batch_size,
        "preprocess": job.data.preprocess,
        "shapes": job.data.shapes,
        "bins": job.config.histogram_bins,
    }


def _cache(job: QuantizeJob) -> CalibrationCache | None:
    if job.calib_cache is None:
        return None
    return CalibrationCache(job.calib_cache, data_key(job.data.calib, _data_options(job)))


def _reader(path, job: QuantizeJob, specs, samples=None, labels=None) -> DataReader:
    return open_reader(
        path,
        specs,
        batch_size=job.data.batch_size,
        samples=samples,
        labels=labels,
        preprocess=job.data.preprocess,
        shapes=dict(job.data.shapes),
    )


def _evaluation_reader(job: QuantizeJob, specs) -> DataReader:
    if job.data.eval is not None:
        return _reader(job.data.eval, job, specs, labels=job.data.labels)
    return _reader(job.data.calib, job, specs, samples=FALLBACK_EVAL_SAMPLES)


def _options(job: QuantizeJob) -> dict[str, object]:
    config = job.config
    options = {f.name: _plain(getattr(config, f.name)) for f in dataclasses.fields(config)}
    options.update(batch_size=job.data.batch_size, samples=job.data.samples, threads=job.threads)
    if job.data.shapes:
        options["shapes"] = [f"{name}={','.join(map(str, dims))}" for name, dims in job.data.shapes]
    return options


def _plain(value: object) -> object:
    if hasattr(value, "value"):
        return value.value
    if hasattr(value, "describe"):
        return value.describe()
    if isinstance(value, tuple):
        return list(value)
    return value


def inspect_model(path: Path) -> dict[str, object]:
    """Facts about a model for ``qconv inspect``: interface, opsets, ops, what can be quantized."""
    import onnx_ir as ir

    from qconv.config import QuantizeConfig as _Config
    from qconv.decisions import DecisionLog
    from qconv.islands import mark_small_islands
    from qconv.passes import prepare
    from qconv.plan import make_plan
    from qconv.report.build import op_histogram

    model = load_proto(path)
    prepared = prepare(ir.from_proto(model), _Config(), DecisionLog())
    plan = make_plan(prepared, _Config())
    if mark_small_islands(plan):  # as quantize does before calibration
        plan = make_plan(prepared, _Config())
    reasons: dict[str, int] = {}
    for decision in plan.decisions:
        reasons[decision.reason.value] = reasons.get(decision.reason.value, 0) + 1
    return {
        "path": str(path),
        "bytes": serialized_bytes(model),
        "ir_version": model.ir_version,
        "opsets": {o.domain or "ai.onnx": o.version for o in model.opset_import},
        "inputs": [s.describe() for s in input_specs(model)],
        "outputs": [o.name for o in model.graph.output],
        "ops": op_histogram(model),
        "quantizable_nodes": len(plan.quantized_nodes()),
        "nodes_after_preparation": len(plan.decisions),
        "reasons": reasons,
    }


__all__ = ["QuantizeJob", "inspect_model", "run_quantize"]


@dataclass(frozen=True)
class CompareJob:
    """Evaluate any float/int8 pair, including int8 models made by other tools.

    Attributes:
        float_model: The reference float model.
        int8_model: The quantized model to judge.
        data: Evaluation data (``data.eval``) and how to read it.
        threads: onnxruntime threads.
        reports: Report files to write.
        latency_runs: Timed runs per model; 0 skips timing.
        gates: CI thresholds.
    """

    float_model: Path
    int8_model: Path
    data: DataConfig
    threads: int | None = None
    reports: tuple[Path, ...] = ()
    latency_runs: int = 50
    gates: Gates = field(default_factory=Gates)


def run_compare(job: CompareJob, progress: Progress | None = None) -> Report:
    """Fidelity, accuracy and latency of ``job.int8_model`` against ``job.float_model``."""
    from qconv.report.build import compare_report

    progress = progress or SilentProgress()
    check_report_paths(list(job.reports))
    check_paths(
        [job.float_model, job.int8_model, *_data_paths(job.data.eval)],
        [("--report", path) for path in job.reports],
    )
    float_model, int8_model = load_proto(job.float_model), load_proto(job.int8_model)
    specs = input_specs(float_model)
    _check_same_interface(specs, input_specs(int8_model), job)
    _check_same_outputs(float_model, int8_model, job)
    reader = open_reader(
        job.data.eval,
        specs,
        batch_size=job.data.batch_size,
        samples=job.data.samples,
        labels=job.data.labels,
        preprocess=job.data.preprocess,
        shapes=dict(job.data.shapes),
    )
    job.gates.check_inputs(reader.labels() is not None, job.latency_runs > 0)
    # Sessions from the paths: an op onnxruntime cannot run is named with its model's file.
    evaluation = evaluate(
        job.float_model,
        job.int8_model,
        reader,
        threads=job.threads,
        on_batch=progress.step("evaluating", reader.num_batches),
    )
    latency, feed = None, None
    if job.latency_runs:
        feed = first_sample(reader, specs)
        latency = measure_latency(
            {"float": job.float_model, "int8": job.int8_model},
            feed,
            threads=job.threads or 1,
            runs=job.latency_runs,
            on_run=progress.step("timing", job.latency_runs),
        )
    report = compare_report(
        float_model=float_model,
        int8_model=int8_model,
        float_path=str(job.float_model),
        int8_path=str(job.int8_model),
        evaluation=evaluation,
        evaluation_data=str(job.data.eval),
        latency=latency,
        latency_feed=feed,
        threads=job.threads or 1,
    )
    report.gates = evaluate_gates(job.gates, report)
    with StagedOutputs() as staged:
        for path in job.reports:
            staged.add_text(path, render_file(report, path))
        staged.commit()
    return report


def _check_same_interface(float_specs, int8_specs, job: CompareJob) -> None:
    if float_specs != int8_specs:
        from qconv.errors import ModelError

        raise ModelError(
            f"{job.int8_model} has inputs {[s.describe() for s in int8_specs]} but "
            f"{job.float_model} has {[s.describe() for s in float_specs]}",
            "compare two versions of the same model",
        )


def _check_same_outputs(float_model, int8_model, job: CompareJob) -> None:
    float_outputs = [o.name for o in float_model.graph.output]
    int8_outputs = [o.name for o in int8_model.graph.output]
    if float_outputs != int8_outputs:
        from qconv.errors import ModelError

        raise ModelError(
            f"{job.int8_model} has outputs {int8_outputs} but {job.float_model} has "
            f"{float_outputs}",
            "compare two versions of the same model",
        )
