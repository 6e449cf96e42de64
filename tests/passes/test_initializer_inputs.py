"""Weights an older exporter also listed as graph inputs are taken as constants, all or none."""

from __future__ import annotations

import numpy as np
import onnx

from qconv.config import QuantizeConfig
from qconv.decisions import DecisionLog, Reason
from qconv.passes.initializer_inputs import InitializerInputsPass
from qconv.quantize import quantize_model
from tests.graphs import apply, make_model, rng, run
from tests.passes.test_quantize_passes import Batches

MLP = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 64] x, float[64, 256] W1, float[256, 32] W2) => (float[N, 32] y) {
    h = Gemm (x, W1)
    r = Relu (h)
    y = Gemm (r, W2)
}
"""


def mlp(listed: tuple[str, ...] = ("W1", "W2")) -> onnx.ModelProto:
    r = rng()
    model = make_model(
        MLP,
        {
            "W1": r.normal(0, 0.2, (64, 256)).astype(np.float32),
            "W2": r.normal(0, 0.2, (256, 32)).astype(np.float32),
        },
    )
    inputs = [v for v in model.graph.input if v.name == "x" or v.name in listed]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    return model


def feeds() -> list[dict[str, np.ndarray]]:
    r = rng()
    return [{"x": r.normal(0, 1, (4, 64)).astype(np.float32)} for _ in range(4)]


def test_when_every_initializer_is_an_input_they_become_constants():
    model, log = mlp(), DecisionLog()
    converted, changed = apply(InitializerInputsPass(log), model)
    assert changed
    assert [v.name for v in converted.graph.input] == ["x"]
    np.testing.assert_array_equal(run(converted, feeds()[0])[0], run(model, feeds()[0])[0])
    assert "all 2 initializers" in log.notes[0]
    result = quantize_model(model, Batches(feeds()), QuantizeConfig())
    assert all(d.reason.quantized for d in result.decisions if d.op_type == "Gemm")
    assert [v.name for v in result.model.graph.input] == ["x"]


def test_an_initializer_listed_on_purpose_stays_an_input_and_its_reader_says_why():
    model = mlp(listed=("W2",))  # W1 is not listed: W2 is meant to be replaceable
    converted, changed = apply(InitializerInputsPass(), model)
    assert not changed
    assert [v.name for v in converted.graph.input] == ["x", "W2"]
    result = quantize_model(model, Batches(feeds()), QuantizeConfig())
    first, second = [d for d in result.decisions if d.op_type == "Gemm"]
    assert first.reason.quantized
    assert second.reason is Reason.WEIGHT_NOT_CONSTANT
    assert "graph input, which a caller may replace" in second.detail
