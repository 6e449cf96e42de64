"""Run the float model over calibration data and fold every watched tensor into its statistics.

The watched tensors become extra outputs of a copy of the model; each batch's values are folded
into a :class:`TensorStats` and dropped, so memory stays that of one batch plus the histograms.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import numpy as np
import onnx

from qconv.calibrate.expose import expose
from qconv.calibrate.histogram import TensorStats
from qconv.data import DataReader
from qconv.errors import DataError
from qconv.runtime import create_session

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]

# Memory for the tensors exposed at once when no budget is given: a 960x736 text detector
# exposes about 680 MB per image, which onnxruntime and numpy then both hold; at this budget
# its calibration peaks near 1.1 GB instead of 1.7 GB, in 3 passes.
DEFAULT_EXPOSED_MEMORY = 1 << 29


def with_outputs(
    model: onnx.ModelProto, tensors: Sequence[str]
) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of ``model`` that also returns ``tensors``, and the output name of each.

    Tensors inside If/Loop/Scan bodies are carried out to the main graph (see
    :mod:`qconv.calibrate.expose`); onnxruntime infers the new outputs' types.
    """
    exposed, mapping = expose(model, tensors)
    missing = [name for name in tensors if name not in mapping]
    if missing:
        raise ValueError(f"no graph of the model computes {', '.join(missing[:3])}")
    return exposed, [mapping[name] for name in tensors]


def exposed_session(
    model: onnx.ModelProto, tensors: Sequence[str], threads: int | None, optimize: bool = True
) -> tuple[object, list[str]]:
    """A session running :func:`with_outputs` of ``model``, and the output name of each tensor.

    A large model's weights are not copied: only the graph around them is (see
    :func:`qconv.runtime.create_session`). ``optimize=False`` runs the graph as written.
    """
    outputs: list[str] = []

    def edit(proto: onnx.ModelProto) -> onnx.ModelProto:
        exposed, names = with_outputs(proto, tensors)
        outputs[:] = names
        return exposed

    return create_session(model, threads=threads, optimize=optimize, edit=edit), outputs


def collect_statistics(
    model: onnx.ModelProto,
    tensors: Sequence[str],
    reader: DataReader,
    *,
    threads: int | None = None,
    bins_per_side: int = 4096,
    on_batch: ProgressCallback | None = None,
) -> dict[str, TensorStats]:
    """One pass over ``reader``: min/max and histogram of each tensor in ``tensors``."""
    names = list(dict.fromkeys(tensors))
    if not names:
        return {}  # onnxruntime reads an empty output list as "every output"
    # Unoptimized: onnxruntime's fusions depend on which tensors are exposed, so with them the
    # statistics (by float rounding) and the model would depend on how --max-memory splits
    # the passes; the graph as written gives the same statistics however it is split.
    session, outputs = exposed_session(model, names, threads, optimize=False)
    stats = {name: TensorStats(bins_per_side) for name in names}
    total = reader.num_batches
    for index, feed in enumerate(reader):
        values = run_batch(session, outputs, feed, index)
        for name, value in zip(names, values, strict=True):
            if np.issubdtype(value.dtype, np.floating):
                stats[name].update(value)
        if on_batch:
            on_batch(index + 1, total)
    return stats


def run_batch(session, names: list[str], feed: dict[str, np.ndarray], index: int) -> list:
    """Run one feed, turning onnxruntime's complaints about the data into a DataError."""
    try:
        return session.run(names, feed)
    except Exception as exc:  # onnxruntime raises its own exception types per failure
        first = " ".join(str(exc).split())[:400] or type(exc).__name__
        raise DataError(
            f"onnxruntime rejected calibration batch {index}: {first}",
            "check that the data matches the model's input shapes and dtypes",
        ) from exc


def tensor_bytes(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> dict[str, int]:
    """Bytes each tensor takes for ``feed``, from shape inference with the feed's real shapes.

    Tensors whose size inference cannot tell are left out (callers count them as large as the
    largest known one); weights are left out too, being never exposed.
    """
    weights = {tensor.name for tensor in model.graph.initializer}
    sizes = {name: array.nbytes for name, array in feed.items()}
    for name, (shape, dtype) in inferred_shapes(model, feed).items():
        if name not in weights:  # as the "largest known" a weight would split groups
            sizes[name] = math.prod(shape) * dtype.itemsize
    return sizes


def inferred_shapes(
    model: onnx.ModelProto, feed: dict[str, np.ndarray], batch: int | None = None
) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every tensor whose size shape inference can tell when the graph
    inputs have the shapes of ``feed`` (with ``batch``, a symbolic first axis gets that size)."""
    from qconv.model_io import without_weight_data

    fixed = without_weight_data(model)  # a deep copy would duplicate every weight
    for value in fixed.graph.input:
        if value.name in feed:
            dims = value.type.tensor_type.shape.dim
            for axis, (dim, size) in enumerate(zip(dims, feed[value.name].shape, strict=False)):
                symbolic_batch = axis == 0 and not dim.HasField("dim_value")
                dim.Clear()
                dim.dim_value = batch if batch is not None and symbolic_batch else size
    try:
        inferred = onnx.shape_inference.infer_shapes(fixed, data_prop=True)
    except Exception:  # inference is best effort here; callers treat unknown sizes as such
        inferred = fixed
    shapes = {}
    for value in [*inferred.graph.value_info, *inferred.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") and d.dim_value > 0 for d in dims):
            dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
            shapes[value.name] = (tuple(d.dim_value for d in dims), np.dtype(dtype))
    return shapes


def group_tensors(
    tensors: Sequence[str], sizes: dict[str, int], budget: int | None
) -> list[list[str]]:
    """Split ``tensors`` (in graph order) into groups whose outputs fit ``budget`` bytes.

    Exposed outputs are held by onnxruntime and copied into numpy, so a group may use half the
    budget. A tensor larger than that still gets a group of its own.
    """
    if budget is None:
        return [list(tensors)]
    fallback = max(sizes.values(), default=0)
    groups: list[list[str]] = [[]]
    used = 0
    for name in tensors:
        size = sizes.get(name, fallback)
        if groups[-1] and used + size > budget // 2:
            groups.append([])
            used = 0
        groups[-1].append(name)
        used += size
    return groups
