"""The same model, data and options give a byte-identical model and the same report."""

from __future__ import annotations

import json

from click.testing import CliRunner

from qconv.cli import main
from tests.conftest import SAMPLES

TIMING_KEYS = {
    "seconds",
    "float_median_ms",
    "float_p90_ms",
    "int8_median_ms",
    "int8_p90_ms",
    "speedup",
    "float_ops_ms",
    "int8_ops_ms",
}


def without_timings(value):
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def run(tmp_path, name: str) -> tuple[bytes, dict]:
    output = tmp_path / f"{name}.onnx"
    args = [
        "quantize",
        str(SAMPLES / "digits_mobilenet.onnx"),
        "-o",
        str(output),
        "--calib",
        str(SAMPLES / "digits_mobilenet_calib.npz"),
        "--calibration",
        "entropy",
        "--latency-runs",
        "2",
        "--json",
    ]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    report["model"]["output_path"] = None
    return output.read_bytes(), report


def test_two_runs_are_identical_apart_from_timings(tmp_path):
    first_model, first_report = run(tmp_path, "a")
    second_model, second_report = run(tmp_path, "b")
    assert first_model == second_model
    assert without_timings(first_report) == without_timings(second_report)
    assert first_report["latency"]["float_median_ms"] > 0
