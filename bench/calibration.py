"""Benchmark: memory and time of calibration as the sample count grows, qconv beside onnxruntime.

qconv folds every batch of activations into a fixed-size histogram per tensor, so its calibration
memory should not depend on the number of samples. This script checks that on the random-weight
224x224 ResNet-18 (``sample_models/large/resnet18.onnx``, built by ``make large-models``) at
100, 1,000 and 5,000 samples, and compares onnxruntime's own static quantizer on the same data.

Methods:

* ``qconv-minmax`` / ``qconv-entropy``: ``qconv.quantize.quantize_model`` with
  ``QuantizeConfig(calibration=...)`` (otherwise defaults: QDQ, per-channel weights) and
  ``open_reader("random", specs, batch_size=8, samples=N)``.
* ``ort-minmax`` / ``ort-entropy`` / ``ort-percentile``:
  ``onnxruntime.quantization.quantize_static`` (QDQ, ``per_channel=True``, QUInt8 activations,
  QInt8 weights) with a ``CalibrationDataReader`` that draws the same batches lazily from a
  generator. It quantizes the output of ORT's ``quant_pre_process``, made once by this script
  before any measurement (untimed): that step folds BatchNormalization into Conv as qconv's own
  preparation does inside ``quantize_model``, so both tools calibrate comparable graphs (on the
  raw graph onnxruntime would also keep the 20 BatchNormalization outputs).

Data: N(0, 1) feeds of 8 samples from ``numpy.random.default_rng(0)``, generated batch by batch
(no run holds more than one batch of input); every run sees the same batches. Random data is
meaningless for accuracy but fine for memory and time.

What is measured, and how: every (method, sample count) runs alone in a fresh child process
(``bench/calibrate_one.py``, one at a time). The child reports

* wall s: wall time of the whole ``quantize_model`` / ``quantize_static`` call (for qconv also
  ``calib s``, its own ``QuantizationResult.calibration_seconds``: preparing the exposed model
  and the pass over the data, without range search, rewriting and verification);
* peak RSS: the child's ``ru_maxrss``; baseline: its resident set after imports and model load;
  growth = peak - baseline.

The parent polls the child's ``VmRSS`` every 0.2 s and kills it above ``--mem-cap-gb`` (16 GB by
default; the peak of a killed child is the last polled value) or after ``--timeout`` seconds.
onnxruntime's Entropy and Percentile calibrators keep every activation of every batch in memory,
so they hit the cap at large sample counts. A method that was killed by the cap is not run again
at larger sample counts, nor is the other method sharing its collection (ort-entropy and
ort-percentile both use onnxruntime's ``HistogramCalibrater``): those rows say "skipped". A
timed-out method is likewise skipped at larger counts.

Targets, from this run: (1) each qconv method's peak RSS at the largest sample count is at most
1.2x its peak at the smallest; (2) qconv-entropy is faster than ort-entropy at each sample count
(whole-call wall time, the one number measured alike for both). The exit code is 0 whatever the
outcome: this is a benchmark.

Usage: ``python bench/calibration.py [--samples 100,1000,5000] [--methods KEY ...] [--quick]
[--mem-cap-gb 16] [--timeout 1800] [--out bench/calibration.json]``.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as ``python bench/calibration.py``
    sys.path.insert(0, str(ROOT))

from bench.tables import print_aligned  # noqa: E402

BENCH = ROOT / "bench"
WORK = BENCH / "work" / "calibration"
CHILD = BENCH / "calibrate_one.py"
MODEL = ROOT / "sample_models" / "large" / "resnet18.onnx"

DEFAULT_SAMPLES = (100, 1000, 5000)
QUICK_SAMPLES = (20, 100)
BATCH_SIZE = 8
POLL_SECONDS = 0.2
DEFAULT_CAP_GB = 16.0
DEFAULT_TIMEOUT_S = 1800.0
GROWTH_LIMIT = 1.2
MB_PER_GB = 1024


@dataclass(frozen=True)
class Method:
    """One calibration method of one tool; ``collection`` names how activations are gathered."""

    key: str
    tool: str
    method: str
    collection: str


METHODS = (
    Method("qconv-minmax", "qconv", "minmax", "qconv-minmax"),
    Method("qconv-entropy", "qconv", "entropy", "qconv-entropy"),
    Method("ort-minmax", "ort", "minmax", "ort-minmax"),
    Method("ort-entropy", "ort", "entropy", "ort-histogram"),
    Method("ort-percentile", "ort", "percentile", "ort-histogram"),
)
BY_KEY = {m.key: m for m in METHODS}


@dataclass
class Row:
    """One (method, sample count) run; ``status`` is ok, failed, killed, timeout or skipped."""

    method: str
    samples: int
    status: str = "ok"
    detail: str = ""
    wall_seconds: float | None = None
    calibration_seconds: float | None = None
    peak_rss_mb: float | None = None
    baseline_rss_mb: float | None = None
    growth_mb: float | None = None
    polled_max_rss_mb: float | None = None
    process_seconds: float | None = None
    samples_read: int | None = None
    samples_used: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.status == "ok"

    def status_text(self) -> str:
        return self.status if not self.detail else f"{self.status} {self.detail}"


@dataclass(frozen=True)
class Target:
    """One PASS/MISS check (SKIP when a number it needs is missing)."""

    name: str
    status: str
    detail: str


@dataclass
class Watched:
    """How a child process ended under the watchdog."""

    returncode: int | None
    stopped: str | None  # "killed" (memory cap), "timeout" or None
    seconds: float
    last_rss_mb: float | None
    max_rss_mb: float | None
    events: list[dict[str, Any]]
    stderr_tail: str


# ---------------------------------------------------------------------------- children


def read_rss_mb(pid: int) -> float | None:
    """Current resident set of ``pid`` in MiB, None once it is gone (or a zombie)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


