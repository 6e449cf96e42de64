"""Orchestration: prepare -> plan -> calibrate -> rewrite -> verify. No file I/O, no printing.

:func:`quantize_model` is the library's entry point; the CLI and the benchmarks call it.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from qconv import equivalence
from qconv.calibrate.cache import CalibrationCache, model_key
from qconv.calibrate.collect import (
    DEFAULT_EXPOSED_MEMORY,
    ProgressCallback,
    collect_statistics,
    group_tensors,
    inferred_shapes,
    tensor_bytes,
)
from qconv.calibrate.histogram import TensorStats
from qconv.calibrate.params import (
    TensorRange,
    activation_params,
    align_to_offsets,
    costly_shifts,
    tensor_ranges,
)
from qconv.calibrated_refusals import refuse_after_calibration
from qconv.config import QuantFormat, QuantizeConfig
from qconv.data import DataReader
from qconv.decisions import DecisionLog, NodeDecision, Reason
from qconv.errors import ConfigError, ModelError, VerificationError
from qconv.islands import mark_small_islands
from qconv.model_io import (
    all_nodes,
    default_opset,
    serialized_bytes,
    stored_bytes,
)
from qconv.ort_layout import EIGHT_BIT_POOL_NOTE, UNFUSED_NOTE, runtime_findings
from qconv.passes import prepare
from qconv.passes._graph import Namer
from qconv.passes.compact import CompactPass
from qconv.passes.float_stem import KEPT_FLOAT
from qconv.passes.insert_qdq import InsertQDQPass, QuantizedConstant
from qconv.passes.pool_as_conv import PoolAsConvPass
from qconv.plan import OWN_SCALE, RUNS_AS, QuantizationPlan, make_plan
from qconv.runtime import SESSION_FILE_BYTES, create_session, temporary_model_file

log = logging.getLogger(__name__)

# onnxruntime sessions are built from the serialized model, and protobuf stops at 2 GiB.
PROTOBUF_LIMIT = 2**31 - 1


@dataclass
class QuantizationResult:
    """Everything a quantization run produced.

    Attributes:
        model: The verified int8 model.
        prepared: The float model after preparation (the reference for fidelity).
        decisions: One decision per node of the prepared graph.
        log: Rewrites made or refused, and notes.
        ranges: Calibrated range of every quantized activation tensor.
        constants: Weights, biases and constants stored in integer form.
        calibration_samples: Samples the statistics were gathered from.
        calibration_seconds: Wall time of the calibration pass.
        qdq_model: The model in QDQ form (equal to ``model`` unless QOperator was asked for),
            where every quantized tensor is visible as a DequantizeLinear output.
        dequantized: Float-model tensor name -> the QDQ model's tensor approximating it.
        statistics: The calibration statistics of every calibrated tensor.
        rescaled: QDQ-model DequantizeLinear output standing for a removed Mul/Div by a
            constant -> the factor between it and its QuantizeLinear's float input.
        offsets: QDQ-model DequantizeLinear output standing for a removed Add/Sub of a
            constant (and a Relu/Clip after it, now a Clip on integers) -> (factor, offset,
            low, high): it approximates
            ``clip(factor * float input of its QuantizeLinear + offset, low, high)``.
        folded_bounds: QDQ-model DequantizeLinear output -> the (low, high) clamp of the Relu
            or Clip folded into its range (the float computation needs it back), applied
            before any ``rescaled`` factor.
    """

    model: onnx.ModelProto
    prepared: onnx.ModelProto
    decisions: list[NodeDecision]
    log: DecisionLog
    ranges: dict[str, TensorRange]
    constants: list[QuantizedConstant] = field(default_factory=list)
    calibration_samples: int = 0
    calibration_seconds: float = 0.0
    calibration_passes: int = 1
    qdq_model: onnx.ModelProto | None = None
    dequantized: dict[str, str] = field(default_factory=dict)
    statistics: dict[str, TensorStats] = field(default_factory=dict)
    folded_bounds: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    rescaled: dict[str, float] = field(default_factory=dict)
    offsets: dict[str, tuple[float, float, float | None, float | None]] = field(
        default_factory=dict
    )

    @property
    def quantized_count(self) -> int:
        return sum(d.reason.quantized for d in self.decisions)


def quantize_model(
    float_model: onnx.ModelProto,
    calibration: DataReader,
    config: QuantizeConfig,
    *,
    threads: int | None = None,
    on_batch: ProgressCallback | None = None,
    cache: CalibrationCache | None = None,
    max_memory: int | None = None,
) -> QuantizationResult:
    """Quantize ``float_model`` with statistics gathered from ``calibration``.

    ``cache`` reuses (or stores) the calibration statistics; ``max_memory`` (bytes, default
    ``DEFAULT_EXPOSED_MEMORY``) splits calibration into several passes over the data when
    exposing every tensor at once would not fit.

    Raises:
        DataError: The calibration data does not fit the model.
        ModelError: The model is over 2 GiB.
        VerificationError: The produced model failed onnx.checker or onnxruntime loading.
    """
    absent_ops = check_exclusions(float_model, config.exclude)
    if (float_bytes := serialized_bytes(float_model)) >= PROTOBUF_LIMIT:
        raise ModelError(
            f"the model holds {float_bytes / 2**30:.1f} GiB, and qconv handles "
            "models up to 2 GiB (onnxruntime gets them serialized, which protobuf caps at 2 GiB)",
            "quantize a smaller export, for example one part of the model at a time",
        )
    first_feed = next(iter(calibration))
    model, prepared, decisions = _prepare_checked(float_model, config, first_feed, threads)
    if absent_ops:
        decisions.note(f"--exclude {', '.join(absent_ops)}: no such op in this model")
    plan = make_plan(model, config)
    observe = functools.partial(inferred_shapes, prepared, first_feed, batch=1)
    if config.runtime_tuning and mark_small_islands(plan, observe):
        plan = make_plan(model, config)
    for note in plan.notes:
        decisions.note(note)
    if not plan.quantized_nodes():
        decisions.note(
            _nothing_quantized(
                "no node can or should be int8 here (see the reasons per node)",
                "the prepared float model",
            )
        )
    started = time.perf_counter()
    stats, passes = _calibrate(
        prepared,
        plan.calibration_tensors,
        calibration,
        config,
        decisions,
        threads=threads,
        on_batch=on_batch,
        cache=cache,
        max_memory=max_memory,
    )
    seconds = time.perf_counter() - started
    plan, ranges = _settle_offsets(model, config, plan, stats)
    while refuse_after_calibration(plan, stats):
        plan, ranges = _settle_offsets(model, config, make_plan(model, config), stats)
    if config.runtime_tuning and (replanned := _tuned_plan(model, config, plan, stats, decisions)):
        plan, ranges = _settle_offsets(model, config, replanned, stats)
    rewrite = _rewrite(model, plan, ranges, config, decisions)
    qdq_model = ir.to_proto(model)
    if config.format is QuantFormat.QOPERATOR:
        from qconv.passes.to_qoperator import ToQOperatorPass

        ToQOperatorPass(decisions)(model)
    CompactPass()(model)
    quantized = ir.to_proto(model)
    keep_declared_interface(quantized, float_model)
    # Intermediate shape annotations from preparation would add a sizeable share to small
    # models; onnxruntime infers them again on load.
    del quantized.graph.value_info[:]
    verify_model(quantized)
    return QuantizationResult(
        model=quantized,
        prepared=prepared,
        decisions=plan.decisions,
        log=decisions,
        ranges=ranges,
        constants=rewrite.constants,
        calibration_samples=calibration.num_samples,
        calibration_seconds=seconds,
        calibration_passes=passes,
        qdq_model=qdq_model,
        dequantized=rewrite.dequantized,
        statistics=stats,
        folded_bounds=rewrite.folded_bounds,
        rescaled=rewrite.rescaled,
        offsets=rewrite.offsets,
    )


def _rewrite(
    model: ir.Model,
    plan: QuantizationPlan,
    ranges: dict[str, TensorRange],
    config: QuantizeConfig,
    decisions: DecisionLog,
) -> InsertQDQPass:
    """Apply ``plan`` to ``model`` in QDQ form (see :mod:`qconv.passes.insert_qdq`), with
    average pools onnxruntime would run slowly on integers as depthwise convolutions."""
    rewrite = InsertQDQPass(plan, activation_params(plan, ranges), config, decisions)
    rewrite(model)
    PoolAsConvPass()(model)
    return rewrite


def _prepare_checked(
    float_model: onnx.ModelProto,
    config: QuantizeConfig,
    feed: dict[str, np.ndarray],
    threads: int | None,
) -> tuple[ir.Model, onnx.ModelProto, DecisionLog]:
    """The prepared float model (and its protobuf), checked to compute the original's outputs
    on a calibration batch (see :mod:`qconv.equivalence`).

    When it does not, preparation is repeated with less: without the conversion to opset 13
    (weights are then per tensor), then also without the rewrites that ``--no-fuse`` skips;
    a note says what was dropped and why.

    Raises:
        VerificationError: Even the least preparation changes the outputs (a qconv bug).
    """
    expected = equivalence.reference(float_model, feed, threads)

    def attempt(
        attempt_config: QuantizeConfig, upgrade: bool
    ) -> tuple[ir.Model, onnx.ModelProto, DecisionLog, str]:
        decisions = DecisionLog()
        model = prepare(ir.from_proto(float_model), attempt_config, decisions, upgrade)
        proto = ir.to_proto(model)
        if expected is None:
            return model, proto, decisions, ""
        outputs = equivalence.run(proto, feed, threads)
        return model, proto, decisions, equivalence.mismatch(expected, outputs) or ""

    model, proto, decisions, problem = attempt(config, upgrade=True)
    if expected is None:
        decisions.note("preparation not checked: the model's outputs vary between runs")
    if not problem:
        return model, proto, decisions
    opset = default_opset(float_model)
    converted = model.opset_imports.get("", opset) != opset
    if converted:
        model, proto, decisions, still = attempt(config, upgrade=False)
        if not still:
            decisions.note(
                f"opset {opset} kept, weights per tensor: the conversion to opset 13 changed "
                f"the model's outputs on a calibration batch ({problem})"
            )
            return model, proto, decisions
    model, proto, decisions, still = attempt(replace(config, fuse=False), upgrade=False)
    if still:
        raise VerificationError(
            "the prepared float model computes other outputs than the original even without "
            f"the opset conversion and the rewrites ({still}): a qconv bug, please report it"
        )
    decisions.note(
        "prepared as with --no-fuse: the float-graph rewrites changed the model's outputs on a "
        f"calibration batch ({problem}); a qconv bug, please report it"
    )
    return model, proto, decisions


def keep_declared_interface(model: onnx.ModelProto, original: onnx.ModelProto) -> None:
    """Give ``model``'s graph inputs and outputs the declarations they have in ``original``.

    Shape inference during preparation rewrites them (a symbolic dimension ``N`` of an output
    comes back as ``unk__0``), and callers, or a model fed by this one, may rely on the names.
    """
    declared = {v.name: v for v in [*original.graph.input, *original.graph.output]}
    for value in [*model.graph.input, *model.graph.output]:
        # A declaration without a shape (the checker wants one) keeps the inferred shape.
        if value.name in declared and _has_shape(declared[value.name]):
            value.CopyFrom(declared[value.name])


def _has_shape(value: onnx.ValueInfoProto) -> bool:
    kind = value.type.WhichOneof("value")
    return kind != "tensor_type" or value.type.tensor_type.HasField("shape")


def keep_float_if_larger(result: QuantizationResult, float_model: onnx.ModelProto) -> bool:
    """Put the float model in ``result`` in place of an int8 one that is not smaller.

    A model whose weights are few next to its activations can come out larger: every
    quantized tensor adds a scale, a zero point and a Q/DQ pair. The CLI never writes such a
    model; library callers choose. Returns whether the float model was put in.
    """
    int8_bytes, float_bytes = serialized_bytes(result.model), serialized_bytes(float_model)
    if not result.quantized_count or int8_bytes < float_bytes:
        return False
    detail = (
        f"the int8 model would be {int8_bytes:,} bytes, not smaller than the float model's "
        f"{float_bytes:,}"
    )
    result.decisions = [
        NodeDecision(d.node, d.op_type, Reason.LARGER_THAN_FLOAT, detail)
        if d.reason.quantized
        else d
        for d in result.decisions
    ]
    result.log.note(_nothing_quantized(detail, "the float model unchanged"))
    result.model = result.qdq_model = float_model
    result.constants, result.dequantized = [], {}
    result.folded_bounds, result.rescaled, result.offsets = {}, {}, {}
    return True


def _nothing_quantized(why: str, output: str) -> str:
    return (
        f"NOTHING WAS QUANTIZED: {why}; the output is {output}. "
        "--strict turns this into exit code 3"
    )


def _settle_offsets(
    model: ir.Model, config: QuantizeConfig, plan: QuantizationPlan, stats: dict[str, TensorStats]
) -> tuple[QuantizationPlan, dict[str, TensorRange]]:
    """Re-plan as ordinary Adds the Add/Sub nodes whose zero-point move would cost resolution
    (their tensors were calibrated as fallbacks), then align the scales for the others."""
    unshifted: set[ir.Node] = set()
    ranges = tensor_ranges(plan.calibration_tensors, stats, config)
    while costly := costly_shifts(plan, ranges):
        unshifted |= costly
        plan = make_plan(model, config, frozenset(unshifted))
        ranges = tensor_ranges(plan.calibration_tensors, stats, config)
    return plan, align_to_offsets(plan, ranges)


def _tuned_plan(
    model: ir.Model,
    config: QuantizeConfig,
    plan: QuantizationPlan,
    stats: dict[str, TensorStats],
    decisions: DecisionLog,
) -> QuantizationPlan | None:
    """:func:`_follow_onnxruntime`, which only tunes speed: if it fails, the plan stands."""
    try:
        return _follow_onnxruntime(model, config, plan, stats)
    except Exception as exc:  # onnxruntime's own failures come in several types
        log.warning("runtime tuning skipped: %s", exc)
        decisions.note(f"runtime tuning skipped: onnxruntime could not be asked ({exc})")
        for node in model.graph.all_nodes():  # the plan stands as it was
            node.meta.pop(OWN_SCALE, None)
            node.meta.pop(RUNS_AS, None)
            if node.meta.get(KEPT_FLOAT) == UNFUSED_NOTE:
                del node.meta[KEPT_FLOAT]
        return None


def _follow_onnxruntime(
    model: ir.Model, config: QuantizeConfig, plan: QuantizationPlan, stats: dict[str, TensorStats]
) -> QuantizationPlan | None:
    """Re-plan where onnxruntime would make int8 slow; None when nothing changes.

    The Q/DQ model is built on a copy and shown to onnxruntime (see :mod:`qconv.ort_layout`).
    MaxPools it would run in its slow 8-bit loop get their own output scale (their outputs
    were calibrated as fallbacks); weighted ops it would not fuse stay float, unless that would
    need statistics the calibration did not gather.
    """
    if not plan.quantized_nodes():
        return None
    probe = model.clone()
    nodes = _name_probe_nodes(model, probe)
    probe_plan, ranges = _settle_offsets(probe, config, make_plan(probe, config), stats)
    _rewrite(probe, probe_plan, ranges, config, DecisionLog())
    findings = runtime_findings(ir.to_proto(probe))
    # A weighted op the plan refused (a weight that is not constant) may read a quantized
    # tensor and run in float too: it keeps its own reason.
    planned = {node.name for node in probe_plan.int8_nodes}
    findings = replace(findings, unfused=[n for n in findings.unfused if n in planned])
    for name, kernel in findings.integer_kernels.items():
        nodes[name].meta[RUNS_AS] = kernel
    if not findings:  # the plan stands; its decisions now say what onnxruntime fuses
        return make_plan(model, config) if findings.integer_kernels else None
    for name in findings.channels_first_pools:
        nodes[name].meta[OWN_SCALE] = EIGHT_BIT_POOL_NOTE
    for name in findings.unfused:
        nodes[name].meta[KEPT_FLOAT] = UNFUSED_NOTE
    replanned = make_plan(model, config)
    if set(replanned.calibration_tensors) - set(stats):
        for name in findings.unfused:
            del nodes[name].meta[KEPT_FLOAT]
        replanned = make_plan(model, config)
    return replanned


def _name_probe_nodes(model: ir.Model, probe: ir.Model) -> dict[str, ir.Node]:
    """Name every node of ``probe`` (a clone of ``model``) uniquely; map names to ``model``'s."""
    names = Namer(probe.graph)
    pairs = zip(model.graph.all_nodes(), probe.graph.all_nodes(), strict=True)
    mapping = {}
    for original, copy in pairs:
        copy.name = copy.name or names.fresh(f"qconv_probe_{copy.op_type}")
        mapping[copy.name] = original
    return mapping


