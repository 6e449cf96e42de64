"""Fold a constant scale or shift after a convolution into its weights and bias.

Exporters often write a BatchNormalization, or a layer scale, as plain arithmetic: Paddle's
PP-LCNetV3 follows each Conv with ``Mul(c)`` then ``Add(d)``, and a traced PyTorch CRNN carries
its BatchNorm as ``Mul``/``Add`` with ``[1, C, 1, 1]`` constants. Quantized as they stand, each
becomes an integer Mul and Add with its own rounding; folded, they cost nothing:

    y = (W * x + b) * c + d  =  (c * W) * x + (c * b + d)      (per output channel)

``Div(x, c)`` is ``Mul(x, 1 / c)``, ``Sub(x, d)`` is ``Add(x, -d)``, and an inference-mode
BatchNormalization is one of each. Nodes are folded in graph order, so PP-OCR's detector head
(``ConvTranspose``, a bias ``Add``, then a BatchNormalization) folds into one ConvTranspose.
The constant must be a scalar or hold one value per output channel on the channel axis
(``[C, 1, 1]``, ``[1, C, 1, 1]``).

Guarantees: outputs equal the original's up to float32 rounding; the folded node's output name
is kept. Refused, with the reason recorded: a Conv output read by anything else, a weight or
bias that is not constant, a constant that varies along another axis.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qconv.decisions import DecisionLog
from qconv.passes._graph import Namer, constant_array, node_name
from qconv.passes.fold_batchnorm import PASS as BN_PASS
from qconv.passes.fold_batchnorm import BatchNormParams, batchnorm_params, fold_into_producer

PASS = "fold_affine"
AFFINE = ("Mul", "Div", "Add", "Sub", "BatchNormalization")
CONVOLUTIONS = ("Conv", "ConvTranspose")


class FoldAffinePass(ir.passes.InPlacePass):
    """Fold Mul/Div/Add/Sub by per-channel constants, and BatchNormalization, into the Conv or
    ConvTranspose that feeds them, in graph order (so a BN after a folded bias Add folds too)."""

    def __init__(self, decisions: DecisionLog | None = None) -> None:
        super().__init__()
        self.decisions = decisions or DecisionLog()

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        namer = Namer(graph)
        modified = False
        for node in [n for n in graph if n.op_type in AFFINE and n.domain in ("", "ai.onnx")]:
            conv = _conv_input(node)
            if conv is None:
                continue
            names = (node_name(conv), node_name(node))
            params, reason = _params(node, conv)
            if params is None:
                if node.op_type != "BatchNormalization":  # fold_batchnorm says why, later
                    self.decisions.refused(PASS, names, reason)
                continue
            fold_into_producer(graph, namer, conv, node, params)
            reported_as = BN_PASS if node.op_type == "BatchNormalization" else PASS
            self.decisions.applied(reported_as, names, f"folded {node.op_type} into {conv.op_type}")
            modified = True
        return ir.passes.PassResult(model, modified)


def _conv_input(node: ir.Node) -> ir.Node | None:
    """The Conv/ConvTranspose producing ``node``'s data input, when its other inputs are
    constants."""
    data = node.inputs[0]
    producer = data.producer() if data is not None else None
    if producer is None or producer.op_type not in CONVOLUTIONS:
        return None
    if any(constant_array(value) is None for value in node.inputs[1:]):
        return None
    return producer


def _params(node: ir.Node, conv: ir.Node) -> tuple[BatchNormParams | None, str]:
    weight = constant_array(conv.inputs[1])
    if weight is None:
        return None, f"the {conv.op_type} weight is not a constant initializer"
    bias = conv.inputs[2] if len(conv.inputs) > 2 else None
    if bias is not None and constant_array(bias) is None:
        return None, f"the {conv.op_type} bias is not a constant initializer"
    if len(conv.outputs[0].uses()) != 1 or conv.outputs[0].is_graph_output():
        return None, f"the {conv.op_type} output has other readers besides the {node.op_type}"
    if node.op_type == "BatchNormalization":
        params = batchnorm_params(node)
        return params, "" if params is not None else "BN is not a constant inference-mode BN"
    values = _per_channel(constant_array(node.inputs[1]), _channels(conv, weight), weight.ndim)
    if values is None:
        return None, f"the {node.op_type} constant is not one value per output channel"
    if node.op_type in ("Mul", "Div"):
        if node.op_type == "Div" and not np.all(values):
            return None, "the Div constant has zeros"
        scale = values if node.op_type == "Mul" else 1.0 / values
        return BatchNormParams(scale=scale, shift=np.zeros_like(scale)), ""
    shift = values if node.op_type == "Add" else -values
    return BatchNormParams(scale=np.ones_like(shift), shift=shift), ""


def _channels(conv: ir.Node, weight: np.ndarray) -> int:
    if conv.op_type == "ConvTranspose":  # weight [C_in, C_out / group, k...]
        return weight.shape[1] * conv.attributes.get_int("group", 1)
    return weight.shape[0]


def _per_channel(constant: np.ndarray, channels: int, rank: int) -> np.ndarray | None:
    """``constant`` as ``channels`` float64 values, if it broadcasts along the channel axis only.

    The Conv output has ``rank`` axes, channels on axis 1; a constant of rank ``k`` lines up
    with the output's last ``k`` axes, so its channel axis (if any) is ``k - rank + 1``.
    """
    if constant.size == 1:
        return np.full(channels, float(constant.reshape(())), np.float64)
    axis = constant.ndim - rank + 1
    if constant.ndim > rank or axis < 0 or constant.shape[axis] != channels:
        return None
    if constant.size != channels:
        return None
    return constant.reshape(channels).astype(np.float64)
