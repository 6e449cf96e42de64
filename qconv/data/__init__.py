"""Calibration and evaluation data readers.

A reader yields feeds, ``{input_name: array}`` dictionaries ready for onnxruntime, one batch at a
time, so calibration memory depends on the batch and not on the data set. :func:`open_reader`
picks the reader for a path; new formats plug in there.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import onnx

from qconv.errors import DataError

Feed = dict[str, np.ndarray]
Dim = int | str | None


@dataclass(frozen=True)
class InputSpec:
    """What a model expects on one input.

    Attributes:
        name: The graph input name.
        dtype: The numpy dtype of the input tensor.
        shape: Static sizes as ints, symbolic or unknown sizes as strings or None.
    """

    name: str
    dtype: np.dtype
    shape: tuple[Dim, ...]

    @property
    def rank(self) -> int:
        return len(self.shape)

    def describe(self) -> str:
        dims = ",".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name} {self.dtype.name}[{dims}]"


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    """The inputs a feed must provide (graph inputs that are not initializers)."""
    initializers = {t.name for t in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        shape = tuple(_dim(d) for d in tensor_type.shape.dim)
        specs.append(InputSpec(value.name, np.dtype(dtype), shape))
    return specs


def _dim(dim: onnx.TensorShapeProto.Dimension) -> Dim:
    if dim.HasField("dim_value"):
        return int(dim.dim_value)
    return dim.dim_param or None


class DataReader(Protocol):
    """Anything that yields feeds for a model, batch by batch."""

    def __iter__(self) -> Iterator[Feed]: ...

    @property
    def num_batches(self) -> int: ...

    @property
    def num_samples(self) -> int: ...

    def labels(self) -> np.ndarray | None:
        """Integer class labels aligned with the samples, if the data carries them."""
        ...


def open_reader(
    path: Path,
    specs: Sequence[InputSpec],
    batch_size: int = 1,
    samples: int | None = None,
    labels: str | None = None,
) -> DataReader:
    """Open ``path`` with the reader its format needs."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file {path} does not exist", "check the --calib/--eval path")
    if path.suffix == ".npz":
        from qconv.data.npz import NpzReader

        return NpzReader(path, specs, batch_size=batch_size, samples=samples, labels=labels)
    raise DataError(
        f"{path} is not a supported data format", "give an .npz with one array per model input"
    )
