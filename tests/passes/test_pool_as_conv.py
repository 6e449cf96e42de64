"""Quantized average pools become depthwise convolutions: same integers, a fast kernel."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from qconv.config import QuantFormat, QuantizeConfig, QuantType
from qconv.passes.pool_as_conv import DETAIL, PoolAsConvPass, refusal
from qconv.quantize import quantize_model
from qconv.runtime import create_session, optimized_model
from tests.graphs import apply, make_model, op_types, rng, run
from tests.passes.test_quantize_passes import Batches

SCALE = 0.05

# A pool between the conversions, as insert_qdq leaves it.
QDQ_POOL = """
<ir_version: 9, opset_import: ["" : {opset}]>
g (float[1, {channels}, 9, 9] x) => (float[1, {channels}, OH, OW] y) {{
    xq = QuantizeLinear (x, s, z)
    xd = DequantizeLinear (xq, s, z)
    p = AveragePool <{attributes}> (xd)
    pq = QuantizeLinear (p, s, z)
    y = DequantizeLinear (pq, s, z)
}}
"""
PADDED = "kernel_shape = [3, 3], strides = [2, 2], pads = [1, 1, 1, 1], count_include_pad = 1"


def qdq_pool(attributes: str = PADDED, channels: int = 16, opset: int = 13) -> onnx.ModelProto:
    text = QDQ_POOL.format(channels=channels, attributes=attributes, opset=opset)
    model = make_model(text, {"s": np.float32(SCALE), "z": np.uint8(128)})
    return onnx.shape_inference.infer_shapes(model)


def feed(channels: int = 16) -> dict[str, np.ndarray]:
    return {"x": rng().normal(0, 2, (1, channels, 9, 9)).astype(np.float32)}


@pytest.mark.parametrize(
    "attributes",
    [
        PADDED,
        "kernel_shape = [3, 2], strides = [3, 2]",  # PP-OCR's recogniser, no padding
        "kernel_shape = [3, 3], strides = [2, 2], ceil_mode = 1",  # (9 - 3) / 2 is whole
    ],
)
def test_pool_becomes_a_depthwise_conv_with_the_same_outputs(attributes):
    model = qdq_pool(attributes)
    converted, changed = apply(PoolAsConvPass(), model)
    assert changed
    assert "AveragePool" not in op_types(converted)
    conv = next(n for n in converted.graph.node if n.op_type == "Conv")
    assert [a.i for a in conv.attribute if a.name == "group"] == [16]
    # Under the reference semantics and onnxruntime's fused integer kernels alike, an average
    # falling on a tie between two steps may round the other way (1/k is rounded): one step.
    expected = run(model, feed())[0]
    for actual in (run(converted, feed())[0], create_session(converted).run(None, feed())[0]):
        difference = np.abs(actual - expected)
        assert difference.max() <= SCALE * 1.001
        assert np.mean(difference > 0) < 0.05


def test_a_dilated_pool_becomes_a_conv_whatever_its_channels():
    # onnxruntime's integer pool has no dilations: a model with one would not load
    model = qdq_pool("kernel_shape = [2, 2], dilations = [2, 2]", channels=4, opset=19)
    converted, changed = apply(PoolAsConvPass(), model)
    assert changed and "AveragePool" not in op_types(converted)
    expected = run(model, feed(4))[0]
    assert np.abs(create_session(converted).run(None, feed(4))[0] - expected).max() <= SCALE * 1.001


def test_onnxruntime_runs_it_as_an_integer_convolution():
    converted, _ = apply(PoolAsConvPass(), qdq_pool())
    kernels = op_types(optimized_model(converted))
    assert "QLinearConv" in kernels
    assert "QLinearAveragePool" not in kernels


@pytest.mark.parametrize(
    "attributes, channels, why",
    [
        (PADDED.replace("count_include_pad = 1", "count_include_pad = 0"), 16, "border"),
        ("kernel_shape = [2, 2], strides = [2, 2], ceil_mode = 1", 16, "partial windows"),
        (PADDED, 4, "under 8 channels"),
    ],
)
def test_pools_that_would_compute_otherwise_or_run_slower_stay(attributes, channels, why):
    model = qdq_pool(attributes, channels)
    pool = next(n for n in ir.from_proto(model).graph if n.op_type == "AveragePool")
    assert why in refusal(pool)
    converted, changed = apply(PoolAsConvPass(), model)
    assert not changed
    assert "AveragePool" in op_types(converted)


FLOAT_MODEL = """
<ir_version: 9, opset_import: ["" : {opset}]>
g (float[N, 3, 16, 16] x) => (float[N, 8, 8, 8] y) {{
    c = Conv <pads = [1, 1, 1, 1]> (x, W1, B1)
    r = Relu (c)
    p = AveragePool <{pool}> (r)
    y = Conv (p, W2, B2)
}}
"""


def float_model(pool: str = PADDED, opset: int = 13) -> onnx.ModelProto:
    r = rng()
    model = make_model(
        FLOAT_MODEL.format(pool=pool, opset=opset),
        {
            "W1": r.normal(0, 0.5, (16, 3, 3, 3)).astype(np.float32),
            "B1": r.normal(0, 0.1, 16).astype(np.float32),
            "W2": r.normal(0, 0.5, (8, 16, 1, 1)).astype(np.float32),
            "B2": r.normal(0, 0.1, 8).astype(np.float32),
        },
    )
    for node in model.graph.node:
        node.name = f"{node.op_type}_{node.output[0]}"
    return model


def float_feeds() -> list[dict[str, np.ndarray]]:
    r = rng()
    return [{"x": r.normal(0, 1, (2, 3, 16, 16)).astype(np.float32)} for _ in range(4)]


@pytest.mark.parametrize(
    "fmt, activations",
    [
        (QuantFormat.QDQ, QuantType.UINT8),
        (QuantFormat.QOPERATOR, QuantType.UINT8),
        (QuantFormat.QDQ, QuantType.INT8),
    ],
)
def test_quantize_model_writes_the_pool_as_a_conv_and_says_so(fmt, activations):
    model, feeds = float_model(), float_feeds()
    config = QuantizeConfig(
        format=fmt, activation_type=activations, float_stem=False, runtime_tuning=False
    )
    result = quantize_model(model, Batches(feeds), config)
    pool = next(d for d in result.decisions if d.op_type == "AveragePool")
    assert pool.reason.quantized and pool.detail == DETAIL
    kernels = {n.name: n.op_type for n in result.model.graph.node}
    assert kernels[pool.node] == ("QLinearConv" if fmt is QuantFormat.QOPERATOR else "Conv")
    assert "AveragePool" not in kernels.values() and "QLinearAveragePool" not in kernels.values()
    runs_as = [n.op_type for n in optimized_model(result.model).graph.node]
    assert "QLinearAveragePool" not in runs_as and runs_as.count("QLinearConv") == 3
    reference, approx = run(model, feeds[0])[0], run(result.model, feeds[0])[0]
    error = np.linalg.norm(reference - approx) / np.linalg.norm(reference)
    assert error < 0.02


def test_a_dilated_pool_that_cannot_be_a_conv_stays_float_and_the_model_loads():
    # Border windows over fewer values: no depthwise Conv computes it, and onnxruntime's
    # integer pool has no dilations (a model with one fails to load)
    pool = "kernel_shape = [3, 3], dilations = [2, 2], pads = [2, 2, 2, 2], strides = [2, 2]"
    model, feeds = float_model(pool, opset=19), float_feeds()
    result = quantize_model(model, Batches(feeds), QuantizeConfig(float_stem=False))
    decision = next(d for d in result.decisions if d.op_type == "AveragePool")
    assert not decision.reason.quantized
    assert "dilations" in decision.detail and "count_include_pad=0" in decision.detail
    reader = next(d for d in result.decisions if d.node == "Conv_y")
    assert not reader.reason.quantized and "stays float" in reader.detail
    assert "QLinearAveragePool" not in op_types(optimized_model(result.model))
    reference, approx = run(model, feeds[0])[0], run(result.model, feeds[0])[0]
    assert np.linalg.norm(reference - approx) / np.linalg.norm(reference) < 0.02
