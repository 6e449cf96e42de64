"""Decide what to quantize: which nodes, which tensors, which scales are shared.

The plan reads the prepared float graph and changes nothing. Rules:

1. A node is *eligible* when its op has an integer form (see ``ROLES``), it is not excluded, its
   data tensors are float32, and its weight (and bias) are constant initializers.
2. Weighted ops (Conv, ConvTranspose, Gemm, MatMul) that are eligible are quantized: they are
   where int8 pays.
3. Ops without weights (Add, Mul, Concat, pools, shape ops) are quantized only next to a quantized
   tensor, iterating to a fixed point, so no Q/DQ pair is added inside a float-only region.
   Shape ops and MaxPool/Resize pass values through: their outputs reuse their input's scale,
   except a MaxPool marked ``OWN_SCALE`` (one onnxruntime would run in a slow 8-bit kernel).
4. A Mul or Div by a positive scalar constant next to a quantized tensor costs nothing: its
   output is the same integers read with the scale multiplied (divided) by the constant, so
   the node is removed and a DequantizeLinear with that scale takes its place.
5. An Add or Sub of a scalar constant next to a quantized tensor (HardSwish's ``x + 3``) is the
   same integers with the zero point moved: the node is removed, the input's scale is aligned
   so the constant is a whole number of steps, and a Relu/Clip reading it runs as a Clip on the
   integers. This needs asymmetric activations and an input with a scale of its own, and a
   Relu/Clip after it needs opset 12 (before it Clip takes floats only: the Add is then planned
   as an ordinary Add whose output range does the Clip's work).
6. A Relu or a Clip with lower bound 0 that is the only reader of a quantized node's output is
   folded into that output's range when activations are asymmetric: the zero point then sits at
   the bottom of the integer range, so clamping to it is exactly the Relu. Under symmetric
   activations negative values stay representable, so the Relu is kept.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from qconv.config import PerTensor, QuantizeConfig
from qconv.decisions import NodeDecision, Reason
from qconv.passes import pool_as_conv
from qconv.passes._graph import constant_array, excluded, node_name, single_consumer
from qconv.passes.float_stem import kept_float


class Role(enum.Enum):
    """How an op takes part in quantization."""

    WEIGHTED = "weighted"  # data input 0, weight 1, optional bias 2
    ELEMENTWISE = "elementwise"  # every input is data, output has its own scale
    OWN_SCALE = "own-scale"  # data inputs, output has its own scale
    SHARED = "shared"  # output reuses the scale of data input 0
    RESCALE = "rescale"  # Mul/Div by a positive scalar: output = input integers, scaled scale
    SHIFT = "shift"  # Add/Sub of a scalar: output = input integers, zero point moved


ROLES: dict[str, Role] = {
    "Conv": Role.WEIGHTED,
    "ConvTranspose": Role.WEIGHTED,
    "Gemm": Role.WEIGHTED,
    "MatMul": Role.WEIGHTED,
    "Add": Role.ELEMENTWISE,
    "Mul": Role.ELEMENTWISE,
    "Concat": Role.OWN_SCALE,
    "AveragePool": Role.OWN_SCALE,
    "GlobalAveragePool": Role.OWN_SCALE,
    "MaxPool": Role.SHARED,
    "Resize": Role.SHARED,
    "Reshape": Role.SHARED,
    "Flatten": Role.SHARED,
    "Transpose": Role.SHARED,
    "Squeeze": Role.SHARED,
    "Unsqueeze": Role.SHARED,
    "Slice": Role.SHARED,
    "Split": Role.SHARED,
    "Gather": Role.SHARED,  # picks values of input 0 (an unrolled RNN's time steps)
    "Pad": Role.SHARED,  # zeros, edge or reflected values: all on input 0's grid
}
# Clip takes 8-bit integers from this opset on (rule 5's Clip on the integers needs it).
INTEGER_CLIP_OPSET = 12
# node.meta key: a MaxPool planned with an output scale of its own (the value says why).
OWN_SCALE = "qconv.own_scale"
# node.meta key: onnxruntime's name for the integer kernel it runs a node on that the plan left
# float (a Sigmoid between a DequantizeLinear and a QuantizeLinear becomes QLinearSigmoid).
RUNS_AS = "qconv.runs_as"
# node.meta key: (Reason, detail) of a node the calibration statistics keep float
# (see qconv.calibrated_refusals).
REFUSED_AFTER_CALIBRATION = "qconv.refused_after_calibration"
FOLDABLE_ACTIVATIONS = ("Relu", "Clip")
# Ops of a model that is quantized already (dynamic quantization writes the first three).
ALREADY_INTEGER = (
    "ConvInteger",
    "MatMulInteger",
    "DynamicQuantizeLinear",
    "QLinearConv",
    "QLinearMatMul",
    "QuantizeLinear",
    "DequantizeLinear",
)
# Ops whose subgraphs are planned like the main graph.
CONTROL_FLOW = ("If", "Loop", "Scan")


@dataclass(frozen=True)
class WeightSpec:
    """A constant input quantized ahead of time.

    Attributes:
        node: The node reading it.
        index: Its input index on that node.
        axis: Per-channel axis, or None for per tensor.
        kind: ``weight``, ``bias`` (int32, scale from input and weight) or ``constant``
            (a non-weight constant quantized like an activation).
    """

    node: ir.Node
    index: int
    axis: int | None
    kind: str


@dataclass
class QuantizationPlan:
    """What the rewrite will do.

    Attributes:
        decisions: One entry per node of the graph, in graph order.
        activations: Each quantized activation value and the calibrated tensor whose range it
            takes (its own name, or a folded Relu's output).
        shared: Values that reuse another value's quantization parameters.
        constants: Weights, biases and constant inputs to quantize.
        folded: Relu/Clip nodes to remove because their range does their work.
        rescaled: Output of a Mul/Div by a positive scalar -> (its data input, the factor its
            scale is multiplied by); the node is removed, in graph order.
        shifted: Output of an Add/Sub of a scalar -> (its data input, the constant added); the
            node is removed, in graph order.
        clamped: Output of a Relu/Clip reading a shifted value -> (that value, low, high); it
            becomes a Clip on the integers, in graph order.
        fallbacks: Value -> the tensor calibrated in case the plan changes after calibration:
            a shifted value whose node must be planned as an ordinary Add after all (when
            moving the zero point would cost resolution), or a MaxPool output that gets a
            scale of its own (see :mod:`qconv.ort_layout`).
        notes: Plan-wide remarks for the report.
        int8_nodes: The nodes whose decision is a quantized one (``decisions`` name them).
    """

    decisions: list[NodeDecision] = field(default_factory=list)
    activations: dict[ir.Value, str] = field(default_factory=dict)
    shared: dict[ir.Value, ir.Value] = field(default_factory=dict)
    constants: list[WeightSpec] = field(default_factory=list)
    folded: list[ir.Node] = field(default_factory=list)
    rescaled: dict[ir.Value, tuple[ir.Value, float]] = field(default_factory=dict)
    shifted: dict[ir.Value, tuple[ir.Value, float]] = field(default_factory=dict)
    clamped: dict[ir.Value, tuple[ir.Value, float | None, float | None]] = field(
        default_factory=dict
    )
    fallbacks: dict[ir.Value, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    int8_nodes: list[ir.Node] = field(default_factory=list)

    @property
    def calibration_tensors(self) -> list[str]:
        """Names of the float-model tensors whose statistics the plan needs, in graph order."""
        return list(dict.fromkeys([*self.activations.values(), *self.fallbacks.values()]))

    def root(self, value: ir.Value) -> ir.Value:
        """The value whose parameters ``value`` uses (itself unless it shares a scale)."""
        while value in self.shared:
            value = self.shared[value]
        return value

    def quantized_nodes(self) -> list[str]:
        return [d.node for d in self.decisions if d.reason.quantized]


def make_plan(
    model: ir.Model, config: QuantizeConfig, unshifted: frozenset[ir.Node] = frozenset()
) -> QuantizationPlan:
    """Plan the quantization of ``model``'s graph and of its If/Loop/Scan subgraphs.

    Each graph is planned on its own with the same rules; a value of an outer graph read inside
    a subgraph is one tensor with one Q/DQ pair. Subgraphs of other ops (custom control flow)
    stay float, each node with the reason. Add/Sub nodes in ``unshifted`` are planned as
    ordinary Adds rather than as moved zero points.
    """
    opset = model.opset_imports.get("", 13)
    plan = QuantizationPlan()
    for graph in calibratable_graphs(model.graph):
        _Planner(graph, config, opset, unshifted).plan(plan)
    for node, owner in _uncalibratable_nodes(model.graph):
        plan.decisions.append(
            NodeDecision(
                node_name(node),
                node.op_type,
                Reason.SUBGRAPH,
                f"inside a subgraph of {node_name(owner)} ({owner.op_type}), whose tensors "
                "qconv cannot calibrate",
            )
        )
    if opset < 13 and not isinstance(config.weight_granularity, PerTensor):
        plan.notes.append(
            f"opset {opset} cannot express per-channel Q/DQ (needs 13); weights are "
            "quantized per tensor"
        )
    return plan


def calibratable_graphs(graph: ir.Graph) -> list[ir.Graph]:
    """``graph`` and, depth first, the bodies of its If/Loop/Scan nodes (their tensors can be
    exposed for calibration, see :mod:`qconv.calibrate.expose`)."""
    graphs = [graph]
    for node in graph:
        if node.op_type in CONTROL_FLOW and node.domain in ("", "ai.onnx"):
            for subgraph in _subgraphs(node):
                graphs += calibratable_graphs(subgraph)
    return graphs


def _uncalibratable_nodes(graph: ir.Graph) -> list[tuple[ir.Node, ir.Node]]:
    """Nodes inside subgraphs of ops other than If/Loop/Scan, with the op owning each."""
    found = []
    for node in graph:
        controlled = node.op_type in CONTROL_FLOW and node.domain in ("", "ai.onnx")
        for subgraph in _subgraphs(node):
            if controlled:
                found += _uncalibratable_nodes(subgraph)
            else:
                found += [(inner, node) for inner in subgraph.all_nodes()]
    return found


def _subgraphs(node: ir.Node) -> list[ir.Graph]:
    graphs = []
    for attribute in node.attributes.values():
        if attribute.type is ir.AttributeType.GRAPH:
            graphs.append(attribute.value)
        elif attribute.type is ir.AttributeType.GRAPHS:
            graphs += list(attribute.value)
    return graphs


class _Planner:
    def __init__(
        self, graph: ir.Graph, config: QuantizeConfig, opset: int, unshifted: frozenset[ir.Node]
    ) -> None:
        self.graph = graph
        self.config = config
        self.opset = opset
        self.unshifted = unshifted
        self.refusals: dict[ir.Node, tuple[Reason, str]] = {}
        self.quantized: set[ir.Node] = set()
        # SHIFT/RESCALE nodes planned as ordinary elementwise ops (see _demote_offsets)
        self.demoted: set[ir.Node] = set()
        self.clamps: dict[ir.Node, ir.Node] = {}  # SHIFT node -> the Relu/Clip it feeds

    def plan(self, plan: QuantizationPlan) -> None:
        """Add this graph's nodes, tensors and decisions to ``plan``."""
        nodes = list(self.graph)
        for node in nodes:
            refusal = self._refusal(node)
            if refusal:
                self.refusals[node] = refusal
        self._refuse_readers_of_unfusable_pools(nodes)
        shifts = {n for n in nodes if _role(n) is Role.SHIFT}
        self.demoted = shifts & self.unshifted
        if self.config.symmetric_activations:  # the zero point must be free to move
            self.demoted = shifts
        if self.opset < INTEGER_CLIP_OPSET:  # no Clip on integers: an Add the Clip folds into
            self.demoted |= {n for n in shifts if self._clamp_reader(n) is not None}
        self.quantized = {n for n in nodes if n not in self.refusals and _role(n) is Role.WEIGHTED}
        self._propagate(nodes)
        self._demote_offsets(nodes, self._fold_activations(nodes))
        folded = self._fold_activations(nodes)  # a demoted SHIFT's Relu/Clip folds as usual
        self.clamps = {n: c for n in nodes if (c := self._clamp_reader(n)) is not None}
        self._collect_tensors(plan, nodes, folded)
        plan.folded += list(folded.values())
        decisions = [self._decision(n, folded) for n in nodes]
        plan.decisions += decisions
        plan.int8_nodes += [n for n, d in zip(nodes, decisions, strict=True) if d.reason.quantized]

    def _role(self, node: ir.Node) -> Role | None:
        role = _role(node)
        return Role.ELEMENTWISE if node in self.demoted else role

    # -- eligibility -------------------------------------------------------------------------

    def _refusal(self, node: ir.Node) -> tuple[Reason, str] | None:
        if excluded(node, self.config.exclude):
            return Reason.EXCLUDED, "listed in --exclude"
        if refusal := node.meta.get(REFUSED_AFTER_CALIBRATION):
            return refusal
        role = _role(node)
        if role is not None:  # a faster-in-float claim is about float32 kernels
            for value in _data_inputs(node, role) + list(node.outputs[: _data_outputs(node)]):
                if value.dtype is not None and value.dtype != ir.DataType.FLOAT:
                    return Reason.NOT_FLOAT, _not_float32(value)
        if kept_float(node):
            return Reason.FASTER_IN_FLOAT, kept_float(node)
        if _layer_norm_affine(node):
            return Reason.FASTER_IN_FLOAT, (
                "the scale or shift of a LayerNorm written out in ops (an export below opset "
                "17): onnxruntime fuses the whole chain into one float kernel, which a Q/DQ "
                "pair inside it would prevent"
            )
        if role is None and node.op_type in FOLDABLE_ACTIVATIONS:
            return Reason.NO_INTEGER_KERNEL, (
                f"a {node.op_type} is int8 only folded into the range of a quantized op before "
                "it (a Clip from 0, like ReLU6) or, after a constant Add, run on the integers; "
                "this one runs in float"
            )
        if role is None and node.op_type in ALREADY_INTEGER:
            return Reason.NOT_FLOAT, "already an integer op: this part of the model is quantized"
        if role is None:
            return Reason.NO_INTEGER_KERNEL, f"standard ONNX has no integer {node.op_type}"
        if role is Role.WEIGHTED:
            return self._weight_refusal(node)
        if node.op_type == "Pad":
            return _pad_refusal(node, self.opset)
        if node.op_type == "AveragePool":
            return _average_pool_refusal(node)
        return None

    def _refuse_readers_of_unfusable_pools(self, nodes: list[ir.Node]) -> None:
        """Keep float whatever reads a pool onnxruntime cannot run on integers.

        onnxruntime fuses any ``DequantizeLinear -> AveragePool -> QuantizeLinear`` into its
        integer pool, whatever the plan says of the pool; with quantized tensors on both sides a
        dilated pool would make a model that does not load. Its output stays float instead.
        """
        for pool in nodes:
            if pool.op_type != "AveragePool" or _average_pool_refusal(pool) is None:
                continue
            detail = (
                f"reads the output of {node_name(pool)}, which stays float: onnxruntime would "
                "run that pool on integers, in a kernel without dilations"
            )
            for reader in pool.outputs[0].consumers():
                self.refusals.setdefault(reader, (Reason.UNSUPPORTED_ATTRIBUTE, detail))

    def _weight_refusal(self, node: ir.Node) -> tuple[Reason, str] | None:
        if node.op_type == "MatMul":
            return None  # a MatMul of two activations quantizes both as activations
        if constant_array(node.inputs[1]) is None:
            return Reason.WEIGHT_NOT_CONSTANT, _not_constant("weight", node.inputs[1])
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        if bias is not None and constant_array(bias) is None:
            return Reason.WEIGHT_NOT_CONSTANT, _not_constant("bias", bias)
        if (
            node.op_type == "Gemm"
            and bias is not None
            and node.attributes.get_float("beta", 1.0) != 1.0
        ):
            return Reason.UNSUPPORTED_ATTRIBUTE, "Gemm with beta != 1 and a bias"
        if node.op_type == "Gemm" and bias is not None:
            return _gemm_bias_refusal(node)
        return None

    # -- propagation -------------------------------------------------------------------------

    def _propagate(self, nodes: list[ir.Node]) -> None:
        changed = True
        while changed:
            changed = False
            tensors = self._quantized_tensors()
            for node in nodes:
                if node in self.quantized or node in self.refusals:
                    continue
                if self._touches(node, tensors):
                    self.quantized.add(node)
                    changed = True

    def _quantized_tensors(self) -> set[ir.Value]:
        tensors: set[ir.Value] = set()
        for node in self.quantized:
            tensors.update(_data_inputs(node, self._role(node)))
            tensors.update(node.outputs[: _data_outputs(node)])
            folded = self._folded_reader(node) or self._clamp_reader(node)
            if folded is not None:
                tensors.add(folded.outputs[0])  # it will be the same quantized tensor
        return tensors

    def _folded_reader(self, node: ir.Node) -> ir.Node | None:
        """The Relu/Clip that will be folded into ``node``'s output range, if any."""
        passthrough = (Role.SHARED, Role.RESCALE, Role.SHIFT)
        if self.config.symmetric_activations or self._role(node) in passthrough:
            return None
        reader = single_consumer(node.outputs[0])
        return reader if reader is not None and self._foldable_activation(reader) else None

    def _clamp_reader(self, node: ir.Node) -> ir.Node | None:
        """The Relu/Clip that will run on the integers of a SHIFT node's output, if any."""
        if self._role(node) is not Role.SHIFT:
            return None
        reader = single_consumer(node.outputs[0])
        if reader is None or reader.op_type not in FOLDABLE_ACTIVATIONS:
            return None
        if excluded(reader, self.config.exclude):
            return None
        if any(user.graph is not reader.graph for user in reader.outputs[0].consumers()):
            return None
        return reader if clamp_bounds(reader, self.opset) is not None else None

    def _touches(self, node: ir.Node, tensors: set[ir.Value]) -> bool:
        role = self._role(node)
        inputs = _data_inputs(node, role)
        if role in (Role.SHARED, Role.RESCALE, Role.SHIFT):
            return inputs[0] in tensors
        return any(v in tensors for v in inputs) or any(v in tensors for v in node.outputs)

    # -- activation folding ------------------------------------------------------------------

    def _demote_offsets(self, nodes: list[ir.Node], folded: dict[ir.Value, ir.Node]) -> None:
        """Plan as an ordinary elementwise op a SHIFT whose input does not come (through
        Mul/Div by constants) from a tensor with a scale of its own, whose scale is aligned to
        the constant, or whose root another SHIFT aligns too."""
        replaced = {act.outputs[0]: value for value, act in folded.items()}
        roots: dict[ir.Value, ir.Value] = {}  # RESCALE output -> the tensor it scales
        moved: set[ir.Value] = set()  # shifted values and their roots
        own_scale = (Role.WEIGHTED, Role.ELEMENTWISE, Role.OWN_SCALE)
        for node in nodes:
            role = self._role(node)
            if node not in self.quantized or role not in (Role.SHIFT, Role.RESCALE):
                continue
            source = _data_inputs(node, role)[0]
            source = replaced.get(source, source)
            root = roots.get(source, source)
            if role is Role.RESCALE:
                if source in moved:
                    moved.add(node.outputs[0])
                else:
                    roots[node.outputs[0]] = root
                continue
            producer = root.producer()
            scaled = producer in self.quantized and self._role(producer) in own_scale
            if not scaled or root in moved:
                self.demoted.add(node)
                continue
            clamp = self._clamp_reader(node)
            moved.update((root, node.outputs[0]) + ((clamp.outputs[0],) if clamp else ()))

    def _fold_activations(self, nodes: list[ir.Node]) -> dict[ir.Value, ir.Node]:
        folded: dict[ir.Value, ir.Node] = {}
        for node in nodes:
            reader = self._folded_reader(node) if node in self.quantized else None
            if reader is not None:
                folded[node.outputs[0]] = reader
        return folded

    def _foldable_activation(self, node: ir.Node) -> bool:
        if node.op_type not in FOLDABLE_ACTIVATIONS or excluded(node, self.config.exclude):
            return False
        if any(reader.graph is not node.graph for reader in node.outputs[0].consumers()):
            return False  # read inside a subgraph, which is planned separately
        bounds = clamp_bounds(node, self.opset)
        return bounds is not None and bounds[0] == 0.0

    # -- tensors -----------------------------------------------------------------------------

    def _collect_tensors(
        self, plan: QuantizationPlan, nodes: list[ir.Node], folded: dict[ir.Value, ir.Node]
    ) -> None:
        # After folding, readers of a Relu's output read the folded node's output instead.
        replaced = {act.outputs[0]: value for value, act in folded.items()}
        for node in nodes:
            if node not in self.quantized:
                continue
            role = self._role(node)
            if role is Role.RESCALE:
                source = _data_inputs(node, role)[0]
                plan.rescaled[node.outputs[0]] = (replaced.get(source, source), _factor(node))
                continue
            if role is Role.SHIFT:
                source = _data_inputs(node, role)[0]
                plan.shifted[node.outputs[0]] = (replaced.get(source, source), _offset(node))
                plan.fallbacks[node.outputs[0]] = node.outputs[0].name
                clamp = self.clamps.get(node)
                if clamp is not None:
                    low, high = clamp_bounds(clamp, self.opset)
                    plan.clamped[clamp.outputs[0]] = (node.outputs[0], low, high)
                    if low == 0.0:
                        plan.fallbacks[node.outputs[0]] = clamp.outputs[0].name  # would fold
                continue
            for index, value in enumerate(node.inputs):
                value = replaced.get(value, value)
                self._add_input(plan, node, role, index, value, folded)
            for value in node.outputs[: _data_outputs(node)]:
                if role is Role.SHARED:
                    plan.shared[value] = replaced.get(node.inputs[0], node.inputs[0])
                    if node.op_type == "MaxPool":  # may get a scale of its own (ort_layout)
                        plan.fallbacks[value] = value.name
                else:
                    source = folded.get(value)
                    plan.activations[value] = source.outputs[0].name if source else value.name

    def _add_input(
        self,
        plan: QuantizationPlan,
        node: ir.Node,
        role: Role,
        index: int,
        value: ir.Value | None,
        folded: dict[ir.Value, ir.Node],
    ) -> None:
        if value is None or node.inputs[index] not in _data_inputs(node, role):
            if value is not None and role is Role.WEIGHTED and index in (1, 2):
                kind = "weight" if index == 1 else "bias"
                plan.constants.append(WeightSpec(node, index, self._weight_axis(node), kind))
            return
        if constant_array(value) is not None:
            plan.constants.append(WeightSpec(node, index, None, "constant"))
            return
        planned = (plan.shared, plan.activations, plan.rescaled, plan.shifted, plan.clamped)
        if any(value in table for table in planned):
            return
        source = folded.get(value)
        plan.activations[value] = source.outputs[0].name if source else value.name

    def _weight_axis(self, node: ir.Node) -> int | None:
        if isinstance(self.config.weight_granularity, PerTensor) or self.opset < 13:
            return None
        if node.op_type == "Conv":
            return 0
        if node.op_type == "ConvTranspose":
            return 1 if node.attributes.get_int("group", 1) == 1 else None
        if node.op_type == "Gemm":
            return 0 if node.attributes.get_int("transB", 0) else 1
        weight = constant_array(node.inputs[1])
        return weight.ndim - 1 if weight is not None and weight.ndim >= 2 else None

    # -- decisions ---------------------------------------------------------------------------

    def _decision(self, node: ir.Node, folded: dict[ir.Value, ir.Node]) -> NodeDecision:
        name = node_name(node)
        shifts = {clamp: shift for shift, clamp in self.clamps.items()}
        if node in shifts:
            detail = f"runs as a Clip on the integers after {node_name(shifts[node])}"
            return NodeDecision(name, node.op_type, Reason.CLAMPED_ON_INTEGERS, detail)
        if node in folded.values():
            producer = node.inputs[0].producer()
            return NodeDecision(
                name,
                node.op_type,
                Reason.ACTIVATION_FOLDED,
                f"folded into the output range of {node_name(producer)}",
            )
        if node in self.quantized:
            if self._role(node) is Role.SHARED:
                return NodeDecision(name, node.op_type, Reason.SHARES_INPUT_SCALE, "")
            if self._role(node) is Role.SHIFT:
                detail = f"removed: its input's zero point moves by {_offset(node):.6g} / scale"
                return NodeDecision(name, node.op_type, Reason.OFFSET_FOLDED, detail)
            if self._role(node) is Role.RESCALE:
                detail = f"removed: its input's scale is multiplied by {_factor(node):.6g}"
                return NodeDecision(name, node.op_type, Reason.SCALE_FOLDED, detail)
            return NodeDecision(name, node.op_type, Reason.QUANTIZED, _quantized_detail(node))
        if node in self.refusals:
            reason, detail = self.refusals[node]
            if runs_as := node.meta.get(RUNS_AS):
                detail += (
                    f"; onnxruntime fuses it with the conversions around it into {runs_as}, "
                    "so it runs on the integers there"
                )
            return NodeDecision(name, node.op_type, reason, detail)
        detail = "no quantized tensor next to it, so int8 would only add conversions"
        if node.op_type == "Pad" and node.inputs[0].is_graph_input():
            detail = "pads the float input (quantized right after it)"
        return NodeDecision(name, node.op_type, Reason.NO_QUANTIZED_NEIGHBOUR, detail)


def _quantized_detail(node: ir.Node) -> str:
    if node.op_type == "AveragePool":
        why_not = pool_as_conv.refusal(node)
        return pool_as_conv.DETAIL if why_not is None else f"runs as an integer pool: {why_not}"
    return node.meta.get(OWN_SCALE, "")


def op_role(node: ir.Node) -> Role | None:
    """How the plan treats ``node`` (None: it has no integer form)."""
    return _role(node)


def _role(node: ir.Node) -> Role | None:
    if node.domain not in ("", "ai.onnx"):
        return None
    if node.op_type == "MaxPool" and OWN_SCALE in node.meta:
        return Role.OWN_SCALE
    if _scalar_operand(node) is not None:
        return Role.RESCALE
    if _scalar_offset(node) is not None:
        return Role.SHIFT
    return ROLES.get(node.op_type)


def _scalar_offset(node: ir.Node) -> float | None:
    """The constant ``c`` that ``Add(x, c)``, ``Add(c, x)`` or ``Sub(x, -c)`` adds to ``x``."""
    if node.op_type not in ("Add", "Sub"):
        return None
    number = _scalar_constant(node, commutative=node.op_type == "Add")
    if number is None or number == 0.0:
        return None
    return number if node.op_type == "Add" else -number


def _scalar_constant(node: ir.Node, commutative: bool) -> float | None:
    """The finite float32 scalar that is one operand of a binary node whose other operand is
    not a constant (only the second operand unless ``commutative``)."""
    if len(node.inputs) != 2:
        return None
    for index in (1, 0) if commutative else (1,):
        array = constant_array(node.inputs[index])
        other = constant_array(node.inputs[1 - index])
        if array is None or other is not None or array.size != 1 or array.dtype != np.float32:
            continue
        number = float(array.reshape(()))
        return number if np.isfinite(number) else None
    return None


def _offset(node: ir.Node) -> float:
    offset = _scalar_offset(node)
    assert offset is not None
    return offset


def clamp_bounds(node: ir.Node, opset: int) -> tuple[float | None, float | None] | None:
    """(low, high) of a Relu or of a Clip with constant (or absent) bounds, else None.

    A Clip whose min or max is computed at run time has no bounds known here: it can be
    neither folded into a range nor run on integers."""
    if node.op_type == "Relu":
        return 0.0, None
    if opset < 11:
        return node.attributes.get_float("min", None), node.attributes.get_float("max", None)
    bounds: list[float | None] = []
    for index in (1, 2):
        value = node.inputs[index] if len(node.inputs) > index else None
        if value is None:
            bounds.append(None)
            continue
        array = constant_array(value)
        if array is None or array.size != 1:
            return None
        bounds.append(float(array.reshape(())))
    return bounds[0], bounds[1]


def _scalar_operand(node: ir.Node) -> float | None:
    """The positive constant of ``Mul(x, c)``, ``Mul(c, x)`` or ``Div(x, c)``, if it is one."""
    if node.op_type not in ("Mul", "Div"):
        return None
    number = _scalar_constant(node, commutative=node.op_type == "Mul")
    return number if number is not None and number > 0 else None


def _factor(node: ir.Node) -> float:
    """What a RESCALE node multiplies its input (and so its scale) by."""
    constant = _scalar_operand(node)
    return constant if node.op_type == "Mul" else 1.0 / constant


def _data_inputs(node: ir.Node, role: Role | None) -> list[ir.Value]:
    """The inputs that carry activations (not weights, shapes, axes or scales)."""
    if role is Role.WEIGHTED:
        if node.op_type == "MatMul" and constant_array(node.inputs[1]) is None:
            return [node.inputs[0], node.inputs[1]]
        return [node.inputs[0]]
    if role in (Role.RESCALE, Role.SHIFT):
        return [v for v in node.inputs if constant_array(v) is None]
    if role in (Role.ELEMENTWISE, Role.OWN_SCALE):
        return [v for v in node.inputs if v is not None]
    return [node.inputs[0]] if node.inputs and node.inputs[0] is not None else []


def _data_outputs(node: ir.Node) -> int:
    """How many leading outputs carry activations (MaxPool's indices do not)."""
    return len(node.outputs) if node.op_type == "Split" else 1


def _pad_refusal(node: ir.Node, opset: int) -> tuple[Reason, str] | None:
    """Padding with a constant other than 0 adds a value the input's range may not hold."""
    if node.attributes.get_string("mode", "constant") != "constant":
        return None
    if opset < 11:
        value = node.attributes.get_float("value", 0.0)
    elif len(node.inputs) > 2 and node.inputs[2] is not None:
        array = constant_array(node.inputs[2])
        value = None if array is None or array.size != 1 else float(array.reshape(()))
    else:
        value = 0.0
    if value != 0.0:
        return Reason.UNSUPPORTED_ATTRIBUTE, "Pad with a constant other than 0"
    return None


def _layer_norm_affine(node: ir.Node) -> bool:
    """Whether ``node`` is the ``Mul`` by a constant scale of ``(x - mean) / Sqrt(var + eps)``,
    or the ``Add`` of a constant shift after that Mul."""
    if node.op_type not in ("Mul", "Add") or len(node.inputs) != 2:
        return False
    constants = [constant_array(v) is not None for v in node.inputs]
    if constants.count(True) != 1:
        return False
    producer = node.inputs[constants.index(False)].producer()
    if producer is None:
        return False
    if node.op_type == "Add":
        return producer.op_type == "Mul" and _layer_norm_affine(producer)
    if producer.op_type != "Div" or len(producer.inputs) != 2:
        return False
    centred, root = (value.producer() for value in producer.inputs)
    return (
        centred is not None
        and centred.op_type == "Sub"
        and root is not None
        and root.op_type == "Sqrt"
    )


def _not_float32(value: ir.Value) -> str:
    detail = f"tensor {value.name!r} is {value.dtype.name}"
    if value.dtype.is_floating_point():
        detail += ": qconv quantizes float32 computation; convert the model to float32 first"
    return detail


def _not_constant(kind: str, value: ir.Value) -> str:
    if value.is_graph_input():
        return f"the {kind} is a graph input, which a caller may replace at run time"
    return f"the {kind} is not a constant initializer"


def _average_pool_refusal(node: ir.Node) -> tuple[Reason, str] | None:
    """onnxruntime's integer AveragePool has no dilations: a dilated pool is int8 only where
    it can run as a depthwise convolution (a model with it would not load)."""
    if all(d == 1 for d in node.attributes.get_ints("dilations", [])):
        return None
    if (why_not := pool_as_conv.refusal(node)) is None:
        return None
    return (
        Reason.UNSUPPORTED_ATTRIBUTE,
        "dilations: onnxruntime's integer AveragePool has none, and it cannot run as a "
        f"depthwise Conv ({why_not})",
    )


def _gemm_bias_refusal(node: ir.Node) -> tuple[Reason, str] | None:
    bias = constant_array(node.inputs[2])
    weight = constant_array(node.inputs[1])
    channels = weight.shape[0 if node.attributes.get_int("transB", 0) else 1]
    if bias.size not in (1, channels):
        return Reason.UNSUPPORTED_ATTRIBUTE, f"Gemm bias of shape {list(bias.shape)} is not 1-D"
    return None
