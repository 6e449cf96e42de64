"""Loading and saving models: the only place that touches model files.

Guarantees:
- a model that loads has passed ``onnx.checker`` and uses opset 10 or later of the default domain;
- every failure to read is a :class:`ModelError` naming the file and what to do;
- saving writes a temporary file beside the target and renames it into place, so a reader never
  sees a half-written model and a failed save leaves no output behind; the input path is refused.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import onnx
import onnx_ir as ir
from google.protobuf.message import DecodeError

from qconv.errors import ModelError, OutputError, cannot_read, first_line

log = logging.getLogger(__name__)

MIN_OPSET = 10
# Protobuf cannot serialize a single message over 2 GiB; stay clear of it.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000
EXTERNAL_TENSOR_BYTES = 1024  # smaller tensors stay in the model file
EXTERNAL_DATA_ALIGNMENT = 4096  # offsets onnxruntime can memory-map


def load_model(path: Path) -> ir.Model:
    """Read, check and convert an ONNX model into the IR used by every pass."""
    proto = load_proto(path)
    return ir.from_proto(proto)


def load_proto(path: Path) -> onnx.ModelProto:
    """Read and check an ONNX model, with its external data, as a protobuf."""
    return load_proto_and_files(path)[0]


def load_proto_and_files(path: Path) -> tuple[onnx.ModelProto, list[Path]]:
    """Like :func:`load_proto`; also the external data files the model was read from."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist", "check the path")
    if path.stat().st_size == 0:
        raise ModelError(f"model file {path} is empty", "re-export the model")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise ModelError(
            f"{path} is not a readable ONNX model ({first_line(exc)})",
            "the file may be truncated or not an .onnx file; re-export it",
        ) from exc
    files = _load_external_data(proto, path)
    _check_opset(proto, path)
    _check(proto, path)
    return proto, files


def _load_external_data(proto: onnx.ModelProto, path: Path) -> list[Path]:
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    tensors = [t for t in _all_tensors(proto.graph) if uses_external_data(t)]
    files: dict[Path, None] = {}
    for tensor in tensors:
        location = dict((e.key, e.value) for e in tensor.external_data).get("location", "")
        if not (path.parent / location).resolve().is_relative_to(path.parent.resolve()):
            raise ModelError(
                f"external data file {location} of tensor {tensor.name!r} is outside the "
                f"folder of {path}, which onnx refuses to read",
                "move the file next to the model and re-save the model with that location",
            )
        if not (path.parent / location).is_file():
            raise ModelError(
                f"external data file {path.parent / location} of tensor {tensor.name!r} is missing",
                f"put it next to {path.name}",
            )
        files[path.parent / location] = None
    for file in files:
        _check_readable(file)
    if tensors:
        try:
            load_external_data_for_model(proto, str(path.parent))
        except (OSError, ValueError, onnx.checker.ValidationError) as exc:
            raise ModelError(
                f"the external data of {path} cannot be read ({first_line(exc)})",
                "the .data file may be truncated or belong to another export; re-export it",
            ) from exc
    return list(files)


