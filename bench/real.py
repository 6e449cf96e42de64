"""Benchmark: float vs qconv vs onnxruntime's quantizer vs OpenVINO NNCF on five real models.

The models are the pretrained ONNX files of ``bench/realmodels`` (rec, det, cls, orientation,
captcha), each with deterministic calibration and evaluation data made offline and a task
scorer. For every model four variants are measured on the same data:

* ``float``: the original model;
* ``qconv``: ``qconv.quantize.quantize_model`` with the default ``QuantizeConfig()``;
* ``ort``: ``onnxruntime.quantization.quantize_static`` (QDQ, per-channel, QUInt8 activations,
  QInt8 weights, MinMax) after ORT's ``quant_pre_process`` (the raw model, with a note, when
  that step fails);
* ``nncf``: ``nncf.quantize(model, nncf.Dataset(feeds))`` with NNCF's defaults (NNCF 3.4.0,
  run by the interpreter of the separate ``.venv-bench``, so qconv's venv has no NNCF). On
  opset 11/12 models (the Paddle exports rec, det, cls) NNCF falls back to per-tensor weights,
  with a warning that lands in the row's notes; qconv upgrades such models to opset 13 first.

What is measured, and how:

* Calibration data: ``model.calibration_feeds(--calib)`` written as one ``.npz`` per feed to
  ``bench/work/real/<model>/calib/``; every tool reads that folder one feed (batch 1) at a time.
* Conversion: each tool runs alone in a fresh child process (``bench/real_quantize_one.py``),
  which reports the wall time of load + calibration + quantization + save (imports and
  interpreter start-up excluded) and its peak resident set (``VmHWM``, imports included; not
  ``ru_maxrss``, which Linux carries over from the parent into a child), the "calibration
  peak RSS". The parent polls the child's ``VmRSS`` every 0.2 s and kills it
  above ``--mem-cap-gb`` (its peak is then the last polled value: "killed at X GB") or after
  ``--timeout`` seconds. A tool that fails, is killed or crashes leaves an error in its row;
  the run goes on.
* Validity: whether ``onnx.checker.check_model`` passes on the saved file and whether
  onnxruntime's CPU provider loads it. A model that does not load is neither scored nor timed.
* Task metrics: ``model.score`` on ``model.eval_set(--eval)`` (det: ``--det-eval`` pages), each
  variant in a plain onnxruntime session with 1 intra-op thread. The table shows the model's
  primary metric and a second one (rec: exact-line accuracy; det: box recall; captcha: CER;
  cls and orientation: ``agree_float``, the share of samples whose arg-max class equals the
  float model's). Every metric goes to the JSON.
* Latency: batch 1 on ``model.latency_feed()``, 1 intra-op thread, all variants of one model
  timed in the same process with ``bench.compare.interleaved_times`` (warm-up, then rounds in
  which every variant runs once in a new random order, idle threads not spinning). Rounds fill
  ``--latency-budget`` seconds per model (from a short pilot), at least 20, at most 2,000.
  Medians are reported; speed-up = float median / variant median, with a 95% bootstrap
  interval over paired rounds (within-run noise only: other processes on the machine move
  latencies between runs).
* Size: bytes of the saved ``.onnx`` file. MB and GB are binary (MiB, GiB).

A "targets" section then checks qconv against float on each model: (1) primary metric no more
than 0.01 absolute worse (CER, accuracy and exact match are all fractions); (2) latency at
1 thread <= float's; (3) >= 1.5x faster than float on det and orientation; (4) size <= 0.3x
float; (5) calibration peak RSS <= 1.5 GB. It also sets qconv beside ort and nncf on the
primary metric and latency. Results go to ``bench/real.json`` (machine, arguments, qconv's git
state at the start, at the end and when each qconv conversion started, rows, targets). The
exit code is 0 whatever the numbers: this is a benchmark.

Usage (from the repository root): ``.venv/bin/python bench/real.py [--models NAME ...]
[--calib 64] [--eval 200] [--det-eval 20] [--tools qconv ort nncf] [--quick]
[--mem-cap-gb 16] [--timeout 1800] [--latency-budget 20] [--out bench/real.json]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as ``python bench/real.py``
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime  # noqa: E402

from bench.calibration import Watched, watch  # noqa: E402
from bench.compare import (  # noqa: E402
    Target,
    _interval,
    interleaved_times,
    machine_info,
    qconv_source,
    ratio_ci,
)
from bench.realmodels import (  # noqa: E402
    MODELS,
    EvalSet,
    RealModel,
    RunFn,
    make_session,
    session_runner,
    write_feed_folder,
)
from bench.tables import print_aligned  # noqa: E402

BENCH = ROOT / "bench"
WORK = BENCH / "work" / "real"
CHILD = BENCH / "real_quantize_one.py"
BENCH_PYTHON = ROOT / ".venv-bench" / "bin" / "python"

TOOLS = ("qconv", "ort", "nncf")
DEFAULT_CALIB, DEFAULT_EVAL, DEFAULT_DET_EVAL = 64, 200, 20
QUICK_CALIB, QUICK_EVAL, QUICK_DET_EVAL, QUICK_ROUNDS = 8, 20, 2, 5
MIN_ROUNDS, MAX_ROUNDS, DEFAULT_BUDGET_S, WARMUP = 20, 2000, 20.0, 5
DEFAULT_CAP_GB, DEFAULT_TIMEOUT_S = 16.0, 1800.0
MB, GB = 1024**2, 1024**3

AGREE = "agree_float"
AGREEMENT_MODELS = ("cls", "orientation")
SECOND_METRIC = {"rec": "exact", "det": "box_recall", "captcha": "cer"}
METRIC_TOLERANCE = 0.01
SPEEDUP_MODELS, SPEEDUP_TARGET = ("det", "orientation"), 1.5
SIZE_TARGET, MEMORY_TARGET_GB = 0.3, 1.5


@dataclass
class Row:
    """Everything measured for one (model, variant); ``status``: ok/failed/killed/timeout."""

    model: str
    variant: str
    path: str
    status: str = "ok"
    error: str | None = None
    checker_ok: bool | None = None
    checker_error: str | None = None
    loads_in_ort: bool | None = None
    load_error: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    eval_samples: int = 0
    score_seconds: float | None = None
    latency_ms: float | None = None
    latency_p90_ms: float | None = None
    latency_rounds: int = 0
    speedup_vs_float: float | None = None
    speedup_vs_float_ci95: list[float] | None = None
    size_bytes: int | None = None
    size_ratio: float | None = None
    convert_seconds: float | None = None
    process_seconds: float | None = None
    peak_rss_mb: float | None = None
    polled_max_rss_mb: float | None = None
    calibration_samples: int | None = None
    versions: dict[str, str] = field(default_factory=dict)
    qconv_source: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        """A model file exists and onnxruntime loads it."""
        return self.status == "ok" and bool(self.loads_in_ort)


# ---------------------------------------------------------------------------- conversion


def write_feeds(name: str, model: RealModel, count: int) -> Path:
    """The calibration feeds of ``model`` as a folder of one-feed ``.npz`` files."""
    folder = WORK / name / "calib"
    write_feed_folder(model.calibration_feeds(count), folder)
    return folder


def child_command(tool: str, model: Path, feeds: Path, output: Path) -> list[str]:
    """The child's command line: NNCF runs in ``.venv-bench``, the others in this venv."""
    python = str(BENCH_PYTHON) if tool == "nncf" else sys.executable
    return [python, str(CHILD), f"--tool={tool}", str(model), str(feeds), str(output)]


