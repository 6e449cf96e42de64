from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from qconv import model_io
from qconv.errors import InputError, ModelError, OutputError
from qconv.model_io import (
    StagedOutputs,
    check_paths,
    load_proto,
    save_model,
    write_text,
)
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


def test_an_empty_model_file_is_called_empty(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"")
    with pytest.raises(ModelError, match=r"m\.onnx is empty"):
        load_proto(tmp_path / "m.onnx")


def test_checker_failure_is_a_model_error(tmp_path):
    model = tiny_model()
    model.graph.node[0].input[1] = "missing"
    del model.graph.initializer[:]
    (tmp_path / "bad.onnx").write_bytes(model.SerializeToString())
    with pytest.raises(ModelError, match="fails the ONNX checker"):
        load_proto(tmp_path / "bad.onnx")


def test_a_zipmap_output_is_refused_with_the_export_option_that_avoids_it(tmp_path):
    # scikit-learn classifiers exported by skl2onnx return a sequence of {class: probability}
    probabilities = helper.make_tensor_value_info("p", onnx.TensorProto.FLOAT, [None, 3])
    zipmap = helper.make_node(
        "ZipMap", ["p"], ["z"], domain="ai.onnx.ml", classlabels_int64s=[0, 1, 2]
    )
    graph = helper.make_graph(
        [zipmap],
        "g",
        [probabilities],
        [
            helper.make_value_info(
                "z",
                helper.make_sequence_type_proto(
                    helper.make_map_type_proto(
                        onnx.TensorProto.INT64, helper.make_tensor_type_proto(1, [])
                    )
                ),
            )
        ],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
    onnx.save(helper.make_model(graph, opset_imports=opsets), tmp_path / "skl.onnx")
    with pytest.raises(ModelError, match="output 'z' is a map or a sequence of maps") as info:
        load_proto(tmp_path / "skl.onnx")
    assert "zipmap" in info.value.hint


def _denied(path, *args, **kwargs):
    raise PermissionError(13, "Permission denied", str(path))


def test_external_data_is_loaded_and_a_missing_file_is_named(tmp_path, monkeypatch):
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
    with monkeypatch.context() as patch:  # as a non-root user with the .data file chmod 000
        patch.setattr(model_io, "open", _denied, raising=False)
        with pytest.raises(InputError, match=r"cannot read .*ext\.onnx\.data: Permission denied"):
            load_proto(tmp_path / "ext.onnx")
    with open(tmp_path / "ext.onnx.data", "r+b") as data:
        data.truncate(100)
    with pytest.raises(ModelError, match=r"external data of .*ext\.onnx cannot be read"):
        load_proto(tmp_path / "ext.onnx")
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
    with pytest.raises(OutputError, match="is an input of this run"):
        check_paths([model], [("-o", model)])
    data, weights = tmp_path / "calib.npz", tmp_path / "m.onnx.data"
    with pytest.raises(OutputError, match=r"--calib-cache .*calib\.npz is an input"):
        check_paths([model, weights, data], [("-o", tmp_path / "o.onnx"), ("--calib-cache", data)])
    with pytest.raises(OutputError, match=r"-o .*m\.onnx\.data is an input"):
        check_paths([model, weights, data], [("-o", weights)])
    with pytest.raises(OutputError, match=r"--report .*o\.onnx is also given as -o"):
        check_paths([model], [("-o", tmp_path / "o.onnx"), ("--report", tmp_path / "o.onnx")])
    with pytest.raises(OutputError, match=r"--report: folder .*no does not exist"):
        check_paths([model], [("--report", tmp_path / "no" / "r.json")])
    with pytest.raises(OutputError, match="does not exist"):
        check_paths([model], [("-o", tmp_path / "no" / "out.onnx")])
    with pytest.raises(OutputError, match="directory"):
        check_paths([model], [("-o", tmp_path)])


def test_an_unreadable_input_is_named_before_a_reader_calls_it_corrupt(tmp_path, monkeypatch):
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.ones(3, np.float32))
    folder = tmp_path / "images"
    folder.mkdir()
    check_paths([calib, folder], [])

    # Tests may run as root, which chmod cannot lock out: fail the reads instead.
    monkeypatch.setattr(model_io, "open", _denied, raising=False)
    with pytest.raises(InputError, match=r"cannot read .*calib\.npz: Permission denied"):
        check_paths([calib], [("-o", tmp_path / "o.onnx")])
    monkeypatch.setattr(model_io.os, "scandir", _denied)
    with pytest.raises(InputError, match=r"cannot read .*images: Permission denied"):
        check_paths([folder], [])


