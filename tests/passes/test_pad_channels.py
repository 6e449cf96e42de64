"""Depthwise convolutions widened to 16-channel multiples: same outputs, faster int8 kernels."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from qconv.config import QuantizeConfig
from qconv.decisions import DecisionLog, Reason
from qconv.passes.pad_channels import PadChannelsPass
from qconv.qparams import sqnr_db
from qconv.quantize import quantize_model
from tests.graphs import apply, make_model, rng, run
from tests.passes.test_quantize_passes import Batches

# An inverted residual block with a squeeze-and-excitation gate, as in MobileNetV3.
BLOCK = """
<ir_version: 8, opset_import: ["" : 14]>
g (float[N, 3, 8, 8] x) => (float[N, 4, 8, 8] y) {
    e = Conv (x, We, Be)
    h = HardSwish (e)
    d = Conv <group = 6, pads = [1, 1, 1, 1]> (h, Wd, Bd)
    a = Clip (d, Zero, Six)
    p = GlobalAveragePool (a)
    s1 = Conv (p, Ws1, Bs1)
    r = Relu (s1)
    s2 = Conv (r, Ws2, Bs2)
    gate = HardSigmoid (s2)
    m = Mul (a, gate)
    k = Div (m, K)
    y = Conv (k, Wp, Bp)
}
"""


def block_model(text: str = BLOCK) -> onnx.ModelProto:
    r = rng()
    arrays = {
        "We": r.normal(0, 0.5, (6, 3, 1, 1)),
        "Be": r.normal(0, 0.2, 6),
        "Wd": r.normal(0, 0.5, (6, 1, 3, 3)),
        "Bd": r.normal(0, 0.2, 6),
        "Zero": np.float32(0.0),
        "Six": np.float32(6.0),
        "Ws1": r.normal(0, 0.5, (2, 6, 1, 1)),
        "Bs1": r.normal(0, 0.2, 2),
        "Ws2": r.normal(0, 0.5, (6, 2, 1, 1)),
        "Bs2": r.normal(0, 0.2, 6),
        "K": r.uniform(0.5, 2.0, (1, 6, 1, 1)),
        "Wp": r.normal(0, 0.5, (4, 6, 1, 1)),
        "Bp": r.normal(0, 0.2, 4),
    }
    model = make_model(text, {k: np.asarray(v, np.float32) for k, v in arrays.items()})
    return onnx.shape_inference.infer_shapes(model)


def feed() -> dict[str, np.ndarray]:
    return {"x": rng().normal(0, 2, (2, 3, 8, 8)).astype(np.float32)}


def initializer(model: onnx.ModelProto, node: onnx.NodeProto, index: int) -> np.ndarray:
    arrays = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return arrays[node.input[index]]


def test_the_region_around_a_depthwise_conv_is_widened_and_outputs_match():
    model = block_model()
    log = DecisionLog()
    padded, modified = apply(PadChannelsPass((), log), model)
    assert modified
    convs = [n for n in padded.graph.node if n.op_type == "Conv"]
    expand, depthwise, squeeze, excite, project = convs
    assert [a.i for a in depthwise.attribute if a.name == "group"] == [16]
    assert initializer(padded, expand, 1).shape == (16, 4, 1, 1)  # input 3 -> 4 channels too
    assert initializer(padded, depthwise, 1).shape == (16, 1, 3, 3)
    assert initializer(padded, squeeze, 1).shape == (2, 16, 1, 1)
    assert initializer(padded, excite, 1).shape == (16, 2, 1, 1)
    assert initializer(padded, project, 1).shape == (4, 16, 1, 1)
    assert not initializer(padded, project, 1)[:, 6:].any()  # extra channels are never read
    assert padded.graph.node[0].op_type == "Pad"
    assert [r.applied for r in log.rewrites] == [True, True]
    for before, after in zip(run(model, feed()), run(padded, feed()), strict=True):
        np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)


def test_a_region_reaching_a_graph_output_is_left_alone():
    outputs = "=> (float[N, 4, 8, 8] y, float[N, 6, 8, 8] a)"
    text = BLOCK.replace("=> (float[N, 4, 8, 8] y)", outputs)
    model = block_model(text)
    log = DecisionLog()
    padded, _ = apply(PadChannelsPass((), log), model)
    depthwise = [n for n in padded.graph.node if n.op_type == "Conv"][1]
    assert [a.i for a in depthwise.attribute if a.name == "group"] == [6]
    refused = [r for r in log.rewrites if not r.applied]
    assert refused and "graph input or output" in refused[0].detail
    for before, after in zip(run(model, feed()), run(padded, feed()), strict=True):
        np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)


def test_an_excluded_depthwise_conv_is_not_widened():
    model = block_model()
    depthwise = [n for n in model.graph.node if n.op_type == "Conv"][1]
    depthwise.name = "dw"
    padded, _ = apply(PadChannelsPass(("dw",), DecisionLog()), model)
    widened = next(n for n in padded.graph.node if n.name == "dw")
    assert [a.i for a in widened.attribute if a.name == "group"] == [6]


def test_the_quantized_model_keeps_the_widened_conv_and_its_accuracy():
    model = block_model()
    data = [{"x": rng().normal(0, 2, (4, 3, 8, 8)).astype(np.float32)} for _ in range(4)]
    result = quantize_model(model, Batches(data), QuantizeConfig(float_stem=False))
    groups = [
        a.i
        for n in result.model.graph.node
        if n.op_type == "Conv"
        for a in n.attribute
        if a.name == "group"
    ]
    assert groups == [16]
    (pad,) = [d for d in result.decisions if d.op_type == "Pad"]
    assert pad.reason is Reason.NO_QUANTIZED_NEIGHBOUR and "float input" in pad.detail
    (reference,) = run(model, feed())
    (quantized,) = run(result.model, feed())
    assert sqnr_db(reference, quantized) > 25.0


def test_a_pad_with_a_nonzero_constant_stays_float():
    text = """
    <ir_version: 8, opset_import: ["" : 14]>
    g (float[N, 4, 8, 8] x) => (float[N, 4, 10, 10] y) {
        c = Conv (x, W)
        p = Pad (c, Pads, Value)
        y = Conv (p, W)
    }
    """
    arrays = {
        "W": rng().normal(0, 0.5, (4, 4, 1, 1)).astype(np.float32),
        "Pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64),
        "Value": np.float32(7.0),
    }
    model = onnx.shape_inference.infer_shapes(make_model(text, arrays))
    data = [{"x": rng().normal(0, 1, (2, 4, 8, 8)).astype(np.float32)}]
    result = quantize_model(model, Batches(data), QuantizeConfig(float_stem=False))
    (pad,) = [d for d in result.decisions if d.op_type == "Pad"]
    assert pad.reason is Reason.UNSUPPORTED_ATTRIBUTE
    arrays["Value"] = np.float32(0.0)
    model = onnx.shape_inference.infer_shapes(make_model(text, arrays))
    result = quantize_model(model, Batches(data), QuantizeConfig(float_stem=False))
    (pad,) = [d for d in result.decisions if d.op_type == "Pad"]
    assert pad.reason is Reason.SHARES_INPUT_SCALE
