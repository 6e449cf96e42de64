"""The plan, the QDQ rewrite and the QOperator conversion on tiny graphs, checked in onnxruntime."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from qconv.calibrate.collect import collect_statistics
from qconv.calibrate.params import activation_params, tensor_ranges
from qconv.config import QuantizeConfig
from qconv.decisions import Reason
from qconv.passes.insert_qdq import InsertQDQPass
from qconv.passes.to_qoperator import ToQOperatorPass
from qconv.plan import make_plan
from qconv.qparams import sqnr_db
from tests.graphs import make_model, op_types, rng, run

CONV_RELU_POOL_CONV = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 3, 8, 8] x) => (float[N, 4, 4, 4] y, float[N, 4, 4, 4] s) {
    a = Conv <pads = [1, 1, 1, 1]> (x, W1, B1)
    r = Relu (a)
    p = MaxPool <kernel_shape = [2, 2], strides = [2, 2]> (r)
    y = Conv <pads = [1, 1, 1, 1]> (p, W2, B2)
    s = Softmax <axis = 1> (y)
}
"""


def conv_model() -> onnx.ModelProto:
    r = rng()
    return make_model(
        CONV_RELU_POOL_CONV,
        {
            "W1": r.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32),
            "B1": r.normal(0, 0.1, 4).astype(np.float32),
            "W2": r.normal(0, 0.3, (4, 4, 3, 3)).astype(np.float32),
            "B2": r.normal(0, 0.1, 4).astype(np.float32),
        },
    )


class Batches:
    """A minimal reader over a list of feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self.feeds = feeds

    def __iter__(self):
        return iter(self.feeds)

    num_batches = property(lambda self: len(self.feeds))
    num_samples = property(lambda self: sum(len(f["x"]) for f in self.feeds))

    def labels(self):
        return None


def feeds(count: int = 8) -> list[dict[str, np.ndarray]]:
    r = rng()
    return [{"x": r.normal(0, 1, (4, 3, 8, 8)).astype(np.float32)} for _ in range(count)]


def quantize_tiny(model: onnx.ModelProto, config: QuantizeConfig) -> tuple[onnx.ModelProto, list]:
    graph = ir.from_proto(model)
    ir.passes.common.ShapeInferencePass()(graph)
    plan = make_plan(graph, config)
    stats = collect_statistics(model, plan.calibration_tensors, Batches(feeds()))
    params = activation_params(plan, tensor_ranges(plan.calibration_tensors, stats, config))
    InsertQDQPass(plan, params, config)(graph)
    return ir.to_proto(graph), plan.decisions


def test_plan_folds_relu_shares_maxpool_scale_and_keeps_softmax_float():
    graph = ir.from_proto(conv_model())
    ir.passes.common.ShapeInferencePass()(graph)
    plan = make_plan(graph, QuantizeConfig())
    reasons = {d.op_type: d.reason for d in plan.decisions}
    assert reasons == {
        "Conv": Reason.QUANTIZED,
        "Relu": Reason.ACTIVATION_FOLDED,
        "MaxPool": Reason.SHARES_INPUT_SCALE,
        "Softmax": Reason.NO_INTEGER_KERNEL,
    }
    # the first Conv's output is quantized with the Relu output's range
    assert "r" in plan.calibration_tensors and "a" not in plan.calibration_tensors


def test_symmetric_activations_keep_the_relu():
    graph = ir.from_proto(conv_model())
    plan = make_plan(graph, QuantizeConfig(symmetric_activations=True))
    assert {d.op_type: d.reason for d in plan.decisions}["Relu"] is Reason.NO_INTEGER_KERNEL


def test_exclusion_by_op_type_and_by_name():
    graph = ir.from_proto(conv_model())
    names = [n.name for n in graph.graph]
    plan = make_plan(graph, QuantizeConfig(exclude=("MaxPool",)))
    assert {d.op_type: d.reason for d in plan.decisions}["MaxPool"] is Reason.EXCLUDED
    first_conv = next(n for n in graph.graph if n.op_type == "Conv")
    first_conv.name = "stem"
    plan = make_plan(graph, QuantizeConfig(exclude=("stem",)))
    assert plan.decisions[0].reason is Reason.EXCLUDED
    assert len(names) == len(plan.decisions)


def test_elementwise_op_between_float_ops_is_not_quantized():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2, 4] x) => (float[2, 4] y) {
        a = Softmax (x)
        b = Add (a, a)
        y = Sigmoid (b)
    }
    """
    plan = make_plan(ir.from_proto(make_model(text)), QuantizeConfig())
    assert {d.op_type: d.reason for d in plan.decisions}["Add"] is Reason.NO_QUANTIZED_NEIGHBOUR
    assert plan.calibration_tensors == []


