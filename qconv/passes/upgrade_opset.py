"""Convert a model below opset 13 to opset 13, so per-channel weight scales can be written.

QuantizeLinear/DequantizeLinear take a per-channel ``axis`` only from opset 13; below it every
weight would get one scale for all its output channels, which loses most of the accuracy of
models whose channels differ in range (depthwise convolutions above all). Exporters such as
Paddle2ONNX still write opset 11 and 12.

The conversion is ONNX's own version converter: it rewrites the ops whose signature changed
(Softmax's axis semantics, Split/Squeeze/Unsqueeze/ReduceSum taking axes as inputs, ...). Its
opset 10 -> 11 Resize adapter leaves the new attributes at their defaults, which sample other
points (half-pixel coordinates, nearest rounded rather than floored), so this pass writes the
values that reproduce opset 10. Whatever else the converter gets wrong,
:func:`qconv.quantize.quantize_model` catches by comparing outputs before and after preparation.

Guarantees: the converted model computes the same outputs; input and output names are kept.
When the converter fails (custom ops it cannot type, unsupported adapters) the model is left
as it was and the reason recorded, and the plan falls back to per-tensor weights.
"""

from __future__ import annotations

import onnx
import onnx_ir as ir
from onnx import version_converter

from qconv.decisions import DecisionLog
from qconv.errors import first_line
from qconv.model_io import all_nodes

PASS = "upgrade_opset"
PER_CHANNEL_OPSET = 13


class UpgradeOpsetPass(ir.passes.InPlacePass):
    """Convert the model to opset ``PER_CHANNEL_OPSET`` when it is below it."""

    def __init__(self, decisions: DecisionLog | None = None) -> None:
        super().__init__()
        self.decisions = decisions or DecisionLog()

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        opset = model.opset_imports.get("", PER_CHANNEL_OPSET)
        if opset >= PER_CHANNEL_OPSET:
            return ir.passes.PassResult(model, False)
        try:
            converted = version_converter.convert_version(ir.to_proto(model), PER_CHANNEL_OPSET)
            if opset == 10:
                _keep_opset_10_resize(converted.graph)
            onnx.checker.check_model(converted)
        except Exception as exc:  # the converter raises several types; keep the model as is
            reason = first_line(exc)
            self.decisions.refused(PASS, (), f"opset {opset} kept: conversion failed ({reason})")
            return ir.passes.PassResult(model, False)
        detail = f"opset {opset} -> {PER_CHANNEL_OPSET}, so weights can have per-channel scales"
        self.decisions.applied(PASS, (), detail)
        upgraded = ir.from_proto(converted)
        model.graph = upgraded.graph  # the opset imports belong to the graph
        model.ir_version = upgraded.ir_version
        return ir.passes.PassResult(model, True)


def _keep_opset_10_resize(graph: onnx.GraphProto) -> None:
    """Give every Resize from opset 10 the sampling it had there (onnxruntime's reading of it):
    asymmetric coordinates; for nearest, the floor of the source coordinate when upsampling
    and its ceiling when downsampling."""
    constants = {tensor.name: tensor for tensor in graph.initializer}
    for node in all_nodes(graph):
        if node.op_type != "Resize" or node.domain not in ("", "ai.onnx"):
            continue
        attributes = {attribute.name: attribute for attribute in node.attribute}
        if "coordinate_transformation_mode" not in attributes:
            _set(node, "coordinate_transformation_mode", "asymmetric")
        mode = attributes.get("mode")  # nearest by default
        nearest = mode is None or onnx.helper.get_attribute_value(mode) == b"nearest"
        if nearest and "nearest_mode" not in attributes:
            scales = constants.get(node.input[2]) if len(node.input) > 2 else None
            down = scales is not None and bool((onnx.numpy_helper.to_array(scales) < 1).any())
            _set(node, "nearest_mode", "ceil" if down else "floor")


def _set(node: onnx.NodeProto, name: str, value: str) -> None:
    node.attribute.append(onnx.helper.make_attribute(name, value))
