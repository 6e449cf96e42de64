"""Computation inside If/Loop bodies: exposing body tensors, and quantizing the bodies.

A recurrent step written as a Loop and a model that branches with If are quantized end to end;
the bodies must hold integer weights and Q/DQ pairs, and onnxruntime's outputs must stay close to
float.
"""

from __future__ import annotations

import numpy as np
import onnx

from qconv.calibrate.expose import expose
from qconv.config import QuantizeConfig
from qconv.decisions import Reason
from qconv.qparams import sqnr_db
from qconv.quantize import quantize_model
from tests.graphs import make_model, rng, run
from tests.passes.test_quantize_passes import Batches

LOOP = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 8] x) => (float[1, 8] y) {
    n = Constant <value = int64 {3}> ()
    go = Constant <value = bool {1}> ()
    y = Loop (n, go, x) <body = step (int64 i, bool keep, float[1, 8] h) => (bool keep_out,
                                                                              float[1, 8] h_out) {
        keep_out = Identity (keep)
        m = MatMul (h, W)
        a = Add (m, B)
        h_out = Tanh (a)
    }>
}
"""

IF = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 8] x, bool c) => (float[1, 8] y) {
    y = If (c) <then_branch = yes () => (float[1, 8] ty) {
                   t1 = MatMul (x, W)
                   ty = Relu (t1)
               },
               else_branch = no () => (float[1, 8] ey) {
                   e1 = MatMul (x, V)
                   ey = Sigmoid (e1)
               }>
}
"""


def loop_model() -> onnx.ModelProto:
    r = rng()
    weights = {"W": r.normal(0, 0.4, (8, 8)), "B": r.normal(0, 0.1, 8)}
    return make_model(LOOP, {k: v.astype(np.float32) for k, v in weights.items()})


def if_model() -> onnx.ModelProto:
    r = rng()
    weights = {"W": r.normal(0, 0.4, (8, 8)), "V": r.normal(0, 0.4, (8, 8))}
    return make_model(IF, {k: v.astype(np.float32) for k, v in weights.items()})


def body(model: onnx.ModelProto, attribute: str) -> onnx.GraphProto:
    node = next(n for n in model.graph.node if n.op_type in ("Loop", "If"))
    return next(a.g for a in node.attribute if a.name == attribute)


def feeds(count: int, **extra) -> list[dict[str, np.ndarray]]:
    r = rng()
    return [{"x": r.normal(0, 1, (1, 8)).astype(np.float32), **extra} for _ in range(count)]


def test_expose_stacks_a_loop_body_tensor_over_iterations():
    model = loop_model()
    exposed, mapping = expose(model, ["m", "y"])
    assert mapping["y"] == "y"
    x = feeds(1)[0]["x"]
    values = dict(zip([o.name for o in exposed.graph.output], run(exposed, {"x": x}), strict=True))
    stacked = values[mapping["m"]]
    assert stacked.shape == (3, 1, 8)
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    h = x
    for step in range(3):
        np.testing.assert_allclose(stacked[step], h @ weights["W"], rtol=1e-5, atol=1e-6)
        h = np.tanh(h @ weights["W"] + weights["B"])
    np.testing.assert_allclose(values["y"], h, rtol=1e-5, atol=1e-6)
    assert [o.name for o in model.graph.output] == ["y"]  # the input model is untouched


def test_expose_if_branches_gives_the_taken_branch_and_an_empty_tensor():
    model = if_model()
    exposed, mapping = expose(model, ["t1", "e1"])
    x = feeds(1)[0]["x"]
    for flag, taken, other in ((True, "t1", "e1"), (False, "e1", "t1")):
        outputs = run(exposed, {"x": x, "c": np.array(flag)})
        values = dict(zip([o.name for o in exposed.graph.output], outputs, strict=True))
        weight = "W" if flag else "V"
        matrix = next(t for t in model.graph.initializer if t.name == weight)
        expected = x @ onnx.numpy_helper.to_array(matrix)
        np.testing.assert_allclose(values[mapping[taken]], expected, rtol=1e-5, atol=1e-6)
        assert values[mapping[other]].size == 0