def _all_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Initializers and tensor attributes (Constant values, ...) of ``graph`` and subgraphs."""
    yield from graph.initializer
    for node in all_nodes(graph):
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from attribute.g.initializer
            for subgraph in attribute.graphs:
                yield from subgraph.initializer


def all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of ``graph`` and, depth first, of the subgraphs its nodes hold."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from all_nodes(attribute.g)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for subgraph in attribute.graphs:
                    yield from all_nodes(subgraph)


def _check_opset(proto: onnx.ModelProto, path: Path) -> None:
    version = default_opset(proto)
    if version is None:
        raise ModelError(f"{path} imports no default ONNX opset", "re-export the model")
    if version < MIN_OPSET:
        raise ModelError(
            f"{path} uses opset {version}; qconv needs opset {MIN_OPSET} or later",
            "convert it with onnx.version_converter.convert_version(model, 13)",
        )


def default_opset(proto: onnx.ModelProto) -> int | None:
    """The version of the default (``ai.onnx``) domain the model imports."""
    for opset in proto.opset_import:
        if opset.domain in ("", "ai.onnx"):
            return opset.version
    return None


def _check(proto: onnx.ModelProto, path: Path) -> None:
    try:
        if proto.ByteSize() < EXTERNAL_DATA_THRESHOLD:
            onnx.checker.check_model(proto)
        else:
            onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as exc:
        raise ModelError(
            f"{path} fails the ONNX checker: {first_line(exc)}",
            "fix or re-export the model; qconv only converts valid models",
        ) from exc


def check_paths(inputs: Sequence[Path], outputs: Sequence[tuple[str, Path]]) -> None:
    """Refuse, before any work, an output that would overwrite an input or another output.

    Args:
        inputs: Every file or folder the run reads (model, its external data, data sets).
        outputs: (flag, path) of every file the run writes (-o, --report, --calib-cache).

    Raises:
        InputError: An input exists but cannot be read (permissions).
        OutputError: An output is an input, is given twice, is a directory, or its folder is
            missing.
    """
    for path in inputs:
        _check_readable(Path(path))
    read = {Path(path).resolve(): Path(path) for path in inputs}
    written: dict[Path, str] = {}
    for flag, output in outputs:
        where = Path(output).resolve()
        if where in read:
            same = "" if read[where] == Path(output) else f" ({read[where]})"
            raise OutputError(
                f"{flag} {output} is an input of this run{same}",
                "choose another path; qconv never modifies its inputs",
            )
        if where in written:
            raise OutputError(
                f"{flag} {output} is also given as {written[where]}",
                "give each output its own path",
            )
        written[where] = flag
        _check_writable_location(flag, Path(output))


def _check_readable(path: Path) -> None:
    """Refuse an input the user may not read, before a reader misreports it as corrupt."""
    try:
        if path.is_dir():
            with os.scandir(path):
                pass
        elif path.exists():
            with open(path, "rb"):
                pass
    except OSError as exc:
        raise cannot_read(path, exc) from exc


def _check_writable_location(flag: str, output: Path) -> None:
    if output.is_dir():
        raise OutputError(f"{flag} {output} is a directory", "give a file path")
    if not output.parent.is_dir():
        raise OutputError(
            f"{flag}: folder {output.parent} does not exist",
            "create it first or choose another path",
        )


def save_model(model: ir.Model | onnx.ModelProto, output: Path) -> onnx.ModelProto:
    """Write ``model`` to ``output`` atomically; return the protobuf that was written.

    Models too large for one protobuf keep their weights in ``<output>.data`` beside the model.
    """
    with StagedOutputs() as staged:
        proto = staged.add_model(model, output)
        staged.commit()
    return proto


def write_text(path: Path, text: str) -> None:
    """Write a text file (a report) atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path: Path, data: bytes) -> None:
    """Write a file atomically: a reader sees the old file or the new one, never a part."""
    with StagedOutputs() as staged:
        staged.add_bytes(Path(path), data)
        staged.commit()


