"""The report: one data object (:mod:`qconv.report.model`) and renderers kept apart from it.

JSON, Markdown and HTML renderers live here (charts for HTML in :mod:`qconv.report.charts`,
the one module that imports matplotlib); the terminal renderer lives in :mod:`qconv.console`, the
one module that imports rich.
"""

from __future__ import annotations

from pathlib import Path

from qconv.errors import ConfigError
from qconv.report.model import Report

REPORT_SUFFIXES = (".json", ".md", ".html")


def render_file(report: Report, path: Path) -> str:
    """The report rendered in the format ``path``'s suffix names."""
    if path.suffix == ".json":
        from qconv.report.json_format import to_json

        return to_json(report)
    if path.suffix == ".md":
        from qconv.report.markdown import to_markdown

        return to_markdown(report)
    if path.suffix == ".html":
        from qconv.report.html import to_html

        return to_html(report)
    raise ConfigError(
        f"--report {path}: unknown report format {path.suffix!r}",
        f"use one of {', '.join(REPORT_SUFFIXES)}",
    )


def check_report_paths(paths: list[Path]) -> None:
    """Fail before any work when a report path has an unknown suffix."""
    for path in paths:
        if path.suffix not in REPORT_SUFFIXES:
            raise ConfigError(
                f"--report {path}: unknown report format {path.suffix!r}",
                f"use one of {', '.join(REPORT_SUFFIXES)}",
            )
