"""Reader for a folder of ``.npy``/``.npz`` files, one feed per file, in sorted path order.

An ``.npz`` holds one array per model input, named after it; an ``.npy`` feeds a model with a
single input. Each array has the input's rank (it may carry several samples along axis 0) or
one axis less (a single sample; the batch axis is added). Files are read one at a time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from qconv.data import Feed, InputSpec, subset
from qconv.data.npz import load_arrays
from qconv.data.validate import check_shared_dims, validated
from qconv.errors import DataError, cannot_read

SUFFIXES = (".npy", ".npz")


def array_files(path: Path) -> list[Path]:
    """The ``.npy``/``.npz`` files below ``path``, sorted."""
    return sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file())


class ArrayFolderReader:
    """One feed per ``.npy``/``.npz`` file of a folder."""

    def __init__(self, path: Path, specs: Sequence[InputSpec], samples: int | None = None) -> None:
        self.path = path
        self.specs = list(specs)
        files = array_files(path)
        if not files:
            raise DataError(f"{path} holds no .npy or .npz files", "check the data folder")
        if any(f.suffix == ".npy" for f in files) and len(self.specs) != 1:
            names = ", ".join(s.name for s in self.specs)
            raise DataError(
                f"{path} holds .npy files but the model has {len(self.specs)} inputs ({names})",
                "save one .npz per sample with an array per input",
            )
        self.files = [files[i] for i in subset(len(files), samples)]
        self._read(self.files[0])  # fail on open, not halfway through calibration

    @property
    def num_samples(self) -> int:
        return len(self.files)

    @property
    def num_batches(self) -> int:
        return len(self.files)

    def labels(self) -> np.ndarray | None:
        return None

    def __iter__(self) -> Iterator[Feed]:
        for file in self.files:
            yield self._read(file)

    def _read(self, file: Path) -> Feed:
        if file.suffix == ".npy":
            arrays = {self.specs[0].name: _load_npy(file)}
        else:
            arrays = load_arrays(file)
        feed = {spec.name: self._array(spec, arrays, file) for spec in self.specs}
        check_shared_dims(feed, self.specs, str(file))
        return feed

    def _array(self, spec: InputSpec, arrays: dict[str, np.ndarray], file: Path) -> np.ndarray:
        if spec.name not in arrays:
            raise DataError(
                f"{file} has no array named {spec.name!r} for model input {spec.describe()}",
                "name each array after the model input it feeds",
            )
        array = arrays[spec.name]
        if array.ndim == spec.rank - 1:
            array = array[None]
        if array.ndim != spec.rank:
            raise DataError(
                f"{file}: array {spec.name!r} has shape {array.shape} but input "
                f"{spec.describe()} has rank {spec.rank}",
                f"save one feed per file with rank {spec.rank}",
            )
        return np.ascontiguousarray(validated(array, spec, f"array {spec.name!r} in {file}"))


def _load_npy(file: Path) -> np.ndarray:
    try:
        return np.load(file, allow_pickle=False)
    except ValueError as exc:
        raise DataError(
            f"{file} holds a pickled object array or is not an .npy file",
            "save plain arrays (numbers, or text as numpy stores it) with numpy.save",
        ) from exc
    except OSError as exc:
        raise cannot_read(file, exc) from exc
