from __future__ import annotations

import numpy as np

from qconv.decisions import DecisionLog
from qconv.passes.remove_identity import RemoveIdentityPass
from tests.graphs import apply, make_model, op_types, rng, run


def test_identity_and_dropout_are_removed_and_the_output_name_kept():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2, 3] x) => (float[2, 3] y) {
        a = Relu (x)
        b = Identity (a)
        c = Dropout (b)
        y = Identity (c)
    }
    """
    model = make_model(text)
    x = rng().normal(size=(2, 3)).astype(np.float32)
    folded, modified = apply(RemoveIdentityPass(), model)
    assert modified
    assert op_types(folded) == ["Relu"]
    assert [o.name for o in folded.graph.output] == ["y"]
    np.testing.assert_array_equal(run(folded, {"x": x})[0], run(model, {"x": x})[0])


def test_identity_joining_input_to_output_is_kept_with_a_reason():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2] x) => (float[2] y) {
        y = Identity (x)
    }
    """
    log = DecisionLog()
    folded, modified = apply(RemoveIdentityPass(log), make_model(text))
    assert not modified
    assert op_types(folded) == ["Identity"]
    assert "graph input" in log.rewrites[0].detail


def test_dropout_whose_mask_is_a_graph_output_is_kept():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2, 3] x) => (float[2, 3] y, bool[2, 3] mask) {
        a = Relu (x)
        y, mask = Dropout (a)
    }
    """
    model = make_model(text)
    log = DecisionLog()
    folded, modified = apply(RemoveIdentityPass(log), model)
    assert not modified
    assert op_types(folded) == ["Relu", "Dropout"]
    assert "mask" in log.rewrites[0].detail
    x = rng().normal(size=(2, 3)).astype(np.float32)
    for before, after in zip(run(model, {"x": x}), run(folded, {"x": x}), strict=True):
        np.testing.assert_array_equal(before, after)