def _calibrate(
    prepared: onnx.ModelProto,
    tensors: list[str],
    reader: DataReader,
    config: QuantizeConfig,
    decisions: DecisionLog,
    *,
    threads: int | None,
    on_batch: ProgressCallback | None,
    cache: CalibrationCache | None,
    max_memory: int | None,
) -> tuple[dict[str, TensorStats], int]:
    """Statistics of ``tensors``: from the cache, or from one pass per group of tensors."""
    key = model_key(prepared) if cache is not None else ""  # it serializes the whole model
    if cache is not None:
        cached = cache.load(key, tensors)
        if cached is not None:
            decisions.note(cache.status)
            return cached, 0
    budget = max_memory or DEFAULT_EXPOSED_MEMORY
    sizes = tensor_bytes(prepared, next(iter(reader))) if tensors else {}
    groups = group_tensors(tensors, sizes, budget)
    if len(groups) > 1:
        origin = "--max-memory" if max_memory else "the default budget of"
        decisions.note(
            f"calibrated in {len(groups)} passes over the data so that exposed tensors stay "
            f"under {origin} {budget / 2**20:.0f} MiB (sizes from the first batch)"
        )
    stats: dict[str, TensorStats] = {}
    for group in groups:
        stats.update(
            collect_statistics(
                prepared,
                group,
                reader,
                threads=threads,
                bins_per_side=config.histogram_bins // 2,
                on_batch=on_batch,
            )
        )
    if cache is not None:
        cache.save(key, stats)
        decisions.note(cache.status)
    return stats, len(groups)


