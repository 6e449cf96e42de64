"""Calibrate (and quantize) one model once in this fresh process; report wall time and memory.

``bench/calibration.py`` starts one child per (method, sample count) so that each run's peak
resident memory (``ru_maxrss``) belongs to it alone, and so that the parent can watch the
child's resident memory and kill it when it passes a cap.

    python bench/calibrate_one.py --tool qconv|ort --method minmax|entropy|percentile \\
        --samples N [--batch-size 8] MODEL

Calibration data is random: feeds of ``--batch-size`` samples drawn from N(0, 1) with
``numpy.random.default_rng(0)``, one batch at a time, so no run ever holds more than one batch of
input. qconv reads them through ``open_reader("random", ...)``; the onnxruntime child uses
:func:`random_batches`, a generator that draws the very same arrays without importing qconv, and
reads whole batches only (``samples`` in the report says how many were used; see
:func:`full_batches`).

JSON lines go to stdout: first ``{"event": "baseline", "baseline_rss_mb"}`` once the imports are
done and the model is loaded, then ``{"event": "progress", "samples"}`` per batch (so the parent
still knows the baseline and how far the run got if it has to kill the child), then the report
``{"event": "done", "ok", "seconds", "calibration_seconds", "baseline_rss_mb", "import_rss_mb",
"peak_rss_mb", "samples", "notes", "error"}``.

* ``seconds``: wall time of the whole ``quantize_model`` (qconv) or ``quantize_static``
  (onnxruntime) call; nothing is written to disk by qconv, onnxruntime writes its output model
  to a scratch folder that is removed afterwards.
* ``calibration_seconds``: qconv's own ``QuantizationResult.calibration_seconds`` (``None``
  for onnxruntime, which does not report it).
* ``baseline_rss_mb``: current resident set (``VmRSS``) after imports and model load;
  ``peak_rss_mb``: peak resident set of the process (``ru_maxrss``) at the end.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

BATCH_SIZE = 8
SEED = 0
TOOLS = ("qconv", "ort")
METHODS = ("minmax", "entropy", "percentile")

Feed = dict[str, np.ndarray]
# () -> (calibration seconds or None, notes); the whole call is timed by the caller
Calibrate = Callable[[], tuple[float | None, list[str]]]


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """Resident set size of this process now, in MiB (``VmRSS`` of /proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return peak_rss_mb()


def emit(report: dict[str, Any]) -> None:
    print(json.dumps(report), flush=True)


def emit_progress(samples: int) -> None:
    """One line per batch, so the parent knows how far a run got if it has to kill it."""
    emit({"event": "progress", "samples": samples})


def random_batches(model_path: Path, samples: int, batch_size: int) -> Iterator[Feed]:
    """The feeds ``qconv.data.synthetic.RandomReader`` yields (normal, seed 0), drawn lazily.

    Only float inputs whose sizes are static except a symbolic leading (batch) axis are
    supported, which is what the benchmark model has.
    """
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    inputs = []
    for value in graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type))
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
        if not np.issubdtype(dtype, np.floating) or None in dims[1:]:
            raise ValueError(f"input {value.name} is not a float tensor with static sizes")
        inputs.append((value.name, dtype, dims))
    rng = np.random.default_rng(SEED)
    left = samples
    while left > 0:
        batch = min(batch_size, left)
        yield {
            name: rng.normal(0, 1, size=[batch if d is None else d for d in dims]).astype(dtype)
            for name, dtype, dims in inputs
        }
        left -= batch


def qconv_calibrate(model_path: Path, method: str, samples: int, batch_size: int) -> Calibrate:
    """Load the model and build qconv's reader now; the returned function runs quantize_model."""
    import onnx

    from qconv.config import CalibrationMethod, QuantizeConfig
    from qconv.data import input_specs, open_reader
    from qconv.quantize import quantize_model

    model = onnx.load(str(model_path))
    config = QuantizeConfig(calibration=CalibrationMethod(method))
    reader = open_reader("random", input_specs(model), batch_size=batch_size, samples=samples)

    def progress(batches: int, _total: int) -> None:
        emit_progress(min(batches * batch_size, samples))

    def run() -> tuple[float | None, list[str]]:
        result = quantize_model(model, reader, config, on_batch=progress)
        notes = [
            f"calibrated {len(result.ranges)} tensors on {result.calibration_samples} samples "
            f"in {result.calibration_passes} pass(es)"
        ]
        return result.calibration_seconds, notes

    return run


def full_batches(samples: int, batch_size: int) -> int:
    """``samples`` rounded down to whole batches (all of them if that is less than one batch).

    onnxruntime's histogram calibrators (Entropy, Percentile) stack each tensor's batches with
    ``np.asarray`` and fail when the last batch is shorter (microsoft/onnxruntime#18792), so
    the onnxruntime child drops the short last batch, for every method alike.
    """
    return samples - samples % batch_size if samples >= batch_size else samples


def ort_calibrate(model_path: Path, method: str, samples: int, batch_size: int) -> Calibrate:
    """Build onnxruntime's reader now; the returned function runs quantize_static (QDQ).

    Only whole batches are read: see :func:`full_batches`.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    used = full_batches(samples, batch_size)

    class RandomCalibrationReader(CalibrationDataReader):
        """Hands out the seeded random batches one at a time, never a list of them."""

        def __init__(self) -> None:
            self._batches = random_batches(model_path, used, batch_size)
            self.batches = 0

        def get_next(self) -> Feed | None:
            feed = next(self._batches, None)
            if feed is not None:
                self.batches += 1
                emit_progress(min(self.batches * batch_size, used))
            return feed

    calibrate_method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[method]
    model = onnx.load(str(model_path))  # loaded like qconv's child, so baselines compare
    reader = RandomCalibrationReader()

    def run() -> tuple[float | None, list[str]]:
        with tempfile.TemporaryDirectory(prefix="ort-calibration-") as scratch:
            quantize_static(
                model,
                str(Path(scratch) / "quantized.onnx"),
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=calibrate_method,
            )
        return None, [f"read {reader.batches} batches, {used} samples"]

    return run


def run(tool: str, method: str, model: Path, samples: int, batch_size: int) -> dict[str, Any]:
    """Calibrate once and return the measurements (``ok`` is False with ``error`` on failure)."""
    factory = qconv_calibrate if tool == "qconv" else ort_calibrate
    used = samples if tool == "qconv" else full_batches(samples, batch_size)
    report: dict[str, Any] = {"event": "done", "ok": False, "samples": used, "notes": []}
    report["import_rss_mb"] = peak_rss_mb()
    calibrate = factory(model, method, samples, batch_size)
    report["baseline_rss_mb"] = current_rss_mb()
    emit({"event": "baseline", "baseline_rss_mb": report["baseline_rss_mb"]})
    started = time.perf_counter()
    try:
        report["calibration_seconds"], report["notes"] = calibrate()
        report["ok"] = True
    except Exception as exc:
        report["error"] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc(file=sys.stderr)
    report["seconds"] = time.perf_counter() - started
    report["peak_rss_mb"] = peak_rss_mb()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tool", choices=TOOLS, required=True)
    parser.add_argument("--method", choices=METHODS, required=True)
    parser.add_argument("--samples", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("model", type=Path)
    args = parser.parse_args(argv)
    report = run(args.tool, args.method, args.model, args.samples, args.batch_size)
    emit(report)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
