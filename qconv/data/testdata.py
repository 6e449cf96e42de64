"""Reader for ONNX test-data folders: ``test_data_set_*/input_*.pb`` (the model zoo layout).

Each ``test_data_set_*`` folder is one feed; each ``input_K.pb`` is a serialized TensorProto
matched to a model input by its name, or by position K when the name is empty.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from qconv.data import Feed, InputSpec, subset
from qconv.data.validate import check_shared_dims, validated
from qconv.errors import DataError, cannot_read


def is_test_data_folder(path: Path) -> bool:
    return path.is_dir() and any(p.is_dir() for p in path.glob("test_data_set_*"))


def _index(path: Path) -> int:
    found = re.search(r"(\d+)$", path.stem)
    return int(found.group(1)) if found else -1


class OnnxTestDataReader:
    """One feed per ``test_data_set_*`` folder."""

    def __init__(self, path: Path, specs: Sequence[InputSpec], samples: int | None = None) -> None:
        self.path = path
        self.specs = list(specs)
        sets = sorted((p for p in path.glob("test_data_set_*") if p.is_dir()), key=_index)
        self.sets = [sets[i] for i in subset(len(sets), samples)]
        next(iter(self))  # validate the first set on open

    @property
    def num_samples(self) -> int:
        return len(self.sets)

    @property
    def num_batches(self) -> int:
        return len(self.sets)

    def labels(self) -> np.ndarray | None:
        return None

    def __iter__(self) -> Iterator[Feed]:
        for folder in self.sets:
            yield self._feed(folder)

    def _feed(self, folder: Path) -> Feed:
        files = sorted(folder.glob("input_*.pb"), key=_index)
        if len(files) != len(self.specs):
            raise DataError(
                f"{folder} has {len(files)} input_*.pb files but the model has "
                f"{len(self.specs)} inputs",
                "give one input_K.pb per model input",
            )
        by_name = {}
        for position, file in enumerate(files):
            tensor = _read_tensor(file)
            spec = self._spec_for(tensor.name, position, file)
            array = numpy_helper.to_array(tensor)
            by_name[spec.name] = validated(array, spec, f"{file} (input {spec.name!r})")
        check_shared_dims(by_name, self.specs, str(folder))
        return by_name

    def _spec_for(self, name: str, position: int, file: Path) -> InputSpec:
        if not name:
            return self.specs[position]
        for spec in self.specs:
            if spec.name == name:
                return spec
        known = ", ".join(s.name for s in self.specs)
        raise DataError(
            f"{file} holds tensor {name!r}, which is not a model input ({known})",
            "name the tensor after the input or leave its name empty",
        )


def _read_tensor(file: Path) -> onnx.TensorProto:
    tensor = onnx.TensorProto()
    try:
        tensor.ParseFromString(file.read_bytes())
    except OSError as exc:
        raise cannot_read(file, exc) from exc
    except DecodeError as exc:
        raise DataError(f"{file} is not a serialized TensorProto", "re-export the data") from exc
    return tensor
