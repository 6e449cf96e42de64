"""Rewrite a planned float graph into QDQ form.

Given a :class:`QuantizationPlan` and parameters for its activations:

1. folded Relu/Clip nodes are removed (their range already does their work); a Mul/Div by a
   positive scalar becomes a DequantizeLinear of its input's integers with the scale scaled;
   an Add/Sub of a scalar becomes a DequantizeLinear of its input's integers with the zero
   point moved, and a Relu/Clip after it a Clip of those integers (the only nodes that run on
   integers between a QuantizeLinear and a DequantizeLinear);
2. weights are stored as int8 initializers (per channel along the plan's axis) read through a
   DequantizeLinear; biases become int32 with ``scale = input_scale * weight_scale``; other
   constant inputs are stored quantized like activations;
3. every quantized activation gets exactly one QuantizeLinear -> DequantizeLinear pair right after
   its producer, and every reader (quantized or not) reads the DequantizeLinear output, so a
   tensor never goes through two pairs. Graph outputs keep their names and stay float.

Guarantees: graph inputs and outputs keep their names, dtypes and meaning; the model differs from
the float one only by quantization error (bounded by each tensor's scale inside its range).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from qconv.config import QuantizeConfig
from qconv.decisions import DecisionLog
from qconv.passes._graph import Namer, add_initializer, bypass, constant_array
from qconv.plan import QuantizationPlan, WeightSpec, clamp_bounds
from qconv.qparams import (
    QuantParams,
    compute_qparams,
    numpy_dtype,
    quantize,
    quantize_bias,
    weight_qparams,
)

PASS = "insert_qdq"
# A constant in integer form: its data, scale and (optional) zero point initializers.
StoredConstant = tuple[ir.Value, ir.Value, ir.Value | None]
# (factor, offset, low, high): what a DequantizeLinear of moved integers stands for
Offset = tuple[float, float, float | None, float | None]


@dataclass(frozen=True)
class QuantizedConstant:
    """A constant stored in integer form.

    Attributes:
        node: The node that reads it.
        tensor: The original float initializer's name.
        kind: ``weight``, ``bias`` or ``constant``.
        params: Its quantization parameters.
        dequantized: The DequantizeLinear output that replaced it as the node's input.
    """

    node: str
    tensor: str
    kind: str
    params: QuantParams
    dequantized: str = ""


class InsertQDQPass(ir.passes.InPlacePass):
    """Apply a quantization plan as QuantizeLinear/DequantizeLinear pairs."""

    def __init__(
        self,
        plan: QuantizationPlan,
        params: dict[ir.Value, QuantParams],
        config: QuantizeConfig,
        decisions: DecisionLog | None = None,
    ) -> None:
        super().__init__()
        self.plan = plan
        self.params = params
        self.config = config
        self.decisions = decisions or DecisionLog()
        self.constants: list[QuantizedConstant] = []
        self._weight_cache: dict[tuple[ir.Value, int | None], QuantParams] = {}
        self._stored: dict[
            tuple, tuple[tuple[ir.Value, ir.Value, ir.Value | None], QuantParams]
        ] = {}
        self._activation_inits: dict[ir.Value, tuple[ir.Value, ir.Value | None]] = {}
        # float-model tensor name -> name of the DequantizeLinear output that approximates it
        self.dequantized: dict[str, str] = {}
        # DequantizeLinear output -> (low, high) of the Relu/Clip folded into its range
        self.folded_bounds: dict[str, tuple[float | None, float | None]] = {}
        self._bounds: dict[ir.Value, tuple[float | None, float | None]] = {}
        # float value -> the QuantizeLinear output holding its integers
        self._quantized: dict[ir.Value, ir.Value] = {}
        self.rescale_factors: dict[ir.Value, float] = {}
        # DequantizeLinear replacing a Mul/Div -> factor from its QuantizeLinear's float input
        self.rescaled: dict[str, float] = {}
        # DequantizeLinear replacing an Add/Sub (and Relu/Clip) -> (factor, offset, low, high):
        # its value is clip(factor * float input of its QuantizeLinear + offset, low, high)
        self.offsets: dict[str, Offset] = {}
        self._offsets: dict[ir.Value, Offset] = {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        # Activation scales and zero points live in the main graph, which every subgraph sees.
        self.main = model.graph
        self.namer = Namer(model.graph)
        opset = model.opset_imports.get("", 13)
        for activation in self.plan.folded:
            bounds = clamp_bounds(activation, opset)
            assert bounds is not None, f"{activation.name} was folded without constant bounds"
            self._bounds[activation.inputs[0]] = bounds
            bypass(activation, activation.inputs[0])
            activation.graph.remove(activation, safe=True)
        # Each weighted node's float weight, read before its input is rewired to a DQ output.
        weighted = [spec.node for spec in self.plan.constants if spec.kind != "constant"]
        self._weights = {node: node.inputs[1] for node in weighted}
        for spec in self.plan.constants:
            self._quantize_constant(spec.node.graph, spec)
        for value in list(self.plan.activations) + list(self.plan.shared):
            self._insert_pair(_defining_graph(value), value, self.params[value])
        self._read_moved_integers()
        for graph in model.graphs():
            removed = _remove_unread_dequantize(graph)
            self.dequantized = {k: v for k, v in self.dequantized.items() if v not in removed}
            _remove_unused_initializers(graph)
            graph.sort()
        return ir.passes.PassResult(model, True)

    # -- activations -------------------------------------------------------------------------

    def _insert_pair(self, graph: ir.Graph, value: ir.Value, qp: QuantParams) -> None:
        # Short generated names: on small models, long names would outweigh the int8 weights.
        base = self.namer.fresh("qa")
        float_name = self.plan.activations.get(value, value.name)
        root = self.plan.root(value)
        if root not in self._activation_inits:  # values sharing a scale share the initializers
            self._activation_inits[root] = self._qparam_initializers(self.main, base, qp)
        scale, zero = self._activation_inits[root]
        q = ir.node("QuantizeLinear", [value, scale, zero])
        dq = ir.node("DequantizeLinear", [q.outputs[0], scale, zero])
        q.outputs[0].name = f"{base}_q"
        q.outputs[0].type = ir.TensorType(_ir_dtype(qp))
        q.outputs[0].shape = value.shape
        self._quantized[value] = q.outputs[0]
        dq.outputs[0].name = f"{base}_dq"
        _name_after_output(self.namer, q, dq)
        self.dequantized[float_name] = dq.outputs[0].name
        if value in self._bounds:
            self.folded_bounds[dq.outputs[0].name] = self._bounds[value]
        dq.outputs[0].type = value.type
        dq.outputs[0].shape = value.shape
        for use in list(value.uses()):
            if use.node is not q:
                use.node.replace_input_with(use.idx, dq.outputs[0])
        if value.is_graph_output() and not value.is_graph_input():  # an input passed through
            _hand_over_graph_output(graph, value, dq.outputs[0], self.namer)  # stays as it is
            self.dequantized[float_name] = dq.outputs[0].name
            if value in self._bounds:
                self.folded_bounds[dq.outputs[0].name] = self._bounds[value]
        producer = value.producer()
        if producer is not None:
            graph.insert_after(producer, [q, dq])
        else:
            graph.insert_before(graph[0], [q, dq])

    def _read_moved_integers(self) -> None:
        """Remove the Mul/Div, Add/Sub and Relu/Clip nodes whose outputs are their inputs'
        integers read differently, each once its input's integers exist."""
        pending = [
            *((v, self._rescale, args) for v, args in self.plan.rescaled.items()),
            *((v, self._shift, args) for v, args in self.plan.shifted.items()),
            *((v, self._clamp, args) for v, args in self.plan.clamped.items()),
        ]
        while pending:
            ready = [item for item in pending if item[2][0] in self._quantized]
            if not ready:
                raise ValueError("a removed node reads a tensor that was never quantized")
            for value, method, args in ready:
                method(value, *args)
            pending = [item for item in pending if item not in ready]

    def _rescale(self, value: ir.Value, source: ir.Value, factor: float) -> None:
        """Replace the Mul/Div producing ``value`` by a DequantizeLinear of its input's
        integers with the scale times ``factor``."""
        quantized = self._quantized[source]
        self._quantized[value] = quantized
        self.rescale_factors[value] = self.rescale_factors.get(source, 1.0) * factor
        dequantized = self._read_integers(value, quantized, self.params[value])
        if source in self._offsets:  # clip(F x + c, lo, hi) * f = clip(F f x + c f, ...)
            self._offsets[value] = _scaled_offset(self._offsets[source], factor)
            self.offsets[dequantized] = self._offsets[value]
            return
        self.rescaled[dequantized] = self.rescale_factors[value]
        if source in self._bounds:  # a folded Relu/Clip applies before the factor
            self._bounds[value] = self._bounds[source]
            self.folded_bounds[dequantized] = self._bounds[source]

    def _shift(self, value: ir.Value, source: ir.Value, offset: float) -> None:
        """Replace the Add/Sub producing ``value`` by a DequantizeLinear of its input's
        integers with the zero point moved."""
        quantized = self._quantized[source]
        self._quantized[value] = quantized
        factor = self.rescale_factors.get(source, 1.0)  # factors are positive
        low, high = self._bounds.get(source, (None, None))  # a Relu folded into the source
        self._offsets[value] = (
            factor,
            offset,
            None if low is None else low * factor + offset,
            None if high is None else high * factor + offset,
        )
        dequantized = self._read_integers(value, quantized, self.params[value])
        self.offsets[dequantized] = self._offsets[value]

    def _clamp(
        self, value: ir.Value, source: ir.Value, low: float | None, high: float | None
    ) -> None:
        """Replace the Relu/Clip producing ``value`` by a Clip of ``source``'s integers."""
        qp = self.params[value]
        bounds = []
        for bound, default in ((low, qp.qtype.qmin), (high, qp.qtype.qmax)):
            steps = default if bound is None else np.rint(bound / qp.scale) + qp.zero_point
            integer = np.clip(steps, qp.qtype.qmin, qp.qtype.qmax).astype(qp.zero_point.dtype)
            bounds.append(add_initializer(self.main, self.namer.fresh("qc"), integer))
        clip = ir.node("Clip", [self._quantized[source], *bounds])
        clip.outputs[0].name = self.namer.fresh("qc_q")
        clip.outputs[0].type = ir.TensorType(_ir_dtype(qp))
        clip.outputs[0].shape = value.shape
        value.producer().graph.insert_after(value.producer(), clip)
        self._quantized[value] = clip.outputs[0]
        factor, offset, before_low, before_high = self._offsets[source]
        self._offsets[value] = (
            factor,
            offset,
            _tighter(before_low, low, max),
            _tighter(before_high, high, min),
        )
        original = value.producer().name
        dequantized = self._read_integers(value, clip.outputs[0], qp)
        clip.name = original or clip.name  # the report names the Relu/Clip it replaces
        self.offsets[dequantized] = self._offsets[value]

    def _read_integers(self, value: ir.Value, integers: ir.Value, qp: QuantParams) -> str:
        """Make ``value``'s readers read ``integers`` dequantized with ``qp``, remove the float
        node that computed ``value``, and return the DequantizeLinear output's name."""
        scale, zero = self._qparam_initializers(self.main, self.namer.fresh("qa"), qp)
        dq = ir.node("DequantizeLinear", [integers, scale, zero])
        dq.outputs[0].name = self.namer.fresh(f"{scale.name[:-2]}_dq")
        _name_after_output(self.namer, dq)
        dq.outputs[0].type = value.type
        dq.outputs[0].shape = value.shape
        node = value.producer()
        node.graph.insert_after(node, dq)
        for use in list(value.uses()):
            use.node.replace_input_with(use.idx, dq.outputs[0])
        if value.is_graph_output():
            _hand_over_graph_output(node.graph, value, dq.outputs[0], self.namer)
        node.graph.remove(node, safe=True)
        self.dequantized[value.name] = dq.outputs[0].name
        return dq.outputs[0].name

    def _qparam_initializers(
        self, graph: ir.Graph, base: str, qp: QuantParams, zero_needed: bool = True
    ) -> tuple[ir.Value, ir.Value | None]:
        scale = add_initializer(graph, f"{base}_s", qp.scale)
        if not zero_needed:
            return scale, None  # DequantizeLinear reads an absent zero point as 0
        return scale, add_initializer(graph, f"{base}_z", qp.zero_point)

    # -- constants ---------------------------------------------------------------------------

    def _quantize_constant(self, graph: ir.Graph, spec: WeightSpec) -> None:
        value = spec.node.inputs[spec.index]
        key = self._stored_key(graph, spec)
        if key not in self._stored:
            self._stored[key] = self._store_constant(graph, spec, constant_array(value))
        stored, qp = self._stored[key]
        inputs = [v for v in stored if v is not None]
        attributes = {"axis": qp.axis} if qp.axis is not None else {}
        dq = ir.node("DequantizeLinear", inputs, attributes=attributes)
        dq.outputs[0].name = self.namer.fresh(f"{inputs[0].name[:-2]}_dq")
        _name_after_output(self.namer, dq)
        dq.outputs[0].type = ir.TensorType(ir.DataType.FLOAT)
        dq.outputs[0].shape = ir.Shape(inputs[0].shape)
        spec.node.replace_input_with(spec.index, dq.outputs[0])
        graph.insert_before(spec.node, dq)
        self.constants.append(
            QuantizedConstant(spec.node.name or "", value.name, spec.kind, qp, dq.outputs[0].name)
        )

    def _stored_key(self, graph: ir.Graph, spec: WeightSpec) -> tuple:
        """What a stored constant depends on: a weight shared by several nodes (an unrolled
        RNN's steps) is stored once; a bias also depends on the weight and the input scale."""
        key = (id(graph), spec.node.inputs[spec.index], spec.kind, spec.axis)
        if spec.kind == "bias":
            key += (self._weights[spec.node], self.plan.root(spec.node.inputs[0]))
        return key

    def _store_constant(
        self, graph: ir.Graph, spec: WeightSpec, array: np.ndarray
    ) -> tuple[StoredConstant, QuantParams]:
        """Register ``array`` in integer form; return (data, scale, zero point) and params."""
        if spec.kind == "bias":
            stored, qp = self._bias(spec, array)
        elif spec.kind == "weight":
            qp = self._weight_params(spec)
            stored = quantize(array, qp)
        else:
            qp = compute_qparams(
                array.min(initial=0.0), array.max(initial=0.0), self.config.activation_type, False
            )
            stored = quantize(array, qp)
        base = self.namer.fresh("qw")
        quantized = add_initializer(graph, f"{base}_w", stored)
        scale, zero = self._qparam_initializers(graph, base, qp, _needs_zero_point(spec, qp))
        return (quantized, scale, zero), qp

    def _weight_params(self, spec: WeightSpec) -> QuantParams:
        key = (self._weights[spec.node], spec.axis)
        if key not in self._weight_cache:
            weight = constant_array(key[0])
            self._weight_cache[key] = weight_qparams(weight, self.config.weight_type, spec.axis)
        return self._weight_cache[key]

    def _bias(self, spec: WeightSpec, bias: np.ndarray) -> tuple[np.ndarray, QuantParams]:
        weight_qp = self._weight_params(WeightSpec(spec.node, 1, spec.axis, "weight"))
        input_qp = self.params[self.plan.root(spec.node.inputs[0])]
        channels = weight_qp.scale.size if weight_qp.per_channel else None
        flat = bias.reshape(-1)
        if channels and flat.size == 1:
            flat = np.broadcast_to(flat, (channels,))
        qb = quantize_bias(flat, input_qp.scale, weight_qp.scale)
        if qb.saturated:
            self.decisions.note(
                f"bias of {spec.node.name}: {qb.saturated} values exceed int32 and were clamped"
            )
        axis = 0 if weight_qp.per_channel else None
        zero = np.zeros(qb.scale.shape, dtype=np.int32)
        scale = qb.scale if axis is not None else np.float32(qb.scale.reshape(-1)[0])
        zero = zero if axis is not None else np.int32(0)
        return qb.values, QuantParams(np.asarray(scale), np.asarray(zero), weight_qp.qtype, axis)