def test_qdq_rewrite_is_accurate_and_keeps_one_pair_per_tensor():
    model = conv_model()
    quantized, _ = quantize_tiny(model, QuantizeConfig())
    onnx.checker.check_model(quantized, full_check=True)
    ops = Counter(op_types(quantized))
    assert ops["Relu"] == 0 and ops["Conv"] == 2 and ops["Softmax"] == 1
    # pairs on x, the Conv output (Relu range), MaxPool's output (same scale) and y;
    # plus a DequantizeLinear for each of the two weights and two biases
    assert ops["QuantizeLinear"] == 4 and ops["DequantizeLinear"] == 4 + 4
    x = feeds(1)[0]
    float_y, float_s = run(model, x)
    int8_y, int8_s = run(quantized, x)
    assert sqnr_db(float_y, int8_y) > 30
    assert np.abs(float_s - int8_s).max() < 0.05
    assert [o.name for o in quantized.graph.output] == ["y", "s"]


def test_qoperator_conversion_matches_the_qdq_model():
    model = conv_model()
    qdq, _ = quantize_tiny(model, QuantizeConfig())
    graph = ir.from_proto(qdq)
    ToQOperatorPass()(graph)
    qop = ir.to_proto(graph)
    onnx.checker.check_model(qop)
    assert op_types(qop) == [
        "QuantizeLinear",
        "QLinearConv",
        "MaxPool",
        "QLinearConv",
        "DequantizeLinear",
        "Softmax",
    ]
    # both convolutions' per-channel weights read one scalar zero point
    (weight_zero,) = {n.input[5] for n in qop.graph.node if n.op_type == "QLinearConv"}
    assert [list(t.dims) for t in qop.graph.initializer if t.name == weight_zero] == [[]]
    x = feeds(1)[0]
    qdq_y = run(qdq, x)[0]
    qop_y = run(qop, x)[0]
    step = float(
        onnx.numpy_helper.to_array(
            next(t for t in qop.graph.initializer if t.name == qop.graph.node[-2].input[1])
        )
    )
    assert np.abs(qdq_y - qop_y).max() <= step + 1e-6


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_per_channel_axis_follows_trans_b(trans_b):
    text = f"""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 3, 8, 8] x) => (float[N, 5] y) {{
        f = Flatten (x)
        y = Gemm <transB = {trans_b}> (f, W, C)
    }}
    """
    shape = (5, 192) if trans_b else (192, 5)
    weights = {
        "W": rng().normal(0, 0.1, shape).astype(np.float32),
        "C": np.arange(5, dtype=np.float32),
    }
    model = make_model(text, weights)
    quantized, _ = quantize_tiny(model, QuantizeConfig())
    weight_dq = next(
        n
        for n in quantized.graph.node
        if n.op_type == "DequantizeLinear" and n.attribute and len(n.input) == 3
    )
    assert weight_dq.attribute[0].i == (0 if trans_b else 1)
    x = feeds(1)[0]
    assert sqnr_db(run(model, x)[0], run(quantized, x)[0]) > 30