def test_large_model_is_saved_with_external_data_beside_it(tmp_path, monkeypatch):
    monkeypatch.setattr("qconv.model_io.EXTERNAL_DATA_THRESHOLD", 1000)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    model = tiny_model()
    before = model.SerializeToString()
    for output in (Path("big.onnx"), tmp_path / "out" / "big.onnx"):  # relative, elsewhere
        save_model(model, output)
        assert model.SerializeToString() == before  # later sessions are built from it
        assert sorted(p.name for p in output.parent.iterdir() if p.is_file()) == [
            "big.onnx",
            "big.onnx.data",
        ]
        assert output.stat().st_size < 1000
        onnx.checker.check_model(str(output), full_check=True)
        feed = {"x": np.ones((1, 64), np.float32)}
        session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
        np.testing.assert_array_equal(session.run(None, feed)[0], np.full((1, 64), 64.0))


def test_staged_files_replace_nothing_until_committed(tmp_path):
    target = tmp_path / "out.onnx"
    target.write_bytes(b"previous")
    with StagedOutputs() as staged:
        staged.add_model(tiny_model(), target)
        staged.add_text(tmp_path / "r.json", "{}")
    assert target.read_bytes() == b"previous"  # left without commit: an error or Ctrl-C
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx"]
    with StagedOutputs() as staged:
        staged.add_model(tiny_model(), target)
        staged.add_text(tmp_path / "r.json", "{}")
        staged.commit()
    assert onnx.load(target).graph.initializer
    assert (tmp_path / "r.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx", "r.json"]


def test_written_files_get_the_umask_mode_or_keep_their_own(tmp_path):
    kept = tmp_path / "kept.json"
    kept.write_text("old")
    kept.chmod(0o640)
    previous = os.umask(0o022)
    try:
        write_text(tmp_path / "new.json", "{}")
        write_text(kept, "{}")
    finally:
        os.umask(previous)
    assert (tmp_path / "new.json").stat().st_mode & 0o777 == 0o644
    assert kept.stat().st_mode & 0o777 == 0o640


def _external(name: str, array: np.ndarray, location: str) -> onnx.TensorProto:
    tensor = numpy_helper.from_array(array, name)
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(array.nbytes))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def test_external_data_of_a_constant_node_is_loaded(tmp_path):
    weight = np.arange(16, dtype=np.float32).reshape(4, 4)
    weight.tofile(tmp_path / "w.bin")
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["w"], value=_external("w", weight, "w.bin")),
            helper.make_node("MatMul", ["x", "w"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])],
    )
    onnx.save(helper.make_model(graph), tmp_path / "m.onnx")
    loaded = load_proto(tmp_path / "m.onnx")
    np.testing.assert_array_equal(
        numpy_helper.to_array(loaded.graph.node[0].attribute[0].t), weight
    )


def test_external_data_outside_the_models_folder_is_named(tmp_path):
    (tmp_path / "model").mkdir()
    weight = np.ones((64, 64), np.float32)
    weight.tofile(tmp_path / "w.bin")
    model = tiny_model()
    model.graph.initializer[0].CopyFrom(_external("w", weight, "../w.bin"))
    onnx.save(model, tmp_path / "model" / "m.onnx")
    with pytest.raises(ModelError, match=r"\.\./w\.bin of tensor 'w' is outside the folder"):
        load_proto(tmp_path / "model" / "m.onnx")


def test_an_output_that_is_a_symlink_replaces_its_target_and_stays_a_link(tmp_path):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "model.onnx"
    target.write_bytes(b"earlier")
    link = tmp_path / "link.onnx"
    link.symlink_to(target)
    save_model(tiny_model(), link)
    assert link.is_symlink()
    assert onnx.load(target).graph.node[0].op_type == "MatMul"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.onnx", "real"]


def test_a_file_name_near_the_length_limit_can_be_written(tmp_path):
    output = tmp_path / ("m" * 250 + ".onnx")  # 255 bytes, the most a name may have
    save_model(tiny_model(), output)
    assert output.is_file()
    assert [p.name for p in tmp_path.iterdir()] == [output.name]


