"""Inline the model's local functions, so the passes and the plan see the ops inside them.

Exporters wrap repeated blocks in functions (``torch.onnx.export(...,
export_modules_as_functions=True)``, dynamo exports of some modules): a call node of op type
``Block`` has no integer form, so every Conv inside would stay float. onnx-ir's inliner writes
each call's body in its place.

Guarantees: the model computes the same outputs with the same graph inputs and outputs; calls of
functions the model does not define (custom ops) are left alone. A model whose functions call
each other in a cycle, or take graphs as attributes, is left as it is, with the reason recorded.
"""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes.common import InlinePass

from qconv.decisions import DecisionLog
from qconv.passes._graph import node_name

PASS = "inline_functions"


class InlineFunctionsPass(ir.passes.InPlacePass):
    """Replace every call of a local function by the function's body."""

    def __init__(self, decisions: DecisionLog | None = None) -> None:
        super().__init__()
        self.decisions = decisions or DecisionLog()

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        calls = [n for n in model.graph.all_nodes() if n.op_identifier() in model.functions]
        if not calls:
            return ir.passes.PassResult(model, False)
        names = tuple(node_name(call) for call in calls)
        try:
            InlinePass()(model)
        except (ir.passes.PreconditionError, ValueError) as exc:
            self.decisions.refused(PASS, names, f"local functions kept: {exc}")
            return ir.passes.PassResult(model, False)
        kinds = sorted({call.op_type for call in calls})
        self.decisions.applied(
            PASS, names, f"inlined calls of the model's local functions ({', '.join(kinds)})"
        )
        return ir.passes.PassResult(model, True)
