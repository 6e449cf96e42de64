"""The prepared float graph is checked against the original before anything is calibrated."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from qconv import equivalence
from qconv import passes as pipeline
from qconv.config import QuantizeConfig
from qconv.data import input_specs, open_reader
from qconv.errors import VerificationError
from qconv.model_io import default_opset
from qconv.quantize import quantize_model
from tests.graphs import make_model, rng, run

# Before opset 13 Hardmax works on the input flattened to 2-D at ``axis``; from 13 on one
# axis. ONNX's version converter does not rewrite it, so the upgraded model means another thing.
HARDMAX_11 = """
<ir_version: 7, opset_import: ["" : 11]>
g (float[N, 4, 8] x) => (float[N, 4, 8] y) {
    h = MatMul (x, W)
    y = Hardmax <axis = 1> (h)
}
"""

MATMUL = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 8] x) => (float[N, 8] y) {
    y = MatMul (x, W)
}
"""


def weights(shape: tuple[int, ...] = (8, 8)) -> dict[str, np.ndarray]:
    return {"W": rng().normal(0, 1, shape).astype(np.float32)}


def calibration(tmp_path, model: onnx.ModelProto, shape: tuple[int, ...]):
    np.savez(tmp_path / "calib.npz", x=rng().normal(0, 1, shape).astype(np.float32))
    return open_reader(tmp_path / "calib.npz", input_specs(model), batch_size=4)


def test_outputs_are_compared_with_tolerances_that_fit_their_type():
    base = rng().normal(0, 1, (4, 100)).astype(np.float32)
    assert equivalence.mismatch({"y": base}, {"y": base * (1 + 1e-5)}) is None
    assert "'y' differs by" in equivalence.mismatch({"y": base}, {"y": base * 1.01})
    assert "shape (4, 99)" in equivalence.mismatch({"y": base}, {"y": base[:, 1:]})
    holes = base.copy()
    holes[0, 0] = np.nan
    assert "non-finite" in equivalence.mismatch({"y": holes}, {"y": base})
    classes = np.arange(200) % 7
    one_flip, many = classes.copy(), classes.copy()
    one_flip[0], many[:20] = 6, 6
    assert equivalence.mismatch({"c": classes}, {"c": one_flip}) is None
    assert "differs in" in equivalence.mismatch({"c": classes}, {"c": many})


def test_a_converter_that_changes_the_meaning_is_undone(tmp_path):
    model = make_model(HARDMAX_11, weights())
    result = quantize_model(model, calibration(tmp_path, model, (8, 4, 8)), QuantizeConfig())
    assert default_opset(result.prepared) == 11
    assert any("opset 11 kept" in note and "'y' differs" in note for note in result.log.notes)
    feed = {"x": rng().normal(0, 1, (2, 4, 8)).astype(np.float32)}
    np.testing.assert_array_equal(run(model, feed)[0], run(result.prepared, feed)[0])


class DoublesTheWeights(ir.passes.InPlacePass):
    """A float-graph rewrite with a bug: it changes what the model computes."""

    def __init__(self, *args: object) -> None:
        super().__init__()

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        for value in model.graph.initializers.values():
            value.const_value = ir.tensor(value.const_value.numpy() * 2)
        return ir.passes.PassResult(model, True)


def test_a_rewrite_that_changes_the_meaning_is_dropped(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "FoldAffinePass", DoublesTheWeights)
    model = make_model(MATMUL, weights())
    result = quantize_model(model, calibration(tmp_path, model, (8, 8)), QuantizeConfig())
    assert any("prepared as with --no-fuse" in note for note in result.log.notes)
    feed = {"x": rng().normal(0, 1, (2, 8)).astype(np.float32)}
    np.testing.assert_array_equal(run(model, feed)[0], run(result.prepared, feed)[0])


def test_a_difference_nothing_explains_is_an_error(tmp_path, monkeypatch):
    real_run = equivalence.run
    monkeypatch.setattr(
        equivalence, "run", lambda *args: {k: v + 1 for k, v in real_run(*args).items()}
    )
    model = make_model(MATMUL, weights())
    with pytest.raises(VerificationError, match="a qconv bug"):
        quantize_model(model, calibration(tmp_path, model, (8, 8)), QuantizeConfig())


def test_a_model_with_random_outputs_is_not_checked(tmp_path):
    noisy = MATMUL.replace("y = MatMul (x, W)", "m = MatMul (x, W)\n    y = RandomNormalLike (m)")
    model = make_model(noisy, weights())
    result = quantize_model(model, calibration(tmp_path, model, (8, 8)), QuantizeConfig())
    assert any("vary between runs" in note for note in result.log.notes)


def test_a_model_over_the_protobuf_limit_is_refused_before_any_work(tmp_path, monkeypatch):
    from qconv import quantize
    from qconv.errors import ModelError

    monkeypatch.setattr(quantize, "PROTOBUF_LIMIT", 100)
    model = make_model(MATMUL, weights())
    with pytest.raises(ModelError, match="qconv handles models up to 2 GiB"):
        quantize_model(model, calibration(tmp_path, model, (8, 8)), QuantizeConfig())
