from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from qconv.config import QuantizeConfig
from qconv.data import input_specs, open_reader
from qconv.decisions import Reason
from qconv.ort_layout import EIGHT_BIT_POOL_NOTE, UNFUSED_NOTE, runtime_findings
from qconv.qparams import sqnr_db
from qconv.quantize import quantize_model
from tests.graphs import make_model, rng, run

# A quantized 1x1 convolution, then (BRANCH) a max-pool and a global average pool, in Q/DQ form.
# With BRANCH a product of the convolution's output and a clipped copy of it (HardSwish's
# shape), onnxruntime leaves the channels-last Transpose before the split, and the pool
# runs on channels-first integers.
QDQ_TEXT = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[1, 32, 4, 8] x) => (float[1, 32, 1, 1] y) {
    xq = QuantizeLinear (x, s, z)
    xd = DequantizeLinear (xq, s, z)
    wd = DequantizeLinear <axis = 0> (w, ws)
    c = Conv (xd, wd)
    cq = QuantizeLinear (c, s, z)
    cd = DequantizeLinear (cq, s, z)
    BRANCH
    pool = MaxPool <kernel_shape = [2, 2], strides = [2, 2]> (md)
    pq = QuantizeLinear (pool, s, z)
    pd = DequantizeLinear (pq, s, z)
    g = GlobalAveragePool (pd)
    gq = QuantizeLinear (g, s, z)
    y = DequantizeLinear (gq, s, z)
}
"""
HARD_SWISH_LIKE = """cl = Clip (cq, lo, hi)
    cld = DequantizeLinear (cl, s, lo)
    m = Mul (cd, cld)
    mq = QuantizeLinear (m, s, z)
    md = DequantizeLinear (mq, s, z)"""


def qdq_model(branch: str) -> onnx.ModelProto:
    arrays = {
        "s": np.float32(0.02),
        "z": np.uint8(128),
        "lo": np.uint8(100),
        "hi": np.uint8(200),
        "w": rng().integers(-60, 60, (32, 32, 1, 1)).astype(np.int8),
        "ws": np.full(32, 0.01, np.float32),
    }
    return make_model(QDQ_TEXT.replace("BRANCH", branch), arrays)


def test_a_pool_after_a_split_runs_channels_first_and_one_after_the_conv_does_not():
    named = qdq_model(HARD_SWISH_LIKE)
    pool = next(node for node in named.graph.node if node.op_type == "MaxPool")
    pool.name = "the_pool"
    assert runtime_findings(named).channels_first_pools == ["the_pool"]
    direct = qdq_model("md = Identity (cd)")
    next(node for node in direct.graph.node if node.op_type == "MaxPool").name = "the_pool"
    assert runtime_findings(direct).channels_first_pools == []


FLOAT_TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 16, 8, 8] x) => (float[N, 10] y) {
    a = Conv (x, W0, B0)
    ACTIVATION
    p = MaxPool <kernel_shape = [2, 2], strides = [2, 2]> (h)
    g = GlobalAveragePool (p)
    f = Flatten (g)
    y = Gemm <transB = 1> (f, W1, B1)
}
"""


