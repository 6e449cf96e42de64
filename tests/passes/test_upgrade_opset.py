"""Opset upgrade: an opset-11 graph whose ops changed meaning at 13 computes the same after it."""

from __future__ import annotations

import numpy as np

from qconv.passes.upgrade_opset import UpgradeOpsetPass
from tests.graphs import apply, make_model, rng, run

# Softmax's axis semantics, Squeeze's and Split's attributes all changed at opset 13.
OPSET_11 = """
<ir_version: 7, opset_import: ["" : 11]>
g (float[2, 3, 4, 1] x) => (float[2, 3, 4] s, float[2, 1, 4, 1] a, float[2, 2, 4, 1] b) {
    m = Mul (x, K)
    q = Squeeze <axes = [3]> (m)
    s = Softmax <axis = 1> (q)
    a, b = Split <axis = 1, split = [1, 2]> (m)
}
"""


def test_opset_11_graph_is_converted_and_computes_the_same():
    model = make_model(OPSET_11, {"K": np.float32(2.0)})
    converted, modified = apply(UpgradeOpsetPass(), model)
    assert modified
    assert [o.version for o in converted.opset_import if o.domain in ("", "ai.onnx")] == [13]
    feed = {"x": rng().normal(0, 1, (2, 3, 4, 1)).astype(np.float32)}
    for before, after in zip(run(model, feed), run(converted, feed), strict=True):
        np.testing.assert_array_equal(before, after)


def test_opset_13_graph_is_left_alone():
    model = make_model(
        OPSET_11.replace('"" : 11', '"" : 13')
        .replace("Squeeze <axes = [3]> (m)", "Squeeze (m, Axes)")
        .replace("Split <axis = 1, split = [1, 2]> (m)", "Split <axis = 1> (m, Sizes)"),
        {"K": np.float32(2.0), "Axes": np.array([3]), "Sizes": np.array([1, 2])},
    )
    _, modified = apply(UpgradeOpsetPass(), model)
    assert not modified


RESIZE_10 = """
<ir_version: 5, opset_import: ["" : 10]>
g (float[1, 2, 5, 5] x)
    => (float[1, 2, 10, 10] linear, float[1, 2, 15, 15] up, float[1, 2, 3, 3] down) {
    linear = Resize <mode = "linear"> (x, Twice)
    up = Resize (x, Thrice)
    down = Resize <mode = "nearest"> (x, Smaller)
}
"""


def test_opset_10_resize_keeps_its_sampling_grid():
    # ONNX's converter leaves opset 11's defaults, which sample other points than opset 10.
    scales = {"Twice": np.array([1, 1, 2, 2], np.float32)}
    scales["Thrice"] = np.array([1, 1, 3, 3], np.float32)
    scales["Smaller"] = np.array([1, 1, 0.6, 0.6], np.float32)
    model = make_model(RESIZE_10, scales)
    converted, modified = apply(UpgradeOpsetPass(), model)
    assert modified
    feed = {"x": rng().normal(0, 1, (1, 2, 5, 5)).astype(np.float32)}
    for before, after in zip(run(model, feed), run(converted, feed), strict=True):
        np.testing.assert_allclose(before, after, rtol=1e-6, atol=1e-6)
