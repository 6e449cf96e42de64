"""Run quantized average pools as depthwise convolutions with equal weights.

onnxruntime fuses ``DequantizeLinear -> AveragePool -> QuantizeLinear`` into its
``QLinearAveragePool`` kernel, which dequantizes every element in a scalar loop: on this
machine (onnxruntime 1.32, one thread) a 3x3 stride-2 pool over 1x240x28x28 uint8 values took
0.52 ms against 0.047 ms for the float pool of the float model, and 0.067 ms as an integer
depthwise convolution (0.21 -> 0.047 ms at 100 channels, 0.092 -> 0.033 ms at 8 channels of
64x64). Below 8 channels the depthwise kernel loses (3 channels of 64x64: 0.039 ms as a pool,
0.049 ms as a convolution), so such pools stay pools.

A ``k``-element window average is exactly a depthwise convolution whose weights are all
``1/k``; stored as integers that is ``qmax`` (127 for int8) with the per-tensor scale
``1 / (k * qmax)``, so the weights carry no quantization error. Worked example: a 3x3 pool
stores int8 weights of 127 with scale ``1/1143``, and ``127 / 1143 = 1/9``. The weights are int8
whatever the model's weight type: onnxruntime fuses them with uint8 and int8 activations alike.

The two agree wherever every window averages over ``k`` values: padded positions count as
zeros only under ``count_include_pad=1`` (or when there is no padding), and ``ceil_mode=1``
adds partial windows at the end unless the sizes divide evenly. A pool that does not meet these
conditions, or whose channel count is not known, keeps running as an integer pool; the check
says why.

Guarantees: only AveragePool nodes that read a DequantizeLinear output and whose output goes to
a QuantizeLinear are touched (those onnxruntime would run on integers); the replacement
Convolution keeps the pool's name and output name and computes the same integers, except that an
average falling exactly between two steps may round to the other one (``1/k`` is rounded).
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir

from qconv.passes._graph import Namer, add_initializer

SPATIAL_RANK = 4  # N, C, H, W: the 2-D pools onnxruntime's depthwise kernels serve
MIN_CHANNELS = 8
WEIGHT = np.int8(127)
DETAIL = (
    "runs as a depthwise Conv with equal weights: onnxruntime's integer AveragePool kernel is "
    "about 8x slower"
)


def refusal(pool: ir.Node) -> str | None:
    """Why ``pool`` cannot run as a depthwise convolution, or None when it can."""
    if pool.op_type != "AveragePool" or pool.domain not in ("", "ai.onnx"):
        return "not an AveragePool"
    shape = pool.inputs[0].shape
    if shape is None or len(shape) != SPATIAL_RANK or not isinstance(shape[1], int):
        return "its input is not a 4-D tensor with a known channel count"
    dilated = any(d != 1 for d in pool.attributes.get_ints("dilations", [1, 1]))
    if shape[1] < MIN_CHANNELS and not dilated:  # onnxruntime's integer pool has no dilations
        return f"under {MIN_CHANNELS} channels the integer pool is the faster kernel"
    if pool.attributes.get_string("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        return "auto_pad SAME pads by a size known only at run time"
    pads = _pads(pool)
    if any(pads) and not pool.attributes.get_int("count_include_pad", 0):
        return "its windows at the border average over fewer values (count_include_pad=0)"
    if pool.attributes.get_int("ceil_mode", 0) and not _windows_fit(pool, shape):
        return "ceil_mode=1 adds partial windows at the end"
    return None


def _pads(pool: ir.Node) -> list[int]:
    if pool.attributes.get_string("auto_pad", "NOTSET") == "VALID":
        return [0, 0, 0, 0]
    return list(pool.attributes.get_ints("pads", [0, 0, 0, 0]))


def _windows_fit(pool: ir.Node, shape: ir.Shape) -> bool:
    """Whether every spatial size is known and leaves no partial window (ceil == floor)."""
    kernel = pool.attributes.get_ints("kernel_shape")
    strides = pool.attributes.get_ints("strides", [1, 1])
    dilations = pool.attributes.get_ints("dilations", [1, 1])
    pads = _pads(pool)
    for axis in range(2):
        size = shape[2 + axis]
        if not isinstance(size, int):
            return False
        extent = (kernel[axis] - 1) * dilations[axis] + 1
        if (size + pads[axis] + pads[axis + 2] - extent) % strides[axis]:
            return False
    return True


class PoolAsConvPass(ir.passes.InPlacePass):
    """Replace each AveragePool between a DequantizeLinear and a QuantizeLinear that
    :func:`refusal` accepts by a depthwise Conv reading integer weights."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        namer = Namer(model.graph)
        pools = [node for node in model.graph.all_nodes() if _runs_on_integers(node)]
        pools = [pool for pool in pools if refusal(pool) is None]
        for pool in pools:
            self._replace(pool, namer)
        return ir.passes.PassResult(model, bool(pools))

    def _replace(self, pool: ir.Node, namer: Namer) -> None:
        graph = pool.graph
        channels = pool.inputs[0].shape[1]
        kernel = list(pool.attributes.get_ints("kernel_shape"))
        base = namer.fresh("qp")
        weights = add_initializer(graph, f"{base}_w", np.full([channels, 1, *kernel], WEIGHT))
        scale = add_initializer(
            graph, f"{base}_s", np.float32(1.0 / (math.prod(kernel) * int(WEIGHT)))
        )
        dequantize = ir.node("DequantizeLinear", [weights, scale])
        dequantize.outputs[0].name = namer.fresh(f"{base}_dq")
        dequantize.name = namer.fresh(f"{base}_dq")
        dequantize.outputs[0].type = ir.TensorType(ir.DataType.FLOAT)
        dequantize.outputs[0].shape = ir.Shape([channels, 1, *kernel])
        conv = ir.node(
            "Conv",
            [pool.inputs[0], dequantize.outputs[0]],
            attributes=_conv_attributes(pool, channels),
            name=pool.name,
        )
        ir.convenience.replace_nodes_and_values(
            graph, pool, [pool], [dequantize, conv], pool.outputs, conv.outputs
        )


def _runs_on_integers(node: ir.Node) -> bool:
    """Whether onnxruntime would fuse ``node`` with the conversions around it."""
    if node.op_type != "AveragePool":
        return False
    producer = node.inputs[0].producer()
    readers = node.outputs[0].consumers()
    return (
        producer is not None
        and producer.op_type == "DequantizeLinear"
        and any(reader.op_type == "QuantizeLinear" for reader in readers)
    )


def _conv_attributes(pool: ir.Node, channels: int) -> dict[str, object]:
    attributes: dict[str, object] = {
        "kernel_shape": list(pool.attributes.get_ints("kernel_shape")),
        "group": channels,
        "pads": _pads(pool),
    }
    for name in ("strides", "dilations"):
        if name in pool.attributes:
            attributes[name] = list(pool.attributes.get_ints(name))
    return attributes