def convert(row: Row, model: Path, feeds: Path, cap_gb: float, timeout_s: float) -> None:
    """Run one conversion child under the memory/time watchdog and record what happened."""
    output = ROOT / row.path
    if row.variant == "nncf" and not BENCH_PYTHON.is_file():
        row.status, row.error = "failed", f"{_shown(BENCH_PYTHON)} missing: make bench-venv"
        return
    command = child_command(row.variant, model, feeds, output)
    watched = watch(command, output.with_suffix(""), cap_gb * 1024, timeout_s)
    row.process_seconds = watched.seconds
    row.polled_max_rss_mb = watched.max_rss_mb
    done = next((e for e in reversed(watched.events) if e.get("event") == "done"), None)
    if watched.stopped:
        _stopped(row, watched, cap_gb)
    elif done is None:
        row.status = "failed"
        row.error = f"child exited {watched.returncode}: {watched.stderr_tail or 'no output'}"
        row.peak_rss_mb = watched.max_rss_mb
    else:
        _finished(row, done, watched)


def _stopped(row: Row, watched: Watched, cap_gb: float) -> None:
    row.status = watched.stopped or "killed"
    row.peak_rss_mb = watched.last_rss_mb
    if row.status == "killed":
        rss = (watched.last_rss_mb or 0.0) / 1024
        row.error = f"killed at {rss:.2f} GB after {watched.seconds:.0f} s (cap {cap_gb:g} GB)"
    else:
        row.error = f"timeout after {watched.seconds:.0f} s"


