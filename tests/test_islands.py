"""Small int8 islands between float ops stay float; large or unsized ones stay int8."""

from __future__ import annotations

import numpy as np
import pytest

from qconv.config import QuantizeConfig
from qconv.data import input_specs, open_reader
from qconv.decisions import Reason
from qconv.quantize import QuantizationResult, quantize_model
from tests.graphs import make_model, rng

pytestmark = pytest.mark.islands

# A layer between two ops without integer forms: the shape of a classifier head after an LSTM.
ISLAND = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, LEADING IN] x) => (float[N, LEADING OUT] y) {
    t = Tanh (x)
    m = MatMul (t, W)
    y = Tanh (m)
}
"""


def quantize(
    tmp_path, k: int, m: int, leading: str = "", config: QuantizeConfig | None = None
) -> QuantizationResult:
    text = ISLAND.replace("LEADING ", leading).replace("IN", str(k)).replace("OUT", str(m))
    model = make_model(text, {"W": rng().normal(0, 0.1, (k, m)).astype(np.float32)})
    dims = (8, 3, k) if leading else (8, k)
    np.savez(tmp_path / "x.npz", x=rng().normal(0, 1, dims).astype(np.float32))
    reader = open_reader(tmp_path / "x.npz", input_specs(model), 1)
    return quantize_model(model, reader, config or QuantizeConfig())


def matmul(result: QuantizationResult):
    return next(d for d in result.decisions if d.op_type == "MatMul")


def test_a_small_island_stays_float_and_says_why(tmp_path):
    result = quantize(tmp_path, 128, 12)  # 1,536 multiply-adds: int8 measured 1.14x slower
    assert matmul(result).reason is Reason.FASTER_IN_FLOAT
    assert "no other int8 neighbour and 1,536 multiply-adds" in matmul(result).detail
    assert result.quantized_count == 0
    assert not any(n.op_type == "QuantizeLinear" for n in result.model.graph.node)


def test_a_large_island_stays_int8(tmp_path):
    result = quantize(tmp_path, 512, 512)  # 262,144 multiply-adds: int8 measured 0.70x
    assert matmul(result).reason is Reason.QUANTIZED


def test_a_symbolic_sequence_length_is_sized_by_the_calibration_data(tmp_path):
    # T is symbolic in the graph; the calibration samples have T = 3: 3 x 128 x 12
    result = quantize(tmp_path, 128, 12, leading="T, ")
    assert matmul(result).reason is Reason.FASTER_IN_FLOAT
    assert "4,608 multiply-adds" in matmul(result).detail
    result = quantize(tmp_path, 512, 512, leading="T, ")  # 786,432
    assert matmul(result).reason is Reason.QUANTIZED


def test_without_runtime_tuning_every_island_stays_int8(tmp_path):
    result = quantize(tmp_path, 128, 12, config=QuantizeConfig(runtime_tuning=False))
    assert matmul(result).reason is Reason.QUANTIZED
