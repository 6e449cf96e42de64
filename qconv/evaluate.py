"""Float vs int8: output fidelity, top-1 agreement, label accuracy and latency. Returns data.

Fidelity is accumulated batch by batch (sums of squares and products), so evaluation memory
does not grow with the data set either.
"""

from __future__ import annotations

import bisect
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from qconv.data import DataReader, Feed, InputSpec
from qconv.runtime import create_session

ProgressCallback = Callable[[int, int], None]


@dataclass
class OutputFidelity:
    """How closely one int8 output follows the float output.

    Attributes:
        name: Output name.
        cosine: Cosine similarity of the flattened outputs (None for integer or boolean
            outputs: class indices and masks have no meaningful cosine).
        sqnr_db: Signal-to-quantization-noise ratio in dB (None as for ``cosine``).
        max_abs_error: Largest absolute difference.
        exact_match: Share of elements equal to float's (integer and boolean outputs only).
    """

    name: str
    cosine: float | None
    sqnr_db: float | None
    max_abs_error: float
    exact_match: float | None = None


@dataclass
class _Accumulator:
    signal: float = 0.0
    noise: float = 0.0
    dot: float = 0.0
    approx: float = 0.0
    max_abs: float = 0.0
    discrete: bool = False
    equal: int = 0
    count: int = 0

    def add(self, reference: np.ndarray, approx: np.ndarray) -> None:
        self.discrete = reference.dtype.kind in "biuOSU"  # strings: equality only
        self.equal += int(np.count_nonzero(reference == approx))
        self.count += reference.size
        if reference.dtype.kind in "OSU":
            return
        ref = reference.astype(np.float64).ravel()
        app = approx.astype(np.float64).ravel()
        diff = ref - app
        self.signal += float(ref @ ref)
        self.noise += float(diff @ diff)
        self.dot += float(ref @ app)
        self.approx += float(app @ app)
        self.max_abs = max(self.max_abs, float(np.abs(diff).max(initial=0.0)))

    def result(self, name: str) -> OutputFidelity:
        if self.discrete:
            match = self.equal / self.count if self.count else 1.0
            return OutputFidelity(name, None, None, self.max_abs, match)
        denominator = np.sqrt(self.signal * self.approx)
        cosine = self.dot / denominator if denominator > 0 else float(self.signal == self.approx)
        if self.noise == 0:
            sqnr = float("inf")
        elif self.signal == 0:
            sqnr = float("-inf")
        else:
            sqnr = 10 * float(np.log10(self.signal / self.noise))
        return OutputFidelity(name, float(cosine), sqnr, self.max_abs)


@dataclass
class Evaluation:
    """Float and int8 models compared on the same data.

    Attributes:
        samples: Samples evaluated.
        outputs: Fidelity per model output.
        top1_agreement: Share of samples whose arg-max class agrees (classifier outputs only).
        float_accuracy: Label accuracy of the float model, when labels are given.
        int8_accuracy: Label accuracy of the int8 model, when labels are given.
    """

    samples: int
    outputs: list[OutputFidelity] = field(default_factory=list)
    top1_agreement: float | None = None
    float_accuracy: float | None = None
    int8_accuracy: float | None = None

    @property
    def accuracy_drop(self) -> float | None:
        if self.float_accuracy is None or self.int8_accuracy is None:
            return None
        return self.float_accuracy - self.int8_accuracy


