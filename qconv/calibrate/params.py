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


def activation_params(
    plan: QuantizationPlan, ranges: dict[str, TensorRange]
) -> dict[ir.Value, QuantParams]:
    """Parameters for every activation value the plan quantizes, shared scales resolved."""
    params = {value: ranges[name].params for value, name in plan.activations.items()}

    def resolve(value: ir.Value) -> QuantParams:
        if value not in params:
            if value in plan.shared:
                params[value] = resolve(plan.shared[value])
            else:
                source, factor = plan.rescaled[value]
                base = resolve(source)
                scale = np.asarray(base.scale * factor, np.float32)
                params[value] = dataclasses.replace(base, scale=scale)
        return params[value]

    for value in [*plan.shared, *plan.rescaled]:
        resolve(value)
    return params
