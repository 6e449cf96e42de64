"""Convert a model below opset 13 to opset 13, so per-channel weight scales can be written.

QuantizeLinear/DequantizeLinear take a per-channel ``axis`` only from opset 13; below it every
weight would get one scale for all its output channels, which loses most of the accuracy of
models whose channels differ in range (depthwise convolutions above all). Exporters such as
Paddle2ONNX still write opset 11 and 12.

The conversion is ONNX's own version converter: it rewrites the ops whose signature changed
(Softmax's axis semantics, Split/Squeeze/Unsqueeze/ReduceSum taking axes as inputs, ...).

Guarantees: the converted model computes the same outputs; input and output names are kept.
When the converter fails (custom ops it cannot type, unsupported adapters) the model is left
as it was and the reason recorded, and the plan falls back to per-tensor weights.
"""

from __future__ import annotations

import onnx
import onnx_ir as ir
from onnx import version_converter

from qconv.decisions import DecisionLog

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
            onnx.checker.check_model(converted)
        except Exception as exc:  # the converter raises several types; keep the model as is
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            self.decisions.refused(PASS, (), f"opset {opset} kept: conversion failed ({reason})")
            return ir.passes.PassResult(model, False)
        detail = f"opset {opset} -> {PER_CHANNEL_OPSET}, so weights can have per-channel scales"
        self.decisions.applied(PASS, (), detail)
        upgraded = ir.from_proto(converted)
        model.graph = upgraded.graph  # the opset imports belong to the graph
        model.ir_version = upgraded.ir_version
        return ir.passes.PassResult(model, True)
