from __future__ import annotations

import numpy as np
import onnx

from qconv.decisions import DecisionLog
from qconv.passes.fold_constants import FoldConstantsPass
from tests.graphs import apply, make_model, op_types, rng, run


def test_weight_reached_through_constant_transpose_and_cast_becomes_an_initializer():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2, 5] x) => (float[2, 4] y) {
        w16 = Constant <value = float16[4, 5] {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
                                                16, 17, 18, 19, 20}> ()
        w32 = Cast <to = 1> (w16)
        wt = Transpose <perm = [1, 0]> (w32)
        y = MatMul (x, wt)
    }
    """
    model = make_model(text)
    x = rng().normal(size=(2, 5)).astype(np.float32)
    log = DecisionLog()

    folded, modified = apply(FoldConstantsPass(log), model)

    assert modified
    assert op_types(folded) == ["MatMul"]
    assert folded.graph.node[0].input[1] in {t.name for t in folded.graph.initializer}
    np.testing.assert_array_equal(run(folded, {"x": x})[0], run(model, {"x": x})[0])
    assert {r.detail for r in log.rewrites} == {"folded Cast", "folded Transpose"}


def test_nodes_reading_a_graph_input_are_not_folded():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2] x) => (float[2] y) {
        y = Add (x, c)
    }
    """
    folded, modified = apply(FoldConstantsPass(), make_model(text, {"c": np.ones(2, np.float32)}))
    assert not modified
    assert op_types(folded) == ["Add"]


def test_folding_that_would_grow_the_model_is_refused():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1] x) => (float[1000, 1000] y) {
        shape = Constant <value = int64[2] {1000, 1000}> ()
        big = ConstantOfShape <value = float[1] {1.0}> (shape)
        y = Add (big, x)
    }
    """
    log = DecisionLog()
    folded, _ = apply(FoldConstantsPass(log), make_model(text))
    assert op_types(folded) == ["ConstantOfShape", "Add"]
    assert any("grow" in r.detail for r in log.rewrites)


def test_a_large_constant_node_becomes_an_initializer():
    # A recogniser's 120x6625 classifier weight (3 MB) sat in a Constant node; its data is in
    # the model already, so making it an initializer grows nothing.
    weight = rng().normal(size=(8, 40000)).astype(np.float32)  # 1.2 MB, over the growth limit
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2, 8] x) => (float[2, 40000] y) {
        w = Constant <value = float[1] {0}> ()
        y = MatMul (x, w)
    }
    """
    model = onnx.parser.parse_model(text)
    model.graph.node[0].attribute[0].t.CopyFrom(onnx.numpy_helper.from_array(weight))
    onnx.checker.check_model(model)
    folded, modified = apply(FoldConstantsPass(), model)
    assert modified and op_types(folded) == ["MatMul"]
    x = rng().normal(size=(2, 8)).astype(np.float32)
    np.testing.assert_array_equal(run(folded, {"x": x})[0], x @ weight)
