"""Make any tensor of a model, including one inside an If/Loop/Scan body, a graph output.

onnxruntime only returns graph outputs, so calibration and fidelity measurements run a copy of
the model whose outputs include the tensors they watch. A main-graph tensor is simply appended
to the outputs. A tensor inside a control-flow body is carried out one level at a time:

* ``Loop`` and ``Scan``: it becomes a new scan output of the body, so the node returns its
  values of every iteration stacked along a new first axis (statistics over all iterations);
* ``If``: it becomes a new output of the branch that computes it, and the other branch returns
  an empty float tensor in its place (an empty tensor adds nothing to statistics).

The node's new output is then a tensor of the enclosing graph and is carried out the same way,
up to the main graph. Bodies whose values change shape between iterations cannot be stacked;
onnxruntime reports that when the model runs.

Guarantees: the original outputs keep their names and positions and compute the same values;
the input model is not modified.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from qconv.passes._graph import Namer

STACKING_OPS = ("Loop", "Scan")


@dataclass(frozen=True)
class _Owner:
    """Where a subgraph sits: the node owning it, the attribute holding it, and the body."""

    node: onnx.NodeProto
    attribute: str
    body: onnx.GraphProto


def expose(
    model: onnx.ModelProto, tensors: Sequence[str]
) -> tuple[onnx.ModelProto, dict[str, str]]:
    """A copy of ``model`` returning ``tensors`` too, and tensor name -> graph output name.

    Tensors that no graph of the model computes are left out of the mapping.
    """
    exposed = copy.deepcopy(model)
    graph = exposed.graph
    homes = _tensor_homes(graph, ())
    names = _model_names(exposed)
    outputs = {o.name for o in graph.output}
    mapping: dict[str, str] = {}
    for tensor in dict.fromkeys(tensors):
        if tensor not in homes:
            continue
        name = tensor
        for owner in reversed(homes[tensor]):  # innermost body first
            name = _lift(name, owner, names)
        if name not in outputs:
            graph.output.append(onnx.ValueInfoProto(name=name))
            outputs.add(name)
        mapping[tensor] = name
    return exposed, mapping


def _lift(name: str, owner: _Owner, names: Namer) -> str:
    """Make ``name`` an output of ``owner.body`` and return the node's new output for it."""
    node = owner.node
    if name in {v.name for v in [*owner.body.output, *owner.body.input]}:
        # a body output listed twice comes back empty from onnxruntime: copy it
        copied = names.fresh(f"{name}__copy")
        owner.body.node.append(helper.make_node("Identity", [name], [copied]))
        name = copied
    owner.body.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    if node.op_type == "If":
        other = "else_branch" if owner.attribute == "then_branch" else "then_branch"
        _append_empty_output(_graph_attribute(node, other), names)
    elif node.op_type == "Scan":
        _extend_scan_attributes(node)
    lifted = names.fresh(f"{name}__exposed")
    node.output.append(lifted)
    return lifted


def _append_empty_output(branch: onnx.GraphProto, names: Namer) -> None:
    empty = names.fresh("qconv_empty")
    value = numpy_helper.from_array(np.zeros(0, np.float32))
    branch.node.append(helper.make_node("Constant", [], [empty], value=value))
    branch.output.append(helper.make_tensor_value_info(empty, onnx.TensorProto.FLOAT, None))


def _extend_scan_attributes(node: onnx.NodeProto) -> None:
    """A new Scan output needs an entry in the per-output attributes that are present."""
    for attribute in node.attribute:
        if attribute.name in ("scan_output_axes", "scan_output_directions"):
            attribute.ints.append(0)


def _graph_attribute(node: onnx.NodeProto, name: str) -> onnx.GraphProto:
    return next(a.g for a in node.attribute if a.name == name)


def _tensor_homes(
    graph: onnx.GraphProto, owners: tuple[_Owner, ...]
) -> dict[str, tuple[_Owner, ...]]:
    """Each tensor computed under ``graph`` and the bodies, outermost first, that enclose it.

    A graph's own tensors win over same-named ones deeper down; bodies of ops other than
    If/Loop/Scan are not entered (their values cannot be carried out).
    """
    homes: dict[str, tuple[_Owner, ...]] = {}
    for node in graph.node:
        for output in node.output:
            homes.setdefault(output, owners)
    for value in graph.input:
        homes.setdefault(value.name, owners)
    for node in graph.node:
        if node.op_type not in ("If", *STACKING_OPS) or node.domain not in ("", "ai.onnx"):
            continue
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                inner = (*owners, _Owner(node, attribute.name, attribute.g))
                for name, chain in _tensor_homes(attribute.g, inner).items():
                    homes.setdefault(name, chain)
    return homes


def _model_names(model: onnx.ModelProto) -> Namer:
    """A namer that avoids every value name of every graph of ``model``."""
    return Namer(taken=_value_names(model.graph))


def _value_names(graph: onnx.GraphProto) -> set[str]:
    names = {v.name for v in [*graph.input, *graph.output]}
    names.update(t.name for t in graph.initializer)
    for node in graph.node:
        names.update(node.output)
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                names |= _value_names(attribute.g)
    return names
