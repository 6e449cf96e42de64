"""Sensitivity analysis: how much each quantized layer costs in output fidelity.

For every quantized layer two numbers are measured on evaluation data: the output SQNR when only
that layer is quantized, and the output SQNR when every layer but that one is quantized. Layers
are ranked by the second number's gain over the fully quantized model: leaving the top ones in
float (``--exclude-from report.json:worst=N``) buys the most accuracy back.

Speed: one onnxruntime session serves every configuration. Each Q/DQ pair and each quantized
constant of the QDQ model is wrapped in ``Where(switch[k], dequantized, float)``, and the
switches are one boolean graph input, so a configuration is just a different feed. The
evaluation batches are read once and kept (``max_samples`` of them). A Conv/Gemm/MatMul whose
weight came through such a Where would lose onnxruntime's packed-weight kernels (a computed
weight is repacked on every run: 2.5x the float time on a 200-layer Conv chain), so each one
becomes an ``If`` on its weight's switch with two copies of the node, one reading the weight
dequantized ahead of time and one the float weight, both constants.

A layer's switches are its quantized constants (weights, biases), the pairs on its outputs, and
the pairs on its inputs; "only this layer" turns all three on, "all but this layer" turns its
constants and outputs off (its inputs belong to the layers that produce them).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from qconv.data import DataReader, Feed
from qconv.passes.insert_qdq import QuantizedConstant
from qconv.qparams import dequantize
from qconv.quantize import QuantizationResult
from qconv.runtime import create_session

SWITCH_INPUT = "qconv_switches"
ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class LayerSensitivity:
    """One layer's effect on the output.

    Attributes:
        node: The layer's node name.
        op_type: Its operator.
        alone_sqnr_db: Output SQNR with only this layer quantized.
        without_sqnr_db: Output SQNR with every other layer quantized and this one float.
        gain_db: ``without_sqnr_db`` minus the SQNR of the fully quantized model.
    """

    node: str
    op_type: str
    alone_sqnr_db: float
    without_sqnr_db: float
    gain_db: float


@dataclass
class Sensitivity:
    """The analysis of a whole model.

    Attributes:
        full_sqnr_db: Output SQNR of the fully quantized model.
        layers: Per-layer results, most sensitive (largest gain) first.
        samples: Evaluation samples used.
        seconds: Wall time of the analysis.
    """

    full_sqnr_db: float
    layers: list[LayerSensitivity] = field(default_factory=list)
    samples: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class _Layer:
    node: str
    op_type: str
    own: tuple[int, ...]  # switches of its constants and outputs
    inputs: tuple[int, ...]  # switches of the pairs on its inputs


def analyze(
    prepared: onnx.ModelProto,
    result: QuantizationResult,
    reader: DataReader,
    *,
    max_samples: int = 64,
    threads: int | None = None,
    on_step: ProgressCallback | None = None,
) -> Sensitivity:
    """Rank the quantized layers of ``result`` by how much they cost in output SQNR."""
    started = time.perf_counter()
    model, switches, layers = switchable_model(prepared, result)
    session = create_session(model, threads=threads)
    feeds = _feeds(reader, max_samples)
    outputs = [o.name for o in prepared.graph.output]

    def run(on: set[int]) -> list[np.ndarray]:
        mask = np.zeros(len(switches), dtype=bool)
        mask[list(on)] = True
        return [session.run(outputs, {**feed, SWITCH_INPUT: mask}) for feed in feeds]

    reference = run(set())
    everything = set(range(len(switches)))
    full = _sqnr(reference, run(everything))
    ranked = []
    for index, layer in enumerate(layers):
        alone = _sqnr(reference, run(set(layer.own) | set(layer.inputs)))
        without = _sqnr(reference, run(everything - set(layer.own)))
        ranked.append(LayerSensitivity(layer.node, layer.op_type, alone, without, without - full))
        if on_step:
            on_step(index + 1, len(layers))
    ranked.sort(key=lambda s: (-s.gain_db, s.alone_sqnr_db))
    samples = sum(len(next(iter(f.values()))) for f in feeds)
    return Sensitivity(full, ranked, samples, time.perf_counter() - started)


def _feeds(reader: DataReader, max_samples: int) -> list[Feed]:
    feeds, seen = [], 0
    for feed in reader:
        feeds.append(feed)
        seen += len(next(iter(feed.values())))
        if seen >= max_samples:
            break
    return feeds


def _sqnr(reference: list[list[np.ndarray]], approx: list[list[np.ndarray]]) -> float:
    signal = noise = 0.0
    for ref_batch, app_batch in zip(reference, approx, strict=True):
        for ref, app in zip(ref_batch, app_batch, strict=True):
            r = ref.astype(np.float64).ravel()
            d = r - app.astype(np.float64).ravel()
            signal += float(r @ r)
            noise += float(d @ d)
    if noise == 0:
        return float("inf")
    return 10 * float(np.log10(signal / noise)) if signal > 0 else float("-inf")


def switchable_model(
    prepared: onnx.ModelProto, result: QuantizationResult
) -> tuple[onnx.ModelProto, list[str], list[_Layer]]:
    """The QDQ model with every quantized tensor selectable between int8 and float at run time."""
    model = onnx.ModelProto()
    model.CopyFrom(result.qdq_model)
    graph = model.graph
    producers = {o: n for n in graph.node for o in n.output}
    float_constants = {t.name: t for t in prepared.graph.initializer}
    sources = {c.dequantized: c.tensor for c in result.constants}
    outputs = {o.name for o in graph.output}
    switches: list[str] = []  # the DequantizeLinear output each switch selects
    replacement: dict[str, str] = {}  # DequantizeLinear output -> the selector's output
    new_nodes: list[onnx.NodeProto] = []
    for node in list(graph.node):
        if node.op_type != "DequantizeLinear":
            continue
        float_value = _float_source(node, producers, sources, float_constants, graph)
        if float_value is None:
            continue
        name = node.output[0]
        if name in result.folded_bounds:  # the QDQ model dropped this Relu/Clip: restore it
            float_value, clamp = _clamp(float_value, result.folded_bounds[name])
            new_nodes += clamp
        if name in result.rescaled:  # the QDQ model dropped a Mul/Div by a constant: restore it
            float_value, scaling = _scaled(float_value, result.rescaled[name], name)
            new_nodes += scaling
        if name in result.offsets:  # ... or an Add/Sub of a constant and a Relu/Clip after it
            factor, offset, low, high = result.offsets[name]
            float_value, scaling = _scaled(float_value, factor, f"{name}__pre")
            float_value, shifting = _shifted(float_value, offset, name)
            shifting = scaling + shifting
            clamped, clamp = _clamp(float_value, (low, high))
            float_value, new_nodes = clamped, new_nodes + shifting + clamp
        if name in outputs:  # the selector takes over the graph output's name
            node.output[0] = f"{name}__dequantized"
            selected, name = name, node.output[0]
        else:
            selected = f"{name}__selected"
        new_nodes += _selector(len(switches), name, float_value, selected)
        switches.append(name)
        replacement[name] = selected
    _rewire(graph, {k: v for k, v in replacement.items() if v not in outputs})
    graph.node.extend(new_nodes)
    graph.input.append(
        helper.make_tensor_value_info(SWITCH_INPUT, onnx.TensorProto.BOOL, [len(switches)])
    )
    _sort(graph)
    layers = _layers(graph, switches, replacement)
    constants = {c.dequantized: c for c in result.constants}
    _branch_on_weights(graph, switches, replacement, layers, constants)
    return model, switches, layers


WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _branch_on_weights(
    graph: onnx.GraphProto,
    switches: list[str],
    replacement: dict[str, str],
    layers: list[_Layer],
    constants: dict[str, QuantizedConstant],
) -> None:
    """Replace each weighted node reading switched constants by an ``If`` on the weight's
    switch between two copies reading constants, then drop the selectors left unread.

    A layer's constants always switch together (they are all in its ``own`` switches), so one
    condition serves the weight and the bias.
    """
    constant = {replacement[dq]: dq for dq in switches if dq in constants}
    own = {k: layer.own for layer in layers for k in layer.own}
    index = {name: k for k, name in enumerate(switches)}
    initializers = {t.name: t for t in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    for position, node in enumerate(list(graph.node)):
        reads = [name for name in node.input if name in constant]
        if node.op_type not in WEIGHTED_OPS or not reads:
            continue
        keys = [index[constant[name]] for name in reads]
        if any(k not in own.get(keys[0], ()) for k in keys):
            continue
        quantized = {
            name: _dequantized(producers[constant[name]], constants[constant[name]], initializers)
            for name in reads
        }
        floats = {name: initializers[constants[constant[name]].tensor] for name in reads}
        node.name = node.name or f"{node.op_type}_{position}"
        branch = helper.make_node(
            "If",
            [f"{constant[reads[0]]}_switch"],
            list(node.output),
            name=f"{node.name}__switched",
            then_branch=_copy_reading(node, quantized, "__int8"),
            else_branch=_copy_reading(node, floats, "__float"),
        )
        graph.node.remove(node)
        graph.node.insert(position, branch)
    _remove_unread(graph)


def _dequantized(
    node: onnx.NodeProto, stored: QuantizedConstant, initializers: dict
) -> onnx.TensorProto:
    """What the DequantizeLinear ``node`` of a stored constant computes, as a tensor."""
    data = numpy_helper.to_array(initializers[node.input[0]])
    return numpy_helper.from_array(dequantize(data, stored.params))


def _copy_reading(
    node: onnx.NodeProto, constants: dict[str, onnx.TensorProto], suffix: str
) -> onnx.GraphProto:
    """A one-node graph: ``node`` reading ``constants`` (by input name) as its own initializers
    (onnxruntime pre-packs only a graph's own constant weights), its outputs as the graph's."""
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    copy.name = f"{node.name}{suffix}"
    renamed = {name: f"{name}{suffix}" for name in constants}
    copy.input[:] = [renamed.get(name, name) for name in node.input]
    copy.output[:] = [f"{name}{suffix}" for name in node.output]
    initializers = []
    for name, tensor in constants.items():
        local = onnx.TensorProto()
        local.CopyFrom(tensor)
        local.name = renamed[name]
        initializers.append(local)
    outputs = [
        helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in copy.output
    ]
    return helper.make_graph([copy], f"{node.name}{suffix}", [], outputs, initializers)


def _remove_unread(graph: onnx.GraphProto) -> None:
    """Drop nodes and initializers nothing reads any more (selectors of branched weights)."""
    while True:
        read = {o.name for o in graph.output} | _subgraph_reads(graph)
        read |= {name for node in graph.node for name in node.input}
        unread = [n for n in graph.node if not any(o in read for o in n.output)]
        if not unread:
            break
        for node in unread:
            graph.node.remove(node)
    read = {name for node in graph.node for name in node.input} | _subgraph_reads(graph)
    read |= {o.name for o in graph.output}  # an initializer can be a graph output
    kept = [t for t in graph.initializer if t.name in read]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def _subgraph_reads(graph: onnx.GraphProto) -> set[str]:
    """Names the subgraphs of ``graph``'s nodes read from outer scopes."""
    names: set[str] = set()
    for node in graph.node:
        for attribute in node.attribute:
            subgraphs = list(attribute.graphs) + ([attribute.g] if attribute.HasField("g") else [])
            for subgraph in subgraphs:
                names |= {name for inner in subgraph.node for name in inner.input}
                names |= _subgraph_reads(subgraph)
    return names


def _float_source(node, producers, sources, float_constants, graph) -> str | None:
    quantize = producers.get(node.input[0])
    if quantize is not None and quantize.op_type == "Clip":  # a Clip on integers
        quantize = producers.get(quantize.input[0])
    if quantize is not None and quantize.op_type == "QuantizeLinear":
        return quantize.input[0]
    original = sources.get(node.output[0])
    if original is None or original not in float_constants:
        return None
    if original not in {t.name for t in graph.initializer}:
        graph.initializer.append(float_constants[original])
    return original


def _clamp(value: str, bounds: tuple[float | None, float | None]) -> tuple[str, list]:
    low, high = bounds
    names = [f"{value}__clamp_low", f"{value}__clamp_high"]
    nodes = [
        helper.make_node(
            "Constant",
            [],
            [names[0]],
            value=numpy_helper.from_array(np.array(-np.inf if low is None else low, np.float32)),
        ),
        helper.make_node(
            "Constant",
            [],
            [names[1]],
            value=numpy_helper.from_array(np.array(np.inf if high is None else high, np.float32)),
        ),
        helper.make_node("Clip", [value, *names], [f"{value}__clamped"]),
    ]
    return f"{value}__clamped", nodes


def _scaled(value: str, factor: float, dequantized: str) -> tuple[str, list]:
    return _with_constant(value, "Mul", factor, f"{dequantized}__factor", f"{dequantized}__float")


def _shifted(value: str, offset: float, dequantized: str) -> tuple[str, list]:
    return _with_constant(value, "Add", offset, f"{dequantized}__offset", f"{dequantized}__shifted")


def _with_constant(
    value: str, op_type: str, number: float, constant: str, output: str
) -> tuple[str, list]:
    """``op_type(value, number)`` as a Constant and a node writing ``output``."""
    nodes = [
        helper.make_node(
            "Constant", [], [constant], value=numpy_helper.from_array(np.array(number, np.float32))
        ),
        helper.make_node(op_type, [value, constant], [output]),
    ]
    return output, nodes


def _selector(index: int, quantized: str, float_value: str, output: str) -> list:
    flag = f"{quantized}_switch"
    position = f"{quantized}_switch_index"
    return [
        helper.make_node(
            "Constant", [], [position], value=numpy_helper.from_array(np.array(index, np.int64))
        ),
        helper.make_node("Gather", [SWITCH_INPUT, position], [flag]),
        helper.make_node("Where", [flag, quantized, float_value], [output]),
    ]


def _rewire(graph: onnx.GraphProto, replacement: dict[str, str]) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in replacement:
                node.input[i] = replacement[name]
    for output in graph.output:
        if output.name in replacement:
            # keep the interface: the selected value is copied back to the output name
            graph.node.append(
                helper.make_node(
                    "Identity", [replacement[output.name]], [f"{output.name}__switched"]
                )
            )
            output.name = f"{output.name}__switched"


def _layers(graph: onnx.GraphProto, switches: list[str], replacement: dict[str, str]) -> list:
    selected = {replacement[name]: k for k, name in enumerate(switches)}
    consumers: dict[str, list[int]] = {}
    for k, name in enumerate(switches):
        consumers.setdefault(name, []).append(k)
    quantize_inputs = {n.input[0]: n.output[0] for n in graph.node if n.op_type == "QuantizeLinear"}
    dq_of_q = {n.input[0]: n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    layers = []
    skip = {"QuantizeLinear", "DequantizeLinear", "Where", "Gather", "Constant"}
    for node in graph.node:
        if node.op_type in skip:
            continue
        ins = [selected[i] for i in node.input if i in selected]
        if not ins:
            continue
        own = [k for k in ins if not _is_activation(graph, switches[k])]
        for output in node.output:
            q_out = quantize_inputs.get(output)
            dq = dq_of_q.get(q_out) if q_out else None
            if dq in consumers:
                own += consumers[dq]
        inputs = [k for k in ins if k not in own]
        if own:
            layers.append(
                _Layer(node.name or node.op_type, node.op_type, tuple(own), tuple(inputs))
            )
    return layers


def _is_activation(graph: onnx.GraphProto, dq_output: str) -> bool:
    dq = next(n for n in graph.node if dq_output in n.output)
    return any(n.op_type == "QuantizeLinear" and dq.input[0] in n.output for n in graph.node)


def _sort(graph: onnx.GraphProto) -> None:
    """Topologically sort ``graph.node`` (appended selector nodes must precede their readers)."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        progressed = []
        for node in pending:
            if all(name in available for name in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                progressed.append(node)
        if len(progressed) == len(pending):
            raise RuntimeError("switchable model has a cycle")
        pending = progressed
    del graph.node[:]
    graph.node.extend(ordered)
