"""Generate the CLI reference section of README.md from ``qconv --help`` (or check it).

``--write`` rewrites the section between the markers; without it, exits 1 when the README is
stale. The test suite calls :func:`expected_readme` so a stale reference fails CI.
"""

from __future__ import annotations

import sys
from pathlib import Path

from click.testing import CliRunner

from qconv.cli import main

README = Path(__file__).resolve().parent.parent / "README.md"
START = "<!-- cli-reference:start -->"
END = "<!-- cli-reference:end -->"
COMMANDS = ([], ["quantize"], ["analyze"], ["compare"], ["inspect"])


def reference() -> str:
    runner = CliRunner()
    blocks = []
    for args in COMMANDS:
        result = runner.invoke(main, [*args, "--help"], prog_name="qconv", terminal_width=100)
        title = " ".join(["qconv", *args])
        blocks.append(f"### `{title}`\n\n```text\n{result.output.rstrip()}\n```")
    return "\n\n".join(blocks)


def expected_readme(text: str) -> str:
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{reference()}\n{END}{tail}"


def main_script(argv: list[str]) -> int:
    text = README.read_text(encoding="utf-8")
    expected = expected_readme(text)
    if "--write" in argv:
        README.write_text(expected, encoding="utf-8")
        return 0
    if expected != text:
        print("README.md CLI reference is stale; run `make readme`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main_script(sys.argv[1:]))
