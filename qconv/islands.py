"""Keep float the small islands of int8 that only cost conversions.

A group of quantized nodes connected to no other quantized node (a classifier head after an
LSTM, a projection between float LayerNorms) pays a QuantizeLinear on every tensor entering it
and a DequantizeLinear on every one leaving it, about 1-2 microseconds each on onnxruntime's
CPU whatever the size. Its integer kernels save time in proportion to the multiply-adds. On
this machine (one thread; float input -> MatMul -> float output, batch 1) the int8 island was
1.14x float's time at 1,536 multiply-adds (128 -> 12), 0.98x at 65,536 (256 -> 256) and 0.70x
at 262,144 (512 -> 512). An island under ``ISLAND_MACS`` multiply-adds in all, with every
weighted node's size known, is marked to stay float (``node.meta[KEPT_FLOAT]``); re-planning
then leaves its other nodes float too, having no quantized neighbour.

Sizes are per inference at batch 1: a symbolic first axis counts as 1; another symbolic size
(a sequence length) is taken from ``observe``, shapes inferred for a calibration sample at
batch 1, and without it the island's size is unknown and the island stays int8.

Guarantees: only nodes of groups with no quantized neighbour are marked, so no other node's
quantization changes.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import onnx_ir as ir

from qconv.passes._graph import constant_array
from qconv.passes.float_stem import KEPT_FLOAT
from qconv.plan import QuantizationPlan

ISLAND_MACS = 65_536
WEIGHTED = ("Conv", "Gemm", "MatMul")
Observed = dict[str, tuple[tuple[int, ...], object]]  # tensor name -> (shape, dtype)


def mark_small_islands(
    plan: QuantizationPlan, observe: Callable[[], Observed] | None = None
) -> bool:
    """Mark the weighted nodes of every small int8 island to stay float; True if any was.

    ``observe`` gives tensor name -> (shape, dtype) for one sample at batch 1
    (:func:`qconv.calibrate.collect.inferred_shapes`); it is called, once, only if a size
    the graph leaves symbolic is needed."""
    observed = functools.cache(observe or dict)
    marked = False
    for island in _islands(set(plan.int8_nodes)):
        weighted = [node for node in island if node.op_type in WEIGHTED]
        sizes = [_macs(node, observed) for node in weighted]
        if not weighted or None in sizes or sum(sizes) >= ISLAND_MACS:
            continue
        total = sum(sizes)
        for node in weighted:
            node.meta[KEPT_FLOAT] = (
                f"kept float: it is in a group of int8 nodes with no other int8 neighbour and "
                f"{total:,} multiply-adds in all (batch 1); the conversions in and out would "
                f"cost more than int8 saves below {ISLAND_MACS:,}"
            )
        marked = True
    return marked


def _islands(quantized: set[ir.Node]) -> list[list[ir.Node]]:
    """The groups of ``quantized`` nodes connected through the tensors between them."""
    seen: set[ir.Node] = set()
    islands = []
    for start in quantized:
        if start in seen:
            continue
        island, stack = [], [start]
        seen.add(start)
        while stack:
            node = stack.pop()
            island.append(node)
            for neighbour in _neighbours(node):
                if neighbour in quantized and neighbour not in seen:
                    seen.add(neighbour)
                    stack.append(neighbour)
        islands.append(island)
    return islands


def _neighbours(node: ir.Node) -> list[ir.Node]:
    producers = [value.producer() for value in node.inputs if value is not None]
    consumers = [user for value in node.outputs for user, _ in value.uses()]
    return [other for other in producers + consumers if other is not None]


def _macs(node: ir.Node, observed: Callable[[], Observed]) -> int | None:
    """Multiply-adds of one inference at batch 1, or None when a size is unknown."""
    weight = constant_array(node.inputs[1]) if len(node.inputs) > 1 else None
    dims = _output_dims(node.outputs[0], observed)
    if weight is None or weight.ndim < 2 or dims is None:
        return None
    if node.op_type == "Conv" or (node.op_type == "Gemm" and node.attributes.get_int("transB", 0)):
        features = weight.shape[0]
    else:
        features = weight.shape[-1]
    return math.prod(dims) * (weight.size // features)


def _output_dims(value: ir.Value, observed: Callable[[], Observed]) -> list[int] | None:
    if value.shape is None:
        return _observed_dims(value, observed)
    dims = []
    for axis, dim in enumerate(value.shape):
        if isinstance(dim, int):
            dims.append(dim)
        elif axis == 0:
            dims.append(1)  # the batch
        else:
            return _observed_dims(value, observed)
    return dims


def _observed_dims(value: ir.Value, observed: Callable[[], Observed]) -> list[int] | None:
    shape = observed().get(value.name)
    return list(shape[0]) if shape is not None else None