def quantize(activation: str, tmp_path) -> tuple[onnx.ModelProto, object, np.ndarray]:
    """FLOAT_TEXT with ``h = activation (a)``, or ``activation`` itself if it defines ``h``."""
    activation = activation if "h =" in activation else f"h = {activation} (a)"
    r = rng()
    arrays = {
        "W0": r.normal(0, 0.3, (32, 16, 1, 1)),
        "B0": r.normal(0, 0.1, 32),
        "W1": r.normal(0, 0.3, (10, 32)),
        "B1": r.normal(0, 0.1, 10),
    }
    proto = make_model(
        FLOAT_TEXT.replace("ACTIVATION", activation),
        {k: v.astype(np.float32) for k, v in arrays.items()},
    )
    data = r.normal(0, 1, (16, 16, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=data)
    reader = open_reader(tmp_path / "calib.npz", input_specs(proto), 4)
    return proto, quantize_model(proto, reader, QuantizeConfig(float_stem=False)), data[:4]


def pool_scales(model: onnx.ModelProto) -> tuple[float, float]:
    """The scale of the DequantizeLinear before the MaxPool and of the QuantizeLinear after."""
    nodes = model.graph.node
    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    pool = next(node for node in nodes if node.op_type == "MaxPool")
    before = next(node for node in nodes if pool.input[0] in node.output)
    after = next(node for node in nodes if pool.output[0] in node.input)
    assert (before.op_type, after.op_type) == ("DequantizeLinear", "QuantizeLinear")
    return float(constants[before.input[1]]), float(constants[after.input[1]])


def test_a_pool_onnxruntime_would_run_channels_first_gets_its_own_scale(tmp_path):
    proto, result, x = quantize("HardSwish", tmp_path)
    pool = next(d for d in result.decisions if d.op_type == "MaxPool")
    assert (pool.reason, pool.detail) == (Reason.QUANTIZED, EIGHT_BIT_POOL_NOTE)
    assert runtime_findings(result.qdq_model).channels_first_pools == []
    assert pool_scales(result.qdq_model)[0] != pool_scales(result.qdq_model)[1]
    assert sqnr_db(run(proto, {"x": x})[0], run(result.model, {"x": x})[0]) > 25


def test_a_pool_onnxruntime_runs_channels_last_keeps_sharing_its_input_scale(tmp_path):
    proto, result, x = quantize("Relu", tmp_path)
    pool = next(d for d in result.decisions if d.op_type == "MaxPool")
    assert pool.reason is Reason.SHARES_INPUT_SCALE
    assert pool_scales(result.qdq_model)[0] == pool_scales(result.qdq_model)[1]
    assert sqnr_db(run(proto, {"x": x})[0], run(result.model, {"x": x})[0]) > 25


def test_a_transposed_conv_onnxruntime_would_not_fuse_stays_float(tmp_path):
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 8, 6, 6] x) => (float[N, 8, 12, 12] y) {
        a = Conv <pads = [1, 1, 1, 1]> (x, W0, B0)
        r = Relu (a)
        t = ConvTranspose <kernel_shape = [2, 2], strides = [2, 2]> (r, W1, B1)
        s = Relu (t)
        y = Conv <pads = [1, 1, 1, 1]> (s, W2, B2)
    }
    """
    r = rng()
    shapes = {"W0": (8, 8, 3, 3), "W1": (8, 8, 2, 2), "W2": (8, 8, 3, 3)}
    arrays = {k: r.normal(0, 0.3, s) for k, s in shapes.items()}
    arrays |= {f"B{k[1]}": r.normal(0, 0.1, 8) for k in shapes}
    proto = make_model(text, {k: v.astype(np.float32) for k, v in arrays.items()})
    data = r.normal(0, 1, (16, 8, 6, 6)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=data)
    reader = open_reader(tmp_path / "calib.npz", input_specs(proto), 4)
    result = quantize_model(proto, reader, QuantizeConfig(float_stem=False))
    decided = {d.op_type: (d.reason, d.detail) for d in result.decisions}
    assert decided["ConvTranspose"] == (Reason.FASTER_IN_FLOAT, UNFUSED_NOTE)
    assert decided["Conv"][0] is Reason.QUANTIZED
    transposed = next(n for n in result.model.graph.node if n.op_type == "ConvTranspose")
    assert transposed.input[1] in {t.name for t in result.model.graph.initializer}  # float W
    x = data[:4]
    assert sqnr_db(run(proto, {"x": x})[0], run(result.model, {"x": x})[0]) > 25


def test_quantization_goes_on_without_tuning_when_onnxruntime_cannot_be_asked(
    tmp_path, monkeypatch
):
    def broken(model):
        raise RuntimeError("no optimized graph today")

    monkeypatch.setattr("qconv.quantize.runtime_findings", broken)
    proto, result, x = quantize("HardSwish", tmp_path)
    pool = next(d for d in result.decisions if d.op_type == "MaxPool")
    assert pool.reason is Reason.SHARES_INPUT_SCALE  # the untuned plan
    assert any("runtime tuning skipped" in note for note in result.log.notes)
    assert sqnr_db(run(proto, {"x": x})[0], run(result.model, {"x": x})[0]) > 25


def test_a_float_op_onnxruntime_runs_on_integers_is_reported_as_such(tmp_path):
    # SiLU: the plan leaves the Sigmoid float, between the Conv's and the Mul's conversions,
    # which onnxruntime fuses into a QLinearSigmoid table lookup.
    silu = "sg = Sigmoid (a)\n    h = Mul (a, sg)"
    _, result, _ = quantize(silu, tmp_path)
    sigmoid = next(d for d in result.decisions if d.op_type == "Sigmoid")
    assert sigmoid.reason is Reason.NO_INTEGER_KERNEL
    assert sigmoid.detail.endswith("into QLinearSigmoid, so it runs on the integers there")
    named = onnx.ModelProto()
    named.CopyFrom(result.qdq_model)
    for index, node in enumerate(named.graph.node):
        node.name = f"n{index}"
    kernels = runtime_findings(named).integer_kernels
    assert {"QLinearSigmoid", "QLinearMul"} <= set(kernels.values())
