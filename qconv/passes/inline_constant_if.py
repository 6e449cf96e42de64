"""Replace an If whose condition is a constant by the nodes of the branch it always takes.

onnxruntime inlines such an If when it loads a model, so a tensor inside the branch would not
exist in the graph it runs: calibration could not read it, and the If is dead weight anyway.
Exporters leave these behind for shape or flag checks that became constants (after constant
folding, too).

Guarantees: the model computes the same outputs with the same graph input and output names. An
If is kept, with the reason recorded, when its branch keeps initializers whose names the outer
graph uses, or when inlining would join a graph input straight to a graph output.
"""

from __future__ import annotations

import onnx_ir as ir

from qconv.decisions import DecisionLog
from qconv.passes._graph import Namer, constant_array, node_name, redirect

PASS = "inline_constant_if"


class InlineConstantIfPass(ir.passes.InPlacePass):
    """Inline the taken branch of each If with a constant condition, in every graph."""

    def __init__(self, decisions: DecisionLog | None = None) -> None:
        super().__init__()
        self.decisions = decisions or DecisionLog()

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        for graph in list(model.graphs()):
            for node in list(graph):
                if node.op_type == "If" and node.domain in ("", "ai.onnx"):
                    modified |= self._inline(graph, node, Namer(model.graph))
        return ir.passes.PassResult(model, modified)

    def _inline(self, graph: ir.Graph, node: ir.Node, names: Namer) -> bool:
        condition = constant_array(node.inputs[0])
        if condition is None:
            return False
        attribute = "then_branch" if bool(condition.reshape(-1)[0]) else "else_branch"
        branch = node.attributes[attribute].as_graph()
        refusal = _refusal(graph, node, branch, names)
        if refusal:
            self.decisions.refused(PASS, (node_name(node),), refusal)
            return False
        _move_branch(graph, node, branch)
        self.decisions.applied(
            PASS, (node_name(node),), f"the condition is always {bool(condition.reshape(-1)[0])}"
        )
        return True


def _refusal(graph: ir.Graph, node: ir.Node, branch: ir.Graph, names: Namer) -> str | None:
    clashing = [name for name in branch.initializers if not names.is_free(name)]
    if clashing:
        return f"its branch has initializers named like outer values ({', '.join(clashing[:3])})"
    interface = {*graph.inputs, *graph.outputs}
    for output, result in zip(node.outputs, branch.outputs, strict=True):
        if output in graph.outputs and result in interface:
            return "inlining would join a graph input or output straight to a graph output"
    return None


def _move_branch(graph: ir.Graph, node: ir.Node, branch: ir.Graph) -> None:
    for name in list(branch.initializers):
        value = branch.initializers.pop(name)
        graph.register_initializer(value)
    for inner in list(branch):
        branch.remove(inner)
        graph.insert_before(node, inner)
    results = list(branch.outputs)
    branch.outputs.clear()
    for output, result in zip(node.outputs, results, strict=True):
        redirect(output, result)
    graph.remove(node, safe=True)
