"""``--config qconv.toml``: the quantize flags as TOML keys; flags given on the command line win.

Keys are the long flag names with dashes or underscores (``activation-type``, ``calibration``,
``exclude = ["Softmax"]``, ``report = ["r.json"]``). An unknown key is an error that names it,
never silently ignored. A ``[quantize]`` table may hold the keys, or they may sit at the top.
"""

from __future__ import annotations

import sys
from pathlib import Path

from qconv.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


def read_config(path: Path, known: dict[str, str]) -> dict[str, object]:
    """The file's settings keyed by click parameter name.

    Args:
        path: The TOML file.
        known: Flag name (``activation-type``) -> click parameter name (``activation_type``).
    """
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"--config {path} does not exist", "check the path") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"--config {path} is not UTF-8 text", "save it as UTF-8") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config {path} is not valid TOML: {exc}", "fix the file") from exc
    table = data.get("quantize", data)
    settings: dict[str, object] = {}
    for key, value in table.items():
        flag = key.replace("_", "-")
        if flag not in known:
            raise ConfigError(
                f"--config {path}: unknown key {key!r}",
                f"valid keys: {', '.join(sorted(known))}",
            )
        settings[known[flag]] = value
    return settings
