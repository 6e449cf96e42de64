"""Checks shared by every reader: an array must fit the model input it feeds."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

from qconv.data import InputSpec
from qconv.errors import DataError


def validated(array: np.ndarray, spec: InputSpec, where: str) -> np.ndarray:
    """Check ``array`` against ``spec`` (rank, dtype kind, static sizes, finiteness).

    An array of the input's rank is a batch; one more axis holds one feed per entry. Floats
    are cast to the input's float type and ints to its int type; other mismatches are errors.
    """
    if array.ndim not in (spec.rank, spec.rank + 1) or (array.ndim == 0):
        raise DataError(
            f"{where} has shape {array.shape} but input {spec.describe()} has rank {spec.rank}",
            f"give rank {spec.rank} (split into batches) or {spec.rank + 1} (one feed per entry)",
        )
    array = converted(array, spec, where)
    feed_shape = array.shape[1:] if array.ndim == spec.rank + 1 else array.shape
    check_dims(feed_shape, spec, where, batch_free=array.ndim == spec.rank)
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        raise DataError(f"{where} contains NaN or Inf values", "clean the data")
    return array


def converted(array: np.ndarray, spec: InputSpec, where: str) -> np.ndarray:
    if array.dtype == spec.dtype:
        return array
    same_kind = np.issubdtype(array.dtype, np.floating) and np.issubdtype(spec.dtype, np.floating)
    if same_kind or (
        np.issubdtype(array.dtype, np.integer) and np.issubdtype(spec.dtype, np.integer)
    ):
        return array.astype(spec.dtype)
    if spec.dtype == np.dtype(object) and array.dtype.kind in "US":  # text, as numpy saves it
        return array.astype(object)
    raise DataError(
        f"{where} has dtype {array.dtype} but input {spec.name!r} expects {spec.dtype}",
        f"save it as {spec.dtype}",
    )


def check_dims(shape: tuple[int, ...], spec: InputSpec, where: str, batch_free: bool) -> None:
    for axis, (got, want) in enumerate(zip(shape, spec.shape, strict=True)):
        if batch_free and axis == 0:
            continue
        if isinstance(want, int) and want > 0 and got != want:
            raise DataError(
                f"{where} has size {got} on axis {axis} but input {spec.describe()} needs {want}",
                "resize the data to the model's input shape",
            )


def check_shared_dims(
    feed: Mapping[str, np.ndarray], specs: Sequence[InputSpec], where: str
) -> None:
    """Inputs that declare the same named dimension (``seq``) must have one size for it.

    Only names count: ``?`` (Paddle's "unknown") and shape inference's ``unk__0`` say nothing
    about other inputs, and one input's own axes are not compared.
    """
    first: dict[str, tuple[str, int]] = {}
    for spec in specs:
        array = feed.get(spec.name)
        if array is None or array.ndim != spec.rank:
            continue
        for want, got in zip(spec.shape, array.shape, strict=True):
            if not isinstance(want, str) or not _NAMED_DIM.fullmatch(want):
                continue
            name, size = first.setdefault(want, (spec.name, got))
            if size != got and name != spec.name:
                raise DataError(
                    f"{where}: inputs {name!r} and {spec.name!r} share dimension {want!r} "
                    f"but have sizes {size} and {got} for it",
                    f"give both the same {want} in every sample",
                )


_NAMED_DIM = re.compile(r"(?!unk__)[A-Za-z_][\w.]*")
