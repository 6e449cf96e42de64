"""What onnxruntime makes of a Q/DQ model, where that decides whether int8 pays.

Three findings, all read from the graph onnxruntime itself builds for the model
(:func:`qconv.runtime.optimized_model`) rather than from a re-implementation of its rules:

* **8-bit max-pools in the slow channels-first kernel.** onnxruntime's CPU provider runs
  quantized convolutions channels-last and moves the layout change (a Transpose) along the graph
  as far as it pays. A MaxPool on 8-bit data that the Transpose reaches becomes ``NhwcMaxPool``,
  which is fast; one it does not reach runs as the plain 8-bit ``MaxPool``, a scalar loop: on
  this machine (onnxruntime 1.32, one thread) a 2x2 max-pool over 200x2x96 uint8 values took
  0.134 ms there against 0.013 ms for the float kernel of the float model. The Transpose stops,
  for instance, where a HardSwish splits a tensor into two branches before the pool. Such a
  pool is one left as a default-domain ``MaxPool`` reading or writing the integers of a
  QuantizeLinear output; the plan then gives it an output scale of its own, and onnxruntime
  runs it in float between the conversions (PP-OCR's text-direction classifier: 0.87 -> 0.79
  ms).
* **Weighted ops it does not fuse into an integer kernel.** A ConvTranspose (onnxruntime's CPU
  provider has no integer one) still appears under its own name and type: it runs in float
  between a DequantizeLinear and a QuantizeLinear that only cost time, so it is kept float
  (PP-OCRv4's detector head: 72.4 -> 70.5 ms for the whole model).
* **Ops it runs on integers though the plan left them float.** A Sigmoid whose input is a
  DequantizeLinear output and whose output is quantized becomes ``QLinearSigmoid`` (a table
  lookup): the report says so instead of calling it float.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx

from qconv.model_io import all_nodes
from qconv.runtime import optimized_model

EIGHT_BIT_POOL_NOTE = (
    "own output scale: onnxruntime would run it on the 8-bit integers in its slow "
    "channels-first kernel; with distinct input and output scales it runs in float between "
    "the conversions"
)
UNFUSED_NOTE = (
    "onnxruntime has no integer kernel for it here and would run it in float between a "
    "DequantizeLinear and a QuantizeLinear, which would only cost time"
)
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass(frozen=True)
class RuntimeFindings:
    """Nodes of a Q/DQ model, by name, that onnxruntime would run badly.

    Attributes:
        channels_first_pools: MaxPools it runs in its slow 8-bit channels-first loop.
        unfused: Quantized weighted ops it runs in float between the conversions.
        integer_kernels: Node name -> the integer op onnxruntime runs it as (``QLinear*``),
            for every node it fused with the conversions around it.
    """

    channels_first_pools: list[str] = field(default_factory=list)
    unfused: list[str] = field(default_factory=list)
    integer_kernels: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        """Whether the plan should change (``integer_kernels`` only informs the report)."""
        return bool(self.channels_first_pools or self.unfused)


def runtime_findings(qdq_model: onnx.ModelProto) -> RuntimeFindings:
    """Ask onnxruntime how it would run ``qdq_model`` and report what int8 does not pay for."""
    optimized = optimized_model(qdq_model)
    return RuntimeFindings(
        _channels_first_pools(qdq_model, optimized),
        _unfused(qdq_model, optimized),
        _integer_kernels(qdq_model, optimized),
    )


def _integer_kernels(qdq_model: onnx.ModelProto, optimized: onnx.ModelProto) -> dict[str, str]:
    ours = {node.name for node in all_nodes(qdq_model.graph) if node.name}
    return {
        node.name: node.op_type
        for node in all_nodes(optimized.graph)
        if node.name in ours and node.op_type.startswith("QLinear")
    }


def _channels_first_pools(qdq_model: onnx.ModelProto, optimized: onnx.ModelProto) -> list[str]:
    integers = {
        node.output[0] for node in all_nodes(qdq_model.graph) if node.op_type == "QuantizeLinear"
    }
    ours = {node.name for node in all_nodes(qdq_model.graph) if node.op_type == "MaxPool"}
    return [
        node.name
        for node in _default_domain(optimized, "MaxPool")
        if node.name in ours and {node.input[0], node.output[0]} & integers
    ]


def _unfused(qdq_model: onnx.ModelProto, optimized: onnx.ModelProto) -> list[str]:
    dequantized = {
        node.output[0] for node in all_nodes(qdq_model.graph) if node.op_type == "DequantizeLinear"
    }
    quantized = {
        node.name: node.op_type
        for node in all_nodes(qdq_model.graph)
        if node.op_type in WEIGHTED_OPS and node.name and set(node.input) & dequantized
    }
    return [
        node.name
        for node in _default_domain(optimized, *WEIGHTED_OPS)
        if quantized.get(node.name) == node.op_type
    ]


def _default_domain(model: onnx.ModelProto, *op_types: str) -> list[onnx.NodeProto]:
    return [
        node
        for node in all_nodes(model.graph)
        if node.op_type in op_types and node.domain in ("", "ai.onnx")
    ]
