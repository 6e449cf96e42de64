"""Screenshot an HTML report with headless Chromium, to look at the page without a browser.

Usage: ``python scripts/screenshot_report.py REPORT.html OUT.png [--width 1400] [--height 3000]``

Chromium runs with a fresh, throw-away profile and with background networking, updates and
sync turned off, so the screenshot shows exactly what the file alone renders. Exits 1 with one
line on stderr when Chromium is missing or writes no image.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
TIMEOUT_SECONDS = 120


def chromium_command(
    binary: str, report: Path, out: Path, profile: Path, size: tuple[int, int]
) -> list[str]:
    """The headless Chromium command line that writes ``out`` from ``report``."""
    return [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--window-size={size[0]},{size[1]}",
        f"--screenshot={out}",
        report.resolve().as_uri(),
    ]


def screenshot(report: Path, out: Path, size: tuple[int, int] = (1400, 3000)) -> None:
    """Write a PNG of ``report`` rendered at ``size`` (width, height in CSS pixels) to ``out``."""
    binary = shutil.which("chromium") or CHROMIUM
    if not Path(binary).is_file():
        raise SystemExit(f"error: {CHROMIUM} not found; install it (apt-get install chromium)")
    if not report.is_file():
        raise SystemExit(f"error: {report} does not exist")
    out = out.resolve()
    out.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="qconv-chromium-") as profile:
        command = chromium_command(binary, report, out, Path(profile), size)
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_SECONDS)
    if not out.is_file():
        raise SystemExit(
            f"error: chromium wrote no screenshot (exit {done.returncode}):\n{done.stderr.strip()}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="the HTML report")
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=3000)
    args = parser.parse_args(argv)
    screenshot(args.report, args.out, (args.width, args.height))
    print(args.out)


if __name__ == "__main__":
    main(sys.argv[1:])
