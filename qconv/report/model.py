"""The report data object: everything a run decided and measured, with no formatting.

Renderers (terminal, JSON, Markdown) read it; nothing in here prints. The JSON form is the
dataclasses below with ``schema_version`` on top; bump the version on incompatible changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SCHEMA_VERSION = 1


@dataclass
class ModelSummary:
    """The input and output models.

    Attributes:
        input_path: The float model file.
        output_path: The int8 model file (None when nothing was written).
        float_bytes: Size of the float model file.
        int8_bytes: Size of the int8 model file.
        opset: Default-domain opset.
        float_ops: Op histogram of the float model.
        int8_ops: Op histogram of the int8 model.
    """

    input_path: str
    output_path: str | None
    float_bytes: int
    int8_bytes: int
    opset: int
    float_ops: dict[str, int]
    int8_ops: dict[str, int]

    @property
    def size_ratio(self) -> float:
        return self.int8_bytes / self.float_bytes if self.float_bytes else 0.0


@dataclass
class CalibrationSummary:
    """How ranges were obtained."""

    method: str
    samples: int
    seconds: float
    data: str
    tensors: int
    passes: int = 1
    synthetic: bool = False


@dataclass
class NodeEntry:
    """One node's fate; ``reason`` is a stable code (see :class:`qconv.decisions.Reason`)."""

    node: str
    op_type: str
    quantized: bool
    reason: str
    detail: str


@dataclass
class RewriteEntry:
    """A float-graph rewrite made or refused."""

    pass_name: str
    nodes: list[str]
    applied: bool
    detail: str


@dataclass
class HistogramData:
    """A coarse copy of a calibration histogram for charts: ``counts[i]`` values fell in
    ``[edges[i], edges[i + 1])``."""

    edges: list[float]
    counts: list[int]


@dataclass
class TensorEntry:
    """One calibrated activation tensor.

    Attributes:
        tensor: Name in the float model.
        observed: Observed (min, max) on the calibration data.
        chosen: The range used.
        scale: Quantization scale.
        zero_point: Quantization zero point.
        method: The range method that chose the range (``--calibration auto`` picks per tensor).
        sqnr_db: SQNR of the int8 model's tensor against the float one (None if not measured).
        histogram: The calibration histogram, kept for the worst tensors only.
    """

    tensor: str
    observed: tuple[float, float]
    chosen: tuple[float, float]
    scale: float
    zero_point: int
    method: str = ""
    sqnr_db: float | None = None
    histogram: HistogramData | None = None


@dataclass
class OutputEntry:
    """Fidelity of one model output: cosine and SQNR for float outputs, the share of equal
    elements (``exact_match``) for integer and boolean ones."""

    name: str
    cosine: float | None
    sqnr_db: float | None
    max_abs_error: float
    exact_match: float | None = None


