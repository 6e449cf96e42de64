"""The CLI contract through click's CliRunner: exit codes, one-line errors, untouched inputs."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from qconv.cli import main
from tests.conftest import SAMPLES


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    for name in ("digits_cnn.onnx", "digits_cnn_calib.npz", "digits_cnn_eval.npz"):
        shutil.copy(SAMPLES / name, tmp_path / name)
    return tmp_path


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def quantize_args(workdir: Path, *extra: str) -> list[str]:
    return [
        "quantize",
        str(workdir / "digits_cnn.onnx"),
        "-o",
        str(workdir / "out.onnx"),
        "--calib",
        str(workdir / "digits_cnn_calib.npz"),
        "--latency-runs",
        "3",
        *extra,
    ]


def test_success_writes_model_and_reports_and_prints_json(workdir):
    before = digest(workdir / "digits_cnn.onnx")
    result = invoke(
        *quantize_args(
            workdir,
            "--eval",
            str(workdir / "digits_cnn_eval.npz"),
            "--labels",
            "label",
            "--report",
            str(workdir / "r.json"),
            "--report",
            str(workdir / "r.md"),
            "--json",
        )
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["schema_version"] == 1
    assert report["verified"] is True
    assert report["evaluation"]["samples"] == 540
    assert report["evaluation"]["float_accuracy"] - report["evaluation"]["int8_accuracy"] <= 0.01
    # all but the first Conv and its Relu, which onnxruntime runs faster in float
    assert report["summary"]["reasons"]["kept-float-faster"] == 2
    assert report["summary"]["quantized_nodes"] == report["summary"]["total_nodes"] - 2
    assert json.loads((workdir / "r.json").read_text())["model"] == report["model"]
    markdown = (workdir / "r.md").read_text()
    node_rows = [line for line in markdown.splitlines() if line.startswith("| `")]
    assert len(node_rows) >= report["summary"]["total_nodes"]
    assert digest(workdir / "digits_cnn.onnx") == before
    assert (workdir / "out.onnx").stat().st_size < 0.3 * (
        workdir / "digits_cnn.onnx"
    ).stat().st_size
    assert sorted(p.name for p in workdir.iterdir() if p.name.startswith(".")) == []


def assert_clean_failure(result, workdir: Path, *words: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:")
    for word in words:
        assert word in lines[0]
    assert "Traceback" not in result.output
    assert not (workdir / "out.onnx").exists()


def test_corrupt_model(workdir):
    data = (workdir / "digits_cnn.onnx").read_bytes()
    (workdir / "digits_cnn.onnx").write_bytes(data[: len(data) // 3])
    result = invoke(*quantize_args(workdir))
    assert_clean_failure(result, workdir, "digits_cnn.onnx", "not a readable ONNX model")


def test_not_an_onnx_file(workdir):
    (workdir / "digits_cnn.onnx").write_text("hello, I am a text file\n")
    assert_clean_failure(invoke(*quantize_args(workdir)), workdir, "digits_cnn.onnx")


def test_missing_input_name_in_npz(workdir):
    np.savez(workdir / "digits_cnn_calib.npz", pixels=np.zeros((4, 1, 8, 8), np.float32))
    result = invoke(*quantize_args(workdir))
    assert_clean_failure(result, workdir, "'input'", "pixels")


def test_wrong_dtype(workdir):
    np.savez(workdir / "digits_cnn_calib.npz", input=np.zeros((4, 1, 8, 8), np.int64))
    assert_clean_failure(invoke(*quantize_args(workdir)), workdir, "int64", "float32")


def test_wrong_shape(workdir):
    np.savez(workdir / "digits_cnn_calib.npz", input=np.zeros((4, 1, 9, 8), np.float32))
    assert_clean_failure(invoke(*quantize_args(workdir)), workdir, "axis 2", "needs 8")


def test_nan_in_data(workdir):
    data = np.zeros((4, 1, 8, 8), np.float32)
    data[1, 0, 0, 0] = np.nan
    np.savez(workdir / "digits_cnn_calib.npz", input=data)
    assert_clean_failure(invoke(*quantize_args(workdir)), workdir, "NaN")


def test_pickle_in_npz_is_refused(workdir):
    np.savez(workdir / "digits_cnn_calib.npz", input=np.array([{"a": 1}], dtype=object))
    assert_clean_failure(invoke(*quantize_args(workdir)), workdir, "pickle")


def test_output_equal_to_input_is_refused(workdir):
    before = digest(workdir / "digits_cnn.onnx")
    args = quantize_args(workdir)
    args[3] = args[1]
    result = invoke(*args)
    assert result.exit_code == 2
    assert "is an input of this run" in result.stderr
    assert digest(workdir / "digits_cnn.onnx") == before


def test_unknown_report_format_fails_before_any_work(workdir):
    result = invoke(*quantize_args(workdir, "--report", str(workdir / "r.pdf")))
    assert_clean_failure(result, workdir, "--report", ".pdf")


def test_missing_calibration_file(workdir):
    (workdir / "digits_cnn_calib.npz").unlink()
    assert_clean_failure(invoke(*quantize_args(workdir)), workdir, "does not exist")


def test_click_usage_error_exits_2(workdir):
    result = invoke("quantize", str(workdir / "digits_cnn.onnx"))
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1, result.stderr  # one line, like every other error
    assert "--output" in result.stderr and "quantize --help" in result.stderr


def test_inspect_reports_what_can_be_quantized(workdir):
    result = invoke("inspect", str(workdir / "digits_cnn.onnx"), "--json")
    assert result.exit_code == 0
    info = json.loads(result.stdout)
    assert info["inputs"] == ["input float32[N,1,8,8]"]
    assert info["ops"]["BatchNormalization"] == 3
    assert info["quantizable_nodes"] == info["nodes_after_preparation"] - 2  # float first layer


def test_exclude_that_matches_nothing_is_an_error(workdir):
    result = invoke(*quantize_args(workdir, "--exclude", "Conv,Convv"))
    assert_clean_failure(result, workdir, "--exclude Convv")


def test_excluded_op_type_the_model_lacks_is_a_note(workdir):
    # one config file serves many models: an ONNX op type one of them lacks is no typo
    result = invoke(*quantize_args(workdir, "--exclude", "Softmax", "--json"))
    assert result.exit_code == 0, result.output
    assert "--exclude Softmax: no such op in this model" in json.loads(result.stdout)["notes"]


def test_excluded_op_type_stays_float(workdir):
    result = invoke(*quantize_args(workdir, "--exclude", "Gemm", "--json"))
    assert result.exit_code == 0, result.output
    nodes = json.loads(result.stdout)["nodes"]
    gemms = [n for n in nodes if n["op_type"] == "Gemm"]
    assert len(gemms) == 2
    assert all(n["reason"] == "excluded-by-user" and not n["quantized"] for n in gemms)


def eval_args(workdir: Path) -> list[str]:
    return ["--eval", str(workdir / "digits_cnn_eval.npz"), "--labels", "label"]


@pytest.mark.parametrize(
    ("gate", "passing", "failing"),
    [
        ("--max-accuracy-drop", "0.01", "-0.5"),
        ("--min-agreement", "0.98", "1.0"),  # int8 disagrees with float on a few samples
        ("--min-sqnr", "20", "200"),
        ("--min-speedup", "0.01", "1000"),
    ],
)
def test_gates_pass_with_exit_0_and_fail_with_exit_3_still_writing_outputs(
    workdir, gate, passing, failing
):
    ok = invoke(*quantize_args(workdir, *eval_args(workdir), gate, passing, "--json"))
    assert ok.exit_code == 0, ok.output
    gates = json.loads(ok.stdout)["gates"]
    assert [(g["name"], g["passed"]) for g in gates] == [(gate.lstrip("-"), True)]
    (workdir / "out.onnx").unlink()

    report = workdir / "r.json"
    bad = invoke(
        *quantize_args(workdir, *eval_args(workdir), gate, failing, "--report", str(report))
    )
    assert bad.exit_code == 3, bad.output
    (line,) = [line for line in bad.stderr.splitlines() if line.strip()]
    assert line.startswith(f"error: gate failed: {gate.lstrip('-')} measured ")
    assert line.endswith("; the model and the reports were written")
    assert (workdir / "out.onnx").is_file()
    written = json.loads(report.read_text())["gates"][0]
    assert written["passed"] is False and written["detail"] != "ok"


def test_accuracy_gate_without_labels_is_a_usage_error(workdir):
    result = invoke(*quantize_args(workdir, "--max-accuracy-drop", "0.01"))
    assert_clean_failure(result, workdir, "--max-accuracy-drop needs labels")


def test_config_file_sets_defaults_and_flags_override_it(workdir):
    config = workdir / "qconv.toml"
    config.write_text(
        "[quantize]\n"
        f'model = "{workdir / "digits_cnn.onnx"}"\n'
        f'calib = "{workdir / "digits_cnn_calib.npz"}"\n'
        'calibration = "entropy"\n'
        'exclude = ["Gemm"]\n'
        "latency_runs = 2\n"
        'format = "qoperator"\n'
    )
    result = invoke(
        "quantize",
        "--config",
        str(config),
        "-o",
        str(workdir / "out.onnx"),
        "--format",
        "qdq",
        "--json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["options"]["calibration"] == "entropy"
    assert report["options"]["format"] == "qdq"
    assert report["options"]["exclude"] == ["Gemm"]
    assert report["latency"]["runs"] == 2


def test_config_file_with_an_unknown_key_is_refused(workdir):
    config = workdir / "qconv.toml"
    config.write_text('calibraton = "entropy"\n')
    result = invoke(*quantize_args(workdir, "--config", str(config)))
    assert result.exit_code == 2
    assert "unknown key 'calibraton'" in result.stderr
    assert not (workdir / "out.onnx").exists()


def test_an_accuracy_drop_equal_to_the_limit_passes_the_gate(workdir, monkeypatch):
    from qconv.gates import Gates, evaluate_gates
    from qconv.report.model import EvaluationSummary, Report

    evaluation = EvaluationSummary("eval", 100, [], None, 1.0, 0.99)  # 1.0 - 0.99 > 0.01
    report = Report("0", "0", "0", {}, None, None, evaluation=evaluation)
    (gate,) = evaluate_gates(Gates(max_accuracy_drop=0.01), report)
    assert gate.passed, gate
    assert f"{Gates(max_accuracy_drop=-0.0).max_accuracy_drop:g}" == "0"  # not "-0"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("strict = 1", "strict = 1 is not true or false"),
        ("samples = 1.5", "samples = 1.5 is not a whole number"),
        ('format = "qlinear"', "format = 'qlinear' is not one of qdq, qoperator"),
        ("batch_size = 2\nbatch-size = 3", "'batch-size' sets what 'batch_size' already sets"),
        ('calibration = "mse"\n[quantize]\nsamples = 4', "'calibration' is outside the"),
        ('[quantize]\nsamples = 4\n[quantise]\ncalibrashun = "x"', "not in [quantise]"),
        ("[analyze]\nsamples = 4", "at the top or in a [quantize] table, not in [analyze]"),
    ],
)
def test_config_values_are_checked_like_their_flags(workdir, text, message):
    (workdir / "qconv.toml").write_text(text + "\n")
    result = invoke(*quantize_args(workdir, "--config", str(workdir / "qconv.toml")))
    assert_clean_failure(result, workdir, message)


def test_config_paths_are_relative_to_the_file_and_negated_flags_are_keys(workdir, monkeypatch):
    folder = workdir / "settings"
    folder.mkdir()
    (folder / "qconv.toml").write_text(
        'model = "../digits_cnn.onnx"\ncalib = "../digits_cnn_calib.npz"\n'
        'output = "out.onnx"\nreport = ["r.json"]\nper-tensor = true\nlatency-runs = 0\n'
    )
    monkeypatch.chdir(workdir.parent)
    result = invoke("quantize", "--config", str(folder / "qconv.toml"), "-q")
    assert result.exit_code == 0, result.output
    report = json.loads((folder / "r.json").read_text())
    assert report["options"]["weight_granularity"] == "per-tensor"
    assert (folder / "out.onnx").is_file()


def test_compare_judges_a_model_made_by_onnxruntimes_quantizer(workdir):
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    calib = np.load(workdir / "digits_cnn_calib.npz")["input"]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": calib[i : i + 20]} for i in range(0, 200, 20)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(
        str(workdir / "digits_cnn.onnx"),
        str(workdir / "ort.onnx"),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
    )
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(workdir / "ort.onnx").graph.node)
    result = invoke(
        "compare",
        str(workdir / "digits_cnn.onnx"),
        str(workdir / "ort.onnx"),
        *eval_args(workdir),
        "--latency-runs",
        "3",
        "--json",
        "--report",
        str(workdir / "cmp.md"),
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["calibration"] is None
    assert report["evaluation"]["samples"] == 540
    assert report["evaluation"]["top1_agreement"] > 0.9
    assert "## qconv report" in (workdir / "cmp.md").read_text()


def test_compare_is_quiet_with_q_like_quantize(workdir):
    model = str(workdir / "digits_cnn.onnx")
    args = ("compare", model, model, *eval_args(workdir), "--latency-runs", "2")
    assert "qconv compare" in invoke(*args).stdout
    quiet = invoke(*args, "-q")
    assert quiet.exit_code == 0 and quiet.stdout == ""


def test_compare_refuses_models_with_different_inputs(workdir, tmp_path):
    other = SAMPLES / "digits_mobilenet.onnx"
    result = invoke("compare", str(workdir / "digits_cnn.onnx"), str(other), *eval_args(workdir))
    assert result.exit_code == 2


def test_compare_refuses_models_with_different_outputs(workdir):
    model = onnx.load(workdir / "digits_cnn.onnx")
    extra = onnx.helper.make_tensor_value_info(
        model.graph.node[0].output[0], onnx.TensorProto.FLOAT, ["n", "c", "h", "w"]
    )
    model.graph.output.append(extra)
    onnx.save(model, workdir / "two_outputs.onnx")
    before = digest(workdir / "two_outputs.onnx")
    result = invoke(
        "compare",
        str(workdir / "digits_cnn.onnx"),
        str(workdir / "two_outputs.onnx"),
        *eval_args(workdir),
    )
    assert_clean_failure(result, workdir, "has outputs", "compare two versions")
    assert digest(workdir / "two_outputs.onnx") == before


def test_a_model_with_nothing_to_quantize_warns_and_fails_under_strict(workdir):
    import onnx
    from onnx import helper

    graph = helper.make_graph(
        [helper.make_node("Softmax", ["input"], ["y"], axis=1)],
        "g",
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 1, 8, 8])],
    )
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
        workdir / "digits_cnn.onnx",
    )
    lenient = invoke(*quantize_args(workdir, "--json"))
    assert lenient.exit_code == 0
    report = json.loads(lenient.stdout)
    assert report["summary"]["quantized_nodes"] == 0
    assert any("NOTHING WAS QUANTIZED" in note for note in report["notes"])
    strict = invoke(*quantize_args(workdir, "--strict"))
    assert strict.exit_code == 3
    assert "gate failed: strict measured 0" in strict.stderr


def test_an_int8_model_that_would_be_larger_is_not_written(workdir):
    # 8x8 digits through a 1x1 convolution with one weight per channel: the scales, zero
    # points and Q/DQ nodes of int8 weigh more than the 4 float weights they replace.
    import onnx
    from onnx import helper, numpy_helper

    weight = numpy_helper.from_array(np.full((4, 1, 1, 1), 0.5, np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["c"]), helper.make_node("Relu", ["c"], ["y"])],
        "g",
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 4, 8, 8])],
        [weight],
    )
    float_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(float_model, workdir / "digits_cnn.onnx")
    # --no-float-stem: this lone first layer would otherwise stay float for speed
    lenient = invoke(*quantize_args(workdir, "--json", "--no-float-stem"))
    assert lenient.exit_code == 0
    report = json.loads(lenient.stdout)
    assert report["summary"]["quantized_nodes"] == 0
    assert {n["reason"] for n in report["nodes"]} == {"int8-model-larger-than-float"}
    written = onnx.load(workdir / "out.onnx")
    assert [n.op_type for n in written.graph.node] == ["Conv", "Relu"]
    assert written.ByteSize() == float_model.ByteSize()
    strict = invoke(*quantize_args(workdir, "--strict", "--no-float-stem"))
    assert strict.exit_code == 3


def test_a_run_interrupted_after_the_model_is_staged_replaces_no_earlier_output(
    workdir, monkeypatch
):
    out, report = workdir / "out.onnx", workdir / "r.json"
    out.write_bytes(b"earlier model")
    report.write_text("earlier report")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("qconv.job.evaluate", interrupted)  # runs after the model is staged
    result = invoke(*quantize_args(workdir, "--report", str(report)))
    assert result.exit_code == 130
    assert out.read_bytes() == b"earlier model"
    assert report.read_text() == "earlier report"
    assert not [p for p in workdir.iterdir() if p.name.endswith(".tmp")]


def test_sigterm_removes_staged_outputs_and_exits_143(workdir, monkeypatch):
    import os
    import signal
    import time

    out = workdir / "out.onnx"
    out.write_bytes(b"earlier model")

    def killed(*args, **kwargs):  # a CI timeout while the model is staged
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        raise AssertionError("SIGTERM did not stop the run")

    monkeypatch.setattr("qconv.job.evaluate", killed)
    result = invoke(*quantize_args(workdir))
    assert result.exit_code == 143
    assert "terminated; no model or report was written" in result.stderr
    assert out.read_bytes() == b"earlier model"
    assert not [p for p in workdir.iterdir() if p.name.endswith(".tmp")]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_bug_is_one_line_exit_1_and_a_pointer_to_the_traceback(workdir, monkeypatch):
    def bug(*args, **kwargs):
        raise RuntimeError("something broke\n\nwith a long explanation")

    monkeypatch.setattr("qconv.job.evaluate", bug)
    result = invoke(*quantize_args(workdir))
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [
        "error: internal error: RuntimeError: something broke",
        "run again as `qconv --debug ...` for a traceback",
    ]
    assert not (workdir / "out.onnx").exists()


def test_an_output_that_is_an_input_or_another_output_is_refused(workdir):
    calib = workdir / "digits_cnn_calib.npz"
    before = digest(calib)
    report = str(workdir / "r.json")
    cases = (
        (["--calib-cache", str(calib)], ("--calib-cache", "is an input of this run")),
        (["--report", report, "--report", report], ("--report", "is also given as --report")),
    )
    for extra, words in cases:
        assert_clean_failure(invoke(*quantize_args(workdir, *extra)), workdir, *words)
    assert digest(calib) == before


def test_gate_limits_out_of_range_are_usage_errors(workdir):
    for gate, value in (("--min-agreement", "1.01"), ("--min-sqnr", "nan"), ("--min-speedup", "0")):
        result = invoke(*quantize_args(workdir, gate, value))
        assert_clean_failure(result, workdir, gate, "out of range")


def test_bad_config_encoding_and_unknown_shape_names_are_usage_errors(workdir):
    config = workdir / "bad.toml"
    config.write_bytes(b"\xff\xfe calibration = 1\n")
    result = invoke(*quantize_args(workdir, "--config", str(config)))
    assert_clean_failure(result, workdir, "--config", "not UTF-8")
    result = invoke(*quantize_args(workdir, "--shape", "inptu=1,1,8,8"))
    assert_clean_failure(result, workdir, "--shape", "no input 'inptu'")


def test_an_op_onnxruntime_cannot_run_is_a_model_error(workdir):
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["a"]),
            helper.make_node("Foo", ["a"], ["y"], domain="com.acme"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [weight],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.acme", 1)]
    )
    onnx.save(model, workdir / "custom.onnx")
    np.savez(workdir / "x.npz", x=np.ones((4, 4), np.float32))
    args = ["quantize", str(workdir / "custom.onnx"), "-o", str(workdir / "out.onnx")]
    result = invoke(*args, "--calib", str(workdir / "x.npz"), "--latency-runs", "0")
    assert_clean_failure(result, workdir, "onnxruntime cannot run an op", "com.acme:Foo")
    custom = str(workdir / "custom.onnx")
    result = invoke("compare", custom, custom, "--eval", str(workdir / "x.npz"))
    assert_clean_failure(result, workdir, f"onnxruntime cannot run an op of {custom}", "Foo")


def test_stdout_closed_early_exits_141_with_the_outputs_written(workdir):
    import os
    import subprocess
    import sys

    qconv = Path(sys.executable).parent / "qconv"
    read_end, write_end = os.pipe()
    os.close(read_end)  # closed before qconv prints anything, like `| head -0`
    result = subprocess.run(
        [str(qconv), *quantize_args(workdir, "-v")],
        stdout=write_end,
        stderr=subprocess.PIPE,
        timeout=120,
    )
    os.close(write_end)
    assert result.returncode == 141
    assert result.stderr == b""
    assert onnx.load(workdir / "out.onnx").graph.node


def test_class_index_and_mask_outputs_are_judged_by_exact_match(tmp_path):
    from tests.graphs import make_model, rng

    text = """
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[N, 16] x) => (float[N, 10] logits, int64[N] label, bool[N, 10] positive) {
        h = MatMul (x, W1)
        r = Relu (h)
        logits = MatMul (r, W2)
        label = ArgMax <axis = 1, keepdims = 0> (logits)
        positive = Greater (logits, Zero)
    }
    """
    weights = {"W1": rng().normal(0, 1, (16, 16)), "W2": rng().normal(0, 1, (16, 10))}
    weights = {name: w.astype(np.float32) for name, w in weights.items()}
    onnx.save(make_model(text, {**weights, "Zero": np.float32(0)}), tmp_path / "m.onnx")
    np.savez(tmp_path / "x.npz", x=rng().normal(0, 1, (64, 16)).astype(np.float32))
    args = ["quantize", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "q.onnx")]
    args += ["--calib", str(tmp_path / "x.npz"), "--latency-runs", "0", "--min-sqnr", "90"]
    result = invoke(*args, "--report", str(tmp_path / "r.json"))
    assert result.exit_code == 3
    report = json.loads((tmp_path / "r.json").read_text())
    outputs = {o["name"]: o for o in report["evaluation"]["outputs"]}
    assert outputs["logits"]["cosine"] > 0.99 and outputs["logits"]["exact_match"] is None
    for name in ("label", "positive"):
        assert outputs[name]["cosine"] is None and outputs[name]["sqnr_db"] is None
        assert 0.9 < outputs[name]["exact_match"] <= 1.0
    (gate,) = report["gates"]
    assert gate["value"] == outputs["logits"]["sqnr_db"]
    assert "(output 'logits')" in gate["detail"]
    assert "exact match" in result.stdout


def test_importing_qconv_writes_nothing_to_stderr_where_home_is_not_writable(tmp_path):
    import os
    import subprocess
    import sys

    home = tmp_path / "home-is-a-file"
    home.write_text("")  # onnxruntime cannot keep its telemetry ID here and warns on import
    script = "import qconv.runtime, sys; print('after', file=sys.stderr)"
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0
    assert done.stderr == "after\n"  # muted during the import only


@pytest.mark.parametrize(
    ("model", "reports", "said"),
    [
        ("m.onnx", [], "the model was written"),
        (None, [Path("r.md")], "the reports were written"),
        ("m.onnx", [Path("r.md")], "the model and the reports were written"),
        (None, [], "nothing was written"),
    ],
)
def test_failed_gate_line_says_what_was_written_in_plain_english(model, reports, said):
    from qconv.cli import _written

    assert _written(model, reports) == said


def test_qconv_alone_prints_its_help_without_calling_it_an_error():
    result = invoke()
    assert result.exit_code == 2
    assert result.stderr.startswith("Usage: ")  # not "error: Usage: ..."


def test_without_a_terminal_a_long_step_prints_a_plain_line_now_and_then():
    import io

    from rich.console import Console as RichConsole

    from qconv.console import PLAIN_PROGRESS_SECONDS, _Steps

    now = [0.0]
    log = io.StringIO()
    steps = _Steps(None, plain=RichConsole(file=log, width=200), clock=lambda: now[0])
    report = steps.step("analyzing", 231)
    for done in range(1, 232):
        now[0] += PLAIN_PROGRESS_SECONDS / 10  # 23 minutes in all
        report(done, 231)
    lines = log.getvalue().splitlines()
    assert len(lines) == 23
    assert lines[0] == "analyzing: 10 of 231 (60 s)"
    silent = _Steps(None)  # --quiet
    assert silent.step("analyzing", 3)(1, 3) is None
