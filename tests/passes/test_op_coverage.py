"""Every op the quantizer claims is quantized in both formats, on one small graph."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest

from qconv.config import QuantFormat, QuantizeConfig
from qconv.quantize import quantize_model
from tests.graphs import make_model, rng, run
from tests.passes.test_quantize_passes import Batches

GRAPH = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 4, 8, 8] x) => (float[N, 36] y) {
    c = Conv <pads = [1, 1, 1, 1]> (x, Wc, Bc)
    t = ConvTranspose <strides = [2, 2], kernel_shape = [2, 2]> (c, Wt, Bt)
    ap = AveragePool <kernel_shape = [2, 2], strides = [2, 2]> (t)
    cat = Concat <axis = 1> (ap, c)
    mul = Mul (cat, k)
    p1, p2 = Split <axis = 1> (mul, split)
    add = Add (p1, p2)
    rs = Resize <mode = "nearest"> (add, , scales)
    mp = MaxPool <kernel_shape = [2, 2], strides = [2, 2]> (rs)
    sl = Slice (mp, zero, one, three)
    sq = Squeeze (sl, three)
    us = Unsqueeze (sq, three)
    tr = Transpose <perm = [0, 2, 1, 3]> (us)
    fl = Flatten (tr)
    gt = Gather <axis = 1> (fl, order)
    rsh = Reshape (gt, shape)
    h = MatMul (rsh, Wm)
    gp = GlobalAveragePool (c)
    gpf = Flatten (gp)
    gm = Gemm (gpf, Wg, Bg)
    s = Add (h, gm)
    a = Unsqueeze (s, two)
    b = Unsqueeze (gm, one)
    o = MatMul (a, b)
    y = Flatten (o)
}
"""
COVERED = (
    "Conv",
    "ConvTranspose",
    "AveragePool",
    "Concat",
    "Mul",
    "Split",
    "Add",
    "Resize",
    "MaxPool",
    "Slice",
    "Squeeze",
    "Unsqueeze",
    "Transpose",
    "Flatten",
    "Gather",
    "Reshape",
    "MatMul",
    "GlobalAveragePool",
    "Gemm",
)


def coverage_model() -> onnx.ModelProto:
    r = rng()
    return make_model(
        GRAPH,
        {
            "Wc": r.normal(0, 0.3, (8, 4, 3, 3)).astype(np.float32),
            "Bc": r.normal(0, 0.1, 8).astype(np.float32),
            "Wt": r.normal(0, 0.3, (8, 4, 2, 2)).astype(np.float32),
            "Bt": r.normal(0, 0.1, 4).astype(np.float32),
            "k": np.full((1, 12, 1, 1), 0.5, np.float32),
            "split": np.array([6, 6], np.int64),
            "scales": np.array([1, 1, 0.5, 0.5], np.float32),
            "zero": np.array([0], np.int64),
            "one": np.array([1], np.int64),
            "two": np.array([2], np.int64),
            "three": np.array([3], np.int64),
            "shape": np.array([-1, 12], np.int64),
            "order": r.permutation(12).astype(np.int64),
            "Wm": r.normal(0, 0.3, (12, 6)).astype(np.float32),
            "Wg": r.normal(0, 0.3, (8, 6)).astype(np.float32),
            "Bg": r.normal(0, 0.1, 6).astype(np.float32),
        },
    )


def feeds(count: int) -> list[dict[str, np.ndarray]]:
    r = np.random.default_rng(1)
    return [{"x": r.normal(0, 1, (4, 4, 8, 8)).astype(np.float32)} for _ in range(count)]


@pytest.mark.parametrize("fmt", list(QuantFormat))
def test_every_listed_op_is_quantized_and_outputs_stay_close(fmt):
    model = coverage_model()
    config = QuantizeConfig(format=fmt, float_stem=False, runtime_tuning=False)
    result = quantize_model(model, Batches(feeds(8)), config)
    reasons = {d.op_type: d.reason for d in result.decisions}
    assert all(reasons[op].quantized for op in COVERED), reasons
    x = feeds(1)[0]
    reference, approx = run(model, x)[0], run(result.model, x)[0]
    cosine = float(
        np.dot(reference.ravel(), approx.ravel())
        / (np.linalg.norm(reference) * np.linalg.norm(approx))
    )
    assert cosine > 0.995


def test_qoperator_form_uses_integer_kernels():
    result = quantize_model(
        coverage_model(),
        Batches(feeds(8)),
        QuantizeConfig(format=QuantFormat.QOPERATOR, float_stem=False),
    )
    ops = Counter(n.op_type for n in result.model.graph.node)
    for op in (
        "QLinearConv",
        "QLinearMatMul",
        "QGemm",
        "QLinearAdd",
        "QLinearMul",
        "QLinearConcat",
        "QLinearAveragePool",
        "QLinearGlobalAveragePool",
    ):
        assert ops[op] >= 1, (op, ops)
    assert ops["Conv"] == ops["Gemm"] == ops["Add"] == ops["Mul"] == 0
    # ConvTranspose has no QLinear form in onnxruntime's CPU kernels: it stays in QDQ form
    assert ops["ConvTranspose"] == 1
