"""Local functions are inlined: the same outputs, and the ops inside them can be quantized."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from qconv.config import QuantizeConfig
from qconv.decisions import DecisionLog
from qconv.passes.inline_functions import InlineFunctionsPass
from qconv.quantize import quantize_model
from tests.graphs import apply, op_types, rng, run
from tests.passes.test_quantize_passes import Batches


def model_with_blocks() -> onnx.ModelProto:
    """Two calls of ``local.Block(x, W) = Relu(Conv(x, W)) + x``, as torch's
    export_modules_as_functions writes repeated modules."""
    block = helper.make_function(
        "local",
        "Block",
        ["x", "w"],
        ["y"],
        [
            helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["r"]),
            helper.make_node("Add", ["r", "x"], ["y"]),
        ],
        [helper.make_opsetid("", 17)],
    )
    r = rng()
    weights = [
        onnx.numpy_helper.from_array(r.normal(0, 0.2, (16, 16, 3, 3)).astype(np.float32), name)
        for name in ("W1", "W2")
    ]
    graph = helper.make_graph(
        [
            helper.make_node("Block", ["x", "W1"], ["h"], domain="local", name="b1"),
            helper.make_node("Block", ["h", "W2"], ["y"], domain="local", name="b2"),
        ],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 16, 12, 12])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 16, 12, 12])],
        weights,
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("local", 1)]
    model = helper.make_model(graph, opset_imports=opsets, functions=[block])
    onnx.checker.check_model(model, full_check=True)
    return model


def feed() -> dict[str, np.ndarray]:
    return {"x": rng().normal(0, 1, (2, 16, 12, 12)).astype(np.float32)}


def test_calls_are_replaced_by_the_function_bodies_with_the_same_outputs():
    model, log = model_with_blocks(), DecisionLog()
    inlined, changed = apply(InlineFunctionsPass(log), model)
    assert changed
    assert sorted(op_types(inlined)) == ["Add", "Add", "Conv", "Conv", "Relu", "Relu"]
    assert not inlined.functions
    np.testing.assert_allclose(run(inlined, feed())[0], run(model, feed())[0], rtol=1e-6)
    assert log.rewrites[0].nodes == ("b1", "b2") and "Block" in log.rewrites[0].detail


def test_the_convolutions_inside_functions_are_quantized():
    feeds = [feed() for _ in range(4)]
    result = quantize_model(model_with_blocks(), Batches(feeds), QuantizeConfig(float_stem=False))
    conv = [d for d in result.decisions if d.op_type == "Conv"]
    assert len(conv) == 2 and all(d.reason.quantized for d in conv)
    expected, actual = run(model_with_blocks(), feeds[0])[0], run(result.model, feeds[0])[0]
    assert np.linalg.norm(expected - actual) / np.linalg.norm(expected) < 0.05
