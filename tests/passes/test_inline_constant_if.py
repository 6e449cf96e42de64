from __future__ import annotations

import numpy as np

from qconv.decisions import DecisionLog
from qconv.passes.inline_constant_if import InlineConstantIfPass
from tests.graphs import apply, make_model, op_types, rng, run

# The branches keep a constant of their own and read the outer W; y is a graph output.
TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[2, 4] x) => (float[2, 4] y) {
    y = If (c) <then_branch = yes () => (float[2, 4] ty) {
                   k = Constant <value = float {2.0}> ()
                   t1 = MatMul (x, W)
                   ty = Mul (t1, k)
               },
               else_branch = no () => (float[2, 4] ey) {
                   ey = Relu (x)
               }>
}
"""


def model(condition: bool):
    weight = rng().normal(size=(4, 4)).astype(np.float32)
    return make_model(TEXT, {"c": np.array(condition), "W": weight})


def test_the_taken_branch_replaces_an_if_with_a_constant_condition():
    x = rng().normal(size=(2, 4)).astype(np.float32)
    for condition, ops in ((True, ["Constant", "MatMul", "Mul"]), (False, ["Relu"])):
        log = DecisionLog()
        inlined, modified = apply(InlineConstantIfPass(log), model(condition))
        assert modified
        assert op_types(inlined) == ops
        assert [o.name for o in inlined.graph.output] == ["y"]
        np.testing.assert_allclose(run(inlined, {"x": x})[0], run(model(condition), {"x": x})[0])
        assert f"always {condition}" in log.rewrites[0].detail


def test_an_if_on_a_computed_condition_is_kept():
    text = TEXT.replace("(float[2, 4] x)", "(float[2, 4] x, bool c)")
    weight = rng().normal(size=(4, 4)).astype(np.float32)
    kept, modified = apply(InlineConstantIfPass(), make_model(text, {"W": weight}))
    assert not modified
    assert op_types(kept) == ["If"]
