from __future__ import annotations

import numpy as np
import pytest

from qconv.data import InputSpec, open_reader
from qconv.errors import DataError

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