def evaluate(
    float_model: onnx.ModelProto | Path,
    int8_model: onnx.ModelProto | Path,
    reader: DataReader,
    *,
    threads: int | None = None,
    on_batch: ProgressCallback | None = None,
) -> Evaluation:
    """Run both models (protobufs or files) over ``reader`` and compare their outputs."""
    float_session = create_session(float_model, threads=threads)
    int8_session = create_session(int8_model, threads=threads)
    names = [o.name for o in float_session.get_outputs()]
    accumulators = {name: _Accumulator() for name in names}
    float_top1: list[np.ndarray] = []
    int8_top1: list[np.ndarray] = []
    total = reader.num_batches
    for index, feed in enumerate(reader):
        reference = float_session.run(names, feed)
        approx = int8_session.run(names, feed)
        for name, ref, app in zip(names, reference, approx, strict=True):
            accumulators[name].add(ref, app)
        if _is_classifier(reference[0]):
            float_top1.append(reference[0].argmax(axis=-1).ravel())
            int8_top1.append(approx[0].argmax(axis=-1).ravel())
        if on_batch:
            on_batch(index + 1, total)
    evaluation = Evaluation(
        samples=reader.num_samples, outputs=[accumulators[n].result(n) for n in names]
    )
    _classification(evaluation, float_top1, int8_top1, reader.labels())
    return evaluation


def _is_classifier(output: np.ndarray) -> bool:
    return output.ndim == 2 and output.shape[-1] > 1


def _classification(
    evaluation: Evaluation,
    float_top1: list[np.ndarray],
    int8_top1: list[np.ndarray],
    labels: np.ndarray | None,
) -> None:
    if not float_top1:
        return
    f, q = np.concatenate(float_top1), np.concatenate(int8_top1)
    evaluation.top1_agreement = float(np.mean(f == q))
    if labels is not None and len(labels) == len(f):
        evaluation.float_accuracy = float(np.mean(f == labels))
        evaluation.int8_accuracy = float(np.mean(q == labels))


@dataclass(frozen=True)
class Latency:
    """Batch-1 latency of one model, in milliseconds.

    Attributes:
        median_ms: Median over the timed runs.
        p90_ms: 90th percentile over the timed runs.
        runs: Number of timed runs.
    """

    median_ms: float
    p90_ms: float
    runs: int


def measure_latency(
    models: dict[str, onnx.ModelProto | Path],
    feed: Feed,
    *,
    threads: int = 1,
    warmup: int = 5,
    runs: int = 50,
    on_run: ProgressCallback | None = None,
) -> dict[str, Latency]:
    """Time each model on ``feed``, interleaving runs so machine noise hits them alike.

    Each round runs every model once in a freshly shuffled (seeded) order: a fixed order makes
    the model that always follows another read a few percent slower.
    """
    sessions = {
        key: create_session(model, threads=threads, spin=False) for key, model in models.items()
    }
    for session in sessions.values():
        for _ in range(warmup):
            session.run(None, feed)
    times: dict[str, list[float]] = {key: [] for key in sessions}
    order = list(sessions)
    shuffler = random.Random(0)
    for run in range(runs):
        shuffler.shuffle(order)
        for key in order:
            session = sessions[key]
            started = time.perf_counter()
            session.run(None, feed)
            times[key].append((time.perf_counter() - started) * 1000)
        if on_run:
            on_run(run + 1, runs)
    return {key: _latency(values) for key, values in times.items()}


def _latency(values: list[float]) -> Latency:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return Latency(statistics.median(ordered), p90, len(ordered))


def first_sample(reader: DataReader, specs: list[InputSpec]) -> Feed:
    """A batch-1 feed from the first batch of ``reader`` (inputs with a fixed first axis whole)."""
    feed = next(iter(reader))
    dynamic = {s.name for s in specs if s.shape and not isinstance(s.shape[0], int)}
    return {
        name: np.ascontiguousarray(array[:1]) if name in dynamic and array.ndim else array
        for name, array in feed.items()
    }


