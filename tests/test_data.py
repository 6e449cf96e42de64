from __future__ import annotations

import numpy as np
import onnx
import pytest

from qconv.data import InputSpec, npz, open_reader
from qconv.errors import DataError, InputError
from tests.conftest import SAMPLES

IMAGE = InputSpec("x", np.dtype(np.float32), ("N", 1, 4, 4))
STATE = InputSpec("h", np.dtype(np.float32), (2, 3))


def test_rank_equal_arrays_are_split_into_batches(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.arange(10 * 16, dtype=np.float32).reshape(10, 1, 4, 4))
    reader = open_reader(tmp_path / "d.npz", [IMAGE], batch_size=4)
    batches = [feed["x"] for feed in reader]
    assert [len(b) for b in batches] == [4, 4, 2]
    assert reader.num_batches == 3 and reader.num_samples == 10
    assert np.array_equal(np.concatenate(batches), np.load(tmp_path / "d.npz")["x"])


def test_one_more_axis_means_one_feed_per_entry(tmp_path):
    np.savez(tmp_path / "d.npz", h=np.zeros((5, 2, 3), np.float64))
    feeds = list(open_reader(tmp_path / "d.npz", [STATE], batch_size=4))
    assert len(feeds) == 5
    assert feeds[0]["h"].shape == (2, 3) and feeds[0]["h"].dtype == np.float32


def test_text_arrays_feed_string_inputs(tmp_path):
    # numpy saves text as unicode (<U5); onnxruntime takes strings as object arrays
    np.savez(tmp_path / "d.npz", text=np.array([["hello"], ["world"]]))
    spec = InputSpec("text", np.dtype(object), ("N", 1))
    (feed,) = list(open_reader(tmp_path / "d.npz", [spec], batch_size=2))
    assert feed["text"].dtype == object and feed["text"].tolist() == [["hello"], ["world"]]


def test_sample_subset_is_deterministic(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).normal(size=(50, 1, 4, 4)))
    first = [f["x"] for f in open_reader(tmp_path / "d.npz", [IMAGE], 8, samples=12)]
    second = [f["x"] for f in open_reader(tmp_path / "d.npz", [IMAGE], 8, samples=12)]
    assert sum(len(b) for b in first) == 12
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


def test_labels_follow_the_subset(tmp_path):
    x = np.arange(20, dtype=np.float32)[:, None, None, None] * np.ones((1, 1, 4, 4), np.float32)
    np.savez(tmp_path / "d.npz", x=x, label=np.arange(20))
    reader = open_reader(tmp_path / "d.npz", [IMAGE], 4, samples=6, labels="label")
    firsts = np.concatenate([f["x"][:, 0, 0, 0] for f in reader]).astype(int)
    assert np.array_equal(reader.labels(), firsts)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((3, 4, 4), np.float32)}, "rank 4"),
        ({"x": np.zeros((3, 1, 4, 4), np.int32)}, "dtype int32"),
        ({"x": np.zeros((0, 1, 4, 4), np.float32)}, "no samples"),
        ({"y": np.zeros((3, 1, 4, 4), np.float32)}, "no array named 'x'"),
    ],
)
def test_bad_arrays_are_named_in_the_error(tmp_path, arrays, message):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataError, match=message):
        open_reader(tmp_path / "d.npz", [IMAGE])


def test_label_errors(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 1, 4, 4), np.float32), label=np.zeros(2))
    with pytest.raises(DataError, match="one per sample"):
        open_reader(tmp_path / "d.npz", [IMAGE], labels="label")
    with pytest.raises(DataError, match="no label array 'cls'"):
        open_reader(tmp_path / "d.npz", [IMAGE], labels="cls")


def test_unknown_format_and_unreadable_file(tmp_path):
    (tmp_path / "d.csv").write_text("1,2,3")
    with pytest.raises(DataError, match="not a supported data format"):
        open_reader(tmp_path / "d.csv", [IMAGE])
    (tmp_path / "d.npz").write_bytes(b"PK garbage")
    with pytest.raises(DataError, match=r"not a readable \.npz"):
        open_reader(tmp_path / "d.npz", [IMAGE])


