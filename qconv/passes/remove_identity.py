"""Remove Identity nodes and inference-time Dropout.

Guarantees: the model computes the same outputs with the same graph input and output names.
An Identity/Dropout whose removal would join a graph input straight to a graph output, or whose
Dropout mask is read, is kept and the reason recorded.
"""

from __future__ import annotations

import onnx_ir as ir

from qconv.decisions import DecisionLog
from qconv.passes._graph import bypass, node_name

PASS = "remove_identity"


class RemoveIdentityPass(ir.passes.InPlacePass):
    """Bypass Identity and Dropout (inference mode) nodes."""

    def __init__(self, decisions: DecisionLog | None = None) -> None:
        super().__init__()
        self.decisions = decisions or DecisionLog()

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        for node in list(model.graph):
            if node.op_type in ("Identity", "Dropout") and node.domain in ("", "ai.onnx"):
                modified |= self._remove(model.graph, node)
        return ir.passes.PassResult(model, modified)

    def _remove(self, graph: ir.Graph, node: ir.Node) -> bool:
        reason = self._refusal(node)
        if reason:
            self.decisions.refused(PASS, (node_name(node),), reason)
            return False
        source = node.inputs[0]
        bypass(node, source)
        graph.remove(node, safe=True)
        self.decisions.applied(PASS, (node_name(node),), f"removed {node.op_type}")
        return True

    @staticmethod
    def _refusal(node: ir.Node) -> str:
        source, output = node.inputs[0], node.outputs[0]
        if source is None:
            return "no input"
        if any(mask.uses() or mask.is_graph_output() for mask in node.outputs[1:]):
            return "its Dropout mask output is used"
        if node.op_type == "Dropout" and node.attributes.get_int("training_mode", 0):
            return "Dropout runs in training mode"
        if len(node.inputs) > 2 and node.inputs[2] is not None:
            return "Dropout has a training_mode input"
        if output.is_graph_output() and (
            source.is_graph_input() or source.is_graph_output() or source.is_initializer()
        ):
            return "it joins a graph input, initializer or output to a graph output"
        return ""