def output_table(outputs: list[OutputEntry]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the output-fidelity table every renderer shows; the exact-match
    column only when an output is integer or boolean."""
    header = ["output", "cosine", "SQNR dB", "max abs error"]
    rows = [
        [o.name, _fixed(o.cosine, ".5f"), _fixed(o.sqnr_db, ".1f"), f"{o.max_abs_error:.4g}"]
        for o in outputs
    ]
    if any(o.exact_match is not None for o in outputs):
        header.append("exact match")
        for row, o in zip(rows, outputs, strict=True):
            row.append(_fixed(o.exact_match, ".2%"))
    return header, rows


def _fixed(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


@dataclass
class EvaluationSummary:
    """Float vs int8 on held-out data (or a slice of the calibration data)."""

    data: str
    samples: int
    outputs: list[OutputEntry]
    top1_agreement: float | None
    float_accuracy: float | None
    int8_accuracy: float | None

    def worst_float_output(self) -> OutputEntry | None:
        """The float output with the lowest SQNR (integer and boolean outputs have none)."""
        measured = [o for o in self.outputs if o.sqnr_db is not None]
        return min(measured, key=lambda o: o.sqnr_db) if measured else None


@dataclass
class LatencySummary:
    """Batch-1 latency of both models measured in the same process, interleaved, the time per
    op type from onnxruntime's profiler (``*_ops_ms``, milliseconds per run) and the shapes of
    the feed they were timed on (``inputs``; samples may differ in size)."""

    threads: int
    runs: int
    float_median_ms: float
    float_p90_ms: float
    int8_median_ms: float
    int8_p90_ms: float
    float_ops_ms: dict[str, float] = field(default_factory=dict)
    int8_ops_ms: dict[str, float] = field(default_factory=dict)
    inputs: dict[str, list[int]] = field(default_factory=dict)  # the timed feed's shapes

    @property
    def speedup(self) -> float:
        return self.float_median_ms / self.int8_median_ms if self.int8_median_ms else 0.0

    def feed(self) -> str:
        """``batch 1`` and, when known, the shape of each input it was timed on."""
        shapes = ", ".join(
            f"{name} {'x'.join(str(d) for d in shape) or 'scalar'}"
            for name, shape in self.inputs.items()
        )
        return f"batch 1: {shapes}" if shapes else "batch 1"

    def comparison(self, times: str = "x") -> str:
        """``1.54x faster`` or ``1.25x slower`` (not ``0.80x faster``)."""
        if f"{self.speedup:.2f}" == "1.00":
            return f"1.00{times}, as fast"
        if self.speedup >= 1 or not self.speedup:
            return f"{self.speedup:.2f}{times} faster"
        return f"{1 / self.speedup:.2f}{times} slower"


@dataclass
class SensitivityEntry:
    """One layer's cost in output SQNR (see :mod:`qconv.analyze`)."""

    node: str
    op_type: str
    alone_sqnr_db: float
    without_sqnr_db: float
    gain_db: float


@dataclass
class SensitivitySummary:
    """Per-layer sensitivity, most sensitive first.

    Attributes:
        full_sqnr_db: Output SQNR of the fully quantized model (fake-quantized in float).
        samples: Evaluation samples used.
        seconds: Wall time of the analysis.
        layers: One entry per quantized layer, largest ``gain_db`` first.
    """

    full_sqnr_db: float
    samples: int
    seconds: float
    layers: list[SensitivityEntry]


@dataclass
class EnvironmentSummary:
    """Where and on what the run happened.

    Attributes:
        cpu: CPU model name.
        int8_instructions: int8-relevant instruction sets the CPU reports (AVX-512 VNNI, ...).
        threads: Threads used for timing.
        python: Python version.
        model_sha256: Hash of the input model file.
        calibration_sha256: Hash of the calibration data (files and reading options).
    """

    cpu: str
    int8_instructions: list[str]
    threads: int
    python: str
    model_sha256: str
    calibration_sha256: str


@dataclass
class GateResult:
    """One CI gate's verdict.

    Attributes:
        name: The flag without dashes (``min-sqnr``).
        threshold: The limit given.
        value: The measured value (None when it could not be measured).
        passed: Whether the run meets the limit.
        detail: ``ok`` or by how much it missed.
    """

    name: str
    threshold: float
    value: float | None
    passed: bool
    detail: str


@dataclass
class Report:
    """Everything a ``qconv quantize`` run decided and measured."""

    qconv_version: str
    onnx_version: str
    onnxruntime_version: str
    options: dict[str, object]
    model: ModelSummary
    calibration: CalibrationSummary | None
    nodes: list[NodeEntry] = field(default_factory=list)
    rewrites: list[RewriteEntry] = field(default_factory=list)
    tensors: list[TensorEntry] = field(default_factory=list)
    evaluation: EvaluationSummary | None = None
    latency: LatencySummary | None = None
    notes: list[str] = field(default_factory=list)
    gates: list[GateResult] = field(default_factory=list)
    environment: EnvironmentSummary | None = None
    sensitivity: SensitivitySummary | None = None
    verified: bool = False
    schema_version: int = SCHEMA_VERSION

    @property
    def quantized_nodes(self) -> int:
        return sum(n.quantized for n in self.nodes)

    @property
    def failed_gates(self) -> list[GateResult]:
        return [g for g in self.gates if not g.passed]

    def worst_tensors(self, count: int = 10) -> list[TensorEntry]:
        """The measured tensors with the lowest SQNR, worst first."""
        measured = [t for t in self.tensors if t.sqnr_db is not None]
        return sorted(measured, key=lambda t: t.sqnr_db)[:count]

    def reasons(self) -> dict[str, int]:
        """How many nodes ended up with each reason code."""
        counts: dict[str, int] = {}
        for node in self.nodes:
            counts[node.reason] = counts.get(node.reason, 0) + 1
        return counts