def tensor_fidelity(
    float_model: onnx.ModelProto,
    int8_model: onnx.ModelProto,
    pairs: dict[str, str],
    reader: DataReader,
    *,
    threads: int | None = None,
    max_batches: int = 16,
    max_memory: int | None = None,
) -> dict[str, OutputFidelity]:
    """SQNR of each int8-model tensor against its float counterpart (``pairs``: float -> int8).

    The int8 tensors carry the error of every quantized layer before them, so the worst ones
    show where accuracy is lost. Both models expose their tensors at once, so tensors are
    measured in groups that keep the exposed bytes under ``max_memory`` (the calibration
    default when None), one pass over the data per group.
    """
    from qconv.calibrate.collect import DEFAULT_EXPOSED_MEMORY, group_tensors, tensor_bytes

    if not pairs:
        return {}
    budget = (max_memory or DEFAULT_EXPOSED_MEMORY) // 2  # two sessions hold their outputs
    sizes = tensor_bytes(float_model, next(iter(reader)))
    results: dict[str, OutputFidelity] = {}
    for group in group_tensors(list(pairs), sizes, budget):
        subset = {name: pairs[name] for name in group}
        results.update(
            _group_fidelity(float_model, int8_model, subset, reader, threads, max_batches)
        )
    return results


def _group_fidelity(
    float_model: onnx.ModelProto,
    int8_model: onnx.ModelProto,
    pairs: dict[str, str],
    reader: DataReader,
    threads: int | None,
    max_batches: int,
) -> dict[str, OutputFidelity]:
    from qconv.calibrate.collect import exposed_session

    float_names = list(pairs)
    float_session, float_outputs = exposed_session(float_model, float_names, threads)
    int8_session, int8_outputs = exposed_session(int8_model, list(pairs.values()), threads)
    accumulators = {name: _Accumulator() for name in float_names}
    for index, feed in enumerate(reader):
        if index >= max_batches:
            break
        reference = float_session.run(float_outputs, feed)
        approx = int8_session.run(int8_outputs, feed)
        for name, ref, app in zip(float_names, reference, approx, strict=True):
            accumulators[name].add(ref, app)
    return {name: acc.result(name) for name, acc in accumulators.items()}


def profile_ops(
    model: onnx.ModelProto | Path, feed: Feed, *, threads: int = 1, runs: int = 21
) -> dict[str, float]:
    """Milliseconds per run spent in each op type, from onnxruntime's profiler.

    The op types are the kernels onnxruntime actually runs after its graph optimizations
    (QLinearConv, QGemm, ...), so a user sees where int8 time goes. Each op type's time is its
    median over the runs after the first (a warm-up), so one run slowed by the machine does not
    inflate it; the profiler's own per-kernel overhead still makes the sum exceed the
    whole-model latency of small models.
    """
    import json
    import tempfile

    with tempfile.TemporaryDirectory(prefix="qconv-profile-") as folder:
        session = create_session(
            model, threads=threads, spin=False, profile_prefix=str(Path(folder) / "p")
        )
        for _ in range(runs):
            session.run(None, feed)
        trace = json.loads(Path(session.end_profiling()).read_text())
    per_run = _kernel_times_per_run(trace)[1:]
    ops = {op for times in per_run for op in times}
    medians = {op: float(np.median([times.get(op, 0.0) for times in per_run])) for op in ops}
    return dict(sorted(medians.items(), key=lambda item: -item[1]))


def _kernel_times_per_run(trace: list[dict]) -> list[dict[str, float]]:
    """Milliseconds per op type within each ``model_run`` span of a profiler trace."""
    spans = sorted(
        (e["ts"], e["ts"] + e["dur"])
        for e in trace
        if e.get("cat") == "Session" and e.get("name") == "model_run"
    )
    runs: list[dict[str, float]] = [{} for _ in spans]
    for event in trace:
        if event.get("cat") != "Node" or not str(event.get("name", "")).endswith("_kernel_time"):
            continue
        index = bisect.bisect_right([start for start, _ in spans], event["ts"]) - 1
        if index < 0 or event["ts"] > spans[index][1]:
            continue
        op = event.get("args", {}).get("op_name", "?")
        runs[index][op] = runs[index].get(op, 0.0) + event.get("dur", 0) / 1000.0
    return runs