def _name_after_output(namer: Namer, *nodes: ir.Node) -> None:
    """Name each conversion after its output (unique among node names too): onnx-ir would
    otherwise give it a long name (``node_DequantizeLinear_112``), bytes that count on small
    models."""
    for node in nodes:
        node.name = namer.fresh(node.outputs[0].name)


def _scaled_offset(offset: Offset, factor: float) -> Offset:
    """``offset`` multiplied by a positive ``factor``."""
    scale, shift, low, high = offset
    return (
        scale * factor,
        shift * factor,
        None if low is None else low * factor,
        None if high is None else high * factor,
    )


def _tighter(first: float | None, second: float | None, pick) -> float | None:
    """The tighter of two optional clamp bounds (``pick`` is max for lows, min for highs)."""
    if first is None or second is None:
        return second if first is None else first
    return pick(first, second)


def _needs_zero_point(spec: WeightSpec, qp: QuantParams) -> bool:
    """Whether a constant's DequantizeLinear must carry its zero point explicitly.

    An absent zero point means 0, which is exact for int32 biases and symmetric int8 weights;
    leaving it out saves a byte per channel. onnxruntime however fuses Gemm and MatMul into
    QGemm/QLinearMatMul only when the weight's zero point is present, so those keep it.
    """
    if np.any(qp.zero_point):
        return True
    if spec.kind == "bias":
        return False
    return spec.node.op_type not in ("Conv", "ConvTranspose")


