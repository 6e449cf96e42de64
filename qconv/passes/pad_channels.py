"""Pad depthwise convolutions to a channel count onnxruntime's fast int8 kernel accepts.

onnxruntime runs an int8 depthwise convolution with its vectorised kernel (MLAS ``ConvSym``,
symmetric int8 weights) only when the channel count is a multiple of 16; any other count falls
back to a generic loop. Measured on this machine (1 thread, 5x5 depthwise on a 2x96 map), 200
channels took 0.084 ms in int8 against 0.024 ms in float, 208 channels 0.054 ms; PP-OCR's text
direction classifier has eight such convolutions (8, 24, 40, 88, 104 and 200 channels), enough
to make its int8 model slower than its float one.

The pass widens each such convolution, and every tensor that must keep its channel count, to
the next multiple of 16 with channels that are zero where they are read:

* a *channel region* is grown from the depthwise convolution: tensors whose axis 1 must have the
  same length. It crosses channel-wise ops (activations, Add/Mul/Sub/Div, pools, other depthwise
  convolutions, and the squeeze-and-excitation gate that multiplies a tensor by per-channel
  values) and stops at ordinary convolutions, which produce the region (their extra output
  filters are zero) or read it (their weights for the extra input channels are zero);
* extra channels of a producing Conv are exactly 0; the ops inside the region turn a finite
  value into a finite value (per-channel constants are padded with 0 for Add/Sub and 1 for
  Mul/Div), and a reading Conv multiplies them by zero weights, so every tensor outside the
  region is unchanged.

A convolution reading a graph input whose channel count is not a multiple of 4 (an image's three
colours) misses the same kernel, whose input channels come in fours: the input gets a Pad node
adding zero channels and the weight zero entries for them (0.068 -> 0.045 ms for a 3x3 stride-2
convolution of a 3-channel image in int8, measured as above).

Guarantees: the model's outputs equal the original's up to float32 rounding; no graph input or
output changes shape. A region that reaches anything else (a graph input or output, a Reshape,
a Concat, a Gemm, an op of another domain, a tensor of unknown shape) is left alone, with the
reason recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from qconv.decisions import DecisionLog
from qconv.passes._graph import Namer, add_initializer, constant_array, node_name
from qconv.passes.float_stem import stays_float

PASS = "pad_channels"
CHANNEL_MULTIPLE = 16
INPUT_CHANNEL_MULTIPLE = 4
UNARY = ("Relu", "Clip", "HardSigmoid", "HardSwish", "Sigmoid", "Tanh", "LeakyRelu", "Identity")
BINARY = ("Add", "Sub", "Mul", "Div")
POOLS = ("GlobalAveragePool", "GlobalMaxPool", "AveragePool", "MaxPool")
PAD_VALUE = {"Add": 0.0, "Sub": 0.0, "Mul": 1.0, "Div": 1.0}


class NotPaddable(Exception):
    """The region reaches something that cannot take extra channels."""


@dataclass
class _Region:
    """Tensors of one channel count that must be widened together, and the nodes touched."""

    channels: int
    tensors: set[ir.Value] = field(default_factory=set)
    producers: set[ir.Node] = field(default_factory=set)  # Conv: extra output filters
    readers: set[ir.Node] = field(default_factory=set)  # Conv: extra input channels
    members: set[ir.Node] = field(default_factory=set)  # channel-wise ops inside


class PadChannelsPass(ir.passes.InPlacePass):
    """Widen depthwise convolutions whose channel count the int8 kernel handles slowly."""

    def __init__(self, exclude: tuple[str, ...] = (), decisions: DecisionLog | None = None):
        super().__init__()
        self.exclude = exclude
        self.decisions = decisions or DecisionLog()

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        namer = Namer(graph)
        done: set[ir.Node] = set()
        modified = False
        for node in list(graph):
            if self._pads_image_input(node, model.opset_imports.get("", 1)):
                channels = node.inputs[0].shape[1]
                _pad_graph_input(graph, namer, node, _round_up(channels, INPUT_CHANNEL_MULTIPLE))
                self.decisions.applied(
                    PASS,
                    (node_name(node),),
                    f"input {channels} -> {_round_up(channels, INPUT_CHANNEL_MULTIPLE)} channels "
                    "(zero channels added by a Pad) for onnxruntime's vectorised int8 kernel",
                )
                modified = True
            if node in done or not self._wants_padding(node):
                continue
            channels = _depthwise_channels(node)
            try:
                region = _grow(node, channels)
            except NotPaddable as exc:
                self.decisions.refused(PASS, (node_name(node),), str(exc))
                done.add(node)
                continue
            width = _round_up(channels, CHANNEL_MULTIPLE)
            _widen(graph, namer, region, width)
            done |= region.members
            self.decisions.applied(
                PASS,
                tuple(sorted(node_name(n) for n in region.members | region.producers)),
                f"{channels} -> {width} channels so that onnxruntime's vectorised int8 "
                "depthwise kernel applies",
            )
            modified = True
        return ir.passes.PassResult(model, modified)

    def _pads_image_input(self, node: ir.Node, opset: int) -> bool:
        if stays_float(node, self.exclude) or opset < 11:
            return False
        if not _is_plain_conv(node) or not node.inputs[0].is_graph_input():
            return False
        shape = node.inputs[0].shape
        if shape is None or len(shape) != 4 or not isinstance(shape[1], int):
            return False
        extra = _round_up(shape[1], INPUT_CHANNEL_MULTIPLE) - shape[1]
        # One zero channel completes an RGB image; padding one channel to four would quadruple
        # the weight for no measurable gain.
        return extra > 0 and 3 * extra <= shape[1]

    def _wants_padding(self, node: ir.Node) -> bool:
        if stays_float(node, self.exclude):
            return False
        channels = _depthwise_channels(node)
        return channels is not None and channels % CHANNEL_MULTIPLE != 0


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _is_default_domain(node: ir.Node) -> bool:
    return node.domain in ("", "ai.onnx")


def _conv_weight(node: ir.Node) -> np.ndarray | None:
    """The constant 4-D weight of a Conv whose bias, if any, is constant too."""
    if node.op_type != "Conv" or not _is_default_domain(node) or len(node.inputs) < 2:
        return None
    weight = constant_array(node.inputs[1])
    if weight is None or weight.ndim != 4:
        return None
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    if bias is not None and constant_array(bias) is None:
        return None
    return weight


def _depthwise_channels(node: ir.Node) -> int | None:
    """C for a Conv with C groups of one input and one output channel each, else None."""
    weight = _conv_weight(node)
    group = node.attributes.get_int("group", 1)
    if weight is None or group == 1 or weight.shape[0] != group or weight.shape[1] != 1:
        return None
    return group


def _is_plain_conv(node: ir.Node) -> bool:
    return _conv_weight(node) is not None and node.attributes.get_int("group", 1) == 1


def _grow(seed: ir.Node, channels: int) -> _Region:
    """The channel region around the depthwise Conv ``seed``, or NotPaddable."""
    region = _Region(channels)
    region.members.add(seed)
    pending = [seed.inputs[0], seed.outputs[0]]
    while pending:
        value = pending.pop()
        if value in region.tensors:
            continue
        _check_shape(value, channels)
        region.tensors.add(value)
        pending += _visit_producer(value, region)
        for consumer in value.consumers():
            pending += _visit_consumer(consumer, value, region)
    return region


def _check_shape(value: ir.Value, channels: int) -> None:
    if value.is_graph_input() or value.is_graph_output():
        raise NotPaddable(f"tensor {value.name!r} is a graph input or output")
    shape = value.shape
    if shape is None or len(shape) != 4 or shape[1] != channels:
        raise NotPaddable(f"tensor {value.name!r} is not a known 4-D tensor of {channels} channels")


def _visit_producer(value: ir.Value, region: _Region) -> list[ir.Value]:
    node = value.producer()
    if node is None:
        raise NotPaddable(f"tensor {value.name!r} has no producing node")
    if _is_plain_conv(node):
        region.producers.add(node)
        return []
    return _enter(node, region)


def _visit_consumer(node: ir.Node, value: ir.Value, region: _Region) -> list[ir.Value]:
    if _is_plain_conv(node) and node.inputs[0] is value and value not in node.inputs[1:]:
        region.readers.add(node)
        return []
    return _enter(node, region)


def _enter(node: ir.Node, region: _Region) -> list[ir.Value]:
    """Take a channel-wise node into the region; its data tensors join it."""
    if node in region.members:
        return []
    if not _is_default_domain(node) or not _is_channelwise(node, region.channels):
        raise NotPaddable(f"{node_name(node)} ({node.op_type}) cannot take extra channels")
    region.members.add(node)
    data = [v for v in node.inputs[: _data_input_count(node)] if v is not None]
    return [v for v in data if constant_array(v) is None] + list(node.outputs[:1])


def _data_input_count(node: ir.Node) -> int:
    return 2 if node.op_type in BINARY else 1


def _is_channelwise(node: ir.Node, channels: int) -> bool:
    if node.op_type in UNARY or node.op_type in POOLS:
        return len(node.outputs) == 1
    if _depthwise_channels(node) == channels:
        return True
    if node.op_type in BINARY:
        return all(_channel_constant(v, channels) is not False for v in node.inputs)
    return False


def _channel_constant(value: ir.Value, channels: int) -> np.ndarray | bool | None:
    """For a constant operand: its array if scalar or per channel, False if neither.

    None for a non-constant operand (a tensor, checked as part of the region).
    """
    array = constant_array(value)
    if array is None:
        return None
    if array.size == 1:
        return array
    axis = array.ndim - 3  # a constant lines up with the last axes of an NCHW tensor
    if axis < 0 or array.shape[axis] != channels or array.size != channels:
        return False
    return array


def _widen(graph: ir.Graph, namer: Namer, region: _Region, width: int) -> None:
    extra = width - region.channels
    for node in region.producers:
        _pad_input(graph, namer, node, 1, axis=0, extra=extra, fill=0.0)
        _pad_input(graph, namer, node, 2, axis=0, extra=extra, fill=0.0)
    for node in region.readers:
        _pad_input(graph, namer, node, 1, axis=1, extra=extra, fill=0.0)
    for node in region.members:
        if _depthwise_channels(node) is not None:
            _pad_input(graph, namer, node, 1, axis=0, extra=extra, fill=0.0)
            _pad_input(graph, namer, node, 2, axis=0, extra=extra, fill=0.0)
            node.attributes["group"] = ir.AttrInt64("group", width)
        elif node.op_type in BINARY:
            for index, operand in enumerate(node.inputs):
                array = constant_array(operand)
                if array is not None and array.size > 1:
                    axis = array.ndim - 3
                    _pad_input(graph, namer, node, index, axis, extra, PAD_VALUE[node.op_type])
    for value in region.tensors:
        dims = list(value.shape)
        dims[1] = width
        value.shape = ir.Shape(dims)


def _pad_graph_input(graph: ir.Graph, namer: Namer, conv: ir.Node, width: int) -> None:
    """Feed ``conv`` its graph input with zero channels appended up to ``width``."""
    source = conv.inputs[0]
    extra = width - source.shape[1]
    base = node_name(conv).strip("<>")
    pads = add_initializer(
        graph, namer.fresh(f"{base}_input_pads"), np.array([0, 0, 0, 0, 0, extra, 0, 0], np.int64)
    )
    pad = ir.node("Pad", [source, pads], name=namer.fresh(f"{base}_input_pad"))
    padded = pad.outputs[0]
    padded.name = namer.fresh(f"{source.name}_padded")
    padded.dtype = source.dtype
    padded.shape = ir.Shape([source.shape[0], width, *list(source.shape)[2:]])
    graph.insert_before(conv, pad)
    conv.replace_input_with(0, padded)
    _pad_input(graph, namer, conv, 1, axis=1, extra=extra, fill=0.0)


def _pad_input(
    graph: ir.Graph, namer: Namer, node: ir.Node, index: int, axis: int, extra: int, fill: float
) -> None:
    """Give ``node`` a copy of its constant input ``index`` with ``extra`` entries on ``axis``."""
    if index >= len(node.inputs) or node.inputs[index] is None:
        return
    array = constant_array(node.inputs[index])
    widths = [(0, 0)] * array.ndim
    widths[axis] = (0, extra)
    padded = np.pad(array, widths, constant_values=np.asarray(fill, array.dtype))
    base = node_name(node).strip("<>")
    node.replace_input_with(index, add_initializer(graph, namer.fresh(f"{base}_padded"), padded))
