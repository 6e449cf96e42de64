"""Turn a QDQ graph into QOperator form: QLinear* and integer operators on quantized tensors.

Each ``DequantizeLinear -> op -> QuantizeLinear`` group whose op has an integer form in
onnxruntime's CPU kernels is replaced by that form reading the quantized tensors directly:

    Conv -> QLinearConv            MatMul -> QLinearMatMul          Gemm -> QGemm (com.microsoft)
    Add/Mul -> QLinearAdd/QLinearMul (com.microsoft)                Concat -> QLinearConcat
    GlobalAveragePool/AveragePool -> QLinearGlobalAveragePool/QLinearAveragePool (com.microsoft)
    MaxPool, Reshape, Flatten, Transpose, Squeeze, Unsqueeze, Slice, Gather, Resize -> the same
    op on the integer tensor (their input and output share a scale)

Groups that do not match (ConvTranspose, ops next to float regions) keep their Q/DQ nodes, so the
model stays valid and equivalent. If/Loop/Scan bodies keep their QDQ form (onnxruntime fuses
it into the same kernels when it loads the model). DequantizeLinear nodes left without readers
are removed.

Guarantees: the computation is the one the QDQ graph describes (onnxruntime runs the same
kernels for both); graph inputs and outputs are unchanged.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from qconv.decisions import DecisionLog
from qconv.passes._graph import Namer, add_initializer, node_name

PASS = "to_qoperator"
MS_DOMAIN = "com.microsoft"
QLINEAR_FORMS = {
    "Conv": ("QLinearConv", ""),
    "MatMul": ("QLinearMatMul", ""),
    "Gemm": ("QGemm", MS_DOMAIN),
    "Add": ("QLinearAdd", MS_DOMAIN),
    "Mul": ("QLinearMul", MS_DOMAIN),
    "Concat": ("QLinearConcat", MS_DOMAIN),
    "GlobalAveragePool": ("QLinearGlobalAveragePool", MS_DOMAIN),
    "AveragePool": ("QLinearAveragePool", MS_DOMAIN),
}
# Ops that run on integer tensors unchanged, with the opset from which they accept int8/uint8.
INTEGER_PASSTHROUGH = {
    "MaxPool": 12,
    "Resize": 11,
    "Reshape": 5,
    "Flatten": 9,
    "Transpose": 1,
    "Squeeze": 1,
    "Unsqueeze": 1,
    "Slice": 10,
    "Gather": 1,
}


@dataclass(frozen=True)
class Dequantized:
    """The quantized source of a DequantizeLinear output."""

    node: ir.Node
    quantized: ir.Value
    scale: ir.Value
    zero_point: ir.Value | None


class ToQOperatorPass(ir.passes.InPlacePass):
    """Replace DQ -> op -> Q groups by their QLinear/integer equivalents."""

    def __init__(self, decisions: DecisionLog | None = None) -> None:
        super().__init__()
        self.decisions = decisions or DecisionLog()

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        self.namer = Namer(graph)
        self._zeros: dict[ir.DataType, ir.Value] = {}
        opset = model.opset_imports.get("", 13)
        modified = False
        for node in list(graph):
            if node.domain not in ("", "ai.onnx"):
                continue
            if node.op_type in QLINEAR_FORMS:
                modified |= self._convert(graph, node)
            elif opset >= INTEGER_PASSTHROUGH.get(node.op_type, 10**6):
                modified |= self._passthrough(graph, node)
        if modified:
            model.opset_imports.setdefault(MS_DOMAIN, 1)
            _remove_dead_dequantize(graph)
        return ir.passes.PassResult(model, modified)

    def _convert(self, graph: ir.Graph, node: ir.Node) -> bool:
        sources = [_dequantized(v) for v in node.inputs if v is not None]
        quantize = _only_quantize_reader(node.outputs[0])
        if any(s is None for s in sources) or quantize is None:
            if node.op_type in ("Conv", "MatMul", "Gemm"):
                self.decisions.refused(
                    PASS, (node_name(node),), "not between DequantizeLinear and QuantizeLinear"
                )
            return False
        op_type, domain = QLINEAR_FORMS[node.op_type]
        sources = [self._with_zero_point(graph, s) for s in sources]
        inputs = _qlinear_inputs(node, sources, quantize)
        replacement = ir.node(
            op_type,
            inputs,
            attributes=_attributes(node),
            domain=domain,
            name=node.name,
        )
        _replace_group(graph, node, quantize, replacement)
        return True

    def _with_zero_point(self, graph: ir.Graph, source: Dequantized) -> Dequantized:
        """QLinear ops need explicit zero points; DequantizeLinear may leave a zero one out."""
        if source.zero_point is not None or source.quantized.dtype == ir.DataType.INT32:
            return source
        # One scalar zero serves every per-channel scale too: QLinear ops take either shape.
        dtype = source.quantized.dtype
        if dtype not in self._zeros:
            name = self.namer.fresh(f"zero_{dtype.name.lower()}")
            self._zeros[dtype] = add_initializer(graph, name, np.zeros((), dtype=dtype.numpy()))
        return dataclasses.replace(source, zero_point=self._zeros[dtype])

    def _passthrough(self, graph: ir.Graph, node: ir.Node) -> bool:
        source = _dequantized(node.inputs[0]) if node.inputs else None
        quantize = _only_quantize_reader(node.outputs[0]) if len(node.outputs) == 1 else None
        if source is None or quantize is None or not _same_params(source, quantize):
            return False
        inputs = [source.quantized, *node.inputs[1:]]
        replacement = ir.node(node.op_type, inputs, attributes=_attributes(node), name=node.name)
        _replace_group(graph, node, quantize, replacement)
        return True


def _dequantized(value: ir.Value | None) -> Dequantized | None:
    producer = value.producer() if value is not None else None
    if producer is None or producer.op_type != "DequantizeLinear":
        return None
    zero = producer.inputs[2] if len(producer.inputs) > 2 else None
    return Dequantized(producer, producer.inputs[0], producer.inputs[1], zero)


def _only_quantize_reader(value: ir.Value) -> ir.Node | None:
    readers = value.consumers()
    if len(readers) != 1 or value.is_graph_output() or readers[0].op_type != "QuantizeLinear":
        return None
    return readers[0]


def _same_params(source: Dequantized, quantize: ir.Node) -> bool:
    zero = quantize.inputs[2] if len(quantize.inputs) > 2 else None
    return source.scale is quantize.inputs[1] and source.zero_point is zero


def _qlinear_inputs(
    node: ir.Node, sources: list[Dequantized], quantize: ir.Node
) -> list[ir.Value | None]:
    y_scale, y_zero = quantize.inputs[1], quantize.inputs[2]

    def triple(s: Dequantized) -> list[ir.Value | None]:
        return [s.quantized, s.scale, s.zero_point]

    if node.op_type == "Concat":
        return [y_scale, y_zero] + [v for s in sources for v in triple(s)]
    if node.op_type in ("Conv", "Gemm"):
        bias = [sources[2].quantized] if len(sources) > 2 else []
        if node.op_type == "Gemm":
            return [*triple(sources[0]), *triple(sources[1]), *(bias or [None]), y_scale, y_zero]
        return [*triple(sources[0]), *triple(sources[1]), y_scale, y_zero, *bias]
    return [v for s in sources for v in triple(s)] + [y_scale, y_zero]


def _attributes(node: ir.Node) -> dict[str, ir.Attr]:
    attributes = {name: attr for name, attr in node.attributes.items()}
    if node.op_type == "Gemm":
        attributes.pop("beta", None)
    if node.op_type == "GlobalAveragePool":
        attributes["channels_last"] = ir.AttrInt64("channels_last", 0)
    return attributes


def _replace_group(graph: ir.Graph, node: ir.Node, quantize: ir.Node, replacement: ir.Node) -> None:
    quantized_out = quantize.outputs[0]
    new_out = replacement.outputs[0]
    new_out.type = quantized_out.type
    new_out.shape = quantized_out.shape
    name = quantized_out.name
    quantized_out.replace_all_uses_with(new_out)
    graph.insert_before(node, replacement)
    graph.remove([quantize, node], safe=True)
    new_out.name = name


def _remove_dead_dequantize(graph: ir.Graph) -> None:
    for node in list(graph):
        if node.op_type == "DequantizeLinear" and not any(
            o.uses() or o.is_graph_output() for o in node.outputs
        ):
            graph.remove(node, safe=True)
    for name in list(graph.initializers):
        value = graph.initializers[name]
        if not value.uses() and not value.is_graph_output():
            del graph.initializers[name]
