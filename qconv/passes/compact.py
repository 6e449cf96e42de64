"""Store each distinct constant once and leave out convolution attributes equal to their defaults.

Quantization gives every tensor a scale and a zero point, and many are equal (zero points of 0
or 128, scales a Relu shares with its input, Clip bounds). onnxruntime merges equal scalar
initializers itself when it loads a model, but the file carries every copy: on a small model
(PP-OCR's 0.56 MB text classifier) they and spelled-out default attributes are a few percent of
the int8 file.

Constant folding can also copy one weight into every subgraph that reads it (Silero VAD's LSTM
weights, shared by two nested If branches, came out as four 528 KB initializers, making the int8
model larger than the float one): copies in several graphs become one in the main graph.

Guarantees: the computation is unchanged. Merged initializers have the same data type, shape
and bytes; an initializer that is also a graph input (a caller may override it) or a graph
output is never merged. Removed attributes equal what ONNX assumes when they are absent.
"""

from __future__ import annotations

import onnx_ir as ir

from qconv.passes._graph import Namer

CONVOLUTIONS = ("Conv", "QLinearConv", "ConvInteger")
# attribute -> predicate on its value that says it is the default
_DEFAULTS = {
    "dilations": lambda value: all(v == 1 for v in value),
    "strides": lambda value: all(v == 1 for v in value),
    "pads": lambda value: all(v == 0 for v in value),
    "group": lambda value: value == 1,
    "auto_pad": lambda value: value == "NOTSET",
}


class CompactPass(ir.passes.InPlacePass):
    """Merge identical initializers and drop default convolution attributes."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        merged = _merge_identical_initializers(model)
        dropped = sum(_drop_default_attributes(node) for node in model.graph.all_nodes())
        return ir.passes.PassResult(model, bool(merged or dropped))


def _merge_identical_initializers(model: ir.Model) -> int:
    """Point readers of each duplicate initializer at one copy; returns how many went.

    The copy kept is the main graph's, if it holds one; otherwise the first one found moves up
    to the main graph, which every subgraph sees (the same weights folded inside both branches
    of an If).
    """
    # Only initializers of one type and shape can be equal: read the bytes of those alone
    # (reading a tensor's bytes copies them, and a large model's big tables have no twin).
    alike: dict[tuple, list[tuple[ir.Graph, ir.Value]]] = {}
    for graph in model.graphs():
        overridable = {v.name for v in graph.inputs} | {v.name for v in graph.outputs}
        for name, value in graph.initializers.items():
            if name in overridable or value.const_value is None:
                continue
            tensor = value.const_value
            alike.setdefault((tensor.dtype, tuple(tensor.shape)), []).append((graph, value))
    taken = _all_names(model)
    merged = 0
    for copies in alike.values():
        if len(copies) < 2:
            continue
        by_bytes: dict[bytes, list[tuple[ir.Graph, ir.Value]]] = {}
        for graph, value in copies:
            by_bytes.setdefault(value.const_value.numpy().tobytes(), []).append((graph, value))
        for twins in by_bytes.values():
            if len(twins) > 1:
                merged += _merge(model, twins, taken)
    return merged


def _merge(model: ir.Model, twins: list[tuple[ir.Graph, ir.Value]], taken: set[str]) -> int:
    keeper_graph, keeper = next(((g, v) for g, v in twins if g is model.graph), twins[0])
    for graph, value in twins:
        if value is not keeper:
            value.replace_all_uses_with(keeper)
            graph.initializers.pop(value.name)
    if keeper_graph is not model.graph:  # only subgraphs held it: it moves up
        keeper_graph.initializers.pop(keeper.name)
        # In the main graph its name must not clash with a value of any other subgraph.
        if keeper.name in taken - {value.name for _, value in twins}:
            keeper.name = Namer(taken=taken).fresh(keeper.name)
            taken.add(keeper.name)
        model.graph.register_initializer(keeper)
    return len(twins) - 1


def _all_names(model: ir.Model) -> set[str]:
    names: set[str] = set()
    for graph in model.graphs():
        names.update(v.name for v in graph.inputs if v.name)
        names.update(graph.initializers)
        for node in graph:
            names.update(v.name for v in node.outputs if v.name)
    return names


def _drop_default_attributes(node: ir.Node) -> int:
    if node.domain not in ("", "ai.onnx") or node.op_type not in CONVOLUTIONS:
        return 0
    default = [
        name
        for name, attr in node.attributes.items()
        if name in _DEFAULTS and _DEFAULTS[name](attr.value)
    ]
    for name in default:
        node.attributes.pop(name)
    return len(default)
