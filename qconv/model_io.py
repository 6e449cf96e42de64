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
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import onnx
import onnx_ir as ir
from google.protobuf.message import DecodeError

from qconv.errors import ModelError, OutputError

log = logging.getLogger(__name__)

MIN_OPSET = 10
# Protobuf cannot serialize a single message over 2 GiB; stay clear of it.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000


def load_model(path: Path) -> ir.Model:
    """Read, check and convert an ONNX model into the IR used by every pass."""
    proto = load_proto(path)
    return ir.from_proto(proto)


def load_proto(path: Path) -> onnx.ModelProto:
    """Read and check an ONNX model, with its external data, as a protobuf."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist", "check the path")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise ModelError(
            f"{path} is not a readable ONNX model ({_first_line(exc)})",
            "the file may be truncated or not an .onnx file; re-export it",
        ) from exc
    _load_external_data(proto, path)
    _check_opset(proto, path)
    _check(proto, path)
    return proto


def _load_external_data(proto: onnx.ModelProto, path: Path) -> None:
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    tensors = [t for t in _all_initializers(proto) if uses_external_data(t)]
    for tensor in tensors:
        location = dict((e.key, e.value) for e in tensor.external_data).get("location", "")
        if not (path.parent / location).is_file():
            raise ModelError(
                f"external data file {path.parent / location} of tensor {tensor.name!r} is missing",
                f"put it next to {path.name}",
            )
    if tensors:
        load_external_data_for_model(proto, str(path.parent))


def _all_initializers(proto: onnx.ModelProto) -> list[onnx.TensorProto]:
    return list(proto.graph.initializer)


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
            f"{path} fails the ONNX checker: {_first_line(exc)}",
            "fix or re-export the model; qconv only converts valid models",
        ) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_output_path(output: Path, input_path: Path) -> None:
    """Refuse to write over the input, into a missing folder, or onto a directory."""
    if output.resolve() == Path(input_path).resolve():
        raise OutputError(
            f"output {output} is the input model",
            "choose another path with -o; qconv never modifies its input",
        )
    if output.is_dir():
        raise OutputError(f"output {output} is a directory", "give a file path ending in .onnx")
    if not output.parent.is_dir():
        raise OutputError(
            f"output folder {output.parent} does not exist", "create it first or choose another -o"
        )


def save_model(model: ir.Model | onnx.ModelProto, output: Path) -> onnx.ModelProto:
    """Write ``model`` to ``output`` atomically; return the protobuf that was written.

    Models too large for one protobuf keep their weights in ``<output>.data`` beside the model.
    """
    proto = ir.to_proto(model) if isinstance(model, ir.Model) else model
    output = Path(output)
    big = proto.ByteSize() >= EXTERNAL_DATA_THRESHOLD
    with _atomic_target(output) as tmp:
        if big:
            _save_with_external_data(proto, tmp, output)
        else:
            tmp.write_bytes(proto.SerializeToString())
    return proto


def write_text(path: Path, text: str) -> None:
    """Write a text file (a report) atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path: Path, data: bytes) -> None:
    """Write a file atomically: a reader sees the old file or the new one, never a part."""
    with _atomic_target(Path(path)) as tmp:
        tmp.write_bytes(data)


def _save_with_external_data(proto: onnx.ModelProto, tmp: Path, output: Path) -> None:
    data_name = output.name + ".data"
    with _atomic_target(output.parent / data_name) as tmp_data:
        onnx.save_model(
            proto,
            str(tmp),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=tmp_data.name,
            size_threshold=1024,
        )
    # The model was saved pointing at the temporary data name; point it at the final name.
    saved = onnx.load(str(tmp), load_external_data=False)
    for tensor in saved.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = data_name
    tmp.write_bytes(saved.SerializeToString())


@contextlib.contextmanager
def _atomic_target(output: Path):
    fd, name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, output)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise OutputError(
                f"the disk is full while writing {output}", "free space and run again"
            ) from exc
        raise OutputError(f"cannot write {output}: {exc.strerror}", "check the path") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
