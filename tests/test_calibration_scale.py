"""Calibration at scale: the statistics cache, auto range selection, and grouped passes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from qconv.calibrate.cache import CalibrationCache, data_key
from qconv.calibrate.collect import group_tensors, tensor_bytes
from qconv.calibrate.histogram import TensorStats
from qconv.calibrate.ranges import auto
from qconv.config import CalibrationMethod, QuantizeConfig, QuantType
from qconv.data import input_specs, open_reader
from qconv.quantize import quantize_model
from tests.conftest import SAMPLES

MODEL = SAMPLES / "digits_resnet.onnx"
CALIB = SAMPLES / "digits_resnet_calib.npz"


class NoInference:
    """A reader that fails the test if calibration tries to run the model: it gives one
    batch, which qconv's check of the prepared float graph reads, and no second one."""

    num_batches = 1
    num_samples = 200

    def __init__(self) -> None:
        self.iterations = 0

    def __iter__(self):
        self.iterations += 1
        if self.iterations > 1:
            raise AssertionError("calibration ran inference despite a valid cache")
        yield next(iter(reader()))

    def labels(self):
        return None


def reader(samples: int | None = None):
    model = onnx.load(MODEL)
    return open_reader(CALIB, input_specs(model), batch_size=16, samples=samples)


def cache_for(path, samples=None) -> CalibrationCache:
    return CalibrationCache(path, data_key(CALIB, {"samples": samples}))


def test_cache_round_trip_lets_another_method_run_without_inference(tmp_path):
    model = onnx.load(MODEL)
    first = quantize_model(model, reader(), QuantizeConfig(), cache=cache_for(tmp_path / "c.npz"))
    assert (tmp_path / "c.npz").is_file()
    assert any("written" in note for note in first.log.notes)

    config = QuantizeConfig(calibration=CalibrationMethod.ENTROPY)
    second = quantize_model(model, NoInference(), config, cache=cache_for(tmp_path / "c.npz"))
    assert second.calibration_passes == 0
    assert any("reused" in note for note in second.log.notes)
    assert set(second.ranges) == set(first.ranges)
    observed = {name: r.observed for name, r in first.ranges.items()}
    assert {name: r.observed for name, r in second.ranges.items()} == observed


def test_stale_cache_is_detected_and_replaced(tmp_path):
    model = onnx.load(MODEL)
    quantize_model(model, reader(), QuantizeConfig(), cache=cache_for(tmp_path / "c.npz"))
    other_data = cache_for(tmp_path / "c.npz", samples=50)
    result = quantize_model(model, reader(50), QuantizeConfig(), cache=other_data)
    assert result.calibration_passes == 1
    notes = " ".join(result.log.notes)
    assert "stale" in notes and "different calibration data" in notes
    reused = quantize_model(
        model, NoInference(), QuantizeConfig(), cache=cache_for(tmp_path / "c.npz", samples=50)
    )
    assert reused.calibration_passes == 0


def test_a_different_model_makes_the_cache_stale(tmp_path):
    quantize_model(onnx.load(MODEL), reader(), QuantizeConfig(), cache=cache_for(tmp_path / "c"))
    cnn = onnx.load(SAMPLES / "digits_cnn.onnx")
    cnn_reader = open_reader(SAMPLES / "digits_cnn_calib.npz", input_specs(cnn), 16)
    result = quantize_model(cnn, cnn_reader, QuantizeConfig(), cache=cache_for(tmp_path / "c"))
    assert "different model" in " ".join(result.log.notes)


def test_auto_clips_a_heavy_tailed_tensor_and_keeps_a_uniform_one():
    rng = np.random.default_rng(0)
    heavy = TensorStats(2048)
    heavy.update(rng.laplace(0, 1, 200_000))
    (lo, hi), method = auto(heavy, QuantType.UINT8, symmetric=False)
    assert method != "minmax"
    assert hi < 0.9 * heavy.maximum and lo > 0.9 * heavy.minimum
    uniform = TensorStats(2048)
    uniform.update(rng.uniform(-1, 1, 100_000))
    (lo, hi), _ = auto(uniform, QuantType.UINT8, symmetric=False)
    assert hi > 0.95 and lo < -0.95


def test_auto_method_is_reported_per_tensor():
    result = quantize_model(
        onnx.load(MODEL), reader(), QuantizeConfig(calibration=CalibrationMethod.AUTO)
    )
    methods = {r.method for r in result.ranges.values()}
    assert methods and methods <= {"minmax", "entropy", "mse"} | {
        f"percentile({p})" for p in (99.9, 99.99, 99.999)
    }


def test_grouped_passes_give_the_same_statistics_as_one_pass():
    model = onnx.load(MODEL)
    one = quantize_model(model, reader(64), QuantizeConfig())
    budget = 64 * 1024  # far below what all tensors of a 16-sample batch need
    grouped = quantize_model(model, reader(64), QuantizeConfig(), max_memory=budget)
    assert grouped.calibration_passes > 2
    assert set(grouped.ranges) == set(one.ranges)
    for name, tensor_range in one.ranges.items():
        assert grouped.ranges[name].chosen == tensor_range.chosen
    # calibration runs the graph as written, so how it is split changes nothing at all
    assert grouped.model.SerializeToString() == one.model.SerializeToString()


def test_tensor_sizes_come_from_the_feed_shapes():
    model = onnx.load(SAMPLES / "digits_cnn.onnx")
    feed = {"input": np.zeros((5, 1, 8, 8), np.float32)}
    sizes = tensor_bytes(model, feed)
    assert sizes["logits"] == 5 * 10 * 4
    assert max(sizes.values()) >= 5 * 32 * 8 * 8 * 4
    assert sizes["input"] == 5 * 8 * 8 * 4  # graph inputs are exposed too
    # weights are never exposed: as the largest "known" size they would split every group
    assert not {t.name for t in model.graph.initializer} & set(sizes)


def test_string_outputs_are_judged_by_equality():
    from onnx import TensorProto, helper

    from qconv.evaluate import evaluate
    from tests.passes.test_quantize_passes import Batches

    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["s"], to=TensorProto.STRING)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("s", TensorProto.STRING, ["N", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    feeds = [{"x": np.arange(6, dtype=np.float32).reshape(2, 3)}]
    (output,) = evaluate(model, model, Batches(feeds)).outputs
    assert output.exact_match == 1.0 and output.cosine is None


@pytest.mark.parametrize(
    ("budget", "expected"),
    [(None, [["a", "b", "c"]]), (200, [["a"], ["b"], ["c"]]), (400, [["a", "b"], ["c"]])],
)
def test_group_tensors(budget, expected):
    assert group_tensors(["a", "b", "c"], {"a": 100, "b": 100, "c": 150}, budget) == expected


def test_a_file_that_is_not_a_cache_is_refused_not_replaced(tmp_path):
    from qconv.errors import ConfigError

    model = onnx.load(MODEL)
    data = tmp_path / "mydata.npz"
    np.savez(data, x=np.zeros(3), label=np.ones(3))
    notes = tmp_path / "notes.npz"
    notes.write_text("not numpy at all")
    for path in (data, notes):
        before = path.read_bytes()
        with pytest.raises(ConfigError, match="is not a qconv statistics cache"):
            quantize_model(model, reader(), QuantizeConfig(), cache=cache_for(path))
        assert path.read_bytes() == before
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    quantize_model(model, reader(), QuantizeConfig(), cache=cache_for(empty))
    assert empty.stat().st_size > 0  # an empty file is a cache never written: recomputed
