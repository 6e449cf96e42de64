"""Typed configuration of a quantization run.

The CLI and TOML files parse into these frozen dataclasses; the library never reads options any
other way. Validation happens once, in ``__post_init__``, and raises :class:`ConfigError` naming
the flag at fault.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

from qconv.errors import ConfigError


class QuantFormat(enum.Enum):
    """How quantization is expressed in the output graph."""

    QDQ = "qdq"
    QOPERATOR = "qoperator"


class QuantType(enum.Enum):
    """Integer element type of a quantized tensor."""

    INT8 = "int8"
    UINT8 = "uint8"

    @property
    def qmin(self) -> int:
        return -128 if self is QuantType.INT8 else 0

    @property
    def qmax(self) -> int:
        return 127 if self is QuantType.INT8 else 255


class CalibrationMethod(enum.Enum):
    """How an activation range is derived from collected statistics."""

    MINMAX = "minmax"
    PERCENTILE = "percentile"
    ENTROPY = "entropy"
    MSE = "mse"
    AUTO = "auto"


@dataclass(frozen=True)
class PerTensor:
    """One scale and zero point for the whole tensor."""

    def describe(self) -> str:
        return "per-tensor"


@dataclass(frozen=True)
class PerChannel:
    """One scale per slice along ``axis`` (the output-channel axis by default)."""

    axis: int | None = None

    def describe(self) -> str:
        return "per-channel" if self.axis is None else f"per-channel(axis={self.axis})"


Granularity = PerTensor | PerChannel


@dataclass(frozen=True)
class QuantizeConfig:
    """Everything that decides how a model is quantized.

    Attributes:
        format: QDQ pairs or QLinear*/integer operators.
        weight_granularity: ``PerChannel()`` (default) or ``PerTensor()`` for weights.
        activation_type: Integer type of activations (uint8 by default).
        weight_type: Integer type of weights (int8 by default).
        symmetric_activations: Zero point fixed at the type's midpoint instead of fitted.
        calibration: Range method for activations (mse: on real models min/max ranges let
            outliers cost most of the resolution).
        percentile: The percentile used by ``CalibrationMethod.PERCENTILE``.
        exclude: Node names or op types kept in float.
        fuse: Run the float-graph preparation passes (BatchNormalization folding and friends).
        float_stem: Keep float the first convolutions that onnxruntime's CPU kernels run faster
            in float (see ``qconv.passes.float_stem``); off quantizes every eligible layer, as a
            target whose kernels are all integer wants.
        runtime_tuning: Build the Q/DQ model once on a copy, ask onnxruntime how it would run
            it, and re-plan: ops it has no integer kernel for stay float, 8-bit max-pools it
            would run in its slow loop get their own scale (see ``qconv.ort_layout``); off keeps
            the plan as it is, for a runtime other than onnxruntime's CPU provider.
        histogram_bins: Bins per sign of each activation histogram (memory per tensor is
            ``2 * histogram_bins * 8`` bytes whatever the sample count).
    """

    format: QuantFormat = QuantFormat.QDQ
    weight_granularity: Granularity = field(default_factory=PerChannel)
    activation_type: QuantType = QuantType.UINT8
    weight_type: QuantType = QuantType.INT8
    symmetric_activations: bool = False
    calibration: CalibrationMethod = CalibrationMethod.MSE
    percentile: float = 99.999
    exclude: tuple[str, ...] = ()
    fuse: bool = True
    float_stem: bool = True
    runtime_tuning: bool = True
    histogram_bins: int = 4096

    def __post_init__(self) -> None:
        for name, kind in ENUM_FIELDS.items():
            object.__setattr__(self, name, _as_enum(kind, getattr(self, name), name))
        if not isinstance(self.weight_granularity, PerTensor | PerChannel):
            raise ConfigError(
                f"weight_granularity={self.weight_granularity!r} is invalid",
                "give PerChannel() or PerTensor()",
            )
        if not 50.0 < self.percentile <= 100.0:
            raise ConfigError(
                f"--percentile {self.percentile} is out of range",
                "give a value in (50, 100], for example 99.999",
            )
        if self.histogram_bins < 256 or self.histogram_bins % 2:
            raise ConfigError(
                f"histogram_bins={self.histogram_bins} is invalid", "use an even number >= 256"
            )
        if (
            self.format is QuantFormat.QOPERATOR
            and self.activation_type is QuantType.INT8
            and self.weight_type is QuantType.UINT8
        ):
            raise ConfigError(
                "--format qoperator cannot combine int8 activations with uint8 weights: "
                "onnxruntime has no QLinearConv or QLinearMatMul for that pair",
                "use --weight-type int8 (the default)",
            )


@dataclass(frozen=True)
class DataConfig:
    """Where calibration/evaluation data comes from and how it is batched.

    Attributes:
        calib: Calibration data path (or ``random``/``random:uniform``).
        eval: Optional held-out evaluation data path.
        labels: Name of the integer label array in the eval data, if any.
        samples: Use at most this many calibration samples (a seeded subset).
        batch_size: Samples per feed when arrays are split along their batch axis.
        preprocess: How image folders are decoded and normalized (``--preprocess``).
        shapes: Concrete shapes for symbolic input sizes (``--shape name=1,3,224,224``).
    """

    calib: Path | str
    eval: Path | str | None = None
    labels: str | None = None
    samples: int | None = None
    batch_size: int = 1
    preprocess: str | None = None
    shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size {self.batch_size} is invalid", "give 1 or more")
        if self.samples is not None and self.samples < 1:
            raise ConfigError(f"--samples {self.samples} is invalid", "give 1 or more")
        if self.labels and self.eval is None:
            raise ConfigError("--labels needs --eval", "pass the evaluation data with --eval")
        sources = [source for source in (self.calib, self.eval) if source is not None]
        if self.preprocess and not any(_may_be_image_folder(source) for source in sources):
            raise ConfigError(
                "--preprocess prepares image folders, and the data given is none",
                "drop --preprocess: arrays, ONNX test data and random data are fed as they are",
            )


def _may_be_image_folder(source: Path | str) -> bool:
    """False for data that is certainly no image folder: random data, a file, a folder of
    arrays or ONNX test data (a path that does not exist is left to the reader's error)."""
    if str(source).split(":")[0] == "random":
        return False
    path = Path(source)
    if not path.is_dir():
        return not path.exists()
    from qconv.data.folder import array_files
    from qconv.data.testdata import is_test_data_folder

    return not (is_test_data_folder(path) or array_files(path))


def parse_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """Parse ``--shape name=1,3,224,224``."""
    name, sep, dims = text.partition("=")
    try:
        sizes = tuple(int(d) for d in dims.split(","))
    except ValueError:
        sizes = ()
    if not sep or not name or not sizes or min(sizes) < 1:
        raise ConfigError(f"--shape {text} is invalid", "write it as NAME=1,3,224,224")
    return name, sizes


SIZE_UNITS = {"": 1, "B": 1, "KB": 2**10, "MB": 2**20, "GB": 2**30, "TB": 2**40}


def parse_size(text: str) -> int:
    """Parse ``--max-memory 2GB`` (binary units: 1 GB = 2**30 bytes)."""
    number = text.strip().upper().replace("IB", "B")
    digits = number.rstrip("KMGTB")
    unit = number[len(digits) :]
    try:
        value = float(digits)
    except ValueError:
        value = -1.0
    if unit not in SIZE_UNITS or value <= 0:
        raise ConfigError(f"--max-memory {text} is invalid", "write it like 512MB or 2GB")
    return int(value * SIZE_UNITS[unit])


ENUM_FIELDS: dict[str, type[enum.Enum]] = {
    "format": QuantFormat,
    "activation_type": QuantType,
    "weight_type": QuantType,
    "calibration": CalibrationMethod,
}


def _as_enum(kind: type[enum.Enum], value: object, name: str) -> enum.Enum:
    """``value`` as a member of ``kind``: library callers may pass the flag's string."""
    try:
        return kind(value)
    except ValueError as exc:
        choices = ", ".join(repr(member.value) for member in kind)
        raise ConfigError(f"{name}={value!r} is invalid", f"use one of {choices}") from exc
