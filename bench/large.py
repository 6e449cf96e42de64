"""Benchmark: a 1.2 GB model end to end, qconv's CLI beside onnxruntime's quantizer.

The model (random weights, built here with numpy and seeded, cached in ``bench/work/large``):
18 blocks of MatMul 4096x4096 + bias Add + Relu and a 4096x1000 MatMul head, input
``x[B, 16, 4096]``, weights in external data (1.22 GB). Calibration: 64 N(0, 1) samples;
evaluation: 16 more. Random data is meaningless for accuracy but fine for memory, time and
speed.

Each conversion runs alone in a child process, one after the other:

* ``qconv``: the ``qconv quantize`` command with its defaults, evaluation and latency runs
  (what a user runs, report included);
* ``ort``: ``onnxruntime.quantization.quantize_static`` (QDQ, per-channel, MinMax, QUInt8
  activations, QInt8 weights, ``use_external_data_format=True``) over the same 64 samples.

Measured: wall time and peak resident memory of each child (``ru_maxrss`` from ``os.wait4``);
then, in this process, output cosine against float on the 16 evaluation samples and batch-1
latency of float and each int8 model at one thread (interleaved runs, medians). Targets: qconv's
peak under 4x the model's weight bytes, and its int8 model faster than float. The exit code is
0 whatever the outcome: this is a benchmark.

Usage: ``python bench/large.py [--runs 20] [--out bench/large.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as ``python bench/large.py``
    sys.path.insert(0, str(ROOT))

from bench.tables import print_aligned  # noqa: E402

WORK = ROOT / "bench" / "work" / "large"
MODEL = WORK / "stack.onnx"
BLOCKS, WIDTH, TOKENS, CLASSES = 18, 4096, 16, 1000
CALIBRATION, EVALUATION = 64, 16
PEAK_LIMIT = 4.0  # x the weight bytes

ORT_CHILD = """
import sys, numpy as np
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
feeds = iter({"x": row[None]} for row in np.load(sys.argv[3])["x"])
class Reader(CalibrationDataReader):
    def get_next(self):
        return next(feeds, None)
quantize_static(sys.argv[1], sys.argv[2], Reader(), quant_format=QuantFormat.QDQ,
                per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                use_external_data_format=True)