def test_a_weight_shared_by_unrolled_steps_is_stored_once():
    # An unrolled RNN reads one weight matrix at every step; storing it per node would make the
    # int8 model larger than the float one.
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2, 16] x) => (float[2, 16] y) {
        h1 = Gemm <transB = 1> (x, W, B)
        t1 = Tanh (h1)
        h2 = Gemm <transB = 1> (t1, W, B)
        t2 = Tanh (h2)
        h3 = Gemm <transB = 1> (t2, W, B)
        y = Tanh (h3)
    }
    """
    r = rng()
    weights = {"W": r.normal(0, 0.3, (16, 16)), "B": r.normal(0, 0.1, 16)}
    model = make_model(text, {k: v.astype(np.float32) for k, v in weights.items()})
    graph = ir.from_proto(model)
    plan = make_plan(graph, QuantizeConfig())
    data = [{"x": r.normal(0, 1, (2, 16)).astype(np.float32)} for _ in range(8)]
    stats = collect_statistics(model, plan.calibration_tensors, Batches(data))
    params = activation_params(
        plan, tensor_ranges(plan.calibration_tensors, stats, QuantizeConfig())
    )
    InsertQDQPass(plan, params, QuantizeConfig())(graph)
    quantized = ir.to_proto(graph)
    matrices = [t for t in quantized.graph.initializer if list(t.dims) == [16, 16]]
    assert [t.data_type for t in matrices] == [onnx.TensorProto.INT8]
    assert sum(n.op_type == "DequantizeLinear" for n in quantized.graph.node) >= 3 + 3
    for feed in data:
        (expected,) = run(model, feed)
        (actual,) = run(quantized, feed)
        assert sqnr_db(expected, actual) > 25  # three chained uint8/int8 layers: about 30 dB


def test_a_clip_with_a_computed_max_is_kept_not_folded():
    # Folding a Clip into its input's range is only right when both bounds are known now; a max
    # read at run time would be dropped and values above it would pass through.
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 3, 8, 8] x, float hi) => (float[N, 4, 8, 8] y) {
        a = Conv <pads = [1, 1, 1, 1]> (x, W1, B1)
        c = Clip (a, lo, hi)
        y = Conv <pads = [1, 1, 1, 1]> (c, W2, B2)
    }
    """
    model = conv_model()
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    model = make_model(text, {**weights, "lo": np.array(0.0, dtype=np.float32)})
    graph = ir.from_proto(model)
    plan = make_plan(graph, QuantizeConfig())
    assert {d.op_type: d.reason for d in plan.decisions}["Clip"] is not Reason.ACTIVATION_FOLDED
    data = [dict(x, hi=np.array(0.25, dtype=np.float32)) for x in feeds()]
    stats = collect_statistics(model, plan.calibration_tensors, Batches(data))
    config = QuantizeConfig()
    params = activation_params(plan, tensor_ranges(plan.calibration_tensors, stats, config))
    InsertQDQPass(plan, params, config)(graph)
    quantized = ir.to_proto(graph)
    assert "Clip" in op_types(quantized)
    assert sqnr_db(run(model, data[0])[0], run(quantized, data[0])[0]) > 25


def test_a_clip_with_only_a_max_stays_float_and_says_why():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 3, 8, 8] x) => (float[N, 4, 8, 8] y) {
        a = Conv <pads = [1, 1, 1, 1]> (x, W1, B1)
        c = Clip (a, , hi)
        y = Conv <pads = [1, 1, 1, 1]> (c, W2, B2)
    }
    """
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in conv_model().graph.initializer}
    model = make_model(text, {**weights, "hi": np.array(6.0, dtype=np.float32)})
    clip = next(
        d
        for d in make_plan(ir.from_proto(model), QuantizeConfig()).decisions
        if d.op_type == "Clip"
    )
    assert clip.reason is Reason.NO_INTEGER_KERNEL and "a Clip from 0" in clip.detail


# x is read by the MatMul and also returned as it is; W is returned too.
INTERFACE = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 8] x) => (float[N, 8] y, float[N, 8] x, float[8, 8] W) {
    h = MatMul (x, W)
    r = Relu (h)
    y = MatMul (r, V)
}
"""


@pytest.mark.parametrize("fmt", ["qdq", "qoperator"])
def test_a_graph_input_or_weight_that_is_also_an_output_keeps_the_interface(fmt):
    from qconv.config import QuantFormat
    from qconv.quantize import quantize_model

    r = rng()
    weights = {k: r.normal(0, 0.4, (8, 8)).astype(np.float32) for k in ("W", "V")}
    model = make_model(INTERFACE, weights)
    data = [{"x": r.normal(0, 1, (2, 8)).astype(np.float32)} for _ in range(4)]
    result = quantize_model(model, Batches(data), QuantizeConfig(format=QuantFormat(fmt)))
    assert [i.name for i in result.model.graph.input] == ["x"]
    assert [o.name for o in result.model.graph.output] == ["y", "x", "W"]
    assert "QuantizeLinear" in op_types(result.model)
    expected, actual = run(model, data[0]), run(result.model, data[0])
    np.testing.assert_array_equal(actual[1], data[0]["x"])
    np.testing.assert_array_equal(actual[2], weights["W"])
    assert sqnr_db(expected[0], actual[0]) > 25


