"""``--config qconv.toml``: the quantize flags as TOML keys; flags given on the command line win.

Keys are the long flag names with dashes or underscores (``activation-type``, ``calibration``,
``exclude = ["Softmax"]``, ``report = ["r.json"]``, ``per-tensor = true``). Every key is checked
as its flag would be: an unknown key, a key given twice (``batch_size`` and ``batch-size``), a
value of the wrong type (``strict = 1``, ``samples = 1.5``) or a choice not offered is an error
that names it, never silently ignored or coerced. The keys sit either at the top or in a
``[quantize]`` table, not both. Relative paths (model, data, outputs) are relative to the
file's folder, so a config file works from any working directory.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from qconv.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

# Prefix of data locations that are not files (``--calib random``).
NOT_A_PATH = "random"


@dataclass(frozen=True)
class ConfigKey:
    """What one TOML key sets and accepts.

    Attributes:
        param: The click parameter it sets.
        kind: ``bool``, ``int``, ``float`` or ``text``.
        choices: The values a choice accepts (empty: any).
        multiple: A list of values (a single value is taken as a list of one).
        negated: The ``--per-tensor`` half of a ``--per-channel/--per-tensor`` pair.
        path: A file or folder, resolved against the config file's folder.
    """

    param: str
    kind: str = "text"
    choices: tuple[str, ...] = ()
    multiple: bool = False
    negated: bool = False
    path: bool = False


def read_config(path: Path, keys: dict[str, ConfigKey]) -> dict[str, object]:
    """The file's settings keyed by click parameter name.

    Args:
        path: The TOML file.
        keys: Flag name without dashes (``activation-type``) -> what it sets and accepts.
    """
    table = _table(_parse(Path(path)), path)
    settings: dict[str, object] = {}
    given: dict[str, str] = {}
    for key, value in table.items():
        spec = keys.get(key.replace("_", "-"))
        if spec is None:
            raise ConfigError(
                f"--config {path}: unknown key {key!r}", f"valid keys: {', '.join(sorted(keys))}"
            )
        if spec.param in given:
            raise ConfigError(
                f"--config {path}: {key!r} sets what {given[spec.param]!r} already sets",
                "keep one of them",
            )
        given[spec.param] = key
        settings[spec.param] = _value(value, spec, key, Path(path))
    return settings


def _parse(path: Path) -> dict[str, object]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"--config {path} does not exist", "check the path") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"--config {path} is not UTF-8 text", "save it as UTF-8") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config {path} is not valid TOML: {exc}", "fix the file") from exc


def _table(data: dict[str, object], path: Path) -> dict[str, object]:
    tables = [key for key, value in data.items() if isinstance(value, dict) and key != "quantize"]
    if tables:
        raise ConfigError(
            f"--config {path}: qconv reads keys at the top or in a [quantize] table, not in "
            f"[{tables[0]}]",
            "move its keys to the top of the file or into [quantize]",
        )
    if "quantize" not in data:
        return data
    outside = [key for key in data if key != "quantize"]
    if outside or not isinstance(data["quantize"], dict):
        raise ConfigError(
            f"--config {path}: {', '.join(map(repr, outside)) or 'quantize'} is outside the "
            "[quantize] table",
            "put every key in the [quantize] table, or all of them at the top",
        )
    return data["quantize"]


def _value(value: object, spec: ConfigKey, key: str, path: Path) -> object:
    if spec.multiple:
        values = value if isinstance(value, list) else [value]
        return [_single(v, spec, key, path) for v in values]
    return _single(value, spec, key, path)


def _single(value: object, spec: ConfigKey, key: str, path: Path) -> object:
    if spec.kind == "bool":
        if not isinstance(value, bool):
            raise _wrong(key, value, "true or false", path)
        return not value if spec.negated else value
    if spec.kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        raise _wrong(key, value, "a whole number", path)
    if spec.kind == "float" and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise _wrong(key, value, "a number", path)
    if spec.kind == "text":
        if not isinstance(value, str):
            raise _wrong(key, value, "a string", path)
        if spec.choices and value not in spec.choices:
            raise _wrong(key, value, f"one of {', '.join(spec.choices)}", path)
        if spec.path and not value.startswith(NOT_A_PATH) and not Path(value).is_absolute():
            return str(path.parent / value)
    return value


def _wrong(key: str, value: object, expected: str, path: Path) -> ConfigError:
    return ConfigError(f"--config {path}: {key} = {value!r} is not {expected}", "fix the file")
