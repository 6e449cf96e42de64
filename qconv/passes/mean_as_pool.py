"""Write a mean over every spatial axis as a GlobalAveragePool.

PyTorch's dynamo exporter (``torch.onnx.export``'s default since torch 2.9) writes
``AdaptiveAvgPool2d(1)`` and ``x.mean((2, 3))`` as ``ReduceMean``, which has no integer form in
ONNX or onnxruntime: the classifier head after it then has no quantized input, and the int8
model converts back to float before it. ``GlobalAveragePool`` computes the same mean and has
one (``QLinearGlobalAveragePool``).

A ``ReduceMean`` over axes 2 to the last of a tensor of known rank 4 or more (images, volumes)
becomes a ``GlobalAveragePool``; on 3-D tensors the last axis is as often a transformer's
features as a signal's time (a LayerNorm's mean, which onnxruntime fuses in float), so those
stay; with ``keepdims=0`` a ``Flatten`` (axis 1) after it drops the trailing
ones, giving the same ``[N, C]``.

Guarantees: the model's outputs equal the original's up to float32 rounding (the sum may be
taken in another order); node and output names are kept. A ReduceMean over other axes, with
axes computed at run time or of unknown rank is left as it is.
"""

from __future__ import annotations

import onnx_ir as ir

from qconv.decisions import DecisionLog
from qconv.passes._graph import Namer, constant_array, node_name

PASS = "mean_as_pool"
AXES_AS_INPUT_OPSET = 18
MIN_RANK = 4  # ReduceMean reads its axes from input 1 from opset 18 on


class MeanAsPoolPass(ir.passes.InPlacePass):
    """Replace spatial ReduceMean nodes by GlobalAveragePool (and Flatten)."""

    def __init__(self, decisions: DecisionLog | None = None) -> None:
        super().__init__()
        self.decisions = decisions or DecisionLog()

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx", 1))
        namer = Namer(model.graph)
        means = [n for n in model.graph.all_nodes() if _spatial_mean(n, opset)]
        for mean in means:
            self._replace(mean, namer)
        return ir.passes.PassResult(model, bool(means))

    def _replace(self, mean: ir.Node, namer: Namer) -> None:
        source, output = mean.inputs[0], mean.outputs[0]
        pooled_shape = ir.Shape([*source.shape[:2], *[1] * (len(source.shape) - 2)])
        pool = ir.node("GlobalAveragePool", [source], name=mean.name)
        new_nodes = [pool]
        if mean.attributes.get_int("keepdims", 1):
            result = pool.outputs[0]
        else:
            pool.outputs[0].name = namer.fresh(f"{output.name}_pooled")
            pool.outputs[0].type, pool.outputs[0].shape = output.type, pooled_shape
            flatten = ir.node("Flatten", pool.outputs, attributes={"axis": 1})
            flatten.name = namer.fresh(f"{mean.name or output.name}_flatten")
            new_nodes.append(flatten)
            result = flatten.outputs[0]
        result.type, result.shape = output.type, output.shape
        ir.convenience.replace_nodes_and_values(
            mean.graph, mean, [mean], new_nodes, [output], [result]
        )
        self.decisions.applied(
            PASS,
            (node_name(mean),),
            "ReduceMean over every spatial axis written as GlobalAveragePool, which has an "
            "integer kernel",
        )


def _spatial_mean(node: ir.Node, opset: int) -> bool:
    """Whether ``node`` is a ReduceMean over exactly axes 2.. of a tensor of known rank."""
    if node.op_type != "ReduceMean" or node.domain not in ("", "ai.onnx"):
        return False
    shape = node.inputs[0].shape
    if shape is None or len(shape) < MIN_RANK:
        return False
    axes = _axes(node, opset)
    if axes is None:
        return False
    rank = len(shape)
    return sorted(a % rank for a in axes) == list(range(2, rank))


def _axes(node: ir.Node, opset: int) -> list[int] | None:
    """The constant axes of ``node``, or None when absent (all axes) or computed."""
    if opset < AXES_AS_INPUT_OPSET:
        axes = node.attributes.get_ints("axes", None)
        return list(axes) if axes is not None else None
    if len(node.inputs) < 2 or node.inputs[1] is None:
        return None
    array = constant_array(node.inputs[1])
    return None if array is None else [int(a) for a in array.reshape(-1)]
