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
# Models holding this many bytes of tensors are checked from their file, not as a protobuf.
CHECK_FILE_BYTES = 1 << 28


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
    _check_value_types(proto, path)
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


def _check_value_types(proto: onnx.ModelProto, path: Path) -> None:
    """Refuse maps (scikit-learn's ZipMap outputs): the graph model (onnx-ir) has no map type."""
    graph = proto.graph
    for kind, values in (
        ("input", graph.input),
        ("output", graph.output),
        ("tensor", graph.value_info),
    ):
        for value in values:
            if _holds_map(value.type):
                raise ModelError(
                    f"{path}: {kind} {value.name!r} is a map or a sequence of maps (as "
                    "scikit-learn's ZipMap writes), and qconv reads models of tensors",
                    "export the model without ZipMap (skl2onnx: options={'zipmap': False})",
                )


def _holds_map(value_type: onnx.TypeProto) -> bool:
    kind = value_type.WhichOneof("value")
    if kind == "map_type":
        return True
    if kind in ("sequence_type", "optional_type"):
        return _holds_map(getattr(value_type, kind).elem_type)
    return False


def _check(proto: onnx.ModelProto, path: Path) -> None:
    try:
        # A large model is checked from its file: checking the protobuf would serialize it
        # (twice the weights, transiently) and parse that again in C++.
        if stored_bytes(proto) < CHECK_FILE_BYTES:
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
        if serialized_bytes(proto) < EXTERNAL_DATA_THRESHOLD:
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

    ``proto`` is left untouched: the model file is written from a copy that holds everything
    but the large tensors' bytes. (Moving the bytes out of ``proto`` and back would leave a
    dead copy of them behind: protobuf's arena frees nothing before the message goes.)
    """
    skeleton = external_skeleton(proto, data_file, data_name)
    model_file.write_bytes(skeleton.SerializeToString())


def external_skeleton(proto: onnx.ModelProto, data_file: Path, data_name: str) -> onnx.ModelProto:
    """Write the large tensors of ``proto`` to ``data_file`` and return a copy of ``proto`` that
    refers to them there as ``data_name`` (``proto`` is left untouched)."""
    with open(data_file, "wb") as data:

        def write(raw: bytes) -> int:
            data.seek(-data.tell() % EXTERNAL_DATA_ALIGNMENT, os.SEEK_CUR)
            offset = data.tell()
            data.write(raw)
            return offset

        return _external_skeleton(proto, write, data_name)


def tensor_nbytes(tensor: onnx.TensorProto) -> int:
    """Bytes of a tensor's ``raw_data`` from its shape and type (reading ``raw_data`` copies it)."""
    if not tensor.HasField("raw_data"):
        return 0
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, TypeError, ValueError):
        return len(tensor.raw_data)
    count = 1
    for dim in tensor.dims:
        count *= dim
    return count * itemsize


def serialized_bytes(message) -> int:
    """``message.ByteSize()`` (a model or any part of one) without serializing the weights.

    Python protobuf (upb) computes ByteSize by serializing: about twice a model's weights for a
    moment, and seconds for a large one. Here only the parts around the tensors are measured
    that way; each tensor's raw data counts by its length.
    """
    heavy = _HEAVY_FIELDS.get(type(message))
    if heavy is None or not _holds_heavy(message):
        return message.ByteSize()
    shallow = type(message)()
    total = 0
    for descriptor, value in message.ListFields():
        if descriptor.name == "raw_data":
            total += _length_field_bytes(descriptor.number, len(value))
        elif descriptor.name in heavy:
            items = value if _is_repeated(descriptor) else [value]
            total += sum(_length_field_bytes(descriptor.number, serialized_bytes(i)) for i in items)
        else:
            _copy_field(shallow, descriptor, value)
    return shallow.ByteSize() + total


_HEAVY_FIELDS = {
    onnx.ModelProto: ("graph",),
    onnx.GraphProto: ("initializer", "node"),
    onnx.NodeProto: ("attribute",),
    onnx.AttributeProto: ("t", "tensors", "g", "graphs"),
    onnx.TensorProto: ("raw_data",),
}


def _holds_heavy(message) -> bool:
    """Whether ``message`` may hold a tensor worth measuring apart (always, above a node)."""
    if isinstance(message, onnx.TensorProto):
        return message.HasField("raw_data")
    if isinstance(message, onnx.NodeProto):
        return any(_holds_heavy(attribute) for attribute in message.attribute)
    if isinstance(message, onnx.AttributeProto):
        return (
            message.HasField("t")
            or message.HasField("g")
            or bool(len(message.tensors) or len(message.graphs))
        )
    return True