def test_files_staged_by_a_killed_run_are_removed_by_the_next_one(tmp_path):
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    assert dead.wait() == 0
    orphan = tmp_path / f".big.onnx.{dead.pid}.abcd1234.tmp"  # left by SIGKILL
    live = tmp_path / f".big.onnx.{os.getpid()}.efgh5678.tmp"  # a run staging right now
    for path in (orphan, live):
        path.write_bytes(b"partial")
    save_model(tiny_model(), tmp_path / "big.onnx")
    assert not orphan.exists()
    assert live.exists()
    assert (tmp_path / "big.onnx").is_file()


def test_large_models_reach_onnxruntime_as_files_with_the_same_results(monkeypatch):
    from qconv import quantize, runtime

    monkeypatch.setattr(runtime, "SESSION_FILE_BYTES", 1000)
    monkeypatch.setattr(quantize, "SESSION_FILE_BYTES", 1000)
    model = tiny_model()
    before = model.SerializeToString()
    feed = {"x": np.arange(64, dtype=np.float32).reshape(1, 64)}
    np.testing.assert_array_equal(
        runtime.create_session(model).run(None, feed)[0], feed["x"] @ np.ones((64, 64))
    )
    quantize.verify_model(model)  # checked and loaded from a file
    assert model.SerializeToString() == before
    model.graph.node[0].op_type = "NoSuchOp"
    with pytest.raises(quantize.VerificationError):
        quantize.verify_model(model)


def test_a_copy_without_weight_bytes_keeps_what_shape_inference_reads():
    model = tiny_model()
    model.graph.initializer.append(numpy_helper.from_array(np.array([1, 64], np.int64), "shape"))
    light = model_io.without_weight_data(model, min_bytes=1000)
    weight, shape = light.graph.initializer
    assert list(weight.dims) == [64, 64] and not weight.raw_data  # 16 KB, 2-D: dropped
    assert numpy_helper.to_array(shape).tolist() == [1, 64]  # 1-D: kept
    assert len(model.graph.initializer[0].raw_data) == 64 * 64 * 4  # the original is untouched
    inferred = onnx.shape_inference.infer_shapes(light)
    assert [d.dim_value for d in inferred.graph.output[0].type.tensor_type.shape.dim] == [1, 64]


def _model_with_attribute_tensors_and_a_subgraph() -> onnx.ModelProto:
    weight = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(3, 4), "c")
    branch = helper.make_graph(
        [helper.make_node("Constant", [], ["b"], value=numpy_helper.from_array(np.ones(4, "f")))],
        "then",
        [],
        [helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, [4])],
    )
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["c"], value=weight),
            helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch),
        ],
        "g",
        [helper.make_tensor_value_info("cond", onnx.TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4])],
        [numpy_helper.from_array(np.zeros((200, 300), np.float32), "unused")],
        doc_string="a model",
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("name", ["digits_cnn", "digits_resnet", "digits_mobilenet"])
def test_serialized_bytes_is_byte_size_without_serializing_the_weights(name):
    model = load_proto(SAMPLES / f"{name}.onnx")
    assert model_io.serialized_bytes(model) == model.ByteSize()


def test_serialized_bytes_counts_attribute_tensors_and_subgraphs():
    model = _model_with_attribute_tensors_and_a_subgraph()
    assert model_io.serialized_bytes(model) == model.ByteSize()
    assert model_io.serialized_bytes(model.graph.node[0]) == model.graph.node[0].ByteSize()


def test_optimized_graph_of_a_large_model_is_read_without_its_weights(monkeypatch):
    from qconv import runtime

    monkeypatch.setattr(runtime, "SESSION_FILE_BYTES", 1000)  # session from a temporary file
    optimized = runtime.optimized_model(tiny_model())  # its data file is gone by now
    assert [node.op_type for node in optimized.graph.node] == ["MatMul"]


def test_large_models_fall_back_to_memory_when_the_temporary_folder_is_full(monkeypatch):
    from qconv import quantize, runtime
    from qconv.calibrate.collect import exposed_session

    def full(*_args):
        raise OSError(28, "No space left on device")

    for module in (runtime, quantize):
        monkeypatch.setattr(module, "SESSION_FILE_BYTES", 1000)
    monkeypatch.setattr(runtime, "external_skeleton", full)  # sessions and verify_model's file
    model = tiny_model()
    feed = {"x": np.ones((1, 64), np.float32)}
    np.testing.assert_array_equal(runtime.create_session(model).run(None, feed)[0], 64.0)
    session, outputs = exposed_session(model, ["y"], threads=1)
    assert session.run(outputs, feed)[0].shape == (1, 64)
    quantize.verify_model(model)
