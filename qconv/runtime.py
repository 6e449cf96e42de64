"""The one place that creates onnxruntime sessions.

Every session qconv runs (calibration, verification, evaluation, latency) is built here so that
threading, providers and custom-op libraries are set the same way everywhere.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import onnx
import onnxruntime as ort

from qconv.errors import ModelError, first_line
from qconv.model_io import external_skeleton, stored_bytes

log = logging.getLogger(__name__)
# Models holding this many bytes of tensors reach onnxruntime as files, not as serialized bytes.
SESSION_FILE_BYTES = 1 << 28
_in_memory_warned = False  # a large model has been handed over in memory
# onnxruntime's own log lines (coloured, on stderr) would precede qconv's one-line errors.
ort.set_default_logger_severity(4)

# Messages onnxruntime gives for an op it has no kernel or schema for.
UNKNOWN_OP_MARKERS = ("is not a registered function/op", "Could not find an implementation for")
STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "ai.onnx.training"})


def session_options(
    threads: int | None = None,
    optimize: bool = True,
    profile_prefix: str | None = None,
    spin: bool = True,
    optimized_path: Path | None = None,
) -> ort.SessionOptions:
    """Session options with a fixed thread count (``None``: onnxruntime's default).

    ``spin=False`` stops idle worker threads from busy-waiting: when several sessions are
    timed in turn, a spinning session would steal the cores of the one being measured.
    """
    options = ort.SessionOptions()
    options.log_severity_level = 4  # errors reach qconv as exceptions
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if optimize
        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
    return options


def needs_custom_ops(model: onnx.ModelProto) -> bool:
    """Whether the model imports a domain that only onnxruntime-extensions implements."""
    return any(opset.domain not in STANDARD_DOMAINS for opset in model.opset_import)


def create_session(
    model: onnx.ModelProto | Path,
    threads: int | None = None,
    optimize: bool = True,
    profile_prefix: str | None = None,
    spin: bool = True,
    optimized_path: Path | None = None,
    edit: Callable[[onnx.ModelProto], onnx.ModelProto] | None = None,
) -> ort.InferenceSession:
    """An onnxruntime CPU session for ``model`` (a protobuf or a path).

    ``optimized_path``: where onnxruntime writes the graph it will run, after its fusions and
    layout changes. ``edit`` (protobufs only): the session runs ``edit(model)``, a changed copy
    (extra outputs, ...); for a large model it gets a copy whose weights are already in a file,
    so that copying the model does not copy its weights.
    """
    if isinstance(model, onnx.ModelProto) and stored_bytes(model) >= SESSION_FILE_BYTES:
        session = _session_from_file(
            model, edit, threads, optimize, profile_prefix, spin, optimized_path
        )
        if session is not None:
            return session
    if edit is not None:
        model = edit(model)
    options = session_options(threads, optimize, profile_prefix, spin, optimized_path)
    if isinstance(model, onnx.ModelProto):
        proto = model
    else:
        proto = onnx.load(str(model), load_external_data=False)
    if needs_custom_ops(proto):
        import onnxruntime_extensions

        options.register_custom_ops_library(onnxruntime_extensions.get_library_path())
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several types for a graph it cannot run
        if any(marker in str(exc) for marker in UNKNOWN_OP_MARKERS):
            which = "this model" if isinstance(model, onnx.ModelProto) else str(model)
            raise ModelError(
                f"onnxruntime cannot run an op of {which}: {first_line(exc, 300)}",
                "qconv runs models in onnxruntime: use ops that onnxruntime or "
                "onnxruntime-extensions implement",
            ) from exc
        raise


def _session_from_file(
    model: onnx.ModelProto,
    edit: Callable[[onnx.ModelProto], onnx.ModelProto] | None,
    *session_args,
) -> ort.InferenceSession | None:
    """A session of a large model read from a temporary file with external data: onnxruntime
    maps the weights instead of holding a parsed copy of the serialized model and a copy of
    every initializer. None when the temporary folder has no room for it (the caller then
    builds the session from serialized bytes, which only costs memory)."""
    with temporary_model_file(model, edit) as path:
        if path is None:
            return None
        try:
            return create_session(path, *session_args)
        except ModelError as exc:
            raise ModelError(exc.message.replace(str(path), "this model"), exc.hint) from exc


@contextlib.contextmanager
def temporary_model_file(
    model: onnx.ModelProto, edit: Callable[[onnx.ModelProto], onnx.ModelProto] | None = None
) -> Iterator[Path | None]:
    """``model`` (``edit`` of it, if given) in a temporary file with its weights as external
    data, removed afterwards; None when the temporary folder has no room or cannot be written,
    with a warning once per run."""
    folder = None
    try:
        folder = tempfile.TemporaryDirectory(prefix="qconv-model-")
        path = Path(folder.name) / "model.onnx"
        data_name = path.name + ".data"
        skeleton = external_skeleton(model, path.parent / data_name, data_name)
        path.write_bytes((edit(skeleton) if edit else skeleton).SerializeToString())
    except OSError as exc:  # a full or read-only temporary folder
        if folder is not None:
            folder.cleanup()
        _warn_in_memory(exc)
        yield None
        return
    with folder:
        yield path


def _warn_in_memory(exc: OSError) -> None:
    global _in_memory_warned  # once: every session of the run would say the same
    if not _in_memory_warned:
        log.warning("large models given to onnxruntime in memory: %s", exc)
    _in_memory_warned = True


def optimized_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph onnxruntime runs for ``model`` on this machine (one thread, every optimization).

    It holds onnxruntime's own operators (QLinearConv, NhwcMaxPool, NCHWc convolutions, ...)
    and is specific to this CPU: read it to see what onnxruntime made of a model, never save it
    as a result.
    """
    with tempfile.TemporaryDirectory(prefix="qconv-ort-") as folder:
        path = Path(folder) / "optimized.onnx"
        create_session(model, threads=1, optimized_path=path)
        # Only the graph is read. A large model's optimized graph refers to the weights of the
        # file its session read (another temporary folder, gone by now), and loading them
        # would copy every weight once more.
        return onnx.load(str(path), load_external_data=False)