class StagedOutputs:
    """Files written beside their targets and moved into place together by :meth:`commit`.

    A run stages its model as soon as it is verified (a full disk shows before the long
    evaluation) and its reports at the end; leaving the ``with`` block without ``commit`` (an
    error, Ctrl-C) removes the staged files, so no earlier output is replaced by a failed run.
    New files get the permissions the umask allows; a replaced file keeps its own.
    """

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []

    def __enter__(self) -> StagedOutputs:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for tmp, _ in self._pending:
            tmp.unlink(missing_ok=True)
        self._pending.clear()

    def add_bytes(self, output: Path, data: bytes) -> None:
        with self._beside(output) as tmp:
            tmp.write_bytes(data)

    def add_text(self, output: Path, text: str) -> None:
        self.add_bytes(output, text.encode("utf-8"))

    def add_model(self, model: ir.Model | onnx.ModelProto, output: Path) -> onnx.ModelProto:
        proto = ir.to_proto(model) if isinstance(model, ir.Model) else model
        output = Path(output)
        if proto.ByteSize() < EXTERNAL_DATA_THRESHOLD:
            self.add_bytes(output, proto.SerializeToString())
            return proto
        data_name = output.name + ".data"
        with self._beside(output.parent / data_name) as tmp_data, self._beside(output) as tmp:
            _save_with_external_data(proto, tmp, tmp_data, data_name)
        return proto

    def commit(self) -> None:
        """Move every staged file into place."""
        while self._pending:
            tmp, output = self._pending.pop(0)
            try:
                os.replace(tmp, output)
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                raise _output_error(exc, output) from exc

    @contextlib.contextmanager
    def _beside(self, output: Path) -> Iterator[Path]:
        if output.is_symlink():  # replace what the link points at, and keep the link
            output = Path(os.path.realpath(output))
        _remove_orphans(output)
        try:
            fd, name = tempfile.mkstemp(
                prefix=f"{_staging_prefix(output)}{os.getpid()}.", suffix=".tmp", dir=output.parent
            )
        except OSError as exc:
            raise _output_error(exc, output) from exc
        os.close(fd)
        tmp = Path(name)
        self._pending.append((tmp, output))
        try:
            yield tmp
            os.chmod(tmp, _file_mode(output))
        except OSError as exc:
            raise _output_error(exc, output) from exc


def _save_with_external_data(
    proto: onnx.ModelProto, model_file: Path, data_file: Path, data_name: str
) -> None:
    """Write ``proto`` to ``model_file`` with its large tensors in ``data_file``, referenced as
    ``data_name`` (the data file's final name, beside the model).

    ``onnx.save_model`` would rewrite ``proto`` itself into external-data form (every later
    session built from it would look for the data file) and refuses a data file that exists;
    here each tensor's bytes are moved out for the write and put back after it.
    """
    moved: list[tuple[onnx.TensorProto, bytes]] = []
    try:
        with open(data_file, "wb") as data:
            for tensor in _all_tensors(proto.graph):
                if len(tensor.raw_data) < EXTERNAL_TENSOR_BYTES:
                    continue
                data.seek(-data.tell() % EXTERNAL_DATA_ALIGNMENT, os.SEEK_CUR)
                offset, raw = data.tell(), tensor.raw_data
                data.write(raw)
                moved.append((tensor, raw))
                tensor.ClearField("raw_data")
                tensor.data_location = onnx.TensorProto.EXTERNAL
                for key, value in (
                    ("location", data_name),
                    ("offset", offset),
                    ("length", len(raw)),
                ):
                    entry = tensor.external_data.add()
                    entry.key, entry.value = key, str(value)
        model_file.write_bytes(proto.SerializeToString())
    finally:
        for tensor, raw in moved:
            del tensor.external_data[:]
            tensor.ClearField("data_location")  # it held raw data, so it had no location
            tensor.raw_data = raw


def _staging_prefix(output: Path) -> str:
    """``.NAME.``, shortened so that the staged name (``.NAME.PID.XXXXXXXX.tmp``) stays a legal
    one when NAME is near the 255-byte limit of file names."""
    name = output.name
    while len(name.encode()) > 200:
        name = name[:-1]
    return f".{name}."


def _remove_orphans(output: Path) -> None:
    """Remove files staged for ``output`` by runs that no longer exist (killed with SIGKILL,
    which leaves no chance to clean up); a live run's files, another user's, stay."""
    prefix = _staging_prefix(output)
    for staged in output.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        pid = staged.name[len(prefix) :].split(".")[0]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                staged.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists but belongs to someone else
        return True
    return True


def _file_mode(output: Path) -> int:
    """The mode a replaced file had, or what the umask allows a new one."""
    try:
        return output.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _output_error(exc: OSError, output: Path) -> OutputError:
    if exc.errno == errno.ENOSPC:
        return OutputError(f"the disk is full while writing {output}", "free space and run again")
    return OutputError(
        f"cannot write {output}: {exc.strerror}", "check the path and its permissions"
    )
