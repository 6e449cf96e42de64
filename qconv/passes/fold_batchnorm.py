"""Fold inference-mode BatchNormalization into the Conv, ConvTranspose, Gemm or MatMul before it.

BatchNormalization computes ``y = (x - mean) * s + beta`` with ``s = gamma / sqrt(var + eps)``
per channel (axis 1). When ``x = W * a + b`` is a linear layer whose output channel ``c`` is
produced by the weight slice ``W[c]``, then

    y = (s[c] * W[c]) * a + (b[c] - mean[c]) * s[c] + beta[c]

so the layer with weight ``W' = s * W`` (scaled along its output-channel axis) and bias
``b' = (b - mean) * s + beta`` replaces both nodes. Output-channel axes: Conv 0; ConvTranspose 1
(within each group); Gemm 0 with ``transB=1`` and 1 without; MatMul the last axis of a 2-D
weight, with the bias added by a new Add.

Guarantees: outputs equal the float model's up to float32 rounding; the BN output name is kept.
Refused, with the reason recorded: BN in training mode or with non-constant parameters; a
producer that is not a supported linear op, has a non-constant weight, or whose output is read
by anything other than the BN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from qconv.decisions import DecisionLog
from qconv.passes._graph import Namer, add_initializer, bypass, constant_array, node_name

PASS = "fold_batchnorm"
FOLDABLE_PRODUCERS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass(frozen=True)
class BatchNormParams:
    """The per-channel affine map ``y = x * scale + shift`` that a BN node computes."""

    scale: np.ndarray
    shift: np.ndarray


class FoldBatchNormPass(ir.passes.InPlacePass):
    """Fold BatchNormalization into the linear op that produces its input."""

    def __init__(self, decisions: DecisionLog | None = None) -> None:
        super().__init__()
        self.decisions = decisions or DecisionLog()

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        namer = Namer(graph)
        modified = False
        for bn in [n for n in graph if n.op_type == "BatchNormalization"]:
            producer = bn.inputs[0].producer() if bn.inputs[0] is not None else None
            names = (node_name(producer), node_name(bn)) if producer else (node_name(bn),)
            reason = _refusal(bn, producer)
            if reason:
                self.decisions.refused(PASS, names, reason)
                continue
            _fold(graph, namer, producer, bn)
            self.decisions.applied(PASS, names, f"folded {bn.op_type} into {producer.op_type}")
            modified = True
        return ir.passes.PassResult(model, modified)


def _refusal(bn: ir.Node, producer: ir.Node | None) -> str:
    if bn.attributes.get_int("training_mode", 0) or any(o.uses() for o in bn.outputs[1:]):
        return "BN runs in training mode"
    if _bn_params(bn) is None:
        return "BN parameters are not constant initializers"
    if producer is None or producer.op_type not in FOLDABLE_PRODUCERS:
        found = producer.op_type if producer else "a graph input"
        return f"BN input comes from {found}, not Conv/ConvTranspose/Gemm/MatMul"
    if len(bn.inputs[0].uses()) != 1 or bn.inputs[0].is_graph_output():
        return f"{producer.op_type} output has other readers besides the BN"
    weight = constant_array(producer.inputs[1])
    if weight is None:
        return f"{producer.op_type} weight is not a constant initializer"
    bias = producer.inputs[2] if len(producer.inputs) > 2 else None
    if bias is not None and constant_array(bias) is None:
        return f"{producer.op_type} bias is not a constant initializer"
    return _shape_refusal(producer, weight, constant_array(bias))


def _shape_refusal(producer: ir.Node, weight: np.ndarray, bias: np.ndarray | None) -> str:
    if producer.op_type == "MatMul" and weight.ndim != 2:
        return "MatMul weight is not 2-D"
    if producer.op_type == "MatMul" and _rank(producer.inputs[0]) != 2:
        return "MatMul input is not known to be 2-D, so BN's channel axis is not its last axis"
    channels = weight.shape[0] if producer.op_type == "Conv" else None
    if producer.op_type == "Gemm":
        channels = weight.shape[0 if producer.attributes.get_int("transB", 0) else 1]
    if bias is not None and channels is not None and bias.size not in (1, channels):
        return f"{producer.op_type} bias of shape {list(bias.shape)} is not per channel"
    return ""


def _rank(value: ir.Value) -> int | None:
    return value.shape.rank() if value.shape is not None else None


def batchnorm_params(bn: ir.Node) -> BatchNormParams | None:
    """The affine map an inference-mode BN computes, or None (training mode, non-constant)."""
    if bn.attributes.get_int("training_mode", 0) or any(o.uses() for o in bn.outputs[1:]):
        return None
    return _bn_params(bn)


def _bn_params(bn: ir.Node) -> BatchNormParams | None:
    arrays = [constant_array(v) for v in bn.inputs[1:5]]
    if len(arrays) != 4 or any(a is None for a in arrays):
        return None
    gamma, beta, mean, var = (a.astype(np.float64) for a in arrays)
    eps = bn.attributes.get_float("epsilon", 1e-5)
    scale = gamma / np.sqrt(var + eps)
    return BatchNormParams(scale=scale, shift=beta - mean * scale)


def _fold(graph: ir.Graph, namer: Namer, producer: ir.Node, bn: ir.Node) -> None:
    fold_into_producer(graph, namer, producer, bn, _bn_params(bn))


def fold_into_producer(
    graph: ir.Graph, namer: Namer, producer: ir.Node, node: ir.Node, params: BatchNormParams
) -> None:
    """Fold ``node``, which computes ``params`` per output channel of ``producer``, into it."""
    bn = node
    weight = constant_array(producer.inputs[1]).astype(np.float64)
    folded_weight = _scale_output_channels(producer, weight, params.scale)
    bias = _bias(producer, len(params.scale))
    folded_bias = bias * params.scale + params.shift
    dtype = constant_array(producer.inputs[1]).dtype
    base = node_name(producer).strip("<>")
    new_weight = add_initializer(
        graph, namer.fresh(f"{base}_W_bnfold"), folded_weight.astype(dtype)
    )
    new_bias = add_initializer(graph, namer.fresh(f"{base}_B_bnfold"), folded_bias.astype(dtype))
    producer.replace_input_with(1, new_weight)
    if producer.op_type == "MatMul":
        source = _append_bias_add(graph, namer, producer, new_bias)
    else:
        _set_bias(producer, new_bias)
        source = bn.inputs[0]
    bypass(bn, source)
    graph.remove(bn, safe=True)


def _scale_output_channels(producer: ir.Node, weight: np.ndarray, scale: np.ndarray) -> np.ndarray:
    if producer.op_type == "Conv":
        return weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
    if producer.op_type == "ConvTranspose":
        group = producer.attributes.get_int("group", 1)
        grouped = weight.reshape((group, weight.shape[0] // group, *weight.shape[1:]))
        per_group = scale.reshape((group, 1, weight.shape[1], *(1,) * (weight.ndim - 2)))
        return (grouped * per_group).reshape(weight.shape)
    if producer.op_type == "Gemm":
        alpha = producer.attributes.get_float("alpha", 1.0)
        trans_b = producer.attributes.get_int("transB", 0)
        scaled = weight * (scale[:, None] if trans_b else scale[None, :])
        return alpha * scaled
    return weight * scale[None, :]  # MatMul with a [K, N] weight


def _bias(producer: ir.Node, channels: int) -> np.ndarray:
    bias_value = producer.inputs[2] if len(producer.inputs) > 2 else None
    if bias_value is None:
        return np.zeros(channels)
    bias = constant_array(bias_value).astype(np.float64)
    if producer.op_type == "Gemm":
        bias = producer.attributes.get_float("beta", 1.0) * bias
    return np.broadcast_to(bias.reshape(-1) if bias.size == channels else bias, (channels,))


def _set_bias(producer: ir.Node, bias: ir.Value) -> None:
    if producer.op_type == "Gemm":
        producer.attributes["alpha"] = ir.AttrFloat32("alpha", 1.0)
        producer.attributes["beta"] = ir.AttrFloat32("beta", 1.0)
    if len(producer.inputs) < 3:
        producer.resize_inputs(3)
    producer.replace_input_with(2, bias)


def _append_bias_add(graph: ir.Graph, namer: Namer, matmul: ir.Node, bias: ir.Value) -> ir.Value:
    product = matmul.outputs[0]
    add = ir.node("Add", [product, bias], name=namer.fresh(f"{node_name(matmul)}_bnfold_add"))
    add.outputs[0].name = namer.fresh(f"{product.name}_biased")
    graph.insert_after(matmul, add)
    return add.outputs[0]
