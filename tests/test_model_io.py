from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from qconv.errors import ModelError, OutputError
from qconv.model_io import check_output_path, load_proto, save_model
from tests.conftest import SAMPLES


def tiny_model(opset: int = 13) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 64])],
        [numpy_helper.from_array(np.ones((64, 64), np.float32), "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_loads_a_sample_model():
    assert load_proto(SAMPLES / "digits_cnn.onnx").graph.output[0].name == "logits"


def test_opset_9_is_refused_with_a_conversion_hint(tmp_path):
    onnx.save(tiny_model(opset=9), tmp_path / "old.onnx")
    with pytest.raises(ModelError, match="opset 9") as info:
        load_proto(tmp_path / "old.onnx")
    assert "version_converter" in info.value.hint


def test_checker_failure_is_a_model_error(tmp_path):
    model = tiny_model()
    model.graph.node[0].input[1] = "missing"
    del model.graph.initializer[:]
    (tmp_path / "bad.onnx").write_bytes(model.SerializeToString())
    with pytest.raises(ModelError, match="fails the ONNX checker"):
        load_proto(tmp_path / "bad.onnx")


def test_external_data_is_loaded_and_a_missing_file_is_named(tmp_path):
    onnx.save(
        tiny_model(),
        tmp_path / "ext.onnx",
        save_as_external_data=True,
        location="ext.onnx.data",
        size_threshold=0,
    )
    assert (
        numpy_helper.to_array(load_proto(tmp_path / "ext.onnx").graph.initializer[0]).sum() == 4096
    )
    os.remove(tmp_path / "ext.onnx.data")
    with pytest.raises(ModelError, match=r"ext\.onnx\.data"):
        load_proto(tmp_path / "ext.onnx")


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path):
    save_model(tiny_model(), tmp_path / "out.onnx")
    assert [p.name for p in tmp_path.iterdir()] == ["out.onnx"]
    assert onnx.load(tmp_path / "out.onnx").graph.node[0].op_type == "MatMul"


def test_failed_save_keeps_the_previous_file_and_cleans_up(tmp_path, monkeypatch):
    target = tmp_path / "out.onnx"
    target.write_bytes(b"previous")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OutputError, match="disk is full"):
        save_model(tiny_model(), target)
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["out.onnx"]


def test_output_checks(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    with pytest.raises(OutputError, match="is the input"):
        check_output_path(model, model)
    with pytest.raises(OutputError, match="does not exist"):
        check_output_path(tmp_path / "no" / "out.onnx", model)
    with pytest.raises(OutputError, match="directory"):
        check_output_path(tmp_path, model)


def test_large_model_is_saved_with_external_data_beside_it(tmp_path, monkeypatch):
    monkeypatch.setattr("qconv.model_io.EXTERNAL_DATA_THRESHOLD", 1000)
    save_model(tiny_model(), tmp_path / "big.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "big.onnx.data"]
    loaded = onnx.load(tmp_path / "big.onnx")
    assert numpy_helper.to_array(loaded.graph.initializer[0]).shape == (64, 64)
    assert Path(tmp_path / "big.onnx").stat().st_size < 1000