def _finished(row: Row, report: dict[str, Any], watched: Watched) -> None:
    row.convert_seconds = report.get("seconds")
    row.peak_rss_mb = report.get("peak_rss_mb")
    row.calibration_samples = report.get("samples")
    row.versions = report.get("versions", {})
    row.notes.extend(report.get("notes", []))
    if not report.get("ok"):
        row.status = "failed"
        row.error = report.get("error") or watched.stderr_tail or "conversion failed"


# ---------------------------------------------------------------------------- validity, metrics


def check_file(row: Row) -> Any | None:
    """Size, ``onnx.checker`` and an onnxruntime load of the row's file; the session or None."""
    path = ROOT / row.path
    row.size_bytes = path.stat().st_size
    try:
        onnx.checker.check_model(str(path))
        row.checker_ok = True
    except Exception as exc:  # checker errors come in several types
        row.checker_ok, row.checker_error = False, f"{type(exc).__name__}: {_first_line(exc)}"
    try:
        session = make_session(path, threads=1)
    except Exception as exc:  # onnxruntime raises its own exception types
        row.loads_in_ort, row.load_error = False, f"{type(exc).__name__}: {_first_line(exc)}"
        return None
    row.loads_in_ort = True
    return session


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else "")[:limit]


def recording(run: RunFn, classes: list[int]) -> RunFn:
    """``run``, also keeping the arg-max of the first output of every call."""

    def wrapped(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        outputs = run(feed)
        classes.append(int(np.asarray(outputs[0]).reshape(-1).argmax()))
        return outputs

    return wrapped


def score(row: Row, model: RealModel, session: Any, data: EvalSet) -> list[int]:
    """Fill the row's task metrics; returns the arg-max classes (cls/orientation only)."""
    classes: list[int] = []
    run = session_runner(session)
    if row.model in AGREEMENT_MODELS:
        run = recording(run, classes)
    started = time.perf_counter()
    row.metrics = model.score(run, data)
    row.score_seconds = time.perf_counter() - started
    row.eval_samples = len(data)
    return classes


def add_agreement(row: Row, classes: list[int], reference: list[int]) -> None:
    """``agree_float``: share of samples whose arg-max class equals the float model's."""
    if classes and len(classes) == len(reference):
        row.metrics[AGREE] = float(np.mean(np.array(classes) == np.array(reference)))


# ---------------------------------------------------------------------------- latency


def plan_rounds(
    protos: dict[str, onnx.ModelProto], feed: dict[str, np.ndarray], budget: float
) -> int:
    """Rounds that fill ``budget`` seconds at 1 thread, within [MIN_ROUNDS, MAX_ROUNDS]."""
    pilot = interleaved_times(protos, feed, threads=1, runs=3, warmup=1)
    round_seconds = sum(float(np.median(values)) for values in pilot.values()) / 1000
    return max(MIN_ROUNDS, min(MAX_ROUNDS, int(budget / max(round_seconds, 1e-6))))


def fill_latency(
    rows: dict[str, Row], feed: dict[str, np.ndarray], rounds: int | None, budget: float
) -> None:
    """Interleaved batch-1, 1-thread latency of every loadable variant, and speed-ups."""
    protos = {key: onnx.load(str(ROOT / row.path)) for key, row in rows.items() if row.usable}
    if not protos:
        return
    rounds = rounds or plan_rounds(protos, feed, budget)
    _log(f"    timing {len(protos)} variants, {rounds} rounds")
    times = interleaved_times(protos, feed, threads=1, runs=rounds, warmup=WARMUP)
    for key, values in times.items():
        row = rows[key]
        row.latency_ms = float(np.median(values))
        row.latency_p90_ms = float(np.percentile(values, 90))
        row.latency_rounds = len(values)
        if "float" in times:
            row.speedup_vs_float = float(np.median(times["float"])) / row.latency_ms
            row.speedup_vs_float_ci95 = ratio_ci(times["float"], values)


# ---------------------------------------------------------------------------- one model


def bench_model(name: str, args: argparse.Namespace) -> list[Row]:
    """Convert, check, score and time every variant of one model."""
    model = MODELS[name]
    _log(f"[{name}] {model.package} {model.version}")
    source = model.model_path()
    rows = {"float": Row(name, "float", _shown(source))}
    feeds = write_feeds(name, model, args.calib)
    for tool in args.tools:
        row = rows[tool] = Row(name, tool, _shown(WORK / name / f"{tool}.onnx"))
        if tool == "qconv":  # qconv may be edited while the benchmark runs
            row.qconv_source = qconv_source()
        _log(f"    converting with {tool} ...")
        convert(row, source, feeds, args.mem_cap_gb, args.timeout)
        _log(f"      {_conversion_summary(row)}")
    sessions = {k: check_file(r) for k, r in rows.items() if r.status == "ok"}
    float_size = rows["float"].size_bytes
    for row in rows.values():
        if row.size_bytes is not None and float_size:
            row.size_ratio = row.size_bytes / float_size
    fill_scores(rows, sessions, model, args.det_eval if name == "det" else args.eval)
    sessions.clear()
    fill_latency(rows, model.latency_feed(), args.rounds, args.latency_budget)
    return list(rows.values())


def fill_scores(rows: dict[str, Row], sessions: dict[str, Any], model: RealModel, n: int) -> None:
    """Task metrics of every variant that loads, on one shared evaluation set."""
    data = model.eval_set(n)
    classes: dict[str, list[int]] = {}
    for key, session in sessions.items():
        if session is None:
            continue
        _log(f"    scoring {key} on {len(data)} samples")
        classes[key] = score(rows[key], model, session, data)
    for key, values in classes.items():
        add_agreement(rows[key], values, classes.get("float", []))


def _conversion_summary(row: Row) -> str:
    if row.status != "ok":
        return f"{row.status.upper()}: {row.error}"
    return f"{row.convert_seconds:.1f} s, peak {(row.peak_rss_mb or 0) / 1024:.2f} GB"


# ---------------------------------------------------------------------------- targets


def check_targets(rows: Sequence[Row]) -> list[Target]:
    """The five qconv-vs-float checks of every model, from this run's rows.

    Where qconv made no model that onnxruntime loads, every check of that model is a MISS.
    """
    table = {(r.model, r.variant): r for r in rows}
    targets = []
    for model in dict.fromkeys(r.model for r in rows):
        ours, base = table.get((model, "qconv")), table[(model, "float")]
        if ours is None:
            continue
        if not ours.usable:
            targets.extend(failed_targets(model, ours))
            continue
        targets.append(metric_target(model, ours, base))
        targets.append(latency_target(model, ours, base))
        if model in SPEEDUP_MODELS:
            targets.append(speedup_target(model, ours, base))
        targets.append(size_target(model, ours, base))
        targets.append(memory_target(model, ours))
    return targets


def target_names(model: str) -> list[str]:
    """The names of the checks made on ``model``, in order."""
    names = [
        f"(1) {MODELS[model].primary_metric} within {METRIC_TOLERANCE} of float",
        "(2) latency qconv <= float, 1 thread",
    ]
    if model in SPEEDUP_MODELS:
        names.append(f"(3) qconv >= {SPEEDUP_TARGET}x faster than float, 1 thread")
    names.append(f"(4) size qconv <= {SIZE_TARGET}x float")
    return [*names, f"(5) qconv calibration peak RSS <= {MEMORY_TARGET_GB} GB"]


def failed_targets(model: str, ours: Row) -> list[Target]:
    """MISS on every check: qconv made no usable model (the peak it reached is still shown)."""
    detail = f"qconv made no usable model: {ours.error or ours.load_error or 'no model'}"
    peak = "" if ours.peak_rss_mb is None else f"peak {ours.peak_rss_mb / 1024:.2f} GB; "
    names = target_names(model)
    return [
        *(Target(name, model, "MISS", detail) for name in names[:-1]),
        Target(names[-1], model, "MISS", peak + detail),
    ]


def metric_target(model: str, ours: Row, base: Row) -> Target:
    metric = MODELS[model].primary_metric
    name = target_names(model)[0]
    if metric not in ours.metrics or metric not in base.metrics:
        return Target(name, model, "SKIP", _why_missing(ours, base))
    loss = worse_by(model, ours.metrics[metric], base.metrics[metric])
    status = "PASS" if loss <= METRIC_TOLERANCE + 1e-12 else "MISS"
    detail = (
        f"qconv {ours.metrics[metric]:.4f} vs float {base.metrics[metric]:.4f} "
        f"({'worse' if loss > 0 else 'not worse'} by {abs(loss):.4f})"
    )
    return Target(name, model, status, detail)


def worse_by(model: str, value: float, reference: float) -> float:
    """How much worse ``value`` is than ``reference`` on the model's primary metric (>0 worse)."""
    return reference - value if MODELS[model].higher_is_better else value - reference


def latency_target(model: str, ours: Row, base: Row) -> Target:
    name = target_names(model)[1]
    if ours.latency_ms is None or base.latency_ms is None:
        return Target(name, model, "SKIP", _why_missing(ours, base))
    ratio = ours.latency_ms / base.latency_ms
    interval = ""
    if ours.speedup_vs_float_ci95:
        low, high = ours.speedup_vs_float_ci95
        interval = _interval([1 / high, 1 / low], 1.0, "x")
    detail = (
        f"qconv {ours.latency_ms:.2f} ms vs float {base.latency_ms:.2f} ms = {ratio:.3f}x{interval}"
    )
    return Target(name, model, "PASS" if ratio <= 1.0 else "MISS", detail)


def speedup_target(model: str, ours: Row, base: Row) -> Target:
    name = target_names(model)[2]
    if ours.speedup_vs_float is None or base.latency_ms is None:
        return Target(name, model, "SKIP", _why_missing(ours, base))
    speedup = ours.speedup_vs_float
    interval = _interval(ours.speedup_vs_float_ci95, SPEEDUP_TARGET, "x", "{:.2f}")
    detail = f"float {base.latency_ms:.2f} ms / qconv {ours.latency_ms:.2f} ms = {speedup:.2f}x"
    status = "PASS" if speedup >= SPEEDUP_TARGET else "MISS"
    return Target(name, model, status, detail + interval)


def size_target(model: str, ours: Row, base: Row) -> Target:
    name = target_names(model)[-2]
    if ours.size_ratio is None or base.size_bytes is None or ours.size_bytes is None:
        return Target(name, model, "SKIP", _why_missing(ours, base))
    detail = (
        f"{ours.size_bytes / MB:.2f} MB vs {base.size_bytes / MB:.2f} MB = {ours.size_ratio:.3f}x"
    )
    return Target(name, model, "PASS" if ours.size_ratio <= SIZE_TARGET else "MISS", detail)


def memory_target(model: str, ours: Row) -> Target:
    name = target_names(model)[-1]
    if ours.peak_rss_mb is None:
        return Target(name, model, "SKIP", _why_missing(ours))
    peak = ours.peak_rss_mb / 1024
    status = "PASS" if peak <= MEMORY_TARGET_GB else "MISS"
    detail = f"{peak:.2f} GB" + (
        "" if ours.status == "ok" else f" (before it failed: {ours.error})"
    )
    return Target(name, model, status, detail)


def _why_missing(*rows: Row) -> str:
    reasons = [f"{r.variant}: {r.error or r.load_error}" for r in rows if r.error or r.load_error]
    return "; ".join(reasons) or "a number is missing"


def comparisons(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """qconv beside ort and nncf on each model's primary metric and latency."""
    table = {(r.model, r.variant): r for r in rows}
    found = []
    for model in dict.fromkeys(r.model for r in rows):
        ours = table.get((model, "qconv"))
        for other in ("ort", "nncf"):
            theirs = table.get((model, other))
            if ours is not None and theirs is not None:
                found.append(compare_pair(model, ours, theirs))
    return found


def compare_pair(model: str, ours: Row, theirs: Row) -> dict[str, Any]:
    metric = MODELS[model].primary_metric
    entry: dict[str, Any] = {"model": model, "other": theirs.variant, "metric": metric}
    mine, other = ours.metrics.get(metric), theirs.metrics.get(metric)
    if mine is None or other is None:
        entry["detail"] = f"not comparable ({_why_missing(ours, theirs)})"
        return entry
    loss = worse_by(model, mine, other)
    verdict = "same" if abs(loss) < 1e-9 else ("worse" if loss > 0 else "better")
    entry.update(qconv=mine, theirs=other, qconv_worse_by=loss, verdict=verdict)
    text = f"qconv {mine:.4f} vs {theirs.variant} {other:.4f}: qconv {verdict}"
    if verdict != "same":
        text += f" by {abs(loss):.4f}"
    if ours.latency_ms and theirs.latency_ms:
        entry["latency_ratio"] = ours.latency_ms / theirs.latency_ms
        text += f"; latency qconv/{theirs.variant} {entry['latency_ratio']:.2f}x"
    entry["detail"] = text
    return entry


# ---------------------------------------------------------------------------- output

COLUMNS = (
    "model",
    "variant",
    "primary",
    "second",
    "ms 1t",
    "speed-up",
    "size MB",
    "size x",
    "calib peak GB",
    "convert s",
    "status",
)
LEFT = {0, 1, 2, 3, len(COLUMNS) - 1}


def second_metric(model: str) -> str:
    return AGREE if model in AGREEMENT_MODELS else SECOND_METRIC.get(model, "")


def table_cells(row: Row) -> list[str]:
    """The printed cells of one row ("-" where a number does not exist)."""
    primary, second = MODELS[row.model].primary_metric, second_metric(row.model)
    return [
        row.model,
        row.variant,
        _metric(row, primary),
        _metric(row, second),
        _fmt(row.latency_ms, "{:.2f}"),
        _fmt(row.speedup_vs_float, "{:.2f}x"),
        _fmt(None if row.size_bytes is None else row.size_bytes / MB, "{:.2f}"),
        _fmt(row.size_ratio, "{:.3f}"),
        _fmt(None if row.peak_rss_mb is None else row.peak_rss_mb / 1024, "{:.2f}"),
        _fmt(row.convert_seconds, "{:.1f}"),
        status_text(row),
    ]


def _metric(row: Row, name: str) -> str:
    value = row.metrics.get(name)
    return f"{name} -" if value is None else f"{name} {value:.4f}"


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else spec.format(value)


def status_text(row: Row, limit: int = 60) -> str:
    """ok, or what went wrong, short (the footnotes give the whole message)."""
    if row.status != "ok":
        text = row.error or row.status
        text = text if row.status in ("killed", "timeout") else f"failed: {text}"
    elif row.loads_in_ort is False:
        text = "does not load in onnxruntime"
    elif row.checker_ok is False:
        text = "ok (onnx.checker fails)"
    else:
        text = "ok"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def print_table(rows: Sequence[Row]) -> None:
    """Aligned plain text: text columns left, numbers right, a rule between models."""
    print_aligned(COLUMNS, [table_cells(row) for row in rows], LEFT, [row.model for row in rows])


def footnotes(args: argparse.Namespace) -> list[str]:
    return [
        f"primary/second: task metrics on {args.eval} eval samples (det: {args.det_eval} pages), "
        "1 intra-op thread; cer/page_cer lower is better, the others higher.",
        "agree_float: share of samples whose arg-max class equals the float model's.",
        "ms 1t: median batch-1 latency at 1 thread, all variants of a model interleaved in one "
        "process; speed-up: float median / median.",
        f"calib peak GB: peak RSS of the conversion child (imports included; killed above "
        f"{args.mem_cap_gb:g} GB); convert s: load + calibrate ({args.calib} samples, batch 1) + "
        "quantize + save.",
        "MB/GB are MiB/GiB. nncf runs NNCF 3.4.0 defaults from .venv-bench.",
    ]


def print_report(
    rows: Sequence[Row],
    targets: Sequence[Target],
    pairs: Sequence[dict[str, Any]],
    notes: Sequence[str],
) -> None:
    print_table(rows)
    for note in notes:
        print(f"  * {note}")
    for row in rows:
        for problem in (row.error, row.checker_error, row.load_error):
            if problem:
                print(f"  ! {row.model} {row.variant}: {problem}")
    print()
    print("Targets (qconv vs float)")
    for target in targets:
        print(f"  {target.status:4}  {target.name}  {target.model}: {target.detail}")
    counts = {s: sum(t.status == s for t in targets) for s in ("PASS", "MISS", "SKIP")}
    print("  " + (", ".join(f"{n} {s}" for s, n in counts.items() if n) or "none: qconv not run"))
    print()
    print("qconv vs the other quantizers (primary metric, latency at 1 thread)")
    for pair in pairs:
        print(f"  {pair['model']:<12} vs {pair['other']:<5} {pair['metric']:<9} {pair['detail']}")


def model_info(names: Sequence[str]) -> dict[str, Any]:
    """Package, version, path and digest of each float model."""
    info = {}
    for name in names:
        model = MODELS[name]
        path = model.model_path()
        info[name] = {
            "package": model.package,
            "version": model.version,
            "path": _shown(path),
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest()[:16],
            "primary_metric": model.primary_metric,
            "higher_is_better": model.higher_is_better,
            "second_metric": second_metric(name),
        }
    return info


def write_results(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it is inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--tools", nargs="+", choices=TOOLS, default=list(TOOLS))
    parser.add_argument("--calib", type=int, help=f"calibration samples ({DEFAULT_CALIB})")
    parser.add_argument("--eval", type=int, help=f"eval samples ({DEFAULT_EVAL})")
    parser.add_argument("--det-eval", type=int, help=f"det eval pages ({DEFAULT_DET_EVAL})")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: calib {QUICK_CALIB}, eval {QUICK_EVAL}, det {QUICK_DET_EVAL} pages, "
        f"{QUICK_ROUNDS} latency rounds (explicit sizes still win)",
    )
    parser.add_argument("--mem-cap-gb", type=float, default=DEFAULT_CAP_GB)
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="s per child")
    parser.add_argument("--latency-budget", type=float, default=DEFAULT_BUDGET_S, help="s")
    parser.add_argument("--out", type=Path, default=BENCH / "real.json")
    args = parser.parse_args(argv)
    quick = args.quick
    args.calib = args.calib or (QUICK_CALIB if quick else DEFAULT_CALIB)
    args.eval = args.eval or (QUICK_EVAL if quick else DEFAULT_EVAL)
    args.det_eval = args.det_eval or (QUICK_DET_EVAL if quick else DEFAULT_DET_EVAL)
    args.rounds = QUICK_ROUNDS if quick else None
    args.tools = [tool for tool in TOOLS if tool in args.tools]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ["NNCF_CI"] = "1"  # children inherit it: NNCF sends no telemetry
    onnxruntime.set_default_logger_severity(3)  # no "Removing initializer" floods
    started = time.perf_counter()
    run: dict[str, Any] = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "qconv_source": qconv_source(),
    }
    notes = footnotes(args)
    rows: list[Row] = []
    for name in args.models:
        rows.extend(bench_model(name, args))
    source_at_end = qconv_source()
    if source_at_end != run["qconv_source"]:
        run["qconv_source_at_end"] = source_at_end
        notes.append(
            "qconv/ changed while the benchmark ran: rows may mix qconv versions "
            "(each qconv row's qconv_source in the JSON says which)"
        )
    run["total_seconds"] = round(time.perf_counter() - started, 1)
    targets, pairs = check_targets(rows), comparisons(rows)
    print_report(rows, targets, pairs, notes)
    document = {
        "machine": machine_info(),
        "run": run,
        "models": model_info(args.models),
        "rows": [asdict(row) for row in rows],
        "targets": [asdict(target) for target in targets],
        "comparisons": pairs,
        "notes": notes,
    }
    write_results(args.out, document)
    print(f"\nTotal {run['total_seconds']:.0f} s; results written to {_shown(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
