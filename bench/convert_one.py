"""Run one static INT8 conversion in this (fresh) process and report its wall time and memory.

``bench/compare.py`` starts one child per conversion so that each conversion's peak resident
memory (``ru_maxrss``) and wall time belong to it alone, not to whatever ran before it.

    python bench/convert_one.py --tool qconv|ort --method minmax|entropy MODEL CALIB OUTPUT

The last stdout line is a JSON object:
``{"ok", "seconds", "preprocess_seconds", "peak_rss_mb", "import_rss_mb", "notes", "error"}``.

``seconds`` covers loading the float model, calibration, quantization and saving ``OUTPUT``
(for ``ort`` also ``quant_pre_process``); interpreter start-up and imports are not timed.
``peak_rss_mb`` is the process's peak resident set, imports included; ``import_rss_mb`` is the
peak right after the imports, so the difference is what the conversion itself added.

Both tools read the calibration ``.npz`` in batches of 8 samples in file order: qconv through
its own reader, onnxruntime through a small ``CalibrationDataReader`` defined here (so the
onnxruntime child never imports qconv). onnxruntime's temporary files go to a scratch folder
beside ``OUTPUT`` that is removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

BATCH_SIZE = 8
TOOLS = ("qconv", "ort")
METHODS = ("minmax", "entropy")

# (model, calib, output, notes) -> seconds spent in pre-processing (None: no such step)
Converter = Callable[[Path, Path, Path, list[str]], float | None]


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_batches(calib: Path, batch_size: int = BATCH_SIZE) -> list[dict[str, np.ndarray]]:
    """Every array of ``calib`` (one per model input) split along axis 0 into feeds."""
    with np.load(calib, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    count = len(next(iter(arrays.values())))
    return [
        {
            name: np.ascontiguousarray(array[start : start + batch_size])
            for name, array in arrays.items()
        }
        for start in range(0, count, batch_size)
    ]


def qconv_converter(method: str) -> Converter:
    """A function converting with qconv's library API (imports done now, before timing)."""
    import onnx

    from qconv.config import CalibrationMethod, QuantizeConfig
    from qconv.data import input_specs, open_reader
    from qconv.model_io import save_model
    from qconv.quantize import quantize_model

    config = QuantizeConfig(calibration=CalibrationMethod(method))

    def convert(model: Path, calib: Path, output: Path, notes: list[str]) -> float | None:
        float_model = onnx.load(str(model))
        reader = open_reader(calib, input_specs(float_model), batch_size=BATCH_SIZE)
        result = quantize_model(float_model, reader, config)
        save_model(result.model, output)
        notes.append(f"calibrated on {result.calibration_samples} samples")
        return None

    return convert


def ort_converter(method: str) -> Converter:
    """A function converting with ``onnxruntime.quantization.quantize_static`` (QDQ)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class NpzCalibrationReader(CalibrationDataReader):
        def __init__(self, calib: Path) -> None:
            self._batches = iter(load_batches(calib))

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    calibrate_method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy}

    def convert(model: Path, calib: Path, output: Path, notes: list[str]) -> float:
        started = time.perf_counter()
        source = Path(tempfile.gettempdir()) / "preprocessed.onnx"
        try:
            quant_pre_process(str(model), str(source))
        except Exception as exc:  # any failure: fall back to the raw model, as documented
            notes.append(f"quant_pre_process failed ({type(exc).__name__}: {exc}); raw model used")
            source = model
        preprocess_seconds = time.perf_counter() - started
        quantize_static(
            str(source),
            str(output),
            NpzCalibrationReader(calib),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=calibrate_method[method],
        )
        return preprocess_seconds

    return convert


def run(tool: str, method: str, model: Path, calib: Path, output: Path) -> dict[str, Any]:
    """Convert once and return the measurements (``ok`` is False with ``error`` on failure)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.unlink(missing_ok=True)
    convert = qconv_converter(method) if tool == "qconv" else ort_converter(method)
    report: dict[str, Any] = {"ok": False, "import_rss_mb": peak_rss_mb(), "notes": []}
    with tempfile.TemporaryDirectory(prefix=".scratch-", dir=output.parent) as scratch:
        tempfile.tempdir = scratch
        started = time.perf_counter()
        try:
            report["preprocess_seconds"] = convert(model, calib, output, report["notes"])
            report["ok"] = True
        except Exception as exc:
            report["error"] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc(file=sys.stderr)
        report["seconds"] = time.perf_counter() - started
        tempfile.tempdir = None
    report["peak_rss_mb"] = peak_rss_mb()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tool", choices=TOOLS, required=True)
    parser.add_argument("--method", choices=METHODS, required=True)
    parser.add_argument("model", type=Path)
    parser.add_argument("calib", type=Path)
    parser.add_argument("output", type=Path)
    args = parser.parse_args(argv)
    report = run(args.tool, args.method, args.model, args.calib, args.output)
    print(json.dumps(report), flush=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
