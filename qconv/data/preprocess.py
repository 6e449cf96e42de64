"""Image preprocessing: a declared recipe and the onnxruntime graph that applies it.

A :class:`Preprocess` says how encoded image files become model input: resize the shorter side,
center crop, scale, normalize with a per-channel mean and std, and lay the channels out as the
model wants. :func:`build_preprocess_model` turns it into an ONNX graph that onnxruntime runs on
the raw file bytes, so decoding and resizing never depend on Pillow or OpenCV.

Guarantees:
    * A :class:`Preprocess` is valid once constructed; bad values raise :class:`ConfigError`
      naming the ``--preprocess`` key and the fix.
    * ``parse_preprocess(format_preprocess(p)) == p`` for every valid ``p``.
    * The graph computes, for an image decoded to ``H x W x 3``::

          s = resize / min(H, W)                      (no resize: s = 1)
          H', W' = floor(H * s), floor(W * s)         (the shorter side is exactly ``resize``)
          top, left = (H' - crop) // 2, (W' - crop) // 2
          pixels = (x * scale - mean) / std           (per channel, in the model's channel order)

      which is torchvision's ``Resize(resize)`` + ``CenterCrop(crop)`` + ``Normalize`` with the
      output size rounded the same way. Resizing is bilinear with antialiasing (half-pixel
      centers), so a constant image stays exactly constant.
    * Mean and std are given in the model's channel order: RGB unless ``bgr`` is set.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qconv.errors import ConfigError

OPSET = 18
IR_VERSION = 9
EXTENSIONS_DOMAIN = "com.microsoft.extensions"
INPUT_NAME = "image"
OUTPUT_NAME = "pixels"
LAYOUTS = ("NCHW", "NHWC")
KEYS = ("resize", "crop", "mean", "std", "layout", "scale", "bgr")
_TRUE = ("true", "1")
_FALSE = ("false", "0")
_KEY_TOKEN = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)$")


@dataclass(frozen=True)
class Preprocess:
    """How an encoded image becomes one model input.

    Attributes:
        resize: Resize so the shorter side has this many pixels, keeping the aspect ratio
            (None: keep the decoded size).
        crop: Center crop to ``crop x crop`` after resizing (None: no crop).
        mean: Per-channel mean subtracted after scaling, in the model's channel order.
        std: Per-channel divisor applied after subtracting the mean.
        layout: ``"NCHW"`` (channels first) or ``"NHWC"`` (channels last).
        scale: Factor applied to the 0..255 pixel values before mean and std.
        bgr: True if the model wants BGR channel order, False for RGB.

    Example:
        ImageNet preprocessing for a torchvision model::

            Preprocess(resize=256, crop=224, mean=(0.485, 0.456, 0.406),
                       std=(0.229, 0.224, 0.225))
    """

    resize: int | None = None
    crop: int | None = None
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    layout: str = "NCHW"
    scale: float = 1 / 255
    bgr: bool = False

    def __post_init__(self) -> None:
        _check_size("resize", self.resize)
        _check_size("crop", self.crop)
        if self.resize is not None and self.crop is not None and self.crop > self.resize:
            raise ConfigError(
                f"--preprocess crop={self.crop} is larger than resize={self.resize}",
                "give a crop no larger than the resized shorter side",
            )
        object.__setattr__(self, "mean", _triple("mean", self.mean, nonzero=False))
        object.__setattr__(self, "std", _triple("std", self.std, nonzero=True))
        _check_layout(self.layout)
        object.__setattr__(self, "scale", _checked_scale(self.scale))
        if not isinstance(self.bgr, bool):
            raise ConfigError(
                f"--preprocess bgr={self.bgr!r} is not a boolean", "give true or false"
            )

    @property
    def channels_first(self) -> bool:
        """Whether the channel axis comes right after the batch axis."""
        return self.layout == "NCHW"


def _check_size(key: str, value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"--preprocess {key}={value!r} is invalid",
            f"give {key} as a whole number of pixels >= 1",
        )


def _triple(key: str, value: object, nonzero: bool) -> tuple[float, float, float]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)) or len(value) != 3:
        raise ConfigError(
            f"--preprocess {key}={value!r} needs exactly 3 values",
            f"give one number per channel, e.g. {key}=0.5,0.5,0.5",
        )
    numbers = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(item):
            raise ConfigError(
                f"--preprocess {key} value {item!r} is not a finite number",
                f"give three numbers for {key}",
            )
        if nonzero and item == 0:
            raise ConfigError(
                f"--preprocess {key} contains 0", f"every {key} value must be nonzero"
            )
        numbers.append(float(item))
    return (numbers[0], numbers[1], numbers[2])


def _check_layout(layout: object) -> None:
    if layout not in LAYOUTS:
        raise ConfigError(
            f"--preprocess layout={layout!r} is not supported", "give layout=NCHW or layout=NHWC"
        )


def _checked_scale(scale: object) -> float:
    valid = isinstance(scale, (int, float)) and not isinstance(scale, bool)
    if not valid or not math.isfinite(scale) or scale <= 0:
        raise ConfigError(
            f"--preprocess scale={scale!r} is invalid",
            "give a positive number or fraction, e.g. 1/255",
        )
    return float(scale)


# -- the flag syntax --------------------------------------------------------------------------


def parse_preprocess(text: str) -> Preprocess:
    """Parse the ``--preprocess`` flag.

    The flag is a comma-separated list of ``key=value`` items; ``mean`` and ``std`` take the
    three numbers that follow them up to the next ``key=``. Keys left out keep their defaults.

    Args:
        text: For example ``"resize=256,crop=224,mean=0.485,0.456,0.406,std=0.229,0.224,0.225,
            layout=NCHW,scale=1/255,bgr=false"``.

    Returns:
        The validated preprocessing.

    Raises:
        ConfigError: An unknown or repeated key, a wrong number of values, or a value that does
            not parse; the message names the key.
    """
    values = {key: _convert(key, items) for key, items in _split(text).items()}
    return Preprocess(**values)


def preprocess_from_mapping(table: Mapping[str, Any]) -> Preprocess:
    """Build a :class:`Preprocess` from a config table (for example ``[preprocess]`` in TOML).

    The keys are those of the flag; ``mean`` and ``std`` are lists, ``scale`` a number or a
    fraction string such as ``"1/255"``, ``bgr`` a boolean.

    Raises:
        ConfigError: An unknown key or a value of the wrong type, naming the key.
    """
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise ConfigError(
            f"unknown preprocess key(s): {', '.join(unknown)}", f"use only {', '.join(KEYS)}"
        )
    values = dict(table)
    if isinstance(values.get("scale"), str):
        values["scale"] = _fraction(values["scale"])
    if isinstance(values.get("layout"), str):
        values["layout"] = values["layout"].upper()
    return Preprocess(**values)


def format_preprocess(preprocess: Preprocess) -> str:
    """The ``--preprocess`` flag text that parses back to ``preprocess``."""
    parts = []
    for field in fields(preprocess):
        value = getattr(preprocess, field.name)
        if value is None:
            parts.append(f"{field.name}=none")
        elif isinstance(value, tuple):
            parts.append(f"{field.name}={','.join(repr(v) for v in value)}")
        elif isinstance(value, bool):
            parts.append(f"{field.name}={str(value).lower()}")
        elif isinstance(value, float):
            parts.append(f"{field.name}={value!r}")
        else:
            parts.append(f"{field.name}={value}")
    return ",".join(parts)


def _split(text: str) -> dict[str, list[str]]:
    """Group the comma-separated tokens under the ``key=`` that precedes them."""
    groups: dict[str, list[str]] = {}
    current: str | None = None
    for token in text.split(","):
        match = _KEY_TOKEN.match(token)
        if match:
            current = match.group(1).lower()
            if current not in KEYS:
                raise ConfigError(
                    f"--preprocess has an unknown key {current!r}", f"use only {', '.join(KEYS)}"
                )
            if current in groups:
                raise ConfigError(f"--preprocess gives {current!r} twice", "give each key once")
            groups[current] = [match.group(2).strip()]
        elif current is not None:
            groups[current].append(token.strip())
        elif token.strip():
            raise ConfigError(
                f"--preprocess value {token.strip()!r} has no key",
                "write key=value items, e.g. resize=256,crop=224",
            )
    return groups


def _convert(key: str, items: list[str]) -> object:
    if key in ("mean", "std"):
        if len(items) != 3:
            raise ConfigError(
                f"--preprocess {key} takes 3 values, got {len(items)}: {','.join(items)}",
                f"give one number per channel, e.g. {key}=0.5,0.5,0.5",
            )
        return tuple(_number(key, item) for item in items)
    if len(items) != 1:
        raise ConfigError(
            f"--preprocess {key} takes 1 value, got {len(items)}: {','.join(items)}",
            "separate keys with commas and give each scalar key one value",
        )
    return _SCALAR_PARSERS[key](key, items[0])


def _number(key: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(
            f"--preprocess {key} value {text!r} is not a number", f"give {key} as a decimal number"
        ) from None
    if not math.isfinite(value):
        raise ConfigError(
            f"--preprocess {key} value {text!r} is not a finite number",
            f"give {key} as a finite number",
        )
    return value


def _size(key: str, text: str) -> int | None:
    if text.lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise ConfigError(
            f"--preprocess {key}={text!r} is not a whole number", f"give {key} in pixels, e.g. 224"
        ) from None


def _fraction(text: str, key: str = "scale") -> float:
    numerator, slash, denominator = text.partition("/")
    value = _number(key, numerator)
    if slash:
        divisor = _number(key, denominator)
        if divisor == 0:
            raise ConfigError(f"--preprocess {key}={text!r} divides by zero", "give e.g. 1/255")
        value /= divisor
    return value


def _bool(key: str, text: str) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise ConfigError(f"--preprocess {key}={text!r} is not a boolean", "give true, false, 1 or 0")


_SCALAR_PARSERS = {
    "resize": _size,
    "crop": _size,
    "layout": lambda key, text: text.upper(),
    "scale": lambda key, text: _fraction(text, key),
    "bgr": _bool,
}


# -- the graph --------------------------------------------------------------------------------


class _GraphBuilder:
    """Collects nodes and constant initializers with unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def const(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def op(self, op_type: str, inputs: list[str], output: str, **attrs: Any) -> str:
        domain = attrs.pop("domain", "")
        self.nodes.append(
            helper.make_node(op_type, inputs, [output], name=output, domain=domain, **attrs)
        )
        return output


def build_preprocess_model(preprocess: Preprocess) -> onnx.ModelProto:
    """The ONNX model that turns one encoded image into one model input.

    Input ``image`` is the raw file bytes (uint8, 1-D, PNG or JPEG). Output ``pixels`` is float32
    ``[1, 3, H, W]`` for NCHW or ``[1, H, W, 3]`` for NHWC, with ``H = W = crop`` when cropping.
    The decode op comes from onnxruntime-extensions, so run it through
    :func:`qconv.runtime.create_session`.
    """
    g = _GraphBuilder()
    x = g.op("DecodeImage", [INPUT_NAME], "decoded_bgr", domain=EXTENSIONS_DOMAIN)
    if not preprocess.bgr:
        # DecodeImage yields BGR; reverse the channel axis for RGB models
        x = g.op("Gather", [x, g.const("rgb_order", np.array([2, 1, 0], np.int64))], "rgb", axis=2)
    x = g.op("Cast", [x], "as_float", to=TensorProto.FLOAT)
    if preprocess.resize is not None:
        x = _resize_shorter_side(g, x, preprocess.resize)
    if preprocess.crop is not None:
        x = _center_crop(g, x, preprocess.crop)
    x = _normalize(g, x, preprocess)
    if preprocess.channels_first:
        x = g.op("Transpose", [x], "chw", perm=[2, 0, 1])
    g.op("Unsqueeze", [x, g.const("batch_axis", np.array([0], np.int64))], OUTPUT_NAME)
    return _model(g, _output_shape(preprocess))


def _spatial_size(g: _GraphBuilder, x: str) -> str:
    """The ``[H, W]`` of an ``H x W x C`` tensor, as int64."""
    shape = g.op("Shape", [x], f"{x}_shape")
    starts = g.const(f"{x}_hw_start", np.array([0], np.int64))
    ends = g.const(f"{x}_hw_end", np.array([2], np.int64))
    return g.op("Slice", [shape, starts, ends], f"{x}_hw")


def _resize_shorter_side(g: _GraphBuilder, x: str, size: int) -> str:
    # integer arithmetic: the shorter side becomes exactly `size`, the longer
    # floor(long * size / short), which is torchvision's int(size * long / short)
    hw = _spatial_size(g, x)
    short = g.op("ReduceMin", [hw], "short_side", keepdims=1)
    scaled = g.op("Mul", [hw, g.const("resize_to", np.array([size], np.int64))], "hw_times_size")
    sizes = g.op("Div", [scaled, short], "resize_sizes")
    return g.op(
        "Resize",
        [x, "", "", sizes],
        "resized",
        mode="linear",
        axes=[0, 1],
        antialias=1,
        coordinate_transformation_mode="half_pixel",
    )


def _center_crop(g: _GraphBuilder, x: str, crop: int) -> str:
    hw = _spatial_size(g, x)
    crop_hw = g.const("crop_hw", np.array([crop, crop], np.int64))
    margin = g.op("Sub", [hw, crop_hw], "crop_margin")
    half = g.op("Div", [margin, g.const("two", np.array([2], np.int64))], "crop_half_margin")
    # an image smaller than the crop keeps its size (never a negative, end-relative start);
    # the reader then reports the size mismatch
    starts = g.op("Max", [half, g.const("zero", np.array([0], np.int64))], "crop_start")
    ends = g.op("Add", [starts, crop_hw], "crop_end")
    axes = g.const("crop_axes", np.array([0, 1], np.int64))
    return g.op("Slice", [x, starts, ends, axes], "cropped")


def _normalize(g: _GraphBuilder, x: str, preprocess: Preprocess) -> str:
    scale = g.const("scale", np.array(preprocess.scale, np.float32))
    mean = g.const("mean", np.array(preprocess.mean, np.float32))
    std = g.const("std", np.array(preprocess.std, np.float32))
    x = g.op("Mul", [x, scale], "scaled")
    x = g.op("Sub", [x, mean], "centered")
    return g.op("Div", [x, std], "normalized")


def _output_shape(preprocess: Preprocess) -> list[int | str]:
    side: list[int | str] = (
        [preprocess.crop, preprocess.crop] if preprocess.crop else ["height", "width"]
    )
    return [1, 3, *side] if preprocess.channels_first else [1, *side, 3]


def _model(g: _GraphBuilder, output_shape: list[int | str]) -> onnx.ModelProto:
    graph = helper.make_graph(
        g.nodes,
        "qconv_preprocess",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, ["num_bytes"])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, output_shape)],
        initializer=g.initializers,
    )
    opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid(EXTENSIONS_DOMAIN, 1)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="qconv")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model