# Shape inference cannot tell the batch size of a Resize by scales: it would call it unk__0.
RESIZED = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 4, 8, 8] x) => (float[N, 4, 16, 16] y) {
    c = Conv <pads = [1, 1, 1, 1]> (x, W1)
    u = Resize <mode = "nearest"> (c, , scales)
    v = Conv <pads = [1, 1, 1, 1]> (u, W2)
    y = Relu (v)
}
"""


def test_the_graph_inputs_and_outputs_stay_declared_as_they_were():
    from qconv.quantize import quantize_model

    r = rng()
    weights = {k: r.normal(0, 0.3, (4, 4, 3, 3)).astype(np.float32) for k in ("W1", "W2")}
    model = make_model(RESIZED, {**weights, "scales": np.array([1, 1, 2, 2], np.float32)})
    data = [{"x": r.normal(0, 1, (2, 4, 8, 8)).astype(np.float32)} for _ in range(4)]
    result = quantize_model(model, Batches(data), QuantizeConfig(float_stem=False))
    assert "QuantizeLinear" in op_types(result.model)
    assert list(result.model.graph.input) == list(model.graph.input)
    assert list(result.model.graph.output) == list(model.graph.output)


def test_qoperator_refuses_int8_activations_with_uint8_weights():
    from qconv.config import QuantFormat, QuantType
    from qconv.errors import ConfigError

    with pytest.raises(ConfigError, match="no QLinearConv or QLinearMatMul"):
        QuantizeConfig(
            format=QuantFormat.QOPERATOR,
            activation_type=QuantType.INT8,
            weight_type=QuantType.UINT8,
        )


def test_a_float16_model_is_refused_per_node_with_what_to_do():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float16[N, 3, 8, 8] x) => (float16[N, 4, 8, 8] y) {
        a = Conv <pads = [1, 1, 1, 1]> (x, W1)
        y = Relu (a)
    }
    """
    model = make_model(text, {"W1": rng().normal(0, 0.3, (4, 3, 3, 3)).astype(np.float16)})
    graph = ir.from_proto(onnx.shape_inference.infer_shapes(model))
    conv = next(d for d in make_plan(graph, QuantizeConfig()).decisions if d.op_type == "Conv")
    assert conv.reason is Reason.NOT_FLOAT
    assert "FLOAT16" in conv.detail and "convert the model to float32" in conv.detail


# A LayerNorm as exporters below opset 17 write it, between two projections
LAYER_NORM = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 16, 64] x) => (float[N, 16, 64] y) {
    h = MatMul (x, W1)
    mean = ReduceMean <axes = [-1]> (h)
    centred = Sub (h, mean)
    squared = Pow (centred, two)
    variance = ReduceMean <axes = [-1]> (squared)
    shifted = Add (variance, eps)
    root = Sqrt (shifted)
    normed = Div (centred, root)
    scaled = Mul (normed, gamma)
    n = Add (scaled, beta)
    y = MatMul (n, W2)
}
"""


def test_the_scale_and_shift_of_a_written_out_layer_norm_stay_float_for_its_fusion():
    from qconv.quantize import quantize_model
    from qconv.runtime import optimized_model

    r = rng()
    model = make_model(
        LAYER_NORM,
        {
            "W1": r.normal(0, 0.2, (64, 64)).astype(np.float32),
            "W2": r.normal(0, 0.2, (64, 64)).astype(np.float32),
            "two": np.array(2.0, np.float32),
            "eps": np.array(1e-5, np.float32),
            "gamma": r.normal(1, 0.1, 64).astype(np.float32),
            "beta": r.normal(0, 0.1, 64).astype(np.float32),
        },
    )
    data = [{"x": r.normal(0, 1, (2, 16, 64)).astype(np.float32)} for _ in range(4)]
    result = quantize_model(model, Batches(data), QuantizeConfig())
    decisions = {d.node: d for d in result.decisions}
    for node in ("<Mul>", "<Add>"):
        assert decisions[node].reason is Reason.FASTER_IN_FLOAT
        assert "LayerNorm" in decisions[node].detail
    assert [d.reason.quantized for d in result.decisions if d.op_type == "MatMul"] == [True, True]
    kernels = op_types(optimized_model(result.model))
    assert any(k.endswith("LayerNormalization") for k in kernels)
    assert sqnr_db(run(model, data[0])[0], run(result.model, data[0])[0]) > 25


# A detector's last node: box coordinates (hundreds of pixels) beside class scores (0-1)
BOXES_AND_SCORES = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 32] x) => (float[N, 24] y) {
    boxes = MatMul (x, W)
    logits = MatMul (x, V)
    scores = Sigmoid (logits)
    y = Concat <axis = 1> (boxes, scores)
}
"""


