"""Sensitivity analysis: the switchable model, the ranking, and acting on it."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
from click.testing import CliRunner

from qconv.analyze import SWITCH_INPUT, analyze, switchable_model
from qconv.cli import main
from qconv.config import QuantizeConfig
from qconv.data import input_specs, open_reader
from qconv.qparams import sqnr_db
from qconv.quantize import quantize_model
from tests.conftest import SAMPLES

NAME = "digits_mobilenet"


def quantized():
    model = onnx.load(SAMPLES / f"{NAME}.onnx")
    reader = open_reader(SAMPLES / f"{NAME}_calib.npz", input_specs(model), 32)
    return model, quantize_model(model, reader, QuantizeConfig())


def test_switches_off_give_the_float_model_and_on_give_the_quantized_one():
    model, result = quantized()
    switchable, switches, layers = switchable_model(result.prepared, result)
    onnx.checker.check_model(switchable)
    x = np.load(SAMPLES / f"{NAME}_eval.npz")["input"][:16]
    session = ort.InferenceSession(
        switchable.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    off = session.run(None, {"input": x, SWITCH_INPUT: np.zeros(len(switches), bool)})[0]
    on = session.run(None, {"input": x, SWITCH_INPUT: np.ones(len(switches), bool)})[0]
    float_out = ort.InferenceSession(model.SerializeToString()).run(None, {"input": x})[0]
    int8_out = ort.InferenceSession(result.model.SerializeToString()).run(None, {"input": x})[0]
    np.testing.assert_allclose(off, float_out, rtol=1e-4, atol=1e-4)
    assert sqnr_db(int8_out, on) > 40, "fake quantization must match the int8 kernels closely"
    assert sqnr_db(float_out, on) < 50
    # every quantized node with a quantized output is a layer; folded Relu/Clip are not
    kinds = ("quantized", "quantized-shares-input-scale")
    assert len(layers) == sum(d.reason.value in kinds for d in result.decisions)
    # weighted nodes choose between two constant weights instead of reading a Where's output
    weighted = sum(d.op_type in ("Conv", "Gemm") for d in result.decisions if d.reason.quantized)
    assert sum(n.op_type == "If" for n in switchable.graph.node) == weighted
    assert not any(n.op_type == "Where" and "qw" in n.input[1] for n in switchable.graph.node)


def test_ranking_is_sorted_and_leaving_the_worst_layer_float_helps():
    model, result = quantized()
    reader = open_reader(SAMPLES / f"{NAME}_eval.npz", input_specs(model), 32)
    sensitivity = analyze(result.prepared, result, reader)
    gains = [layer.gain_db for layer in sensitivity.layers]
    assert gains == sorted(gains, reverse=True)
    assert gains[0] > 0.3
    assert all(layer.alone_sqnr_db > sensitivity.full_sqnr_db for layer in sensitivity.layers)
    assert sensitivity.samples == 64


def test_exclude_from_a_report_keeps_the_worst_layers_float_and_improves_fidelity(tmp_path):
    runner = CliRunner()
    common = [
        "--calib",
        str(SAMPLES / f"{NAME}_calib.npz"),
        "--eval",
        str(SAMPLES / f"{NAME}_eval.npz"),
        "--labels",
        "label",
        "--batch-size",
        "32",
    ]
    analysis = runner.invoke(
        main,
        [
            "analyze",
            str(SAMPLES / f"{NAME}.onnx"),
            *common,
            "--report",
            str(tmp_path / "a.json"),
            "-q",
        ],
    )
    assert analysis.exit_code == 0, analysis.output
    assert analysis.stdout == ""  # -q: the report file only
    report = json.loads((tmp_path / "a.json").read_text())
    assert report["model"]["output_path"] is None
    worst = [layer["node"] for layer in report["sensitivity"]["layers"][:2]]

    runs = {}
    for label, extra in (
        ("plain", []),
        ("excluded", ["--exclude-from", f"{tmp_path / 'a.json'}:worst=2"]),
    ):
        result = runner.invoke(
            main,
            [
                "quantize",
                str(SAMPLES / f"{NAME}.onnx"),
                "-o",
                str(tmp_path / f"{label}.onnx"),
                *common,
                *extra,
                "--latency-runs",
                "0",
                "--json",
            ],
        )
        assert result.exit_code == 0, result.output
        runs[label] = json.loads(result.stdout)
    nodes = {n["node"]: n for n in runs["excluded"]["nodes"]}
    assert all(nodes[name]["reason"] == "excluded-by-user" for name in worst)
    sqnr = {k: r["evaluation"]["outputs"][0]["sqnr_db"] for k, r in runs.items()}
    assert sqnr["excluded"] > sqnr["plain"]


def test_exclude_from_a_report_without_sensitivity_is_a_usage_error(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps({"schema_version": 1}))
    result = CliRunner().invoke(
        main,
        [
            "quantize",
            str(SAMPLES / f"{NAME}.onnx"),
            "-o",
            str(tmp_path / "o.onnx"),
            "--calib",
            str(SAMPLES / f"{NAME}_calib.npz"),
            "--exclude-from",
            str(tmp_path / "r.json"),
        ],
    )
    assert result.exit_code == 2
    assert "no sensitivity analysis" in result.stderr


def test_a_constant_graph_output_survives_the_switchable_model(tmp_path):
    from tests.graphs import make_model, rng

    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 16] x) => (float[N, 16] y, float[4] table) {
        h = MatMul (x, W1)
        r = Relu (h)
        y = MatMul (r, W2)
        table = Identity (T)
    }
    """
    weights = {f"W{k}": rng().normal(0, 1, (16, 16)).astype(np.float32) for k in (1, 2)}
    model = make_model(text, {**weights, "T": np.arange(4, dtype=np.float32)})
    np.savez(tmp_path / "x.npz", x=rng().normal(0, 1, (32, 16)).astype(np.float32))
    reader = open_reader(tmp_path / "x.npz", input_specs(model), 8)
    result = quantize_model(model, reader, QuantizeConfig())
    analysis = analyze(result.prepared, result, reader, max_samples=16)
    assert [layer.op_type for layer in analysis.layers] == ["MatMul", "MatMul"]
    assert analysis.full_sqnr_db > 20


def test_a_model_whose_layers_sit_in_subgraphs_says_it_has_none_to_rank(tmp_path):
    # Every quantized layer is inside an If branch, which the analysis does not cover: the
    # report says so instead of a fully quantized SQNR of inf dB over zero layers.
    from tests.passes.test_subgraphs import feeds, if_model

    onnx.save(if_model(), tmp_path / "if.onnx")
    x = np.stack([feed["x"] for feed in feeds(16)])  # one [1, 8] feed per entry
    np.savez(tmp_path / "d.npz", x=x, c=np.array([True] * 8 + [False] * 8))
    result = CliRunner().invoke(
        main,
        [
            "analyze",
            str(tmp_path / "if.onnx"),
            "--calib",
            str(tmp_path / "d.npz"),
            "--report",
            str(tmp_path / "r.json"),
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["sensitivity"] is None
    assert any("no quantized layer of the main graph" in n for n in report["notes"])