def test_loop_body_is_quantized_and_stays_close_to_float():
    model = loop_model()
    calibration = feeds(16)
    result = quantize_model(model, Batches(calibration), QuantizeConfig())
    step = body(result.model, "body")
    ops = [n.op_type for n in step.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    weights = [t for t in step.initializer if t.data_type == onnx.TensorProto.INT8]
    assert weights, "the body's MatMul weight is stored as int8"
    decided = {d.node: d.reason for d in result.decisions}
    body_nodes = [n for n in body(model, "body").node if n.op_type == "MatMul"]
    assert all(decided[n.name or "<MatMul>"].quantized for n in body_nodes)
    for feed in feeds(8):
        (expected,) = run(model, feed)
        (actual,) = run(result.model, feed)
        # The state h shares one uint8 range for x (about +-3) and for tanh outputs, and its
        # error compounds over 3 steps: about 28 dB here.
        assert sqnr_db(expected, actual) > 24


def test_if_branches_are_quantized_and_stay_close_to_float():
    model = if_model()
    calibration = feeds(8, c=np.array(True)) + feeds(8, c=np.array(False))
    # onnxruntime does not fuse a branch's MatMul with the DequantizeLinear of x outside the
    # branch, so runtime tuning would keep it float: this test is about the mechanics.
    config = QuantizeConfig(runtime_tuning=False)
    result = quantize_model(model, Batches(calibration), config)
    for branch in ("then_branch", "else_branch"):
        assert "DequantizeLinear" in [n.op_type for n in body(result.model, branch).node]
    # t1's Relu is folded into its range, so the calibrated tensor is the Relu output ty.
    assert {"x", "ty", "e1"} == set(result.ranges)
    for flag in (True, False):
        for feed in feeds(4, c=np.array(flag)):
            (expected,) = run(model, feed)
            (actual,) = run(result.model, feed)
            assert sqnr_db(expected, actual) > 30


def test_nodes_inside_subgraphs_get_a_decision():
    result = quantize_model(loop_model(), Batches(feeds(4)), QuantizeConfig())
    by_op = {d.op_type: d.reason for d in result.decisions}
    assert by_op["Tanh"] is Reason.NO_INTEGER_KERNEL
    assert by_op["Loop"] is Reason.NO_INTEGER_KERNEL


def test_expose_both_branch_outputs_of_an_if():
    model = if_model()
    exposed, mapping = expose(model, ["ty", "ey"])
    x = feeds(1)[0]["x"]
    for flag, taken, other in ((True, "ty", "ey"), (False, "ey", "ty")):
        outputs = run(exposed, {"x": x, "c": np.array(flag)})
        values = dict(zip([o.name for o in exposed.graph.output], outputs, strict=True))
        np.testing.assert_allclose(values[mapping[taken]], values["y"])
        assert values[mapping[other]].size == 0


def test_an_if_whose_outputs_feed_a_quantized_op_is_calibrated_in_both_branches():
    text = (
        IF.replace("(float[1, 8] y)", "(float[1, 8] z)")
        .replace("               }>\n}", "               }>\n    z = MatMul (y, W)\n}")
        .replace("ey = Sigmoid (e1)", "ey = Relu (e1)")  # both branch outputs calibrated
    )
    r = rng()
    weights = {"W": r.normal(0, 0.4, (8, 8)), "V": r.normal(0, 0.4, (8, 8))}
    model = make_model(text, {k: v.astype(np.float32) for k, v in weights.items()})
    calibration = feeds(8, c=np.array(True)) + feeds(8, c=np.array(False))
    config = QuantizeConfig(runtime_tuning=False)  # keep the branch MatMuls int8 (see above)
    result = quantize_model(model, Batches(calibration), config)
    assert {"ty", "ey", "y"} <= set(result.ranges)
    for flag in (True, False):
        for feed in feeds(4, c=np.array(flag)):
            assert sqnr_db(run(model, feed)[0], run(result.model, feed)[0]) > 25


def test_a_branch_no_calibration_sample_takes_stays_float():
    # Every sample takes the then branch: the else branch's tensors have no range at all,
    # and quantizing them with a made-up one would make that branch a constant.
    model = if_model()
    config = QuantizeConfig(runtime_tuning=False)
    result = quantize_model(model, Batches(feeds(8, c=np.array(True))), config)
    reasons = [d.reason.value for d in result.decisions if d.op_type == "MatMul"]
    assert sorted(reasons) == ["no-calibration-statistics", "quantized"]
    assert "DequantizeLinear" not in [n.op_type for n in body(result.model, "else_branch").node]
    for flag in (True, False):
        for feed in feeds(4, c=np.array(flag)):
            assert sqnr_db(run(model, feed)[0], run(result.model, feed)[0]) > 30
