from __future__ import annotations

import numpy as np

from qconv.passes.compact import CompactPass
from tests.graphs import apply, make_model, rng, run

TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 2, 5, 5] x, float k) => (float[1, 2, 5, 5] y) {
    a = Conv <strides = [1, 1], dilations = [1, 1], pads = [0, 0, 0, 0], group = 1> (x, W)
    b = Conv <strides = [1, 1], pads = [1, 1, 1, 1]> (a, V)
    c = Mul (b, half)
    d = Add (c, also_half)
    y = Mul (d, k)
}
"""


def model():
    r = rng()
    half = np.array(0.5, dtype=np.float32)
    weights = {
        "W": r.normal(size=(2, 2, 1, 1)).astype(np.float32),
        "V": r.normal(size=(2, 2, 3, 3)).astype(np.float32),
        "half": half,
        "also_half": half.copy(),
        "k": half.copy(),  # also a graph input: a caller may feed another value
    }
    return make_model(TEXT, weights)


def test_equal_constants_are_stored_once_and_default_attributes_dropped():
    original = model()
    compacted, modified = apply(CompactPass(), original)
    assert modified
    assert sorted(t.name for t in compacted.graph.initializer) == ["V", "W", "half", "k"]
    first, second = (n for n in compacted.graph.node if n.op_type == "Conv")
    assert [a.name for a in first.attribute] == []
    assert [a.name for a in second.attribute] == ["pads"]
    x = rng().normal(size=(1, 2, 5, 5)).astype(np.float32)
    np.testing.assert_array_equal(run(compacted, {"x": x})[0], run(original, {"x": x})[0])
    overridden = {"x": x, "k": np.array(2.0, dtype=np.float32)}
    np.testing.assert_array_equal(run(compacted, overridden)[0], run(original, overridden)[0])


def test_a_compact_graph_is_left_alone():
    compacted, _ = apply(CompactPass(), model())
    _, modified = apply(CompactPass(), compacted)
    assert not modified


def test_the_same_weight_in_both_branches_of_an_if_is_stored_once_in_the_main_graph():
    import onnx
    from onnx import helper, numpy_helper

    weight = rng().normal(size=(8, 8)).astype(np.float32)

    def branch(name: str, activation: str) -> onnx.GraphProto:
        return helper.make_graph(
            [
                helper.make_node("MatMul", ["x", f"{name}_w"], [f"{name}_m"]),
                helper.make_node(activation, [f"{name}_m"], [f"{name}_y"]),
            ],
            name,
            [],
            [helper.make_tensor_value_info(f"{name}_y", onnx.TensorProto.FLOAT, [1, 8])],
            [numpy_helper.from_array(weight, f"{name}_w")],  # as folding leaves it in each
        )

    graph = helper.make_graph(
        [
            helper.make_node(
                "If",
                ["c"],
                ["y"],
                then_branch=branch("yes", "Relu"),
                else_branch=branch("no", "Sigmoid"),
            )
        ],
        "g",
        [
            helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 8]),
            helper.make_tensor_value_info("c", onnx.TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 8])],
    )
    original = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    compacted, changed = apply(CompactPass(), original)
    assert changed
    onnx.checker.check_model(compacted, full_check=True)
    branches = [a.g for a in compacted.graph.node[0].attribute]
    assert [len(b.initializer) for b in branches] == [0, 0]
    assert len(compacted.graph.initializer) == 1
    x = rng().normal(size=(1, 8)).astype(np.float32)
    for flag in (True, False):
        feed = {"x": x, "c": np.array(flag)}
        np.testing.assert_array_equal(run(compacted, feed)[0], run(original, feed)[0])