def _defining_graph(value: ir.Value) -> ir.Graph:
    """The graph whose node computes ``value``, or whose input it is."""
    producer = value.producer()
    graph = producer.graph if producer is not None else value.graph
    if graph is None:
        raise ValueError(f"tensor {value.name!r} belongs to no graph")
    return graph


def _ir_dtype(qp: QuantParams) -> ir.DataType:
    return ir.DataType.from_numpy(np.dtype(numpy_dtype(qp.qtype)))


def _hand_over_graph_output(
    graph: ir.Graph, value: ir.Value, dq_out: ir.Value, namer: Namer
) -> None:
    """Make the DequantizeLinear output the graph output, under the original name."""
    name = value.name
    for index, output in enumerate(graph.outputs):
        if output is value:
            graph.outputs[index] = dq_out
    value.name = namer.fresh(f"{name}_float")
    dq_out.name = name


def _remove_unread_dequantize(graph: ir.Graph) -> set[str]:
    """Drop DequantizeLinear nodes whose only reader was a removed Mul/Div; return their
    output names."""
    removed = set()
    for node in list(graph):
        if node.op_type != "DequantizeLinear":
            continue
        output = node.outputs[0]
        if not output.uses() and not output.is_graph_output():
            removed.add(output.name)
            graph.remove(node, safe=True)
    return removed


def _remove_unused_initializers(graph: ir.Graph) -> None:
    for name in list(graph.initializers):
        value = graph.initializers[name]
        if not value.uses() and not value.is_graph_output() and not value.is_graph_input():
            del graph.initializers[name]