"""


WEIGHT_BYTES = 4 * (BLOCKS * (WIDTH * WIDTH + WIDTH) + WIDTH * CLASSES)


def build_model() -> None:
    """Write the model and its data, once."""
    if MODEL.exists():
        return
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, weights, x = [], [], "x"
    for i in range(BLOCKS):
        w = rng.standard_normal((WIDTH, WIDTH), dtype=np.float32) * np.float32(np.sqrt(2 / WIDTH))
        b = rng.standard_normal(WIDTH, dtype=np.float32) * np.float32(0.01)
        weights += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes += [
            helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"], name=f"matmul{i}"),
            helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"], name=f"add{i}"),
            helper.make_node("Relu", [f"a{i}"], [f"r{i}"], name=f"relu{i}"),
        ]
        x = f"r{i}"
    head = rng.standard_normal((WIDTH, CLASSES), dtype=np.float32) * np.float32(WIDTH**-0.5)
    weights.append(numpy_helper.from_array(head, "head"))
    nodes.append(helper.make_node("MatMul", [x, "head"], ["y"], name="head"))
    graph = helper.make_graph(
        nodes,
        "stack",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", TOKENS, WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", TOKENS, CLASSES])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    WORK.mkdir(parents=True, exist_ok=True)
    data = rng.standard_normal((CALIBRATION + EVALUATION, TOKENS, WIDTH), dtype=np.float32)
    np.savez(WORK / "calib.npz", x=data[:CALIBRATION])
    np.savez(WORK / "eval.npz", x=data[CALIBRATION:])
    onnx.save_model(model, MODEL, save_as_external_data=True, location="stack.onnx.data")


def run_child(command: list[str]) -> dict[str, Any]:
    """Run ``command`` alone; its wall time, peak resident memory and exit code."""
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    stderr = child.stderr.read().decode(errors="replace") if child.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    return {
        "seconds": time.perf_counter() - started,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "exit_code": code,
        "error": stderr.strip().splitlines()[-1] if code and stderr.strip() else None,
    }


def convert() -> dict[str, dict[str, Any]]:
    qconv = Path(sys.executable).parent / "qconv"
    return {
        "qconv": run_child(
            [
                str(qconv),
                "quantize",
                str(MODEL),
                "-o",
                str(WORK / "qconv.onnx"),
                "--calib",
                str(WORK / "calib.npz"),
                "--eval",
                str(WORK / "eval.npz"),
                "--report",
                str(WORK / "qconv.json"),
                "-q",
            ]
        ),
        "ort": run_child(
            [
                sys.executable,
                "-c",
                ORT_CHILD,
                str(MODEL),
                str(WORK / "ort.onnx"),
                str(WORK / "calib.npz"),
            ]
        ),
    }


def measure(names: list[str], runs: int) -> dict[str, dict[str, float]]:
    """Output cosine against float and batch-1 latency of each model file that exists."""
    from qconv.runtime import create_session

    paths = {"float": MODEL, **{name: WORK / f"{name}.onnx" for name in names}}
    sessions = {k: create_session(p, threads=1) for k, p in paths.items() if p.exists()}
    data = np.load(WORK / "eval.npz")["x"]
    reference = sessions["float"].run(None, {"x": data})[0]
    results: dict[str, dict[str, float]] = {key: {"times": []} for key in sessions}
    for key, session in sessions.items():
        output = session.run(None, {"x": data})[0]
        results[key]["cosine"] = float(
            np.dot(output.ravel(), reference.ravel())
            / (np.linalg.norm(output) * np.linalg.norm(reference))
        )
    feed = {"x": data[:1]}
    for _ in range(runs):
        for key, session in sessions.items():
            started = time.perf_counter()
            session.run(None, feed)
            results[key]["times"].append((time.perf_counter() - started) * 1000)
    for values in results.values():
        values["latency_ms"] = float(np.median(values.pop("times")))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "large.json")
    args = parser.parse_args()
    build_model()
    weight_bytes = WEIGHT_BYTES
    conversions = convert()
    measured = measure([k for k, v in conversions.items() if v["exit_code"] == 0], args.runs)
    float_ms = measured["float"]["latency_ms"]
    columns = ["tool", "exit", "wall s", "peak GB", "peak / weights", "cosine", "ms", "x float"]
    rows = [["float", "-", "-", "-", "-", "1.0000", f"{float_ms:.1f}", "1.00"]]
    for tool, done in conversions.items():
        got = measured.get(tool, {})
        peak = done["peak_rss_mb"] * 2**20
        rows.append(
            [
                tool,
                str(done["exit_code"]),
                f"{done['seconds']:.0f}",
                f"{peak / 1e9:.2f}",
                f"{peak / weight_bytes:.1f}",
                f"{got['cosine']:.4f}" if got else "-",
                f"{got['latency_ms']:.1f}" if got else "-",
                f"{float_ms / got['latency_ms']:.2f}" if got else "-",
            ]
        )
        done.update(got)
    print(f"1.2 GB model ({weight_bytes / 1e9:.2f} GB of weights), 1 thread, batch 1:")
    print_aligned(columns, rows, left={0}, groups=[0] * len(rows))
    ours = conversions["qconv"]
    targets = {
        "qconv peak under 4x the weights": ours["peak_rss_mb"] * 2**20 < PEAK_LIMIT * weight_bytes,
        "qconv int8 faster than float": bool(ours.get("latency_ms", float_ms) < float_ms),
    }
    print(
        "qconv's wall time includes what its report needs: the equivalence check, runtime "
        "tuning, verification, evaluation, 50 latency runs and a profile of both models."
    )
    for name, passed in targets.items():
        print(f"{'PASS' if passed else 'MISS'}  {name}")
    args.out.write_text(
        json.dumps(
            {
                "weight_bytes": weight_bytes,
                "float_ms": float_ms,
                "conversions": conversions,
                "targets": targets,
            },
            indent=1,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
