"""The README's quick start runs as written, and its CLI reference matches --help."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from cli_reference import expected_readme


def quick_start_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_quick_start_commands_run_as_written(tmp_path: Path):
    shutil.copytree(
        ROOT / "sample_models",
        tmp_path / "sample_models",
        ignore=shutil.ignore_patterns("large", "*.py"),
    )
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    commands = quick_start_commands()
    assert len(commands) == 3
    for command in commands:
        done = subprocess.run(
            shlex.split(command), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, f"{command}\n{done.stderr}"
    assert (tmp_path / "digits_mobilenet.int8.onnx").is_file()
    assert "| `" in (tmp_path / "report.md").read_text()
    assert '"verified": true' in done.stdout


def test_cli_reference_in_readme_is_current():
    text = (ROOT / "README.md").read_text()
    assert expected_readme(text) == text, "run `make readme`"


def test_batch_loop_runs_as_written_and_keeps_each_exit_code(tmp_path: Path):
    text = (ROOT / "README.md").read_text()
    section = text.split("A batch loop over many models", 1)[1]
    script = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    (tmp_path / "models").mkdir()
    (tmp_path / "data").mkdir()
    shutil.copy(ROOT / "sample_models" / "digits_cnn.onnx", tmp_path / "models")
    shutil.copy(
        ROOT / "sample_models" / "digits_cnn_calib.npz", tmp_path / "data" / "digits_cnn.npz"
    )
    (tmp_path / "models" / "broken.onnx").write_bytes(b"not a model")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    summary = (tmp_path / "out" / "summary.txt").read_text().splitlines()
    assert summary == ["broken exit 2", "digits_cnn exit 0"]
    assert (tmp_path / "out" / "digits_cnn.int8.onnx").is_file()
