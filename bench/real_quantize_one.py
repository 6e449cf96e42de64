"""Quantize one real model once, in this fresh process, with qconv, onnxruntime or NNCF.

``bench/real.py`` starts one child per (model, tool) so that each conversion's peak resident
memory (``VmHWM``) and wall time belong to it alone, and so that the parent can watch the
child's resident memory and kill it above a cap.

    python bench/real_quantize_one.py --tool qconv|ort|nncf MODEL FEEDS OUTPUT

``FEEDS`` is a folder of ``.npz`` files, one batch-1 feed each (arrays named after the model
inputs), read in sorted file-name order, one file at a time (no tool ever holds all of them):

* ``qconv``: ``quantize_model(model, open_reader(FEEDS, input_specs(model), batch_size=1),
  QuantizeConfig())`` (qconv's defaults), then ``onnx.save``.
* ``ort``: ``onnxruntime.quantization.quantize_static`` (QDQ, ``per_channel=True``, QUInt8
  activations, QInt8 weights, MinMax) on the output of ORT's ``quant_pre_process`` (the raw
  model, with a note, if that step fails), through a ``CalibrationDataReader`` over ``FEEDS``.
* ``nncf``: ``nncf.quantize(model, nncf.Dataset(feeds))`` with NNCF's defaults, then
  ``onnx.save``. Run with the interpreter of ``.venv-bench``, which has NNCF.

Only the ``qconv`` tool imports qconv; the others need nothing but numpy, onnx and their own
package, so this file runs in either virtual environment.

JSON lines go to stdout (each on a line of its own): ``{"event": "baseline", "import_rss_mb",
"baseline_rss_mb"}`` once imports are done, then the report ``{"event": "done", "ok",
"seconds", "peak_rss_mb", "import_rss_mb", "baseline_rss_mb", "samples", "versions", "notes",
"error"}``.

* ``seconds``: loading the float model, calibration, quantization and saving ``OUTPUT`` (for
  ``ort`` also ``quant_pre_process``); interpreter start-up and imports are not timed.
* ``peak_rss_mb``: the process's peak resident set (``VmHWM``, see :func:`peak_rss_mb`),
  imports included; ``import_rss_mb``: the peak right after the imports.
* ``notes``: the tool's own warnings (Python ``logging`` records of WARNING and above),
  de-duplicated, plus what this script chose to do (a pre-processing fallback, ...).

Temporary files (onnxruntime's augmented model, ...) go to a scratch folder beside ``OUTPUT``
that is removed afterwards; the conversion runs with that folder as working directory, since
onnxruntime's symbolic shape inference writes ``sym_shape_infer_temp.onnx`` to the working
directory when it gives up.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import resource
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

TOOLS = ("qconv", "ort", "nncf")
MAX_NOTES, MAX_NOTE_CHARS = 20, 300

Feed = dict[str, np.ndarray]
# (model, feeds folder, output, notes) -> samples read
Converter = Callable[[Path, Path, Path, list[str]], int]


def _status_mb(key: str) -> float | None:
    """A ``kB`` field of /proc/self/status in MiB (None where there is no such file)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """Peak resident set of this process so far, in MiB: ``VmHWM``, this program's own.

    Not ``ru_maxrss``: Linux carries the parent's high-water mark into a child across
    fork/vfork + exec, so a child started by a parent of 800 MB reports at least 800 MB.
    """
    hwm = _status_mb("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """Resident set size of this process now, in MiB (``VmRSS`` of /proc/self/status)."""
    rss = _status_mb("VmRSS")
    return rss if rss is not None else peak_rss_mb()


def emit(report: dict[str, Any]) -> None:
    """One JSON line, on a line of its own even if a progress bar left the cursor mid-line."""
    print("\n" + json.dumps(report), flush=True)


class FeedFolder:
    """The ``.npz`` feeds of a folder, in sorted order, loaded one at a time on iteration."""

    def __init__(self, folder: Path) -> None:
        self.files = sorted(folder.glob("*.npz"))
        if not self.files:
            raise FileNotFoundError(f"no .npz feeds in {folder}")
        self.reads = 0

    def __len__(self) -> int:
        return len(self.files)

    def __iter__(self) -> Iterator[Feed]:
        for path in self.files:
            with np.load(path, allow_pickle=False) as archive:
                feed = {name: archive[name] for name in archive.files}
            self.reads += 1
            yield feed


def describe(exc: BaseException) -> str:
    """``Type: message`` plus where it was raised (an ``assert`` often has no message)."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno} {frames[-1].name})"
    message = f": {exc}" if str(exc) else ""
    return f"{type(exc).__name__}{message}{where if frames else ''}"


class WarningCollector(logging.Handler):
    """Keeps the WARNING-and-above messages of every logger, for the report.

    Messages that differ only in quoted names (``Expected bias 'a' ...``, ``... 'b' ...``)
    are kept once, with a count of the others.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.first: dict[str, str] = {}
        self.counts: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        text = f"{record.name}: {record.getMessage()}".strip()[:MAX_NOTE_CHARS]
        key = re.sub(r"'[^']*'", "'*'", text)
        if key not in self.first and len(self.first) >= MAX_NOTES:
            return
        self.first.setdefault(key, text)
        self.counts[key] = self.counts.get(key, 0) + 1

    @property
    def messages(self) -> list[str]:
        return [
            text if self.counts[key] == 1 else f"{text} (and {self.counts[key] - 1} more like it)"
            for key, text in self.first.items()
        ]


def qconv_converter() -> Converter:
    """qconv's library API with its default configuration (imports done now, before timing)."""
    import onnx

    from qconv.config import QuantizeConfig
    from qconv.data import input_specs, open_reader
    from qconv.quantize import quantize_model

    def convert(model: Path, feeds: Path, output: Path, notes: list[str]) -> int:
        float_model = onnx.load(str(model))
        reader = open_reader(feeds, input_specs(float_model), batch_size=1)
        result = quantize_model(float_model, reader, QuantizeConfig())
        onnx.save(result.model, str(output))
        notes.append(
            f"qconv quantized {result.quantized_count} of {len(result.decisions)} nodes; "
            f"calibration {result.calibration_seconds:.1f} s in {result.calibration_passes} "
            "pass(es)"
        )
        return result.calibration_samples

    return convert


def ort_converter() -> Converter:
    """``onnxruntime.quantization.quantize_static`` (QDQ, per-channel, MinMax)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class FolderReader(CalibrationDataReader):
        def __init__(self, folder: FeedFolder) -> None:
            self._feeds = iter(folder)

        def get_next(self) -> Feed | None:
            return next(self._feeds, None)

    def convert(model: Path, feeds: Path, output: Path, notes: list[str]) -> int:
        source = Path(tempfile.gettempdir()) / "preprocessed.onnx"
        try:
            quant_pre_process(str(model), str(source))
        except Exception as exc:  # any failure: fall back to the raw model, as documented
            notes.append(f"quant_pre_process failed ({describe(exc)}); raw model used")
            source = model
        folder = FeedFolder(feeds)
        quantize_static(
            str(source),
            str(output),
            FolderReader(folder),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        return folder.reads

    return convert


def nncf_converter() -> Converter:
    """``nncf.quantize`` with its defaults on the ONNX model."""
    import nncf
    import onnx

    def convert(model: Path, feeds: Path, output: Path, notes: list[str]) -> int:
        float_model = onnx.load(str(model))
        folder = FeedFolder(feeds)
        quantized = nncf.quantize(float_model, nncf.Dataset(folder))
        onnx.save(quantized, str(output))
        return min(folder.reads, len(folder))

    return convert


CONVERTERS: dict[str, Callable[[], Converter]] = {
    "qconv": qconv_converter,
    "ort": ort_converter,
    "nncf": nncf_converter,
}


def versions(tool: str) -> dict[str, str]:
    """Versions of the libraries this child used."""
    import onnx

    found = {"python": sys.version.split()[0], "numpy": np.__version__, "onnx": onnx.__version__}
    modules = {"qconv": "qconv", "ort": "onnxruntime", "nncf": "nncf"}
    for name in {"onnxruntime", modules[tool]}:
        module = sys.modules.get(name)
        if module is not None:
            found[name] = getattr(module, "__version__", "?")
    return found


def run(tool: str, model: Path, feeds: Path, output: Path) -> dict[str, Any]:
    """Convert once and return the measurements (``ok`` is False with ``error`` on failure)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.unlink(missing_ok=True)
    collector = WarningCollector()
    logging.getLogger().addHandler(collector)
    logging.getLogger().addHandler(logging.StreamHandler(sys.stderr))  # still shown in the log
    convert = CONVERTERS[tool]()
    logging.getLogger("nncf").addHandler(collector)  # in case it does not propagate
    report: dict[str, Any] = {"event": "done", "ok": False, "notes": []}
    report["import_rss_mb"] = peak_rss_mb()
    report["baseline_rss_mb"] = current_rss_mb()
    emit({"event": "baseline", **{k: report[k] for k in ("import_rss_mb", "baseline_rss_mb")}})
    with tempfile.TemporaryDirectory(prefix=".scratch-", dir=output.parent) as scratch:
        tempfile.tempdir = scratch
        home = os.getcwd()
        os.chdir(scratch)  # ORT's shape inference drops sym_shape_infer_temp.onnx in the cwd
        started = time.perf_counter()
        try:
            report["samples"] = convert(model, feeds, output, report["notes"])
            report["ok"] = output.is_file()
            if not report["ok"]:
                report["error"] = f"{tool} finished but wrote no {output.name}"
        except Exception as exc:
            report["error"] = describe(exc)
            traceback.print_exc(file=sys.stderr)
        report["seconds"] = time.perf_counter() - started
        os.chdir(home)
        tempfile.tempdir = None
    report["peak_rss_mb"] = peak_rss_mb()
    report["notes"].extend(collector.messages)
    report["versions"] = versions(tool)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tool", choices=TOOLS, required=True)
    parser.add_argument("model", type=Path, help="float ONNX model")
    parser.add_argument("feeds", type=Path, help="folder of one-feed .npz files")
    parser.add_argument("output", type=Path, help="where to save the int8 model")
    args = parser.parse_args(argv)
    report = run(args.tool, args.model.resolve(), args.feeds.resolve(), args.output.resolve())
    emit(report)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
