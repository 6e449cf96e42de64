"""``--exclude-from report.json[:worst=N]``: turn a report's findings into exclusions.

With ``:worst=N`` the N layers that cost the most output SQNR in the report's sensitivity
analysis stay float; without it, every layer whose float version gains at least
``SUGGESTION_GAIN_DB`` does.
"""

from __future__ import annotations

import json
from pathlib import Path

from qconv.errors import ConfigError

SUGGESTION_GAIN_DB = 1.0


def exclusions_from_report(spec: str) -> tuple[str, ...]:
    """Node names to exclude, read from a qconv JSON report."""
    path, _, option = spec.partition(":")
    worst = _worst(option, spec)
    layers = _sensitive_layers(Path(path), spec)
    if worst is not None:
        return tuple(layer["node"] for layer in layers[:worst])
    return tuple(layer["node"] for layer in layers if layer["gain_db"] >= SUGGESTION_GAIN_DB)


def _worst(option: str, spec: str) -> int | None:
    if not option:
        return None
    key, _, value = option.partition("=")
    if key != "worst":
        raise ConfigError(
            f"--exclude-from {spec}: unknown option {option!r}",
            "write it as report.json or report.json:worst=3",
        )
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(
            f"--exclude-from {spec}: worst={value} is not a count of layers",
            "give worst=1 or more",
        )
    return int(value)


def _sensitive_layers(path: Path, spec: str) -> list[dict]:
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(
            f"--exclude-from {spec}: {path} does not exist", "check the path"
        ) from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"--exclude-from {spec}: {path} is not a JSON report",
            "give a report written with --report FILE.json",
        ) from exc
    sensitivity = report.get("sensitivity") if isinstance(report, dict) else None
    if not sensitivity or not sensitivity.get("layers"):
        raise ConfigError(
            f"--exclude-from {spec}: the report has no sensitivity analysis",
            "make it with `qconv quantize --analyze --report FILE.json` or `qconv analyze`",
        )
    return sensitivity["layers"]
