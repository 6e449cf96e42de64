"""Quantization numerics: scales, zero points, quantize and dequantize. Pure numpy, no ONNX.

The affine map is ``real = scale * (q - zero_point)``, rounding half to even as ONNX
QuantizeLinear does. Worked example, uint8 asymmetric over the range [-1.0, 3.0]:

    scale = (3.0 - (-1.0)) / (255 - 0) = 0.015686...
    zero_point = round(0 - (-1.0) / scale) = round(63.75) = 64
    quantize(0.0) = 64 -> dequantize = 0.0 exactly
    quantize(1.0) = round(1.0 / scale) + 64 = 128 -> dequantize = 0.98824 (error < scale / 2)

Symmetric int8 uses the restricted range [-127, 127] with zero point 0, so a tensor and its
negation quantize to negated values and no -128 breaks the symmetry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qconv.config import QuantType

# Below this a scale underflows when multiplied by another scale (bias scale = x_scale * w_scale).
MIN_SCALE = 1e-12


@dataclass(frozen=True)
class QuantParams:
    """Scale(s) and zero point(s) of one quantized tensor.

    Attributes:
        scale: float32, shape () per-tensor or (C,) per-channel.
        zero_point: integer array of the quantized type, same shape as ``scale``.
        qtype: The integer type.
        axis: Channel axis for per-channel parameters, ``None`` for per-tensor.
    """

    scale: np.ndarray
    zero_point: np.ndarray
    qtype: QuantType
    axis: int | None = None

    @property
    def per_channel(self) -> bool:
        return self.axis is not None


def numpy_dtype(qtype: QuantType) -> type[np.integer]:
    """The numpy dtype that stores ``qtype`` values."""
    return np.int8 if qtype is QuantType.INT8 else np.uint8


def symmetric_bounds(qtype: QuantType) -> tuple[int, int, int]:
    """``(qmin, qmax, zero_point)`` of the restricted symmetric range of ``qtype``."""
    if qtype is QuantType.INT8:
        return -127, 127, 0
    return 1, 255, 128


def compute_qparams(
    rmin: np.ndarray | float,
    rmax: np.ndarray | float,
    qtype: QuantType,
    symmetric: bool,
    axis: int | None = None,
) -> QuantParams:
    """Scale and zero point that map ``[rmin, rmax]`` onto ``qtype``.

    The range is first widened to contain 0 so that 0.0 is exactly representable (padding and
    Relu outputs depend on it). A zero-width range gets scale 1.0.

    Example:
        >>> qp = compute_qparams(-1.0, 3.0, QuantType.UINT8, symmetric=False)
        >>> float(qp.scale), int(qp.zero_point)
        (0.01568627543747425, 64)
    """
    lo = np.minimum(np.asarray(rmin, dtype=np.float64), 0.0)
    hi = np.maximum(np.asarray(rmax, dtype=np.float64), 0.0)
    if symmetric:
        qmin, qmax, zero = symmetric_bounds(qtype)
        absmax = np.maximum(np.abs(lo), np.abs(hi))
        scale = absmax / ((qmax - qmin) / 2.0)
        zero_point = np.full(scale.shape, zero, dtype=np.float64)
    else:
        qmin, qmax = qtype.qmin, qtype.qmax
        scale = (hi - lo) / (qmax - qmin)
        safe = np.where(scale > 0, scale, 1.0)
        zero_point = np.clip(np.rint(qmin - lo / safe), qmin, qmax)
    scale = np.where(scale > 0, np.maximum(scale, MIN_SCALE), 1.0)
    return QuantParams(
        scale=scale.astype(np.float32),
        zero_point=zero_point.astype(numpy_dtype(qtype)),
        qtype=qtype,
        axis=axis,
    )


def _broadcast(params: np.ndarray, ndim: int, axis: int | None) -> np.ndarray:
    if axis is None or params.ndim == 0:
        return params
    shape = [1] * ndim
    shape[axis] = params.shape[0]
    return params.reshape(shape)


def quantize(x: np.ndarray, qp: QuantParams) -> np.ndarray:
    """Quantize ``x`` exactly as ONNX QuantizeLinear does (round half to even, saturate)."""
    scale = _broadcast(qp.scale, x.ndim, qp.axis).astype(np.float32)
    zero = _broadcast(qp.zero_point, x.ndim, qp.axis).astype(np.float32)
    q = np.rint(x.astype(np.float32) / scale) + zero
    return np.clip(q, qp.qtype.qmin, qp.qtype.qmax).astype(numpy_dtype(qp.qtype))


def dequantize(q: np.ndarray, qp: QuantParams) -> np.ndarray:
    """Map quantized values back to float32, as ONNX DequantizeLinear does."""
    scale = _broadcast(qp.scale, q.ndim, qp.axis).astype(np.float32)
    zero = _broadcast(qp.zero_point, q.ndim, qp.axis).astype(np.int32)
    return ((q.astype(np.int32) - zero).astype(np.float32) * scale).astype(np.float32)


def weight_qparams(
    weight: np.ndarray, qtype: QuantType, axis: int | None, symmetric: bool = True
) -> QuantParams:
    """Min/max parameters of a weight, per channel along ``axis`` or per tensor."""
    if axis is None:
        return compute_qparams(weight.min(), weight.max(), qtype, symmetric)
    reduce_axes = tuple(i for i in range(weight.ndim) if i != axis)
    rmin = weight.min(axis=reduce_axes) if reduce_axes else weight
    rmax = weight.max(axis=reduce_axes) if reduce_axes else weight
    return compute_qparams(rmin, rmax, qtype, symmetric, axis=axis)


@dataclass(frozen=True)
class QuantizedBias:
    """An int32 bias with ``scale = input_scale * weight_scale`` and zero point 0.

    Attributes:
        values: int32 bias.
        scale: float32 scale, per tensor or per channel like the weight.
        saturated: How many entries did not fit int32 and were clamped.
    """

    values: np.ndarray
    scale: np.ndarray
    saturated: int


def quantize_bias(
    bias: np.ndarray, input_scale: np.ndarray, weight_scale: np.ndarray
) -> QuantizedBias:
    """Quantize a bias so that integer accumulators can add it directly.

    Example: input scale 0.02, weight scale 0.01 -> bias scale 0.0002; a bias of 0.5 becomes 2500.
    """
    scale = (np.float32(input_scale) * weight_scale.astype(np.float32)).astype(np.float32)
    scale = np.broadcast_to(scale, bias.shape) if scale.ndim == 0 else scale
    q = np.rint(bias.astype(np.float64) / scale.astype(np.float64))
    info = np.iinfo(np.int32)
    saturated = int(np.count_nonzero((q < info.min) | (q > info.max)))
    values = np.clip(q, info.min, info.max).astype(np.int32)
    return QuantizedBias(values=values, scale=scale.astype(np.float32), saturated=saturated)


def sqnr_db(reference: np.ndarray, approx: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB (inf when the two are identical)."""
    ref = reference.astype(np.float64).ravel()
    noise = ref - approx.astype(np.float64).ravel()
    noise_power = float(np.dot(noise, noise))
    if noise_power == 0.0:
        return float("inf")
    signal_power = float(np.dot(ref, ref))
    if signal_power == 0.0:
        return float("-inf")
    return 10.0 * float(np.log10(signal_power / noise_power))
