"""Store each distinct constant once and leave out convolution attributes equal to their defaults.

Quantization gives every tensor a scale and a zero point, and many are equal (zero points of 0
or 128, scales a Relu shares with its input, Clip bounds). onnxruntime merges equal scalar
initializers itself when it loads a model, but the file carries every copy: on a small model
(PP-OCR's 0.56 MB text classifier) they and spelled-out default attributes are a few percent of
the int8 file.

Guarantees: the computation is unchanged. Merged initializers have the same data type, shape
and bytes; an initializer that is also a graph input (a caller may override it) or a graph
output is never merged. Removed attributes equal what ONNX assumes when they are absent.
Only the main graph's initializers are merged; subgraphs see them unchanged.
"""

from __future__ import annotations

import onnx_ir as ir

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
        merged = _merge_identical_initializers(model.graph)
        dropped = sum(_drop_default_attributes(node) for node in model.graph.all_nodes())
        return ir.passes.PassResult(model, bool(merged or dropped))


def _merge_identical_initializers(graph: ir.Graph) -> int:
    """Point readers of each duplicate initializer at its first copy; returns how many went."""
    overridable = {v.name for v in graph.inputs} | {v.name for v in graph.outputs}
    # Only initializers of one type and shape can be equal: read the bytes of those alone
    # (reading a tensor's bytes copies them, and a large model's big tables have no twin).
    alike: dict[tuple, list[ir.Value]] = {}
    for name, value in graph.initializers.items():
        if name in overridable or value.const_value is None:
            continue
        tensor = value.const_value
        alike.setdefault((tensor.dtype, tuple(tensor.shape)), []).append(value)
    duplicates: list[ir.Value] = []
    for values in alike.values():
        if len(values) < 2:
            continue
        first: dict[bytes, ir.Value] = {}
        for value in values:
            key = value.const_value.numpy().tobytes()
            if key in first:
                value.replace_all_uses_with(first[key])
                duplicates.append(value)
            else:
                first[key] = value
    for value in duplicates:
        graph.initializers.pop(value.name)
    return len(duplicates)


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