def watch(command: list[str], log_stem: Path, cap_mb: float, timeout_s: float) -> Watched:
    """Run ``command``, killing it above ``cap_mb`` resident or after ``timeout_s`` seconds."""
    stdout_path, stderr_path = log_stem.with_suffix(".stdout"), log_stem.with_suffix(".stderr")
    last: float | None = None
    highest: float | None = None
    stopped = None
    with stdout_path.open("w") as out, stderr_path.open("w") as err:
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=err, cwd=ROOT)
        try:
            while child.poll() is None:
                rss = read_rss_mb(child.pid)
                if rss is not None:
                    last, highest = rss, max(rss, highest or 0.0)
                if last is not None and last > cap_mb:
                    stopped = "killed"
                elif time.perf_counter() - started > timeout_s:
                    stopped = "timeout"
                if stopped:
                    child.kill()
                    break
                time.sleep(POLL_SECONDS)
        finally:
            if child.poll() is None and stopped is None:  # interrupted: leave no orphan behind
                child.kill()
            child.wait()
        seconds = time.perf_counter() - started
    return Watched(
        child.returncode,
        stopped,
        seconds,
        last,
        highest,
        _events(stdout_path.read_text()),
        _tail(stderr_path.read_text()),
    )


def _events(stdout: str) -> list[dict[str, Any]]:
    events = []
    for line in stdout.splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return events


def _tail(text: str, lines: int = 3) -> str:
    return " / ".join(line.strip() for line in text.strip().splitlines()[-lines:])


def child_command(method: Method, samples: int, model: Path) -> list[str]:
    return [
        sys.executable,
        str(CHILD),
        f"--tool={method.tool}",
        f"--method={method.method}",
        f"--samples={samples}",
        f"--batch-size={BATCH_SIZE}",
        str(model),
    ]


def measure(method: Method, samples: int, model: Path, cap_mb: float, timeout_s: float) -> Row:
    """Run one child under the watchdog and turn what happened into a row."""
    stem = WORK / f"{method.key}-{samples}"
    watched = watch(child_command(method, samples, model), stem, cap_mb, timeout_s)
    row = Row(method.key, samples, process_seconds=watched.seconds)
    row.polled_max_rss_mb = watched.max_rss_mb
    kinds = {e.get("event"): e for e in watched.events}
    progress = [e for e in watched.events if e.get("event") == "progress"]
    if progress:
        row.samples_read = progress[-1].get("samples")
    if "baseline" in kinds:
        row.baseline_rss_mb = kinds["baseline"]["baseline_rss_mb"]
    if watched.stopped:
        _stopped_row(row, watched, cap_mb)
    elif "done" in kinds:
        _finished_row(row, kinds["done"], watched)
    else:
        row.status = "failed"
        row.detail = f"exit {watched.returncode}: {_short(watched.stderr_tail)}"
        row.notes.append(f"stderr: {watched.stderr_tail}")
    if row.peak_rss_mb is not None and row.baseline_rss_mb is not None:
        row.growth_mb = row.peak_rss_mb - row.baseline_rss_mb
    return row


