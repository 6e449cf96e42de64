"""Constants folded into quantization parameters, on the hard-swish that Paddle exports.

``x * Clip(x + 3, 0, 6) / 6`` between two convolutions: the Add disappears into a moved zero
point of the Conv output's integers, the Clip becomes a Clip of those integers, the Div a
DequantizeLinear scale, and every op left runs on integers.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from qconv.analyze import SWITCH_INPUT, switchable_model
from qconv.config import PerTensor, QuantFormat, QuantizeConfig
from qconv.decisions import Reason
from qconv.evaluate import tensor_fidelity
from qconv.qparams import sqnr_db
from qconv.quantize import quantize_model
from tests.graphs import make_model, rng, run
from tests.passes.test_quantize_passes import Batches

HARD_SWISH = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 8, 8] x) => (float[N, 4, 8, 8] y) {
    c = Conv <pads = [1, 1, 1, 1]> (x, W1, B1)
    a = Add (c, Three)
    r = Clip (a, Zero, Six)
    d = Div (r, Six)
    h = Mul (c, d)
    y = Conv <pads = [1, 1, 1, 1]> (h, W2, B2)
}
"""


def hard_swish_model(opset: int = 13) -> onnx.ModelProto:
    r = rng()
    return make_model(
        HARD_SWISH.replace('"" : 13', f'"" : {opset}'),
        {
            "W1": r.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32),
            "B1": r.normal(0, 0.1, 4).astype(np.float32),
            "W2": r.normal(0, 0.3, (4, 4, 3, 3)).astype(np.float32),
            "B2": r.normal(0, 0.1, 4).astype(np.float32),
            "Three": np.float32(3.0),
            "Zero": np.float32(0.0),
            "Six": np.float32(6.0),
        },
    )


def feeds(count: int) -> list[dict[str, np.ndarray]]:
    r = rng()
    return [{"x": r.normal(0, 1, (2, 3, 8, 8)).astype(np.float32)} for _ in range(count)]


def quantized(fmt: QuantFormat = QuantFormat.QDQ):
    model = hard_swish_model()
    next(n for n in model.graph.node if n.op_type == "Clip").name = "hard_clip"  # kept by qconv
    return model, quantize_model(
        model, Batches(feeds(16)), QuantizeConfig(format=fmt, float_stem=False)
    )


def test_add_and_div_by_constants_become_parameters_and_the_outputs_stay_close():
    model, result = quantized()
    reasons = {d.op_type: d.reason for d in result.decisions}
    assert reasons["Add"] is Reason.OFFSET_FOLDED
    assert reasons["Clip"] is Reason.CLAMPED_ON_INTEGERS
    assert reasons["Div"] is Reason.SCALE_FOLDED
    ops = Counter(n.op_type for n in result.model.graph.node)
    assert ops["Div"] == 0 and ops["Add"] == 0 and ops["Clip"] == 1
    assert [n.name for n in result.model.graph.node if n.op_type == "Clip"] == ["hard_clip"]
    assert ops["Conv"] == 2 and ops["Mul"] == 1
    # x, c, the product h and y: the Add, Clip and Div need no pair of their own.
    assert ops["QuantizeLinear"] == 4
    for feed in feeds(4):
        (expected,) = run(model, feed)
        (actual,) = run(result.model, feed)
        assert sqnr_db(expected, actual) > 30


def test_the_clip_runs_on_the_conv_integers_and_is_read_with_moved_parameters():
    _, result = quantized()
    graph = result.model.graph
    producers = {o: n for n in graph.node for o in n.output}
    values = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    clip = next(n for n in graph.node if n.op_type == "Clip")
    quantize = producers[clip.input[0]]
    assert quantize.op_type == "QuantizeLinear" and quantize.input[0] == "c"
    scale, zero = float(values[quantize.input[1]]), int(values[quantize.input[2]])
    steps = 3.0 / scale
    assert abs(steps - round(steps)) < 1e-3  # the scale was aligned: 3 is whole steps
    low, high = int(values[clip.input[1]]), int(values[clip.input[2]])
    assert (low, high) == (zero - round(steps), zero + round(steps))  # 0 and 6 after the Add
    mul = next(n for n in graph.node if n.op_type == "Mul")
    (divided,) = [producers[i] for i in mul.input if producers[i].input[0] == clip.output[0]]
    np.testing.assert_allclose(float(values[divided.input[1]]) * 6, scale, rtol=1e-6)
    assert int(values[divided.input[2]]) == low
    assert result.offsets[divided.output[0]] == (pytest.approx(1 / 6), 0.5, 0.0, 1.0)


def test_symmetric_activations_keep_the_add_with_its_own_range():
    model = hard_swish_model()
    config = QuantizeConfig(symmetric_activations=True, float_stem=False)
    result = quantize_model(model, Batches(feeds(8)), config)
    reasons = {d.op_type: d.reason for d in result.decisions}
    assert reasons["Add"] is Reason.QUANTIZED
    producers = {o: n.op_type for n in result.model.graph.node for o in n.output}
    clips = [n for n in result.model.graph.node if n.op_type == "Clip"]
    assert all(producers[n.input[0]] != "QuantizeLinear" for n in clips)  # none on integers
    (expected,) = run(model, feeds(1)[0])
    (actual,) = run(result.model, feeds(1)[0])
    assert sqnr_db(expected, actual) > 25


