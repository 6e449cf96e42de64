"""Per-channel Mul/Div/Add/Sub after a Conv folded into its weights: same outputs, fewer ops."""

from __future__ import annotations

import numpy as np

from qconv.decisions import DecisionLog
from qconv.passes.fold_affine import FoldAffinePass
from tests.graphs import apply, make_model, op_types, rng, run

AFFINE = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 3, 6, 6] x) => (float[N, 4, 6, 6] y, float[N, 4, 6, 6] z) {
    c = Conv <pads = [1, 1, 1, 1]> (x, W, B)
    m = Mul (c, Scale)
    a = Add (m, Shift)
    y = Relu (a)
    c2 = Conv <pads = [1, 1, 1, 1]> (x, W2)
    d = Div (c2, Six)
    z = Sub (d, Shift3)
}
"""


def affine_model(scale_shape=(1, 4, 1, 1)):
    r = rng()
    arrays = {
        "W": r.normal(0, 0.5, (4, 3, 3, 3)),
        "B": r.normal(0, 0.1, 4),
        "Scale": r.uniform(0.5, 2.0, scale_shape),
        "Shift": np.float32(0.25),
        "W2": r.normal(0, 0.5, (4, 3, 3, 3)),
        "Six": np.float32(6.0),
        "Shift3": r.normal(0, 0.5, (4, 1, 1)),
    }
    return make_model(AFFINE, {k: np.asarray(v, np.float32) for k, v in arrays.items()})


def test_scale_and_shift_fold_into_the_conv_and_outputs_match():
    model = affine_model()
    log = DecisionLog()
    folded, modified = apply(FoldAffinePass(log), model)
    assert modified
    assert op_types(folded) == ["Conv", "Relu", "Conv"]
    assert [o.name for o in folded.graph.output] == ["y", "z"]
    assert sum(r.applied for r in log.rewrites) == 4
    feed = {"x": rng().normal(0, 1, (2, 3, 6, 6)).astype(np.float32)}
    for before, after in zip(run(model, feed), run(folded, feed), strict=True):
        np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)


def test_a_constant_varying_along_width_is_refused():
    model = affine_model(scale_shape=(1, 1, 1, 6))
    log = DecisionLog()
    folded, _ = apply(FoldAffinePass(log), model)
    assert "Mul" in op_types(folded)
    refused = [r for r in log.rewrites if not r.applied]
    assert refused and "per output channel" in refused[0].detail
    feed = {"x": rng().normal(0, 1, (2, 3, 6, 6)).astype(np.float32)}
    for before, after in zip(run(model, feed), run(folded, feed), strict=True):
        np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)


def test_a_transposed_conv_bias_add_and_batchnorm_fold_into_the_transposed_conv():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1, 4, 5, 5] x) => (float[1, 6, 10, 10] y) {
        t = ConvTranspose <kernel_shape = [2, 2], strides = [2, 2], group = 2> (x, W)
        a = Add (t, B)
        n = BatchNormalization (a, G, H, M, V)
        y = Relu (n)
    }
    """
    r = rng()
    arrays = {
        "W": r.normal(size=(4, 3, 2, 2)),  # 2 groups of 2 inputs -> 3 outputs each
        "B": r.normal(size=(1, 6, 1, 1)),
        "G": r.uniform(0.5, 2, 6),
        "H": r.normal(size=6),
        "M": r.normal(size=6),
        "V": r.uniform(0.5, 2, 6),
    }
    model = make_model(text, {k: v.astype(np.float32) for k, v in arrays.items()})
    log = DecisionLog()
    folded, modified = apply(FoldAffinePass(log), model)
    assert modified
    assert op_types(folded) == ["ConvTranspose", "Relu"]
    assert [r.detail for r in log.rewrites] == [
        "folded Add into ConvTranspose",
        "folded BatchNormalization into ConvTranspose",
    ]
    x = r.normal(size=(1, 4, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(run(folded, {"x": x})[0], run(model, {"x": x})[0], atol=1e-5)
