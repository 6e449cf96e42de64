"""Benchmark: qconv beside onnxruntime's own static quantizer and beside float, in one run.

For every model (the three ``sample_models/digits_*`` models, plus the random-weight 224x224
ResNet-18 and MobileNetV2 in ``sample_models/large/`` when they exist) five variants are built
and measured on the same data:

* ``float``: the original model;
* ``qconv-minmax`` / ``qconv-entropy``: ``qconv.quantize.quantize_model`` with the default
  ``QuantizeConfig`` (QDQ, per-channel int8 weights, uint8 asymmetric activations) and MinMax or
  entropy calibration;
* ``ort-minmax`` / ``ort-entropy``: ``onnxruntime.quantization.quantize_static`` (QDQ,
  per-channel, QUInt8 activations, QInt8 weights, MinMax or Entropy) after ORT's
  ``quant_pre_process`` (falling back to the raw model, with a note, if that fails).

Both quantizers calibrate on the model's ``<name>_calib.npz`` in batches of 8.

What is measured, and how:

* Conversion wall time and peak RSS: each conversion runs alone in a child process
  (``bench/convert_one.py``, started with ``sys.executable``) that saves the model under
  ``bench/work/`` and prints a JSON line with its wall time and ``ru_maxrss``. The parent then
  loads the saved models.
* Label accuracy and top-1 agreement with float: the whole held-out ``<name>_eval.npz``
  (digits models only; the large models have random weights, so accuracy is never shown for
  them).
* Latency: batch 1, at 1 and at 2 intra-op threads. All variants of one model are timed in the
  same process, the approach of ``qconv.evaluate.measure_latency``: a warm-up, then rounds in
  which every variant runs once, so machine noise hits them alike. Two changes make the
  comparison fair: every round runs the variants in a new random order (the variant that
  always ran right after float was measurably slower on the digits models), and idle intra-op
  threads do not spin (at 2 threads, spinning workers of the other sessions stole the cores).
  There are at least 100 rounds (40 for the large models), more, up to 2,000, to fill a time
  budget per thread count (3 s; 20 s for the large models) estimated from a short pilot.
  Medians are reported; ratio columns divide medians (1 thread); the targets also give a 95%
  bootstrap interval over paired rounds (within-run noise only: between runs on a shared
  machine the ratios moved by a few percent).
* Model size: bytes of the saved ``.onnx`` file.

A "targets" section then checks this run's numbers: (a) qconv accuracy >= onnxruntime's on
every digits model (same calibration method); (b) qconv latency <= 1.0x onnxruntime's at 1
thread on every model (same calibration method); (c) qconv at least 1.5x faster than float on
the 224x224 ResNet-18 at 1 thread. The exit code is 0 whatever the outcome: this is a benchmark.

Usage: ``python bench/compare.py [--models NAME ...] [--quick] [--out PATH]``.
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

import numpy as np
import onnx
import onnxruntime

import qconv
from qconv.data import input_specs, open_reader
from qconv.evaluate import first_sample
from qconv.runtime import create_session, session_options

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as ``python bench/compare.py``
    sys.path.insert(0, str(ROOT))

from bench.tables import print_aligned  # noqa: E402

BENCH = ROOT / "bench"
WORK = BENCH / "work"
SAMPLES = ROOT / "sample_models"
LARGE = SAMPLES / "large"
CONVERTER = BENCH / "convert_one.py"

SMALL_MODELS = ("digits_cnn", "digits_mobilenet", "digits_resnet")
LARGE_MODELS = ("resnet18", "mobilenetv2")
THREADS = (1, 2)
SMALL_RUNS, LARGE_RUNS, QUICK_RUNS, MAX_RUNS = 100, 40, 20, 2000
SMALL_BUDGET_S, LARGE_BUDGET_S = 3.0, 20.0
WARMUP, BOOTSTRAP = 5, 1000
EVAL_BATCH = 64
REFERENCE = "ort-minmax"
SPEEDUP_MODEL, SPEEDUP_TARGET = "resnet18", 1.5


@dataclass(frozen=True)
class Variant:
    """One way of producing the model that is measured (``tool`` None: the float original)."""

    key: str
    tool: str | None = None
    method: str | None = None


VARIANTS = (
    Variant("float"),
    Variant("qconv-minmax", "qconv", "minmax"),
    Variant("qconv-entropy", "qconv", "entropy"),
    Variant("ort-minmax", "ort", "minmax"),
    Variant("ort-entropy", "ort", "entropy"),
)


@dataclass(frozen=True)
class BenchModel:
    """A float model with its calibration data and, for the digits models, evaluation data."""

    name: str
    path: Path
    calib: Path
    eval: Path | None
    large: bool

    @property
    def min_runs(self) -> int:
        return LARGE_RUNS if self.large else SMALL_RUNS

    @property
    def budget_seconds(self) -> float:
        return LARGE_BUDGET_S if self.large else SMALL_BUDGET_S


@dataclass
class Row:
    """Everything measured for one (model, variant)."""

    model: str
    variant: str
    path: str
    float_sha256: str = ""
    accuracy: float | None = None
    top1_agreement: float | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    latency_p90_ms: dict[str, float] = field(default_factory=dict)
    latency_runs: int = 0
    ratio_vs_ort_minmax: dict[str, float] = field(default_factory=dict)
    speedup_vs_float: dict[str, float] = field(default_factory=dict)
    speedup_vs_float_ci95: dict[str, list[float]] = field(default_factory=dict)
    ratio_vs_ort_same_method: dict[str, float] = field(default_factory=dict)
    ratio_vs_ort_same_method_ci95: dict[str, list[float]] = field(default_factory=dict)
    size_bytes: int | None = None
    size_ratio: float | None = None
    convert_seconds: float | None = None
    convert_preprocess_seconds: float | None = None
    convert_peak_rss_mb: float | None = None
    convert_import_rss_mb: float | None = None
    notes: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass(frozen=True)
class Target:
    """One PASS/MISS check (SKIP when a number it needs is missing)."""

    name: str
    model: str
    status: str
    detail: str


# ---------------------------------------------------------------------------- models


def discover_models(names: Sequence[str] | None, quick: bool) -> tuple[list[BenchModel], list[str]]:
    """The models to run, in table order, and notes about any that are skipped."""
    wanted = list(names) if names else [*SMALL_MODELS, *([] if quick else LARGE_MODELS)]
    unknown = [n for n in wanted if n not in (*SMALL_MODELS, *LARGE_MODELS)]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; choose from {SMALL_MODELS + LARGE_MODELS}")
    models, notes = [], []
    for name in wanted:
        if name in SMALL_MODELS:
            models.append(
                BenchModel(
                    name,
                    SAMPLES / f"{name}.onnx",
                    SAMPLES / f"{name}_calib.npz",
                    SAMPLES / f"{name}_eval.npz",
                    large=False,
                )
            )
            continue
        path, calib = LARGE / f"{name}.onnx", LARGE / f"{name}_calib.npz"
        if not (path.is_file() and calib.is_file()):
            notes.append(
                f"{name}: skipped, {_shown(path)} or its calibration data is missing "
                "(build with: sample_models/build.py --large)"
            )
            continue
        models.append(BenchModel(name, path, calib, None, large=True))
    return models, notes


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it is inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


# ---------------------------------------------------------------------------- conversion


def convert(model: BenchModel, variant: Variant) -> dict[str, Any]:
    """Run one conversion in a child process and return its JSON report (plus ``output``)."""
    output = WORK / f"{model.name}__{variant.key}.onnx"
    command = [
        sys.executable,
        str(CONVERTER),
        f"--tool={variant.tool}",
        f"--method={variant.method}",
        str(model.path),
        str(model.calib),
        str(output),
    ]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    report = _last_json_line(done.stdout) or {
        "ok": False,
        "error": f"converter exited {done.returncode}: {_tail(done.stderr)}",
        "notes": [],
    }
    if not report.get("ok") and "error" in report and done.stderr:
        report["error"] += f" | stderr: {_tail(done.stderr)}"
    report["process_seconds"] = time.perf_counter() - started
    report["output"] = output
    return report


def _last_json_line(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


def _tail(text: str, lines: int = 3) -> str:
    return " / ".join(line.strip() for line in text.strip().splitlines()[-lines:])


# ---------------------------------------------------------------------------- accuracy


def predictions(model: onnx.ModelProto, bench_model: BenchModel) -> tuple[np.ndarray, np.ndarray]:
    """Arg-max class of ``model`` on every evaluation sample, and the labels."""
    assert bench_model.eval is not None
    reader = open_reader(
        bench_model.eval, input_specs(model), batch_size=EVAL_BATCH, labels="label"
    )
    session = create_session(model)
    output = session.get_outputs()[0].name
    classes = [session.run([output], feed)[0].argmax(axis=-1).ravel() for feed in reader]
    labels = reader.labels()
    assert labels is not None
    return np.concatenate(classes), labels


def fill_accuracy(
    rows: dict[str, Row], protos: dict[str, onnx.ModelProto], model: BenchModel
) -> None:
    """Label accuracy and top-1 agreement with float, for every variant that was built."""
    reference, labels = predictions(protos["float"], model)
    for key, proto in protos.items():
        classes = reference if key == "float" else predictions(proto, model)[0]
        rows[key].accuracy = float(np.mean(classes == labels))
        rows[key].top1_agreement = None if key == "float" else float(np.mean(classes == reference))


# ---------------------------------------------------------------------------- latency


def latency_feed(model: BenchModel, proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    """A batch-1 feed: the first evaluation sample (calibration sample for large models)."""
    specs = input_specs(proto)
    return first_sample(open_reader(model.eval or model.calib, specs, batch_size=1), specs)


def latency_session(model: onnx.ModelProto, threads: int) -> onnxruntime.InferenceSession:
    """qconv's session options at ``threads``, with idle intra-op threads not spinning.

    Several sessions are timed in turn: with spinning on, the idle worker threads of the
    session that just ran keep spinning and steal cores from the next one (at 2 threads this
    made float ResNet-18 look 4x slower than it is).
    """
    options = session_options(threads)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def interleaved_times(
    protos: dict[str, onnx.ModelProto],
    feed: dict[str, np.ndarray],
    threads: int,
    runs: int,
    warmup: int = WARMUP,
) -> dict[str, np.ndarray]:
    """Milliseconds of every run of every variant: each round runs every variant once.

    Each round uses a fresh (seeded) random order, so no variant always runs right after the
    same other one: with a fixed order, even a rotated one, the variant that followed the
    float model was a few percent slower on the digits models.
    """
    sessions = {key: latency_session(proto, threads) for key, proto in protos.items()}
    for session in sessions.values():
        for _ in range(warmup):
            session.run(None, feed)
    keys = list(sessions)
    times = {key: np.empty(runs) for key in keys}
    rng = np.random.default_rng(threads)
    for index in range(runs):
        for position in rng.permutation(len(keys)):
            key = keys[position]
            started = time.perf_counter()
            sessions[key].run(None, feed)
            times[key][index] = (time.perf_counter() - started) * 1000
    return times


def plan_runs(
    protos: dict[str, onnx.ModelProto], feed: dict[str, np.ndarray], model: BenchModel
) -> int:
    """Rounds that fill the model's time budget at 1 thread, within [min_runs, MAX_RUNS]."""
    pilot = interleaved_times(protos, feed, threads=1, runs=5, warmup=2)
    round_seconds = sum(float(np.median(values)) for values in pilot.values()) / 1000
    wanted = int(model.budget_seconds / max(round_seconds, 1e-6))
    return max(model.min_runs, min(MAX_RUNS, wanted))


