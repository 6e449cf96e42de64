"""Fold nodes whose inputs are all constants into initializers.

Weights often reach a Conv or MatMul through Constant nodes or Transpose/Cast/Reshape chains;
folding them makes them initializers the quantizer can read. Each foldable node is evaluated once
with ONNX's reference evaluator.

Every graph is folded, subgraphs included (an outer constant read in a subgraph counts as
constant there). Guarantees: outputs are numerically identical (the same ONNX semantics,
evaluated ahead of time); value names are kept. Nodes are not folded when they are
non-deterministic, use a non-default domain or a subgraph, or when folding would add much more
data than it removes (a ConstantOfShape or Expand of a tiny tensor stays a node).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnx.reference import ReferenceEvaluator

from qconv.decisions import DecisionLog
from qconv.passes._graph import add_initializer, constant_array, node_name

PASS = "fold_constants"
NON_DETERMINISTIC = frozenset(
    {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial"}
)
# A folded node may add this many bytes beyond what its constant inputs held.
MAX_GROWTH_BYTES = 1 << 20


class FoldConstantsPass(ir.passes.InPlacePass):
    """Replace constant-only computations by initializers."""

    def __init__(self, decisions: DecisionLog | None = None) -> None:
        super().__init__()
        self.decisions = decisions or DecisionLog()

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        opset = model.opset_imports.get("", 13)
        modified = False
        for graph in model.graphs():  # weights inside Loop/If bodies come through Constants too
            for node in list(graph):
                if self._foldable(node):
                    modified |= self._fold(graph, node, opset)
        return ir.passes.PassResult(model, modified)

    @staticmethod
    def _foldable(node: ir.Node) -> bool:
        if node.domain not in ("", "ai.onnx") or node.op_type in NON_DETERMINISTIC:
            return False
        if any(
            attr.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)
            for attr in node.attributes.values()
        ):
            return False
        inputs = [v for v in node.inputs if v is not None]
        return all(constant_array(v) is not None for v in inputs)

    def _fold(self, graph: ir.Graph, node: ir.Node, opset: int) -> bool:
        inputs = [constant_array(v) if v is not None else None for v in node.inputs]
        try:
            results = _evaluate(node, inputs, opset)
        except Exception as exc:  # the reference evaluator raises many types
            self.decisions.refused(PASS, (node_name(node),), f"cannot evaluate: {exc}")
            return False
        in_bytes = sum(a.nbytes for a in inputs if a is not None)
        if node.op_type == "Constant":  # its data is in the model already, as an attribute
            in_bytes = sum(r.nbytes for r in results)
        if sum(r.nbytes for r in results) > in_bytes + MAX_GROWTH_BYTES:
            self.decisions.refused(PASS, (node_name(node),), "folding would grow the model")
            return False
        for output, array in zip(node.outputs, results, strict=True):
            self._replace(graph, output, array)
        graph.remove(node, safe=True)
        if node.op_type != "Constant":
            self.decisions.applied(PASS, (node_name(node),), f"folded {node.op_type}")
        return True

    @staticmethod
    def _replace(graph: ir.Graph, output: ir.Value, array: np.ndarray) -> None:
        name = output.name
        output.name = None
        folded = add_initializer(graph, name, np.asarray(array))
        output.replace_all_uses_with(folded, replace_graph_outputs=True)


def _evaluate(node: ir.Node, inputs: list[np.ndarray | None], opset: int) -> list[np.ndarray]:
    proto = ir.serde.serialize_node(node)
    names = [f"in{i}" if a is not None else "" for i, a in enumerate(inputs)]
    outs = [f"out{i}" for i in range(len(node.outputs))]
    del proto.input[:]
    proto.input.extend(names)
    del proto.output[:]
    proto.output.extend(outs)
    graph = onnx.helper.make_graph(
        [proto],
        "fold",
        [
            onnx.helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None)
            for n in names
            if n
        ],
        [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None) for n in outs],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
    feeds = {n: a for n, a in zip(names, inputs, strict=True) if n}
    return [np.asarray(r) for r in ReferenceEvaluator(model).run(None, feeds)]
