"""Each sample model (trained on real digits), both formats: accuracy, agreement, size, speed."""

from __future__ import annotations

import functools
from collections import Counter

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest

from qconv.config import QuantFormat, QuantizeConfig
from qconv.data import input_specs, open_reader
from qconv.decisions import DecisionLog, Reason
from qconv.evaluate import evaluate
from qconv.passes import prepare
from qconv.quantize import QuantizationResult, quantize_model
from tests.conftest import SAMPLE_MODELS, SAMPLES


@functools.cache
def quantized(name: str, fmt: QuantFormat) -> tuple[onnx.ModelProto, QuantizationResult]:
    model = onnx.load(SAMPLES / f"{name}.onnx")
    calib = open_reader(SAMPLES / f"{name}_calib.npz", input_specs(model), batch_size=32)
    return model, quantize_model(model, calib, QuantizeConfig(format=fmt))


def optimized_ops(model: onnx.ModelProto, tmp_path) -> Counter:
    """The ops onnxruntime actually runs after its graph optimizations."""
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])
    return Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)


@pytest.mark.parametrize("fmt", list(QuantFormat))
@pytest.mark.parametrize("name", SAMPLE_MODELS)
def test_accuracy_agreement_and_size(name, fmt):
    model, result = quantized(name, fmt)
    evaluation = evaluate(
        model,
        result.model,
        open_reader(SAMPLES / f"{name}_eval.npz", input_specs(model), 64, labels="label"),
    )
    assert evaluation.samples == 540
    assert evaluation.float_accuracy - evaluation.int8_accuracy <= 0.01
    assert evaluation.top1_agreement >= 0.98
    assert result.model.ByteSize() <= 0.3 * model.ByteSize()
    weights = [t for t in result.model.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert sum(np.prod(t.dims) for t in weights) > 0.9 * _float_weight_count(model)


def _float_weight_count(model: onnx.ModelProto) -> int:
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer if len(t.dims) >= 2)


def kept_float(result: QuantizationResult) -> Counter:
    """Op types of the nodes qconv kept float because onnxruntime runs them faster so."""
    return Counter(d.op_type for d in result.decisions if d.reason is Reason.FASTER_IN_FLOAT)


@pytest.mark.parametrize("name", SAMPLE_MODELS)
def test_onnxruntime_runs_every_conv_and_gemm_in_int8(name, tmp_path):
    """The QDQ form must be one onnxruntime fuses, or int8 would be slower than float."""
    _, result = quantized(name, QuantFormat.QDQ)
    ops = optimized_ops(result.model, tmp_path)
    # only the first layer (1 -> 16/32 channels, 3x3) stays float, fused with its activation
    assert kept_float(result)["Conv"] == 1
    assert ops["Conv"] + ops["FusedConv"] == 1 and ops["Gemm"] == 0
    assert ops["QLinearConv"] > 0 and ops["QGemm"] > 0
    # one QuantizeLinear after the float layer and one DequantizeLinear at the output remain
    assert ops["QuantizeLinear"] == 1 and ops["DequantizeLinear"] == 1


@pytest.mark.parametrize("name", SAMPLE_MODELS)
def test_qoperator_model_holds_only_integer_compute_ops(name):
    _, result = quantized(name, QuantFormat.QOPERATOR)
    ops = Counter(n.op_type for n in result.model.graph.node)
    float_ops = {"Conv", "Gemm", "Add", "BatchNormalization", "Relu", "Clip"}
    assert {op: ops[op] for op in float_ops if ops[op]} == kept_float(result)
    assert ops["QuantizeLinear"] == 1 and ops["DequantizeLinear"] == 1


def test_every_conv_is_int8_when_the_float_stem_is_off(tmp_path):
    model = onnx.load(SAMPLES / "digits_cnn.onnx")
    calib = open_reader(SAMPLES / "digits_cnn_calib.npz", input_specs(model), batch_size=32)
    result = quantize_model(model, calib, QuantizeConfig(float_stem=False))
    ops = optimized_ops(result.model, tmp_path)
    assert not kept_float(result)
    assert ops["Conv"] + ops["FusedConv"] == 0 and ops["QLinearConv"] > 0