def ratio_ci(numerator: np.ndarray, denominator: np.ndarray) -> list[float]:
    """95% bootstrap interval of median(numerator) / median(denominator), rounds kept paired."""
    rng = np.random.default_rng(0)
    index = rng.integers(0, len(numerator), size=(BOOTSTRAP, len(numerator)))
    ratios = np.median(numerator[index], axis=1) / np.median(denominator[index], axis=1)
    low, high = np.percentile(ratios, [2.5, 97.5])
    return [float(low), float(high)]


def fill_latency(
    rows: dict[str, Row], protos: dict[str, onnx.ModelProto], feed: dict[str, np.ndarray], runs: int
) -> None:
    """Interleaved batch-1 latency of every variant at each thread count, and the ratios."""
    for threads in THREADS:
        _log(f"    timing {len(protos)} variants, {threads} thread(s), {runs} rounds")
        times = interleaved_times(protos, feed, threads, runs)
        for key, values in times.items():
            _fill_latency_row(rows[key], str(threads), values, times)


def _fill_latency_row(
    row: Row, threads: str, values: np.ndarray, times: dict[str, np.ndarray]
) -> None:
    median = float(np.median(values))
    row.latency_ms[threads] = median
    row.latency_p90_ms[threads] = float(np.percentile(values, 90))
    row.latency_runs = len(values)
    if REFERENCE in times:
        row.ratio_vs_ort_minmax[threads] = median / float(np.median(times[REFERENCE]))
    if "float" in times:
        row.speedup_vs_float[threads] = float(np.median(times["float"])) / median
        low, high = ratio_ci(times["float"], values)
        row.speedup_vs_float_ci95[threads] = [low, high]
    ort_key = row.variant.replace("qconv-", "ort-")
    if row.variant.startswith("qconv-") and ort_key in times:
        row.ratio_vs_ort_same_method[threads] = median / float(np.median(times[ort_key]))
        row.ratio_vs_ort_same_method_ci95[threads] = ratio_ci(values, times[ort_key])