def test_qoperator_form_runs_on_integers_only():
    model, result = quantized(QuantFormat.QOPERATOR)
    nodes = result.model.graph.node
    inputs = {i.name for i in result.model.graph.input}
    # The float input's three channels are padded to four before it is quantized.
    assert all(set(n.input) & inputs for n in nodes if n.op_type == "Pad")
    ops = {n.op_type for n in nodes} - {"Pad"}
    assert ops <= {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "Clip", "QLinearMul"}
    (clip,) = [n for n in nodes if n.op_type == "Clip"]
    producers = {o: n for n in nodes for o in n.output}
    assert producers[clip.input[0]].op_type == "QLinearConv"  # it clamps integers
    for feed in feeds(4):
        (expected,) = run(model, feed)
        (actual,) = run(result.model, feed)
        assert sqnr_db(expected, actual) > 30


def test_switchable_model_restores_the_division_when_switched_off():
    model, result = quantized()
    switchable, switches, _ = switchable_model(result.prepared, result)
    session = ort.InferenceSession(
        switchable.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    for feed in feeds(2):
        off = session.run(None, {**feed, SWITCH_INPUT: np.zeros(len(switches), bool)})[0]
        np.testing.assert_allclose(off, run(model, feed)[0], rtol=1e-4, atol=1e-4)


def test_a_negative_factor_is_not_folded():
    model = make_model(
        HARD_SWISH.replace("Div (r, Six)", "Div (r, MinusSix)"),
        {
            **{t.name: onnx.numpy_helper.to_array(t) for t in hard_swish_model().graph.initializer},
            "MinusSix": np.float32(-6.0),
        },
    )
    result = quantize_model(model, Batches(feeds(8)), QuantizeConfig(float_stem=False))
    assert {d.op_type: d.reason for d in result.decisions}["Div"] is Reason.NO_INTEGER_KERNEL


def test_a_tensor_read_only_by_a_folded_division_has_no_int8_counterpart():
    # c's only reader is the Div (after a MaxPool, so not folded into the Conv), so its
    # DequantizeLinear goes away with the Div; the report's
    # per-tensor fidelity must then skip c rather than ask for a tensor that is gone.
    text = """
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[N, 3, 8, 8] x) => (float[N, 4, 4, 4] y) {
        a = Conv <pads = [1, 1, 1, 1]> (x, W1, B1)
        c = MaxPool <kernel_shape = [2, 2], strides = [2, 2]> (a)
        d = Div (c, Six)
        y = Conv <pads = [1, 1, 1, 1]> (d, W2, B2)
    }
    """
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in hard_swish_model().graph.initializer}
    model = make_model(text, {k: weights[k] for k in ("W1", "B1", "W2", "B2", "Six")})
    result = quantize_model(model, Batches(feeds(8)), QuantizeConfig(float_stem=False))
    assert "c" not in result.dequantized and "d" in result.dequantized
    fidelity = tensor_fidelity(
        result.prepared, result.qdq_model, result.dequantized, Batches(feeds(2))
    )
    assert set(fidelity) == set(result.dequantized)
    assert fidelity["d"].sqnr_db > 30


def test_an_offset_smaller_than_a_step_stays_an_integer_add():
    # Moving the zero point by 0.001 would need a scale of 0.001 (or of 0.001 / k): the Add is
    # re-planned as an ordinary Add from the statistics calibrated for that case.
    arrays = {t.name: onnx.numpy_helper.to_array(t) for t in hard_swish_model().graph.initializer}
    arrays["Three"] = np.float32(0.001)
    model = make_model(HARD_SWISH, arrays)
    result = quantize_model(model, Batches(feeds(8)), QuantizeConfig(float_stem=False))
    reasons = {d.op_type: d.reason for d in result.decisions}
    assert reasons["Add"] is Reason.QUANTIZED and reasons["Clip"] is Reason.ACTIVATION_FOLDED
    assert not result.offsets
    for feed in feeds(4):
        (expected,) = run(model, feed)
        (actual,) = run(result.model, feed)
        assert sqnr_db(expected, actual) > 30


def test_below_opset_12_a_hardswish_add_and_clip_run_as_an_add_not_a_clip_on_integers():
    # Clip-11 takes floats only: "x + 3 then Clip(0, 6)" cannot be a Clip on uint8 there.
    model = hard_swish_model(opset=11)
    config = QuantizeConfig(weight_granularity=PerTensor(), float_stem=False)
    result = quantize_model(model, Batches(feeds(8)), config)
    reasons = {d.op_type: d.reason for d in result.decisions}
    assert reasons["Add"] is Reason.QUANTIZED and reasons["Clip"] is Reason.ACTIVATION_FOLDED
    assert "Clip" not in [node.op_type for node in result.model.graph.node]
    x = feeds(1)[0]
    assert sqnr_db(run(model, x)[0], run(result.model, x)[0]) > 25
