from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir

from qconv.config import QuantizeConfig
from qconv.data import input_specs, open_reader
from qconv.decisions import DecisionLog, Reason
from qconv.passes.float_stem import MarkFloatStemPass, kept_float
from qconv.qparams import sqnr_db
from qconv.quantize import quantize_model
from tests.graphs import make_model, op_types, rng, run

# A 3-channel first layer and a depthwise conv (27 and 9 multiply-adds per output) with
# HardSwish, then a 3x3 conv over 16 channels (144) with HardSwish, then one with Relu.
TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 3, 16, 16] x) => (float[N, 8, 8, 8] y) {
    a = Conv <pads = [1, 1, 1, 1], strides = [2, 2]> (x, W0, B0)
    ha = HardSwish (a)
    b = Conv <pads = [1, 1, 1, 1], group = 16> (ha, W1, B1)
    hb = HardSwish (b)
    c = Conv <pads = [1, 1, 1, 1]> (hb, W2, B2)
    hc = HardSwish (c)
    d = Conv (hc, W3, B3)
    y = Relu (d)
}
"""


def model() -> onnx.ModelProto:
    r = rng()
    shapes = {"W0": (16, 3, 3, 3), "W1": (16, 1, 3, 3), "W2": (16, 16, 3, 3), "W3": (8, 16, 1, 1)}
    weights = {k: r.normal(0, 0.4, s).astype(np.float32) for k, s in shapes.items()}
    biases = {f"B{k[1]}": r.normal(0, 0.1, s[0]).astype(np.float32) for k, s in shapes.items()}
    return make_model(TEXT, {**weights, **biases})


def marked(proto: onnx.ModelProto, exclude: tuple[str, ...] = ()) -> list[str]:
    graph = ir.from_proto(proto)
    result = MarkFloatStemPass(exclude, DecisionLog())(graph)
    assert not result.modified  # it only marks
    return [node.outputs[0].name for node in graph.graph if kept_float(node)]


def test_light_convolutions_with_hardswish_from_the_input_are_marked():
    assert marked(model()) == ["a", "ha", "b", "hb"]
    conv0 = next(n.name for n in model().graph.node if n.op_type == "Conv")
    assert marked(model(), exclude=(conv0,)) == []  # nothing after an excluded layer either


def test_a_light_first_layer_stays_float_with_its_relu_and_a_wide_one_does_not():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 3, 16, 16] x) => (float[N, CHANNELS, 16, 16] y) {
        a = Conv <pads = [1, 1, 1, 1]> (x, W, B)
        r = Relu (a)
        y = Conv <pads = [1, 1, 1, 1], group = CHANNELS> (r, D, E)
    }
    """
    r = rng()
    for channels, expected in ((16, ["a", "r"]), (32, [])):  # 432 and 864 multiply-adds/pixel
        arrays = {
            "W": r.normal(size=(channels, 3, 3, 3)),
            "B": np.zeros(channels),
            "D": r.normal(size=(channels, 1, 3, 3)),
            "E": np.zeros(channels),
        }
        proto = make_model(
            text.replace("CHANNELS", str(channels)),
            {k: v.astype(np.float32) for k, v in arrays.items()},
        )
        # the depthwise conv after a Relu is not a HardSwish layer: it stays int8 either way
        assert marked(proto) == expected


def test_a_light_convolution_away_from_the_input_stays_int8():
    text = TEXT.replace("(x, W0, B0)", "(xr, W0, B0)").replace(
        "    a = Conv", "    xr = Relu (x)\n    a = Conv"
    )
    proto = make_model(
        text, {t.name: onnx.numpy_helper.to_array(t) for t in model().graph.initializer}
    )
    assert marked(proto) == []


def test_the_stem_runs_float_and_the_rest_int8(tmp_path):
    proto = model()
    data = rng().normal(0, 1, (16, 3, 16, 16)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=data)
    reader = open_reader(tmp_path / "calib.npz", input_specs(proto), 4)
    result = quantize_model(proto, reader, QuantizeConfig())
    reasons = [(d.op_type, d.reason) for d in result.decisions]
    assert reasons[:4] == [
        ("Conv", Reason.FASTER_IN_FLOAT),
        ("HardSwish", Reason.FASTER_IN_FLOAT),
        ("Conv", Reason.FASTER_IN_FLOAT),
        ("HardSwish", Reason.FASTER_IN_FLOAT),
    ]
    assert reasons[4] == ("Conv", Reason.QUANTIZED)
    ops = op_types(result.model)
    assert ops[:5] == ["Conv", "HardSwish", "Conv", "HardSwish", "QuantizeLinear"]
    x = data[:2]
    assert sqnr_db(run(proto, {"x": x})[0], run(result.model, {"x": x})[0]) > 25
