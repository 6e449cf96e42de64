"""Activation quantization parameters from calibration statistics."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from qconv.calibrate.histogram import TensorStats
from qconv.calibrate.ranges import choose_range
from qconv.config import QuantizeConfig
from qconv.plan import QuantizationPlan
from qconv.qparams import QuantParams, compute_qparams


@dataclass(frozen=True)
class TensorRange:
    """The range chosen for one calibrated tensor and the parameters it gives.

    Attributes:
        tensor: The calibrated float-model tensor.
        method: The range method that produced the range (``auto`` names its pick).
        observed: The observed (min, max).
        chosen: The clipping range.
        params: The resulting scale and zero point.
    """

    tensor: str
    method: str
    observed: tuple[float, float]
    chosen: tuple[float, float]
    params: QuantParams


def tensor_ranges(
    names: list[str], stats: dict[str, TensorStats], config: QuantizeConfig
) -> dict[str, TensorRange]:
    """The range and parameters of every calibrated tensor, by ``config.calibration``."""
    ranges = {}
    for name in names:
        tensor_stats = stats.get(name) or TensorStats(config.histogram_bins)
        (lo, hi), method = choose_range(
            tensor_stats,
            config.calibration,
            qtype=config.activation_type,
            symmetric=config.symmetric_activations,
            percentile_value=config.percentile,
        )
        params = compute_qparams(lo, hi, config.activation_type, config.symmetric_activations)
        observed = (
            (tensor_stats.minimum, tensor_stats.maximum) if not tensor_stats.empty else (0, 0)
        )
        ranges[name] = TensorRange(name, method, observed, (lo, hi), params)
    return ranges


# Moving a zero point may grow the scale of the tensor it reads by at most this factor; beyond
# it an ordinary integer Add loses less. Measured on the PP-OCRv4 recogniser (37 Add-of-a-scalar
# after its convolutions): exact lines 0.96 at 1.02 (as float), 0.955 at 1.05, 0.945 at 1.25.
# Shrinking scales instead, when that changes them less, clips: 0.935 at 1.02.
MAX_SCALE_GROWTH = 1.02


def costly_shifts(plan: QuantizationPlan, ranges: dict[str, TensorRange]) -> set[ir.Node]:
    """The Add/Sub nodes of ``plan.shifted`` whose constant would cost their input resolution:
    aligning its scale to the constant (see :func:`align_to_offsets`) would grow it by more
    than ``MAX_SCALE_GROWTH``, or the constant is less than one step."""
    costly = set()
    for value, (source, offset) in plan.shifted.items():
        root, reach = _root_reach(plan, source, offset)
        current = ranges[plan.activations[root]]
        aligned = _aligned_params(current, reach)
        if aligned is None or aligned.scale > MAX_SCALE_GROWTH * current.params.scale:
            costly.add(value.producer())
    return costly


def align_to_offsets(
    plan: QuantizationPlan, ranges: dict[str, TensorRange]
) -> dict[str, TensorRange]:
    """Ranges of the inputs of removed Add/Sub-by-constant nodes, made to carry the constant.

    ``x + c`` is read from ``x``'s integers with the zero point moved by ``c / scale``, so that
    quotient must be a whole number ``k``: the range is widened to hold ``-c`` (so the moved
    zero point fits the integer type), then the scale grows to ``|c| / k`` for the largest ``k``
    that does not shrink the range. The zero point itself stays. When ``x`` is a tensor times
    constant factors (Mul/Div nodes removed the same way), its root tensor is aligned.
    """
    aligned = dict(ranges)
    for source, offset in plan.shifted.values():
        root, reach = _root_reach(plan, source, offset)
        name = plan.activations[root]
        params = _aligned_params(aligned[name], reach)
        if params is None:
            raise ValueError(f"offset {offset} is less than one step of {name!r}")
        qmin, qmax, zero = params.qtype.qmin, params.qtype.qmax, int(params.zero_point)
        chosen = (float(params.scale) * (qmin - zero), float(params.scale) * (qmax - zero))
        aligned[name] = dataclasses.replace(aligned[name], chosen=chosen, params=params)
    return aligned


def _root_reach(plan: QuantizationPlan, source: ir.Value, offset: float) -> tuple[ir.Value, float]:
    """The tensor with its own scale that ``source`` is a multiple of, and the value of that
    tensor which the offset brings to 0."""
    factor = 1.0
    while source in plan.rescaled:
        source, step = plan.rescaled[source]
        factor *= step
    return source, -offset / factor


def _aligned_params(current: TensorRange, reach: float) -> QuantParams | None:
    """Parameters for ``current``'s range widened to hold ``reach``, with ``reach`` a whole
    number of steps from 0 (the scale grown, never shrunk); None when it is less than one step
    or the moved zero point would leave the type."""
    low, high = current.chosen
    low, high = (min(low, reach), high) if reach < 0 else (low, max(high, reach))
    qp = compute_qparams(low, high, current.params.qtype, symmetric=False)
    exact = abs(reach) / float(qp.scale)
    zero = int(qp.zero_point)
    room = zero - qp.qtype.qmin if reach < 0 else qp.qtype.qmax - zero  # steps to the type's end
    steps = int(np.floor(exact * (1 + 1e-6)))
    if not 1 <= steps <= room:
        return None
    return dataclasses.replace(qp, scale=np.asarray(abs(reach) / steps, np.float32))


def activation_params(
    plan: QuantizationPlan, ranges: dict[str, TensorRange]
) -> dict[ir.Value, QuantParams]:
    """Parameters for every activation value the plan quantizes, shared scales resolved."""
    params = {value: ranges[name].params for value, name in plan.activations.items()}

    def resolve(value: ir.Value) -> QuantParams:
        if value not in params:
            if value in plan.shared:
                params[value] = resolve(plan.shared[value])
            elif value in plan.rescaled:
                source, factor = plan.rescaled[value]
                base = resolve(source)
                scale = np.asarray(base.scale * factor, np.float32)
                params[value] = dataclasses.replace(base, scale=scale)
            elif value in plan.shifted:
                source, offset = plan.shifted[value]
                params[value] = shifted_params(resolve(source), offset)
            else:
                params[value] = resolve(plan.clamped[value][0])
        return params[value]

    for value in [*plan.shared, *plan.rescaled, *plan.shifted, *plan.clamped]:
        resolve(value)
    return params


def shifted_params(base: QuantParams, offset: float) -> QuantParams:
    """Parameters reading ``base``'s integers as ``x + offset`` (scale aligned beforehand)."""
    steps = round(offset / float(base.scale))
    zero = int(base.zero_point) - steps
    if not base.qtype.qmin <= zero <= base.qtype.qmax:
        raise ValueError(f"zero point {zero} after an offset of {offset} leaves the type")
    return dataclasses.replace(base, zero_point=np.asarray(zero, base.zero_point.dtype))