# ---------------------------------------------------------------------------- one model


def bench_model(model: BenchModel, runs: int | None) -> list[Row]:
    """Convert, evaluate and time every variant of ``model`` (``runs`` None: plan them)."""
    _log(f"[{model.name}]")
    rows: dict[str, Row] = {}
    protos: dict[str, onnx.ModelProto] = {}
    float_size = model.path.stat().st_size
    digest = hashlib.sha256(model.path.read_bytes()).hexdigest()[:16]
    for variant in VARIANTS:
        row = Row(model.name, variant.key, _shown(model.path), digest)
        rows[variant.key] = row
        if variant.tool is None:
            row.size_bytes = float_size
            protos[variant.key] = onnx.load(str(model.path))
            continue
        _log(f"    converting {variant.key} ...")
        _record_conversion(row, convert(model, variant))
        if row.error is None:
            protos[variant.key] = onnx.load(str(ROOT / row.path))
            row.size_bytes = (ROOT / row.path).stat().st_size
    for row in rows.values():
        if row.size_bytes is not None:
            row.size_ratio = row.size_bytes / float_size
    if model.eval is not None:
        _log("    evaluating accuracy")
        fill_accuracy(rows, protos, model)
    feed = latency_feed(model, protos["float"])
    fill_latency(rows, protos, feed, runs or plan_runs(protos, feed, model))
    return list(rows.values())