def _length_field_bytes(number: int, size: int) -> int:
    return _varint_bytes(number << 3) + _varint_bytes(size) + size


def _varint_bytes(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


def stored_bytes(proto: onnx.ModelProto) -> int:
    """Bytes of the tensors ``proto`` holds as raw data (without serializing it)."""
    return sum(tensor_nbytes(tensor) for tensor in _all_tensors(proto.graph))


def _external_skeleton(proto: onnx.ModelProto, write, data_name: str) -> onnx.ModelProto:
    """A copy of ``proto`` whose tensors of ``EXTERNAL_TENSOR_BYTES`` or more are references
    into ``data_name``; ``write(raw)`` stores each one's bytes and returns their offset."""

    def external(source: onnx.TensorProto, target: onnx.TensorProto) -> bool:
        if tensor_nbytes(source) < EXTERNAL_TENSOR_BYTES:
            return False
        raw = source.raw_data
        offset = write(raw)
        for key, value in (("location", data_name), ("offset", offset), ("length", len(raw))):
            entry = target.external_data.add()
            entry.key, entry.value = key, str(value)
        target.data_location = onnx.TensorProto.EXTERNAL
        return True

    return _copy_model(proto, external)


def without_weight_data(proto: onnx.ModelProto, min_bytes: int = 1 << 20) -> onnx.ModelProto:
    """A copy of ``proto`` for shape inference: tensors of ``min_bytes`` or more with two or
    more dimensions (weights, tables) keep their type and shape but lose their bytes. Scalars
    and 1-D tensors, which shape inference may read (Reshape shapes, Resize scales), stay."""

    def drop(source: onnx.TensorProto, target: onnx.TensorProto) -> bool:
        return len(source.dims) >= 2 and tensor_nbytes(source) >= min_bytes

    return _copy_model(proto, drop)


def _copy_model(proto: onnx.ModelProto, replace) -> onnx.ModelProto:
    """A copy of ``proto`` in which every tensor for which ``replace(source, target)`` returns
    True gets all its fields but ``raw_data`` (``replace`` may add more); others are copied."""

    def tensor(source: onnx.TensorProto, target: onnx.TensorProto) -> None:
        if not replace(source, target):
            target.CopyFrom(source)
            return
        for descriptor, value in source.ListFields():
            if descriptor.name != "raw_data" and not (
                descriptor.name == "data_location" and target.HasField("data_location")
            ):
                _copy_field(target, descriptor, value)

    def graph(source: onnx.GraphProto, target: onnx.GraphProto) -> None:
        for item in source.initializer:  # first, as the data file has always listed them
            tensor(item, target.initializer.add())
        for descriptor, value in source.ListFields():
            if descriptor.name == "initializer":
                continue
            if descriptor.name == "node":
                for item in value:
                    node(item, target.node.add())
            else:
                _copy_field(target, descriptor, value)

    def node(source: onnx.NodeProto, target: onnx.NodeProto) -> None:
        for descriptor, value in source.ListFields():
            if descriptor.name != "attribute":
                _copy_field(target, descriptor, value)
        for attribute in source.attribute:
            copied = target.attribute.add()
            for descriptor, value in attribute.ListFields():
                if descriptor.name == "t":
                    tensor(value, copied.t)
                elif descriptor.name == "tensors":
                    for item in value:
                        tensor(item, copied.tensors.add())
                elif descriptor.name == "g":
                    graph(value, copied.g)
                elif descriptor.name == "graphs":
                    for item in value:
                        graph(item, copied.graphs.add())
                else:
                    _copy_field(copied, descriptor, value)

    copy = onnx.ModelProto()
    for descriptor, value in proto.ListFields():
        if descriptor.name == "graph":
            graph(value, copy.graph)
        else:
            _copy_field(copy, descriptor, value)
    return copy


def _is_repeated(descriptor) -> bool:
    from google.protobuf.descriptor import FieldDescriptor

    repeated = getattr(descriptor, "is_repeated", None)  # protobuf >= 5.28; older: label
    if repeated is None:
        repeated = descriptor.label == FieldDescriptor.LABEL_REPEATED
    return repeated


def _copy_field(target, descriptor, value) -> None:
    from google.protobuf.descriptor import FieldDescriptor

    if _is_repeated(descriptor):
        getattr(target, descriptor.name).extend(value)
    elif descriptor.type == FieldDescriptor.TYPE_MESSAGE:
        getattr(target, descriptor.name).CopyFrom(value)
    else:
        setattr(target, descriptor.name, value)


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