def _stopped_row(row: Row, watched: Watched, cap_mb: float) -> None:
    row.status = watched.stopped or "killed"
    row.peak_rss_mb = watched.last_rss_mb
    row.wall_seconds = None
    read = f", {row.samples_read:,} samples read" if row.samples_read is not None else ""
    if row.status == "killed":
        rss_gb = (watched.last_rss_mb or 0.0) / MB_PER_GB
        row.detail = (
            f"at {rss_gb:.1f} GB after {watched.seconds:.0f} s{read} "
            f"(cap {cap_mb / MB_PER_GB:g} GB)"
        )
    else:
        row.detail = f"after {watched.seconds:.0f} s{read}"


def _finished_row(row: Row, report: dict[str, Any], watched: Watched) -> None:
    row.wall_seconds = report.get("seconds")
    row.calibration_seconds = report.get("calibration_seconds")
    row.peak_rss_mb = report.get("peak_rss_mb")
    row.baseline_rss_mb = report.get("baseline_rss_mb", row.baseline_rss_mb)
    row.samples_used = report.get("samples")
    row.notes = list(report.get("notes", []))
    if not report.get("ok"):
        row.status = "failed"
        row.detail = _short(report.get("error") or watched.stderr_tail)
        row.notes.append(f"stderr: {watched.stderr_tail}")
    elif row.samples_used is not None and row.samples_used != row.samples:
        row.detail = f"({row.samples_used:,} used: whole batches only)"


def _short(text: str, limit: int = 100) -> str:
    """The first line of an error message, cut to ``limit`` characters for the table."""
    first = text.strip().splitlines()[0] if text.strip() else "no message"
    return first if len(first) <= limit else first[: limit - 3] + "..."


def skip_reason(method: Method, samples: int, rows: Sequence[Row]) -> str | None:
    """Why ``method`` is not run at ``samples``: a smaller run already hit the cap or timeout."""
    for row in rows:
        done = BY_KEY[row.method]
        if row.samples >= samples:
            continue
        if row.status == "killed" and done.collection == method.collection:
            same = "it was" if done is method else f"{done.key} (same collection) was"
            return f"({same} killed by the memory cap at {row.samples:,} samples)"
        if row.status == "timeout" and done is method:
            return f"(it timed out at {row.samples:,} samples)"
    return None