def test_a_concat_of_far_apart_ranges_stays_float_and_keeps_the_narrow_input():
    from qconv.quantize import quantize_model

    r = rng()
    model = make_model(
        BOXES_AND_SCORES,
        {
            "W": r.normal(0, 40, (32, 16)).astype(np.float32),  # hundreds
            "V": r.normal(0, 0.5, (32, 8)).astype(np.float32),
        },
    )
    data = [{"x": r.normal(0, 1, (16, 32)).astype(np.float32)} for _ in range(4)]
    result = quantize_model(model, Batches(data), QuantizeConfig(runtime_tuning=False))
    concat = next(d for d in result.decisions if d.op_type == "Concat")
    assert concat.reason is Reason.RANGES_APART and "of 255 steps" in concat.detail
    expected, actual = run(model, data[0])[0], run(result.model, data[0])[0]
    assert sqnr_db(expected[:, 16:], actual[:, 16:]) > 25  # the scores survive
    assert sqnr_db(expected[:, :16], actual[:, :16]) > 25


def test_a_model_quantized_already_says_so_per_node():
    text = """
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[N, 8] x) => (int32[N, 8] y) {
        q, s, z = DynamicQuantizeLinear (x)
        y = MatMulInteger (q, W, z)
    }
    """
    model = make_model(text, {"W": np.ones((8, 8), np.uint8)})
    decisions = make_plan(ir.from_proto(model), QuantizeConfig()).decisions
    assert all("already an integer op" in d.detail for d in decisions)


def test_a_concat_read_by_a_weighted_op_stays_int8_whatever_its_ranges():
    # The MatMul after it quantizes the joined tensor with one scale anyway
    from qconv.quantize import quantize_model

    text = BOXES_AND_SCORES.replace("float[N, 24] y", "float[N, 4] y").replace(
        "y = Concat <axis = 1> (boxes, scores)",
        "j = Concat <axis = 1> (boxes, scores)\n    y = MatMul (j, U)",
    )
    r = rng()
    weights = {
        "W": r.normal(0, 40, (32, 16)).astype(np.float32),
        "V": r.normal(0, 0.5, (32, 8)).astype(np.float32),
        "U": r.normal(0, 0.5, (24, 4)).astype(np.float32),
    }
    data = [{"x": r.normal(0, 1, (16, 32)).astype(np.float32)} for _ in range(4)]
    result = quantize_model(
        make_model(text, weights), Batches(data), QuantizeConfig(runtime_tuning=False)
    )
    assert next(d for d in result.decisions if d.op_type == "Concat").reason.quantized


def test_an_output_declared_without_a_shape_gets_the_inferred_one():
    # onnx.checker wants graph outputs to carry a shape; library callers may build them bare
    from qconv.quantize import quantize_model

    r = rng()
    weights = {k: r.normal(0, 0.3, (4, 4, 3, 3)).astype(np.float32) for k in ("W1", "W2")}
    model = make_model(RESIZED, {**weights, "scales": np.array([1, 1, 2, 2], np.float32)})
    model.graph.output[0].type.tensor_type.ClearField("shape")
    data = [{"x": r.normal(0, 1, (2, 4, 8, 8)).astype(np.float32)} for _ in range(4)]
    result = quantize_model(model, Batches(data), QuantizeConfig(float_stem=False))
    assert result.model.graph.output[0].type.tensor_type.HasField("shape")
