"""Calibration and evaluation data readers.

A reader yields feeds, ``{input_name: array}`` dictionaries ready for onnxruntime, one batch at a
time, so calibration memory depends on the batch and not on the data set. :func:`open_reader`
picks the reader for a path; new formats plug in there.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import onnx

from qconv.errors import ConfigError, DataError

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


SUBSET_SEED = 0
RANDOM_PREFIX = "random"


def subset(total: int, samples: int | None) -> np.ndarray:
    """Indices of a deterministic (seeded) subset of ``samples`` out of ``total``, sorted."""
    if samples is None or samples >= total:
        return np.arange(total)
    rng = np.random.default_rng(SUBSET_SEED)
    return np.sort(rng.choice(total, size=samples, replace=False))


def is_synthetic(reader: DataReader) -> bool:
    """Whether the reader makes up its data (random), so ranges mean nothing for accuracy."""
    return bool(getattr(reader, "synthetic", False))


def _pinned(specs: Sequence[InputSpec], shapes: Mapping[str, tuple[int, ...]]) -> list[InputSpec]:
    """``specs`` with the --shape sizes in place of symbolic ones, so data is checked too;
    the batch axis stays as it is (``batch_size`` and the data decide it)."""
    return [
        replace(spec, shape=(spec.shape[0], *shapes[spec.name][1:]))
        if spec.name in shapes
        else spec
        for spec in specs
    ]


def _check_shapes(shapes: Mapping[str, tuple[int, ...]], specs: Sequence[InputSpec]) -> None:
    """Every --shape must name a model input, give one size per dimension, and keep the sizes
    the model fixes."""
    by_name = {spec.name: spec for spec in specs}
    for name, dims in shapes.items():
        if name not in by_name:
            raise ConfigError(
                f"--shape {name}=...: the model has no input {name!r}",
                f"its inputs are {', '.join(by_name)}",
            )
        if len(dims) != by_name[name].rank:
            raise ConfigError(
                f"--shape {name} gives {len(dims)} sizes for a {by_name[name].rank}-D input",
                f"give one size per dimension of {by_name[name].describe()}",
            )
        for axis, (given, fixed) in enumerate(zip(dims, by_name[name].shape, strict=True)):
            if isinstance(fixed, int) and fixed > 0 and given != fixed:
                raise ConfigError(
                    f"--shape {name} sets axis {axis} to {given}, but the model fixes it at "
                    f"{fixed} ({by_name[name].describe()})",
                    "--shape can only set the symbolic sizes",
                )


def open_reader(
    path: Path | str,
    specs: Sequence[InputSpec],
    batch_size: int = 1,
    samples: int | None = None,
    labels: str | None = None,
    *,
    preprocess: str | None = None,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> DataReader:
    """Open ``path`` with the reader its format needs.

    ``path`` is an ``.npz``; a folder of ``.npy``/``.npz`` files; an ONNX test-data folder
    (``test_data_set_*/input_*.pb``); a folder of images (needs ``preprocess``, and labels
    come from class sub-folders); or ``random``/``random:uniform`` for made-up data.
    """
    if batch_size < 1 or (samples is not None and samples < 1):
        raise ConfigError(
            f"batch_size={batch_size}, samples={samples} is invalid", "give 1 or more of each"
        )
    _check_shapes(shapes or {}, specs)
    specs = _pinned(specs, shapes or {})
    if str(path).split(":")[0] == RANDOM_PREFIX:
        from qconv.data.synthetic import RandomReader

        distribution = str(path).partition(":")[2] or "normal"
        return RandomReader(specs, distribution, batch_size, samples, shapes)
    path = Path(path)
    if not path.exists():
        raise DataError(f"data path {path} does not exist", "check the --calib/--eval path")
    if labels is not None and not (path.is_file() and path.suffix == ".npz"):
        raise ConfigError(
            f"--labels {labels} names an array of an .npz file, and {path} is a folder",
            "drop --labels: an image folder's labels are its class sub-folders; other folders "
            "carry none",
        )
    if path.is_file() and path.suffix == ".npz":
        from qconv.data.npz import NpzReader

        return NpzReader(path, specs, batch_size=batch_size, samples=samples, labels=labels)
    if path.is_dir():
        return _open_folder(path, specs, batch_size, samples, preprocess)
    raise DataError(
        f"{path} is not a supported data format",
        "give an .npz, a folder of .npy/.npz files, an ONNX test-data folder, an image folder "
        "or 'random'",
    )


def _open_folder(
    path: Path,
    specs: Sequence[InputSpec],
    batch_size: int,
    samples: int | None,
    preprocess: str | None,
) -> DataReader:
    from qconv.data.folder import ArrayFolderReader, array_files
    from qconv.data.testdata import OnnxTestDataReader, is_test_data_folder

    if is_test_data_folder(path):
        return OnnxTestDataReader(path, specs, samples)
    if array_files(path):
        return ArrayFolderReader(path, specs, samples)
    from qconv.data.images import ImageFolderReader, image_files, image_input
    from qconv.data.preprocess import parse_preprocess

    if not image_files(path):
        raise DataError(
            f"{path} holds no .npy/.npz files, test_data_set_* folders or images",
            "check the data folder",
        )
    image_input(specs)  # before asking for --preprocess: it would not help a non-image model
    if preprocess is None:
        raise DataError(
            f"{path} is an image folder but no --preprocess was given",
            'say how to prepare images, e.g. --preprocess "resize=256,crop=224,'
            'mean=0.485,0.456,0.406,std=0.229,0.224,0.225"',
        )
    return ImageFolderReader(path, specs, parse_preprocess(preprocess), batch_size, samples)