def check_exclusions(model: onnx.ModelProto, exclude: tuple[str, ...]) -> list[str]:
    """Every --exclude entry must name a node or an op type of the model: typos are errors.

    An ONNX op type the model does not use is no typo (one config file may serve many models):
    those entries are returned, for a note.
    """
    nodes = list(all_nodes(model.graph))
    known = {n.name for n in nodes} | {n.op_type for n in nodes}
    absent = [entry for entry in exclude if entry not in known]
    unknown = [entry for entry in absent if not onnx.defs.has(entry)]
    if unknown:
        raise ConfigError(
            f"--exclude {', '.join(unknown)} matches no node name or op type in the model",
            "check the spelling, and that a report given to --exclude-from was made for this "
            "model; `qconv inspect MODEL` lists the op types",
        )
    return absent


def verify_model(model: onnx.ModelProto) -> None:
    """Check that a model qconv wrote is valid ONNX and loads in onnxruntime."""
    if stored_bytes(model) < SESSION_FILE_BYTES:
        _verify(model, model)
        return
    # A large model is checked as a file, written once: onnx.checker would serialize it and
    # parse it again, and onnxruntime maps a file's weights rather than copying them.
    with temporary_model_file(model) as path:
        if path is not None:
            _verify(str(path), path)
            return
    _verify(model, model)  # no room in the temporary folder: checked in memory instead


def _verify(checked: onnx.ModelProto | str, loaded: onnx.ModelProto | Path) -> None:
    try:
        onnx.checker.check_model(checked)
    except onnx.checker.ValidationError as exc:
        raise VerificationError(f"the quantized model fails onnx.checker: {exc}") from exc
    try:
        create_session(loaded)
    except Exception as exc:  # onnxruntime raises several types when a model does not load
        raise VerificationError(f"the quantized model does not load in onnxruntime: {exc}") from exc
