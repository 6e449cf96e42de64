from __future__ import annotations

import numpy as np
import pytest

from qconv.decisions import DecisionLog
from qconv.passes.fold_batchnorm import FoldBatchNormPass
from tests.graphs import apply, make_model, op_types, rng


def bn_params(channels: int) -> dict[str, np.ndarray]:
    r = rng()
    return {
        "gamma": r.uniform(0.5, 2, channels).astype(np.float32),
        "beta": r.normal(0, 1, channels).astype(np.float32),
        "mean": r.normal(0, 1, channels).astype(np.float32),
        "var": r.uniform(0.1, 3, channels).astype(np.float32),
    }


CONV_BN = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[2, 3, 8, 8] x) => (float[2, 4, 8, 8] y) {
    c = Conv <pads = [1, 1, 1, 1]> (x, W, B)
    y = BatchNormalization <epsilon = 0.001> (c, gamma, beta, mean, var)
}
"""


def test_conv_bn_folds_into_one_conv_with_identical_outputs():
    weights = {"W": rng().normal(size=(4, 3, 3, 3)).astype(np.float32), "B": np.ones(4, np.float32)}
    model = make_model(CONV_BN, weights | bn_params(4))
    x = rng().normal(size=(2, 3, 8, 8)).astype(np.float32)
    log = DecisionLog()

    folded, modified = apply(FoldBatchNormPass(log), model)

    assert modified
    assert op_types(folded) == ["Conv"]
    assert folded.graph.output[0].name == "y"
    np.testing.assert_allclose(run1(folded, x), run1(model, x), rtol=1e-5, atol=1e-5)
    assert [r.applied for r in log.rewrites] == [True]


def run1(model, x):
    from tests.graphs import run

    return run(model, {"x": x})[0]


def test_conv_without_bias_and_grouped_depthwise_conv():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1, 4, 6, 6] x) => (float[1, 4, 6, 6] y) {
        c = Conv <group = 4, pads = [1, 1, 1, 1]> (x, W)
        y = BatchNormalization (c, gamma, beta, mean, var)
    }
    """
    model = make_model(
        text, {"W": rng().normal(size=(4, 1, 3, 3)).astype(np.float32)} | bn_params(4)
    )
    x = rng().normal(size=(1, 4, 6, 6)).astype(np.float32)
    folded, _ = apply(FoldBatchNormPass(), model)
    assert op_types(folded) == ["Conv"]
    np.testing.assert_allclose(run1(folded, x), run1(model, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("group", [1, 2])
def test_conv_transpose_bn(group):
    text = f"""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1, 4, 5, 5] x) => (float[1, 6, 10, 10] y) {{
        c = ConvTranspose <group = {group}, strides = [2, 2], output_padding = [1, 1],
                           pads = [1, 1, 1, 1]> (x, W, B)
        y = BatchNormalization (c, gamma, beta, mean, var)
    }}
    """
    w = rng().normal(size=(4, 6 // group, 3, 3)).astype(np.float32)
    model = make_model(text, {"W": w, "B": np.full(6, 0.5, np.float32)} | bn_params(6))
    x = rng().normal(size=(1, 4, 5, 5)).astype(np.float32)
    folded, _ = apply(FoldBatchNormPass(), model)
    assert op_types(folded) == ["ConvTranspose"]
    np.testing.assert_allclose(run1(folded, x), run1(model, x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_bn_with_alpha_and_beta(trans_b):
    text = f"""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[3, 5] x) => (float[3, 4] y) {{
        c = Gemm <alpha = 0.5, beta = 2.0, transB = {trans_b}> (x, W, C)
        y = BatchNormalization (c, gamma, beta, mean, var)
    }}
    """
    shape = (4, 5) if trans_b else (5, 4)
    w = rng().normal(size=shape).astype(np.float32)
    model = make_model(text, {"W": w, "C": np.arange(4, dtype=np.float32)} | bn_params(4))
    x = rng().normal(size=(3, 5)).astype(np.float32)
    folded, _ = apply(FoldBatchNormPass(), model)
    assert op_types(folded) == ["Gemm"]
    np.testing.assert_allclose(run1(folded, x), run1(model, x), rtol=1e-5, atol=1e-5)


def test_matmul_bn_becomes_matmul_plus_add():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[3, 5] x) => (float[3, 4] y) {
        c = MatMul (x, W)
        y = BatchNormalization (c, gamma, beta, mean, var)
    }
    """
    model = make_model(text, {"W": rng().normal(size=(5, 4)).astype(np.float32)} | bn_params(4))
    x = rng().normal(size=(3, 5)).astype(np.float32)
    folded, _ = apply(FoldBatchNormPass(), model)
    assert op_types(folded) == ["MatMul", "Add"]
    np.testing.assert_allclose(run1(folded, x), run1(model, x), rtol=1e-5, atol=1e-5)


def test_bn_is_kept_with_a_reason_when_the_conv_output_has_another_reader():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1, 3, 4, 4] x) => (float[1, 4, 4, 4] y, float[1, 4, 4, 4] c) {
        c = Conv (x, W)
        y = BatchNormalization (c, gamma, beta, mean, var)
    }
    """
    model = make_model(
        text, {"W": rng().normal(size=(4, 3, 1, 1)).astype(np.float32)} | bn_params(4)
    )
    log = DecisionLog()
    folded, modified = apply(FoldBatchNormPass(log), model)
    assert not modified
    assert op_types(folded) == ["Conv", "BatchNormalization"]
    assert "other readers" in log.rewrites[0].detail


def test_bn_after_a_graph_input_is_refused():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1, 4, 4, 4] x) => (float[1, 4, 4, 4] y) {
        y = BatchNormalization (x, gamma, beta, mean, var)
    }
    """
    log = DecisionLog()
    _, modified = apply(FoldBatchNormPass(log), make_model(text, bn_params(4)))
    assert not modified
    assert "graph input" in log.rewrites[0].detail
