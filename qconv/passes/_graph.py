"""Small graph helpers shared by the passes (reading constants, adding initializers, naming)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx_ir as ir


def constant_array(value: ir.Value | None) -> np.ndarray | None:
    """The value's data when it is a constant initializer that no feed can override."""
    if value is None or value.const_value is None or value.is_graph_input():
        return None
    return value.const_value.numpy()


def excluded(node: ir.Node, exclude: Iterable[str]) -> bool:
    """Whether ``exclude`` (the user's --exclude list) names ``node`` or its op type."""
    return node.name in exclude or node.op_type in exclude


def node_name(node: ir.Node) -> str:
    """A printable name for a node, even an anonymous one."""
    return node.name or f"<{node.op_type}>"


class Namer:
    """Hands out value and node names that are unused in a graph (or among ``taken``)."""

    def __init__(self, graph: ir.Graph | None = None, taken: Iterable[str] = ()) -> None:
        self._taken: set[str] = set(taken)
        if graph is None:
            return
        for node in graph.all_nodes():
            self._taken.update(v.name for v in node.outputs if v.name)
            if node.name:
                self._taken.add(node.name)
        self._taken.update(v.name for v in graph.inputs if v.name)
        self._taken.update(graph.initializers)

    def is_free(self, name: str) -> bool:
        return name not in self._taken

    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self._taken:
            name, k = f"{base}_{k}", k + 1
        self._taken.add(name)
        return name


def add_initializer(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    """Register ``array`` as a new initializer named ``name`` (which must be unused)."""
    tensor = ir.tensor(np.array(array, order="C"), name=name)  # keeps 0-d arrays scalar
    value = ir.Value(
        name=name, const_value=tensor, shape=ir.Shape(array.shape), type=ir.TensorType(tensor.dtype)
    )
    graph.register_initializer(value)
    return value


def single_consumer(value: ir.Value) -> ir.Node | None:
    """The only node reading ``value``, or None when it has several readers or is an output."""
    consumers = value.consumers()
    if len(consumers) != 1 or value.is_graph_output():
        return None
    return consumers[0]


def bypass(node: ir.Node, source: ir.Value) -> None:
    """Make every reader of ``node``'s first output read ``source`` instead, keeping output names.

    When the output is a graph output, ``source`` takes over its name so the model's interface is
    unchanged.
    """
    redirect(node.outputs[0], source)


def redirect(output: ir.Value, source: ir.Value) -> None:
    """Make every reader of ``output`` read ``source``; a graph output keeps its name."""
    if output.is_graph_output():
        name = output.name
        output.replace_all_uses_with(source, replace_graph_outputs=True)
        output.name = None
        source.name = name
    else:
        output.replace_all_uses_with(source)
    source.type = source.type or output.type
    source.shape = source.shape or output.shape
