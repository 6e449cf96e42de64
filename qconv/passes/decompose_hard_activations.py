"""Rewrite HardSigmoid and HardSwish into Mul, Add and Clip, which quantize without float work.

onnxruntime has no integer kernel for HardSigmoid or HardSwish, so a quantized network built on
them (MobileNetV3, PP-LCNet) would leave the graph at every activation: DequantizeLinear, the
float op, QuantizeLinear. Written out,

    HardSigmoid(x) = Clip(alpha * x + beta, 0, 1)
    HardSwish(x)   = x * HardSigmoid(x)            (alpha = 1/6, beta = 1/2)

every piece has an integer form: the product by alpha > 0 folds into a scale, the Add of beta is
a QLinearAdd whose output range [0, 1] does the Clip, and the final product is a QLinearMul.

Only activations whose input comes from an op qconv quantizes (and the user did not exclude) are
rewritten, so a float region keeps its single fused op. Guarantees: outputs equal the
original's up to float32 rounding; output names are kept.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qconv.decisions import DecisionLog
from qconv.passes._graph import Namer, add_initializer, node_name
from qconv.passes.float_stem import stays_float

PASS = "decompose_hard_activations"
HARD_SWISH = ("HardSwish", 1.0 / 6.0, 0.5)


class DecomposeHardActivationsPass(ir.passes.InPlacePass):
    """Replace HardSigmoid/HardSwish after quantizable ops by Mul/Add/Clip."""

    def __init__(
        self,
        quantizable: frozenset[str],
        exclude: tuple[str, ...] = (),
        decisions: DecisionLog | None = None,
    ) -> None:
        super().__init__()
        self.quantizable = quantizable
        self.exclude = exclude
        self.decisions = decisions or DecisionLog()

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        namer = Namer(model.graph)
        modified = False
        for graph in model.graphs():
            for node in list(graph):
                if node.op_type in ("HardSigmoid", "HardSwish") and self._wanted(node):
                    _decompose(graph, node, namer)
                    self.decisions.applied(
                        PASS, (node_name(node),), f"{node.op_type} written as Mul/Add/Clip"
                    )
                    modified = True
        return ir.passes.PassResult(model, modified)

    def _wanted(self, node: ir.Node) -> bool:
        if node.domain not in ("", "ai.onnx") or stays_float(node, self.exclude):
            return False
        producer = node.inputs[0].producer()
        if producer is None or producer.op_type not in self.quantizable:
            return False
        return not stays_float(producer, self.exclude)


def _decompose(graph: ir.Graph, node: ir.Node, namer: Namer) -> None:
    x = node.inputs[0]
    alpha, beta = _coefficients(node)
    base = namer.fresh(f"{node.name or node.op_type}_hard")

    def constant(suffix: str, number: float) -> ir.Value:
        return add_initializer(graph, namer.fresh(f"{base}_{suffix}"), np.float32(number))

    scaled = ir.node("Mul", [x, constant("alpha", alpha)], name=namer.fresh(f"{base}_mul"))
    shifted = ir.node(
        "Add", [scaled.outputs[0], constant("beta", beta)], name=namer.fresh(f"{base}_add")
    )
    clipped = ir.node(
        "Clip",
        [shifted.outputs[0], constant("zero", 0.0), constant("one", 1.0)],
        name=namer.fresh(f"{base}_clip"),
    )
    nodes = [scaled, shifted, clipped]
    if node.op_type == "HardSwish":
        nodes.append(ir.node("Mul", [x, clipped.outputs[0]], name=namer.fresh(f"{base}_swish")))
    for new in nodes:
        new.outputs[0].name = namer.fresh(f"{new.name}_out")
        new.outputs[0].type = x.type
        new.outputs[0].shape = x.shape
    graph.insert_after(node, nodes)
    _take_over(graph, node.outputs[0], nodes[-1].outputs[0])
    graph.remove(node, safe=True)


def _coefficients(node: ir.Node) -> tuple[float, float]:
    if node.op_type == "HardSwish":
        return HARD_SWISH[1], HARD_SWISH[2]
    return node.attributes.get_float("alpha", 0.2), node.attributes.get_float("beta", 0.5)


def _take_over(graph: ir.Graph, old: ir.Value, new: ir.Value) -> None:
    """Let ``new`` replace ``old`` everywhere, under ``old``'s name."""
    name = old.name
    old.replace_all_uses_with(new, replace_graph_outputs=True)
    old.name = None
    new.name = name