def _record_conversion(row: Row, report: dict[str, Any]) -> None:
    row.path = _shown(Path(report["output"]))
    row.convert_seconds = report.get("seconds")
    row.convert_preprocess_seconds = report.get("preprocess_seconds")
    row.convert_peak_rss_mb = report.get("peak_rss_mb")
    row.convert_import_rss_mb = report.get("import_rss_mb")
    row.notes.extend(report.get("notes", []))
    if not report.get("ok"):
        row.error = report.get("error", "conversion failed")
        _log(f"      FAILED: {row.error}")
    else:
        _log(f"      {row.convert_seconds:.2f} s, peak {row.convert_peak_rss_mb:.0f} MB")


# ---------------------------------------------------------------------------- targets


def check_targets(rows: list[Row]) -> list[Target]:
    """The (a), (b) and (c) checks, computed from this run's rows."""
    table = {(r.model, r.variant): r for r in rows}
    models = list(dict.fromkeys(r.model for r in rows))
    targets = []
    for model in models:
        for method in ("minmax", "entropy"):
            ours, theirs = table[(model, f"qconv-{method}")], table[(model, f"ort-{method}")]
            if model not in LARGE_MODELS:
                targets.append(_accuracy_target(model, method, ours, theirs))
            targets.append(_latency_target(model, method, ours, theirs))
    for method in ("minmax", "entropy"):
        if (SPEEDUP_MODEL, "float") in table:
            ours = table[(SPEEDUP_MODEL, f"qconv-{method}")]
            targets.append(_speedup_target(method, ours, table[(SPEEDUP_MODEL, "float")]))
    return targets


def _accuracy_target(model: str, method: str, ours: Row, theirs: Row) -> Target:
    name = f"(a) accuracy qconv >= ort [{method}]"
    if ours.accuracy is None or theirs.accuracy is None:
        return Target(name, model, "SKIP", _missing(ours, theirs))
    status = "PASS" if ours.accuracy >= theirs.accuracy else "MISS"
    detail = f"qconv {ours.accuracy:.4f} vs ort {theirs.accuracy:.4f}"
    return Target(name, model, status, detail)