def ort_model(model: Path) -> Path:
    """onnxruntime's ``quant_pre_process`` output for ``model``, made before any measurement."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    output = WORK / f"{model.stem}.ort-preprocessed.onnx"
    quant_pre_process(str(model), str(output))
    return output


def run_all(
    methods: Sequence[Method], samples: Sequence[int], model: Path, cap_mb: float, timeout_s: float
) -> list[Row]:
    """Every (method, sample count), smallest count first, one child at a time."""
    ort_input = ort_model(model) if any(m.tool == "ort" for m in methods) else model
    rows: list[Row] = []
    for count in sorted(samples):
        for method in methods:
            reason = skip_reason(method, count, rows)
            if reason:
                rows.append(Row(method.key, count, status="skipped", detail=reason))
                _log(f"{method.key} @ {count:,}: skipped {reason}")
                continue
            _log(f"{method.key} @ {count:,} ...")
            source = ort_input if method.tool == "ort" else model
            row = measure(method, count, source, cap_mb, timeout_s)
            rows.append(row)
            _log(
                f"    {row.status_text()}; {_fmt(row.wall_seconds, '{:.1f}')} s, peak "
                f"{_fmt(row.peak_rss_mb, '{:,.0f}')} MB"
            )
    order = {m.key: i for i, m in enumerate(methods)}
    return sorted(rows, key=lambda r: (order[r.method], r.samples))


# ---------------------------------------------------------------------------- targets


def check_targets(rows: Sequence[Row]) -> list[Target]:
    """(1) qconv memory flat in the sample count; (2) qconv-entropy faster than ort-entropy."""
    table = {(r.method, r.samples): r for r in rows}
    counts = sorted({r.samples for r in rows})
    targets = []
    for key in ("qconv-minmax", "qconv-entropy"):
        if any(r.method == key for r in rows) and len(counts) > 1:
            small, large = table.get((key, counts[0])), table.get((key, counts[-1]))
            targets.append(_memory_target(key, small, large, counts[0], counts[-1]))
    for count in counts:
        ours, theirs = table.get(("qconv-entropy", count)), table.get(("ort-entropy", count))
        if ours is not None and theirs is not None:
            targets.append(_speed_target(count, ours, theirs))
    return targets


def _memory_target(key: str, small: Row | None, large: Row | None, low: int, high: int) -> Target:
    name = f"(1) {key} peak RSS at {high:,} <= {GROWTH_LIMIT}x peak at {low:,} samples"
    if not (small and large and small.finished and large.finished):
        return Target(name, "SKIP", "a run did not finish")
    assert small.peak_rss_mb is not None and large.peak_rss_mb is not None
    ratio = large.peak_rss_mb / small.peak_rss_mb
    status = "PASS" if ratio <= GROWTH_LIMIT else "MISS"
    detail = (
        f"{large.peak_rss_mb:,.0f} MB vs {small.peak_rss_mb:,.0f} MB = {ratio:.3f}x "
        f"(growth over baseline {_fmt(large.growth_mb, '{:,.0f}')} MB vs "
        f"{_fmt(small.growth_mb, '{:,.0f}')} MB)"
    )
    return Target(name, status, detail)


def _speed_target(count: int, ours: Row, theirs: Row) -> Target:
    name = f"(2) qconv-entropy faster than ort-entropy at {count:,} samples"
    if not ours.finished:
        return Target(name, "MISS", f"qconv-entropy did not finish: {ours.status_text()}")
    assert ours.wall_seconds is not None
    mine = (
        f"qconv {ours.wall_seconds:.1f} s wall (calibration {_fmt(ours.calibration_seconds)} s), "
        f"peak {_fmt(ours.peak_rss_mb, '{:,.0f}')} MB"
    )
    if theirs.status in ("killed", "timeout", "skipped"):
        return Target(
            name,
            "PASS",
            f"by default: ort-entropy did not finish ({theirs.status_text()}); {mine}",
        )
    if not theirs.finished:
        return Target(name, "SKIP", f"ort-entropy {theirs.status_text()}; {mine}")
    assert theirs.wall_seconds is not None
    ratio = ours.wall_seconds / theirs.wall_seconds
    status = "PASS" if ratio < 1.0 else "MISS"
    detail = f"{mine} vs ort {theirs.wall_seconds:.1f} s wall = {ratio:.2f}x"
    if theirs.samples_used is not None and theirs.samples_used != ours.samples_used:
        detail += f" (ort calibrated {theirs.samples_used:,} samples, qconv {ours.samples_used:,})"
    return Target(name, status, detail)


# ---------------------------------------------------------------------------- output

COLUMNS = ("method", "samples", "wall s", "calib s", "peak RSS MB", "growth MB", "status")


def table_cells(row: Row) -> list[str]:
    return [
        row.method,
        f"{row.samples:,}",
        _fmt(row.wall_seconds),
        _fmt(row.calibration_seconds),
        _fmt(row.peak_rss_mb, "{:,.0f}"),
        _fmt(row.growth_mb, "{:,.0f}"),
        row.status_text(),
    ]


def _fmt(value: float | None, spec: str = "{:.1f}") -> str:
    return "-" if value is None else spec.format(value)


def print_table(rows: Sequence[Row]) -> None:
    """Aligned plain text: text columns left, numbers right, a rule between methods."""
    cells = [table_cells(row) for row in rows]
    print_aligned(COLUMNS, cells, {0, len(COLUMNS) - 1}, [row.method for row in rows])


def footnotes(cap_gb: float, timeout_s: float) -> list[str]:
    return [
        f"Model {_shown(MODEL)} (random weights, 224x224); random N(0,1) data, seed 0, "
        f"batches of {BATCH_SIZE} generated one at a time; each run alone in a child process.",
        "wall s: the whole quantize_model / quantize_static call; calib s: qconv's "
        "calibration_seconds (exposed-model session + pass over the data).",
        "peak RSS: the child's ru_maxrss (imports included); growth: peak minus the RSS after "
        "imports and model load.",
        f"killed: resident set above {cap_gb:g} GB (polled every {POLL_SECONDS} s; peak = last "
        f"polled value); timeout: over {timeout_s:g} s.",
        "ort-* quantize the output of onnxruntime's quant_pre_process, made once before the runs "
        "and not timed: it folds BatchNormalization as qconv's preparation does.",
        f"ort-* read whole batches only (N rounded down to a multiple of {BATCH_SIZE}): "
        "onnxruntime's Entropy/Percentile fail on a short last batch "
        "(microsoft/onnxruntime#18792); qconv reads all N.",
        "skipped: a smaller run of the same collection (ort-entropy and ort-percentile share "
        "onnxruntime's HistogramCalibrater, which keeps every activation) was killed by the cap, "
        "or the same method timed out; more samples would only need more.",
    ]


def print_report(rows: Sequence[Row], targets: Sequence[Target], notes: Sequence[str]) -> None:
    print_table(rows)
    for text in notes:
        print(f"  * {text}")
    print()
    print("Targets")
    for target in targets:
        print(f"  {target.status:4}  {target.name}: {target.detail}")
    counts = {s: sum(t.status == s for t in targets) for s in ("PASS", "MISS", "SKIP")}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    print("  " + (summary or "none: they need two sample counts, or both entropy methods"))


def machine_info() -> dict[str, Any]:
    """CPU, cores, memory, library versions and the date of this run."""
    import numpy as np
    import onnx
    import onnxruntime

    import qconv

    return {
        "cpu": _proc_field("/proc/cpuinfo", "model name") or platform.machine(),
        "cores": os.cpu_count(),
        "memory_total": _proc_field("/proc/meminfo", "MemTotal"),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "onnx": onnx.__version__,
        "numpy": np.__version__,
        "qconv": qconv.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }


def _proc_field(path: str, key: str) -> str | None:
    try:
        for text in Path(path).read_text().splitlines():
            if text.startswith(key):
                return text.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def qconv_digest() -> str:
    """A digest of qconv/*.py, to tell whether the code changed while the benchmark ran."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "qconv").rglob("*.py")):
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def write_results(
    path: Path,
    rows: Sequence[Row],
    targets: Sequence[Target],
    notes: Sequence[str],
    run: dict[str, Any],
) -> None:
    document = {
        "machine": machine_info(),
        "run": run,
        "rows": [asdict(row) for row in rows],
        "targets": [asdict(target) for target in targets],
        "notes": list(notes),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


# ---------------------------------------------------------------------------- main


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _sample_list(text: str) -> list[int]:
    try:
        values = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list like 100,1000,5000") from exc
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("give one or more positive sample counts")
    return sorted(set(values))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--samples",
        type=_sample_list,
        default=list(DEFAULT_SAMPLES),
        help="comma-separated sample counts (default 100,1000,5000)",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=list(BY_KEY),
        default=list(BY_KEY),
        metavar="KEY",
        help=f"restrict to these of {', '.join(BY_KEY)}",
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"samples {','.join(map(str, QUICK_SAMPLES))} only"
    )
    parser.add_argument("--mem-cap-gb", type=float, default=DEFAULT_CAP_GB)
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds")
    parser.add_argument("--out", type=Path, default=BENCH / "calibration.json")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not MODEL.is_file():
        raise SystemExit(f"{_shown(MODEL)} is missing: build it with `make large-models`")
    samples = list(QUICK_SAMPLES) if args.quick else args.samples
    methods = [BY_KEY[key] for key in BY_KEY if key in args.methods]
    WORK.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    run: dict[str, Any] = {
        "model": _shown(MODEL),
        "samples": samples,
        "methods": [m.key for m in methods],
        "batch_size": BATCH_SIZE,
        "mem_cap_gb": args.mem_cap_gb,
        "timeout_seconds": args.timeout,
        "poll_seconds": POLL_SECONDS,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "qconv_sha256": qconv_digest(),
    }
    rows = run_all(methods, samples, MODEL, args.mem_cap_gb * MB_PER_GB, args.timeout)
    targets = check_targets(rows)
    notes = footnotes(args.mem_cap_gb, args.timeout)
    run["qconv_sha256_at_end"] = qconv_digest()
    if run["qconv_sha256_at_end"] != run["qconv_sha256"]:
        notes.append("qconv/ changed while the benchmark ran: rows may mix qconv versions")
    run["total_seconds"] = round(time.perf_counter() - started, 1)
    print_report(rows, targets, notes)
    write_results(args.out, rows, targets, notes, run)
    print(f"\nTotal {run['total_seconds']:.0f} s; results written to {_shown(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