@pytest.mark.parametrize("name", SAMPLE_MODELS)
def test_every_batchnorm_was_folded_and_reported(name):
    model, result = quantized(name, QuantFormat.QDQ)
    batchnorms = sum(n.op_type == "BatchNormalization" for n in model.graph.node)
    folded = [r for r in result.log.rewrites if r.pass_name == "fold_batchnorm" and r.applied]
    assert batchnorms > 0
    assert len(folded) == batchnorms
    assert all(d.op_type != "BatchNormalization" for d in result.decisions)


def opset_11_cnn() -> onnx.ModelProto:
    # onnx's version converter cannot go down from 17; after BN folding the model only has ops
    # whose opset-11 forms have the same semantics, so relabelling the import is exact.
    float_model = ir.from_proto(onnx.load(SAMPLES / "digits_cnn.onnx"))
    model = ir.to_proto(prepare(float_model, QuantizeConfig(), DecisionLog()))
    assert {n.op_type for n in model.graph.node} == {"Conv", "Relu", "MaxPool", "Flatten", "Gemm"}
    model.opset_import[0].version = 11
    onnx.checker.check_model(model)
    return model


def quantize_and_evaluate(model: onnx.ModelProto):
    calib = open_reader(SAMPLES / "digits_cnn_calib.npz", input_specs(model), batch_size=32)
    result = quantize_model(model, calib, QuantizeConfig())
    evaluation = evaluate(
        model,
        result.model,
        open_reader(SAMPLES / "digits_cnn_eval.npz", input_specs(model), 64, labels="label"),
    )
    dq_axes = [
        a for n in result.model.graph.node if n.op_type == "DequantizeLinear" for a in n.attribute
    ]
    return result, evaluation, dq_axes


def test_opset_11_model_is_upgraded_to_get_per_channel_weights():
    result, evaluation, dq_axes = quantize_and_evaluate(opset_11_cnn())
    assert [o.version for o in result.model.opset_import if o.domain in ("", "ai.onnx")] == [13]
    assert any(r.pass_name == "upgrade_opset" and r.applied for r in result.log.rewrites)
    layers = sum(n.op_type in ("Conv", "Gemm") for n in result.prepared.graph.node)
    int8_layers = layers - kept_float(result)["Conv"]
    assert len(dq_axes) == 2 * int8_layers  # each layer's int8 weight and int32 bias, per channel
    assert evaluation.float_accuracy - evaluation.int8_accuracy <= 0.01


def test_opset_11_model_falls_back_to_per_tensor_weights_when_conversion_fails(monkeypatch):
    from onnx import version_converter

    def refuse(model, version):
        raise RuntimeError("no adapter for this op")

    monkeypatch.setattr(version_converter, "convert_version", refuse)
    result, evaluation, dq_axes = quantize_and_evaluate(opset_11_cnn())
    assert any("per tensor" in note for note in result.log.notes)
    refused = [r for r in result.log.rewrites if r.pass_name == "upgrade_opset"]
    assert refused and not refused[0].applied and "no adapter" in refused[0].detail
    assert dq_axes == []
    assert evaluation.float_accuracy - evaluation.int8_accuracy <= 0.02


@pytest.mark.parametrize("method", ["entropy", "percentile", "mse", "auto"])
@pytest.mark.parametrize("name", ["digits_mobilenet", "digits_resnet"])
def test_every_range_method_keeps_accuracy(name, method):
    from qconv.config import CalibrationMethod

    model = onnx.load(SAMPLES / f"{name}.onnx")
    calib = open_reader(SAMPLES / f"{name}_calib.npz", input_specs(model), batch_size=32)
    config = QuantizeConfig(calibration=CalibrationMethod(method))
    result = quantize_model(model, calib, config)
    evaluation = evaluate(
        model,
        result.model,
        open_reader(SAMPLES / f"{name}_eval.npz", input_specs(model), 64, labels="label"),
    )
    assert evaluation.float_accuracy - evaluation.int8_accuracy <= 0.01
    assert evaluation.top1_agreement >= 0.98
