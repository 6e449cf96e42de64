"""Spatial ReduceMean nodes become GlobalAveragePool: same outputs, an integer kernel."""

from __future__ import annotations

import numpy as np
import pytest

from qconv.config import QuantizeConfig
from qconv.passes.mean_as_pool import MeanAsPoolPass
from qconv.quantize import quantize_model
from qconv.runtime import optimized_model
from tests.graphs import apply, make_model, op_types, rng, run
from tests.passes.test_quantize_passes import Batches

ATTRIBUTE_AXES = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 8, 6, 5] x) => (float[{out}] y) {{
    y = ReduceMean <axes = {axes}, keepdims = {keepdims}> (x)
}}
"""
INPUT_AXES = """
<ir_version: 9, opset_import: ["" : 18]>
g (float[N, 8, 6, 5] x) => (float[{out}] y) {{
    y = ReduceMean <keepdims = {keepdims}> (x, axes)
}}
"""


def feed() -> dict[str, np.ndarray]:
    return {"x": rng().normal(0, 1, (3, 8, 6, 5)).astype(np.float32)}


@pytest.mark.parametrize(
    "text, axes, keepdims, out",
    [
        (ATTRIBUTE_AXES, "[2, 3]", 1, "N, 8, 1, 1"),
        (ATTRIBUTE_AXES, "[-1, -2]", 0, "N, 8"),
        (INPUT_AXES, [2, 3], 1, "N, 8, 1, 1"),
        (INPUT_AXES, [-2, 3], 0, "N, 8"),
    ],
)
def test_a_spatial_mean_becomes_a_global_pool_with_the_same_outputs(text, axes, keepdims, out):
    constants = {"axes": np.array(axes, np.int64)} if text is INPUT_AXES else {}
    model = make_model(text.format(axes=axes, keepdims=keepdims, out=out), constants)
    converted, changed = apply(MeanAsPoolPass(), model)
    assert changed
    assert op_types(converted) == ["GlobalAveragePool"] + ([] if keepdims else ["Flatten"])
    assert [o.name for o in converted.graph.output] == ["y"]
    expected, actual = run(model, feed())[0], run(converted, feed())[0]
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("axes, out", [("[1]", "N, 6, 5"), ("[2]", "N, 8, 5"), ("[0, 2, 3]", "8")])
def test_a_mean_over_other_axes_stays(axes, out):
    model = make_model(ATTRIBUTE_AXES.format(axes=axes, keepdims=0, out=out))
    converted, changed = apply(MeanAsPoolPass(), model)
    assert not changed and op_types(converted) == ["ReduceMean"]


def test_a_mean_over_the_last_axis_of_a_3d_tensor_stays():
    # A transformer's LayerNorm mean (onnxruntime fuses the chain in float)
    text = """
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[N, 16, 64] x) => (float[N, 16, 1] y) {
        y = ReduceMean <axes = [-1]> (x)
    }
    """
    converted, changed = apply(MeanAsPoolPass(), make_model(text))
    assert not changed and op_types(converted) == ["ReduceMean"]


# The head torch's dynamo exporter writes for AdaptiveAvgPool2d(1) + Linear
HEAD = """
<ir_version: 9, opset_import: ["" : 18]>
g (float[N, 3, 16, 16] x) => (float[N, 64] y) {
    c = Conv <pads = [1, 1, 1, 1]> (x, W1, B1)
    r = Relu (c)
    m = ReduceMean <keepdims = 1> (r, axes)
    f = Reshape (m, shape)
    y = Gemm <transB = 1> (f, W2, B2)
}
"""


def test_the_head_after_a_spatial_mean_is_quantized():
    r = rng()
    model = make_model(
        HEAD,
        {
            "W1": r.normal(0, 0.3, (256, 3, 3, 3)).astype(np.float32),
            "B1": r.normal(0, 0.1, 256).astype(np.float32),
            "axes": np.array([2, 3], np.int64),
            "shape": np.array([-1, 256], np.int64),
            "W2": r.normal(0, 0.1, (64, 256)).astype(np.float32),
            "B2": r.normal(0, 0.1, 64).astype(np.float32),
        },
    )
    feeds = [{"x": r.normal(0, 1, (2, 3, 16, 16)).astype(np.float32)} for _ in range(4)]
    result = quantize_model(model, Batches(feeds), QuantizeConfig(float_stem=False))
    reasons = {d.op_type: d.reason for d in result.decisions}
    assert reasons["GlobalAveragePool"].quantized and reasons["Gemm"].quantized
    kernels = op_types(optimized_model(result.model))
    assert "QLinearGlobalAveragePool" in kernels and "ReduceMean" not in kernels
    expected, actual = run(model, feeds[0])[0], run(result.model, feeds[0])[0]
    assert np.linalg.norm(expected - actual) / np.linalg.norm(expected) < 0.05
