"""Reader for ``.npz`` archives holding one array per model input.

An array with the input's rank is split along axis 0 into feeds of ``batch_size``; an array with
one more axis holds one complete feed per entry along axis 0 (this covers scalar and state inputs).
Every array must give the same number of samples. Pickled objects are refused.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from qconv.data import Feed, InputSpec, subset
from qconv.data.validate import check_shared_dims, validated
from qconv.errors import DataError, cannot_read


class NpzReader:
    """Feeds from an ``.npz`` file, validated against the model's inputs on open."""

    def __init__(
        self,
        path: Path,
        specs: Sequence[InputSpec],
        batch_size: int = 1,
        samples: int | None = None,
        labels: str | None = None,
    ) -> None:
        self.path = path
        self.specs = list(specs)
        self.batch_size = batch_size
        arrays = load_arrays(path)
        self._arrays = {spec.name: self._check(spec, arrays) for spec in self.specs}
        self._per_entry = {
            spec.name: self._arrays[spec.name].ndim == spec.rank + 1 for spec in self.specs
        }
        total = self._count_samples()
        self._labels = _labels(arrays, labels, path, total)
        self._index = subset(total, samples)

    def _check(self, spec: InputSpec, arrays: dict[str, np.ndarray]) -> np.ndarray:
        if spec.name not in arrays:
            raise DataError(
                f"{self.path.name} has no array named {spec.name!r} for model input "
                f"{spec.describe()} (arrays: {', '.join(sorted(arrays)) or 'none'})",
                "name each array after the model input it feeds",
            )
        return validated(arrays[spec.name], spec, f"array {spec.name!r} in {self.path.name}")

    def _count_samples(self) -> int:
        counts = {name: len(array) for name, array in self._arrays.items()}
        if len(set(counts.values())) > 1:
            raise DataError(
                f"arrays in {self.path.name} disagree on the sample count: {counts}",
                "give every input the same number of samples along axis 0",
            )
        count = next(iter(counts.values()), 0)
        if count == 0:
            raise DataError(f"{self.path.name} holds no samples", "give at least one sample")
        return count

    @property
    def num_samples(self) -> int:
        return len(self._index)

    @property
    def num_batches(self) -> int:
        if all(self._per_entry.values()):
            return self.num_samples
        return -(-self.num_samples // self.batch_size)

    def labels(self) -> np.ndarray | None:
        return None if self._labels is None else self._labels[self._index]

    def __iter__(self) -> Iterator[Feed]:
        step = 1 if all(self._per_entry.values()) else self.batch_size
        for start in range(0, len(self._index), step):
            rows = self._index[start : start + step]
            feed = {name: self._feed(name, rows) for name in self._arrays}
            check_shared_dims(feed, self.specs, f"{self.path.name}, sample {rows[0]}")
            yield feed

    def _feed(self, name: str, rows: np.ndarray) -> np.ndarray:
        array = self._arrays[name]
        if self._per_entry[name]:
            return np.ascontiguousarray(array[rows[0]])
        return np.ascontiguousarray(array[rows])


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz``, refusing pickles, as one clear DataError on failure."""
    try:
        with open(path, "rb") as handle:
            is_zip = zipfile.is_zipfile(handle)
    except OSError as exc:
        raise cannot_read(path, exc) from exc
    if not is_zip:
        # np.load would fall back to unpickling anything that is not a zip or .npy file
        raise DataError(f"{path} is not a readable .npz (not a zip archive)", "re-save it")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise DataError(
                f"{path} contains a pickled object array, which qconv refuses to load",
                "save plain arrays (numbers, or text as numpy stores it) with numpy.savez",
            ) from exc
        raise DataError(f"{path} is not a readable .npz ({exc})", "re-save it") from exc
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path} is not a readable .npz ({exc})", "re-save it") from exc


def _labels(
    arrays: dict[str, np.ndarray], key: str | None, path: Path, total: int
) -> np.ndarray | None:
    if key is None:
        return None
    if key not in arrays:
        raise DataError(
            f"{path.name} has no label array {key!r} (arrays: {', '.join(sorted(arrays))})",
            "check --labels",
        )
    labels = arrays[key]
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or len(labels) != total:
        raise DataError(
            f"label array {key!r} in {path.name} must be 1-D integers, one per sample "
            f"(got {labels.dtype}{list(labels.shape)} for {total} samples)",
            "save integer class ids",
        )
    return labels.astype(np.int64)