def _latency_target(model: str, method: str, ours: Row, theirs: Row) -> Target:
    name = f"(b) latency qconv <= 1.0x ort, 1 thread [{method}]"
    if "1" not in ours.latency_ms or "1" not in theirs.latency_ms:
        return Target(name, model, "SKIP", _missing(ours, theirs))
    ratio = ours.latency_ms["1"] / theirs.latency_ms["1"]
    status = "PASS" if ratio <= 1.0 else "MISS"
    interval = _interval(ours.ratio_vs_ort_same_method_ci95.get("1"), 1.0, "x")
    detail = (
        f"qconv {ours.latency_ms['1']:.3f} ms vs ort {theirs.latency_ms['1']:.3f} ms "
        f"= {ratio:.3f}x{interval}"
    )
    return Target(name, model, status, detail)


def _speedup_target(method: str, ours: Row, reference: Row) -> Target:
    name = f"(c) qconv >= {SPEEDUP_TARGET}x faster than float, 1 thread [{method}]"
    if "1" not in ours.latency_ms or "1" not in reference.latency_ms:
        return Target(name, SPEEDUP_MODEL, "SKIP", _missing(ours, reference))
    speedup = reference.latency_ms["1"] / ours.latency_ms["1"]
    status = "PASS" if speedup >= SPEEDUP_TARGET else "MISS"
    interval = _interval(ours.speedup_vs_float_ci95.get("1"), SPEEDUP_TARGET, "x", "{:.2f}")
    detail = (
        f"float {reference.latency_ms['1']:.3f} ms / qconv {ours.latency_ms['1']:.3f} ms "
        f"= {speedup:.2f}x{interval}"
    )
    return Target(name, SPEEDUP_MODEL, status, detail)


def _interval(bounds: list[float] | None, threshold: float, unit: str, spec: str = "{:.3f}") -> str:
    """' (95% CI lo-hi)', flagged when the interval contains the target's threshold."""
    if not bounds:
        return ""
    low, high = bounds
    noise = ", within noise of the target" if low <= threshold <= high else ""
    return f" (95% CI {spec.format(low)}-{spec.format(high)}{unit}{noise})"


def _missing(*rows: Row) -> str:
    failed = [f"{r.variant}: {r.error}" for r in rows if r.error]
    return "; ".join(failed) or "a number is missing"


# ---------------------------------------------------------------------------- output

COLUMNS = (
    "model",
    "variant",
    "acc",
    "agree",
    "ms 1t",
    "ms 2t",
    "qconv/ort 1t",
    "speed-up 1t",
    "size bytes",
    "size ratio",
    "convert s",
    "convert MB",
)


def table_cells(row: Row) -> list[str]:
    """The printed cells of one row ("-" where a number does not exist)."""
    return [
        row.model,
        row.variant + (" (failed)" if row.error else ""),
        _number(row.accuracy, "{:.4f}"),
        _number(row.top1_agreement, "{:.4f}"),
        _number(row.latency_ms.get("1"), "{:.3f}"),
        _number(row.latency_ms.get("2"), "{:.3f}"),
        _number(row.ratio_vs_ort_minmax.get("1"), "{:.3f}x"),
        _number(row.speedup_vs_float.get("1"), "{:.2f}x"),
        _number(row.size_bytes, "{:,}"),
        _number(row.size_ratio, "{:.3f}"),
        _number(row.convert_seconds, "{:.2f}"),
        _number(row.convert_peak_rss_mb, "{:.0f}"),
    ]


def _number(value: float | None, spec: str) -> str:
    return "-" if value is None else spec.format(value)


def print_table(rows: list[Row]) -> None:
    """The results table: a rich table on a terminal, aligned plain text otherwise."""
    cells = [table_cells(row) for row in rows]
    if sys.stdout.isatty():
        _print_rich(cells, rows)
    else:
        _print_plain(cells, rows)


def _print_rich(cells: list[list[str]], rows: list[Row]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="qconv vs onnxruntime quantizer vs float")
    for index, column in enumerate(COLUMNS):
        table.add_column(column, justify="left" if index < 2 else "right", no_wrap=True)
    for index, (line, row) in enumerate(zip(cells, rows, strict=True)):
        last_of_model = index + 1 == len(rows) or rows[index + 1].model != row.model
        table.add_row(*line, end_section=last_of_model)
    Console().print(table)


