"""Which 8-bit max-pools onnxruntime would run in its slow channels-first kernel.

onnxruntime's CPU provider runs quantized convolutions channels-last and moves the layout
change (a Transpose) along the graph as far as it pays. A MaxPool on 8-bit data that the
Transpose reaches becomes ``NhwcMaxPool``, which is fast. One it does not reach runs as the plain
8-bit ``MaxPool``, a scalar loop: on this machine (onnxruntime 1.32, one thread) a 2x2 max-pool
over 200x2x96 uint8 values took 0.134 ms there against 0.013 ms for the float kernel of the
float model. The Transpose stops, for instance, where a HardSwish splits a tensor into two
branches (the value and its clipped copy) before the pool: pushing it through one branch alone
would add a Transpose, so onnxruntime keeps it where it is.

The check asks onnxruntime itself (:func:`qconv.runtime.optimized_model`) rather than
re-implementing its cost model: a pool it left as a default-domain ``MaxPool`` reading or
writing the integers of one of the model's QuantizeLinear outputs runs in that loop. The plan
then gives such a pool an output scale of its own, and onnxruntime runs it in float between the
DequantizeLinear and the QuantizeLinear (PP-OCR's text-direction classifier: 0.87 -> 0.79 ms).
"""

from __future__ import annotations

import onnx

from qconv.model_io import all_nodes
from qconv.runtime import optimized_model

EIGHT_BIT_POOL_NOTE = (
    "own output scale: onnxruntime would run it on the 8-bit integers in its slow "
    "channels-first kernel; with distinct input and output scales it runs in float between "
    "the conversions"
)


def channels_first_8bit_pools(qdq_model: onnx.ModelProto) -> list[str]:
    """Names of ``qdq_model``'s MaxPool nodes onnxruntime runs as a plain 8-bit MaxPool."""
    integers = {
        node.output[0] for node in all_nodes(qdq_model.graph) if node.op_type == "QuantizeLinear"
    }
    ours = {node.name for node in all_nodes(qdq_model.graph) if node.op_type == "MaxPool"}
    found = []
    for node in all_nodes(optimized_model(qdq_model).graph):
        if node.op_type != "MaxPool" or node.domain not in ("", "ai.onnx"):
            continue
        if node.name in ours and {node.input[0], node.output[0]} & integers:
            found.append(node.name)
    return found
