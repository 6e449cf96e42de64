"""A file cache of calibration statistics, so trying another range method costs no inference.

The cache is an ``.npz`` (no pickles) holding each tensor's histogram and a JSON header with the
key it was made for: a hash of the prepared model and one of the calibration data and the
options that shape the statistics. A cache made for anything else is stale: it is ignored (with
a note saying why) and replaced after the new pass. It is written atomically, so an interrupted
run leaves either the old cache or none, never a partial one.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from qconv.calibrate.histogram import TensorStats
from qconv.errors import ConfigError

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
CHUNK = 1 << 20


def model_key(model: onnx.ModelProto) -> str:
    """Hash of a model's graph (deterministic serialization)."""
    return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()


def data_key(location: Path | str, options: dict[str, object]) -> str:
    """Hash of the calibration data's bytes (every file of a folder) and the reading options."""
    digest = hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode())
    path = Path(location)
    if not path.exists():  # a pseudo-source such as "random"
        digest.update(str(location).encode())
        return digest.hexdigest()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with file.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


@dataclass
class CalibrationCache:
    """Statistics cached in ``path`` for calibration data with key ``data``.

    Attributes:
        path: The cache file.
        data: Key of the calibration data and options.
        status: What happened, for the report ("reused", "written", why it was stale).
    """

    path: Path
    data: str
    status: str = ""

    def load(self, model: str, tensors: Iterable[str]) -> dict[str, TensorStats] | None:
        """The cached statistics, or None (with ``status`` saying why) when unusable."""
        if not self.path.is_file():
            self.status = f"no cache at {self.path} yet"
            return None
        _refuse_foreign(self.path)
        try:
            header, stats = _read(self.path)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            self.status = f"cache {self.path} is unreadable ({exc}); recomputing"
            return None
        stale = _staleness(header, model, self.data, set(tensors), set(stats))
        if stale:
            self.status = f"cache {self.path} is stale ({stale}); recomputing"
            return None
        self.status = f"statistics reused from {self.path}: no inference was run"
        return stats

    def save(self, model: str, stats: dict[str, TensorStats]) -> None:
        from qconv.model_io import write_bytes

        header = {"version": FORMAT_VERSION, "model": model, "data": self.data, "tensors": []}
        arrays: dict[str, np.ndarray] = {}
        for index, (name, tensor) in enumerate(stats.items()):
            header["tensors"].append(_describe(name, tensor))
            arrays[f"counts_{index}"] = tensor.counts
        arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        write_bytes(self.path, buffer.getvalue())
        reason = f"{self.status}; " if self.status else ""
        self.status = f"{reason}statistics written to {self.path}"


ZIP_MAGIC = b"PK\x03\x04"


def _refuse_foreign(path: Path) -> None:
    """Refuse to treat as a stale cache, and so overwrite, a file that is not one: an .npz of
    other arrays or any other file. An empty or truncated cache (a zip that breaks off) is
    recomputed."""
    with open(path, "rb") as handle:
        head = handle.read(len(ZIP_MAGIC))
    foreign = bool(head) and head != ZIP_MAGIC
    if not foreign and head and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            foreign = "header.npy" not in archive.namelist()
    if foreign:
        raise ConfigError(
            f"--calib-cache {path} is not a qconv statistics cache, and qconv will not replace it",
            "give a new path or the path of an earlier cache",
        )


def _describe(name: str, tensor: TensorStats) -> dict[str, object]:
    return {
        "name": name,
        "bins_per_side": tensor.bins_per_side,
        "exponent": tensor.exponent,
        "minimum": tensor.minimum,
        "maximum": tensor.maximum,
        "count": tensor.count,
        "nonfinite": tensor.nonfinite,
        "zeros": tensor.zeros,
    }


def _read(path: Path) -> tuple[dict, dict[str, TensorStats]]:
    with np.load(path, allow_pickle=False) as archive:
        header = json.loads(archive["header"].tobytes().decode())
        stats = {}
        for index, entry in enumerate(header["tensors"]):
            stats[entry["name"]] = TensorStats(
                bins_per_side=entry["bins_per_side"],
                exponent=entry["exponent"],
                counts=archive[f"counts_{index}"].astype(np.int64),
                minimum=entry["minimum"],
                maximum=entry["maximum"],
                count=entry["count"],
                nonfinite=entry["nonfinite"],
                zeros=entry["zeros"],
            )
    return header, stats


def _staleness(header: dict, model: str, data: str, wanted: set[str], have: set[str]) -> str:
    if header.get("version") != FORMAT_VERSION:
        return "written by another qconv version"
    if header.get("model") != model:
        return "made for a different model or preparation"
    if header.get("data") != data:
        return "made from different calibration data or options"
    if not wanted <= have:
        return f"{len(wanted - have)} tensors missing"
    return ""