def test_a_file_the_system_will_not_read_is_not_called_corrupt(tmp_path, monkeypatch):
    folder = tmp_path / "test_data_set_0"
    (folder / "input_0.pb").mkdir(parents=True)  # a real read failure even as root
    with pytest.raises(InputError, match=r"cannot read .*input_0\.pb: Is a directory"):
        list(open_reader(tmp_path, [IMAGE]))

    def denied(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    np.savez(tmp_path / "d.npz", x=np.zeros((1, 1, 4, 4), np.float32))
    monkeypatch.setattr(npz, "open", denied, raising=False)
    with pytest.raises(InputError, match=r"cannot read .*d\.npz: Permission denied"):
        open_reader(tmp_path / "d.npz", [IMAGE])


def test_folder_of_npz_and_npy_files_is_one_feed_per_file(tmp_path):
    r = np.random.default_rng(0)
    for k in range(3):
        np.save(tmp_path / f"s{k}.npy", r.normal(size=(1, 4, 4)).astype(np.float32))
    reader = open_reader(tmp_path, [IMAGE])
    feeds = [f["x"] for f in reader]
    assert reader.num_batches == 3
    assert [f.shape for f in feeds] == [(1, 1, 4, 4)] * 3
    assert np.array_equal(feeds[1][0], np.load(tmp_path / "s1.npy"))


def test_npy_folder_needs_a_single_input_model(tmp_path):
    np.save(tmp_path / "s.npy", np.zeros((1, 4, 4), np.float32))
    with pytest.raises(DataError, match="2 inputs"):
        open_reader(tmp_path, [IMAGE, STATE])


def test_onnx_test_data_folders_match_by_name_or_position(tmp_path):
    from onnx import numpy_helper

    for k in range(2):
        folder = tmp_path / f"test_data_set_{k}"
        folder.mkdir()
        image = numpy_helper.from_array(np.full((1, 1, 4, 4), k, np.float32), "x")
        state = numpy_helper.from_array(np.full((2, 3), k, np.float32), "")
        (folder / "input_0.pb").write_bytes(image.SerializeToString())
        (folder / "input_1.pb").write_bytes(state.SerializeToString())
    reader = open_reader(tmp_path, [IMAGE, STATE])
    feeds = list(reader)
    assert reader.num_samples == 2
    assert feeds[1]["x"].shape == (1, 1, 4, 4) and float(feeds[1]["h"][0, 0]) == 1.0


def test_onnx_test_data_with_a_foreign_tensor_name(tmp_path):
    from onnx import numpy_helper

    folder = tmp_path / "test_data_set_0"
    folder.mkdir()
    tensor = numpy_helper.from_array(np.zeros((1, 1, 4, 4), np.float32), "pixels")
    (folder / "input_0.pb").write_bytes(tensor.SerializeToString())
    with pytest.raises(DataError, match="'pixels', which is not a model input"):
        open_reader(tmp_path, [IMAGE])


def test_random_reader_is_seeded_and_honours_given_shapes():
    spec = InputSpec("x", np.dtype(np.float32), ("N", 3, "H", "W"))
    ids = InputSpec("ids", np.dtype(np.int64), ("N", 7))
    reader = open_reader(
        "random", [spec, ids], batch_size=2, samples=5, shapes={"x": (1, 3, 16, 16)}
    )
    feeds = list(reader)
    assert [f["x"].shape[0] for f in feeds] == [2, 2, 1]
    assert feeds[0]["x"].shape == (2, 3, 16, 16)
    assert feeds[0]["ids"].dtype == np.int64 and feeds[0]["ids"].max() < 10
    again = list(open_reader("random", [spec, ids], 2, 5, shapes={"x": (1, 3, 16, 16)}))
    assert np.array_equal(feeds[2]["x"], again[2]["x"])
    assert reader.synthetic


def test_random_reader_asks_for_symbolic_sizes():
    from qconv.errors import ConfigError

    spec = InputSpec("x", np.dtype(np.float32), ("N", 3, "H", "W"))
    with pytest.raises(ConfigError, match="symbolic size on axis 2") as info:
        open_reader("random", [spec])
    assert "--shape x=SIZE,3,SIZE,SIZE" in info.value.hint


def test_library_callers_get_config_errors_for_bad_sizes_and_names():
    from qconv.config import QuantFormat, QuantizeConfig
    from qconv.data import input_specs, open_reader
    from qconv.errors import ConfigError

    assert QuantizeConfig(format="qoperator").format is QuantFormat.QOPERATOR
    with pytest.raises(ConfigError, match="format='bogus' is invalid"):
        QuantizeConfig(format="bogus")
    with pytest.raises(ConfigError, match="calibration='nonsense' is invalid"):
        QuantizeConfig(calibration="nonsense")
    model = onnx.load(SAMPLES / "digits_cnn.onnx")
    for batch_size in (0, -1):
        with pytest.raises(ConfigError, match="batch_size"):
            open_reader(SAMPLES / "digits_cnn_calib.npz", input_specs(model), batch_size)


def test_shape_sets_symbolic_sizes_and_the_data_must_match_them(tmp_path):
    from qconv.errors import ConfigError

    spec = InputSpec("x", np.dtype(np.float32), ("N", 1, "H", 4))
    np.savez(tmp_path / "d.npz", x=np.zeros((8, 1, 6, 4), np.float32))
    with pytest.raises(ConfigError, match="sets axis 3 to 5, but the model fixes it at 4"):
        open_reader(tmp_path / "d.npz", [spec], shapes={"x": (1, 1, 6, 5)})
    assert len(list(open_reader(tmp_path / "d.npz", [spec], 4, shapes={"x": (1, 1, 6, 4)}))) == 2
    with pytest.raises(DataError, match=r"size 6 on axis 2 .* needs 5"):
        list(open_reader(tmp_path / "d.npz", [spec], shapes={"x": (1, 1, 5, 4)}))


def test_inputs_sharing_a_symbolic_dimension_must_agree_on_it(tmp_path):
    specs = [
        InputSpec("a", np.dtype(np.float32), ("N", "seq", 8)),
        InputSpec("b", np.dtype(np.float32), ("N", "seq")),
    ]
    np.savez(
        tmp_path / "good.npz", a=np.zeros((4, 10, 8), np.float32), b=np.zeros((4, 10), np.float32)
    )
    assert len(list(open_reader(tmp_path / "good.npz", specs, 2))) == 2
    np.savez(
        tmp_path / "bad.npz", a=np.zeros((4, 10, 8), np.float32), b=np.zeros((4, 7), np.float32)
    )
    with pytest.raises(
        DataError, match="'a' and 'b' share dimension 'seq' but have sizes 10 and 7"
    ):
        list(open_reader(tmp_path / "bad.npz", specs, 2))
    folder = tmp_path / "feeds"
    folder.mkdir()
    np.savez(folder / "0.npz", a=np.zeros((1, 10, 8), np.float32), b=np.zeros((1, 7), np.float32))
    with pytest.raises(DataError, match="share dimension 'seq'"):
        list(open_reader(folder, specs, 1))


def test_unknown_size_placeholders_are_not_shared_dimensions(tmp_path):
    # Paddle writes every free size as "?"; shape inference names them unk__0, unk__1, ...
    specs = [
        InputSpec("x", np.dtype(np.float32), ("?", 3, "?", "?")),
        InputSpec("m", np.dtype(np.float32), ("unk__0", "?")),
    ]
    np.savez(
        tmp_path / "d.npz", x=np.zeros((2, 3, 48, 192), np.float32), m=np.zeros((2, 7), np.float32)
    )
    assert len(list(open_reader(tmp_path / "d.npz", specs, 1))) == 2