def _print_plain(cells: list[list[str]], rows: list[Row]) -> None:
    print_aligned(COLUMNS, cells, {0, 1}, [row.model for row in rows])


FOOTNOTES = (
    "acc: label accuracy on the whole held-out eval set; agree: top-1 agreement with float.",
    "acc/agree are '-' for resnet18 and mobilenetv2: random weights, so accuracy means nothing.",
    "ms: median batch-1 latency; the variants of a model run in turn, round after round, in one",
    "    process (random order each round, intra-op thread spinning off).",
    f"qconv/ort 1t: latency / {REFERENCE} latency; speed-up 1t: float latency / latency.",
    "convert s / MB: wall time and peak RSS of each conversion, run alone in a child process;",
    "    ort's include quant_pre_process; MB includes the imports, s does not.",
)


def print_footnotes(rows: list[Row], notes: list[str]) -> None:
    for text in FOOTNOTES:
        print(f"  * {text}")
    for row in rows:
        for note in row.notes:
            if not note.startswith("calibrated on"):
                print(f"  ! {row.model} {row.variant}: {note}")
        if row.error:
            print(f"  ! {row.model} {row.variant} failed: {row.error}")
    for note in notes:
        print(f"  ! {note}")


def print_targets(targets: list[Target]) -> None:
    print()
    print("Targets")
    for target in targets:
        print(f"  {target.status:4}  {target.name}  {target.model}: {target.detail}")
    counts = {s: sum(t.status == s for t in targets) for s in ("PASS", "MISS", "SKIP")}
    print("  " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))


def machine_info() -> dict[str, Any]:
    """CPU, core count, library versions and the date of this run."""
    cpu = platform.processor() or platform.machine()
    try:
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                cpu = text.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "onnx": onnx.__version__,
        "numpy": np.__version__,
        "qconv": qconv.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }


def qconv_source() -> dict[str, Any]:
    """Which qconv code produced the numbers: git HEAD, uncommitted files, a digest of qconv/."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "qconv").rglob("*.py")):
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    info: dict[str, Any] = {"sha256": digest.hexdigest()[:16]}
    try:
        head = _git("rev-parse", "HEAD").strip()
        changed = _git("status", "--porcelain", "--", "qconv").splitlines()
        info.update(git_head=head, uncommitted=[line[3:] for line in changed])
    except (OSError, subprocess.SubprocessError):
        info["git_head"] = None
    return info


def _git(*args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=30
    )
    return done.stdout


def write_results(
    path: Path, rows: list[Row], targets: list[Target], notes: list[str], run: dict[str, Any]
) -> None:
    document = {
        "machine": machine_info(),
        "run": {
            "threads": list(THREADS),
            "calibration_batch_size": 8,
            "reference_variant": REFERENCE,
            **run,
        },
        "rows": [asdict(row) for row in rows],
        "targets": [asdict(target) for target in targets],
        "notes": notes,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------- main


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        nargs="+",
        metavar="NAME",
        help=f"restrict to these of {SMALL_MODELS + LARGE_MODELS}",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_RUNS} latency rounds, no pilot; large models only if named",
    )
    parser.add_argument("--out", type=Path, default=BENCH / "results.json", help="results JSON")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    run: dict[str, Any] = {
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "qconv_source": qconv_source(),
    }
    models, notes = discover_models(args.models, args.quick)
    for note in notes:
        _log(f"note: {note}")
    WORK.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    for model in models:
        rows.extend(bench_model(model, QUICK_RUNS if args.quick else None))
    targets = check_targets(rows)
    source_at_end = qconv_source()
    if source_at_end["sha256"] != run["qconv_source"]["sha256"]:
        run["qconv_source_at_end"] = source_at_end
        notes.append("qconv/ changed while the benchmark ran: rows may mix qconv versions")
    run["total_seconds"] = round(time.perf_counter() - started, 1)
    print_table(rows)
    print_footnotes(rows, notes)
    print_targets(targets)
    write_results(args.out, rows, targets, notes, run)
    print(f"\nTotal {run['total_seconds']:.0f} s; results written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
