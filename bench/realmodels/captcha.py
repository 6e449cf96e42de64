"""CRNN captcha reader with an unrolled LSTM (captcha-whisperer 0.1.0): generated captchas.

Data: 4-character captchas drawn by the ``captcha`` package's ``ImageCaptcha`` at its default
160x60 size, which is the model's input size. ``captcha`` 0.7 draws all its randomness from the
``secrets`` module, which cannot be seeded; generation therefore swaps a seeded stand-in into
``captcha.image`` for the duration of each call, so every image is reproducible.

Choices that give the model a meaningful float accuracy:

* Alphabet ``0-9A-Z`` without ``I`` and ``O``: the model never predicts ``I`` and hardly ever
  ``O`` (on thousands of time steps), so it was evidently trained without them.
* Fonts: the DejaVu faces bundled with matplotlib (float exact match about 0.9) instead of the
  package's default DroidSansMono (about 0.75, mostly ``1`` read as ``7``);
  ``CaptchaModel(fonts="default")`` keeps the package font.

Preprocessing is captcha-whisperer's: RGB -> BGR, values kept in 0..255 (the graph normalises
with its own ``data_bn``), 1x3x60x160 float32. The ``(20, 1, 37)`` logits are decoded by
standard greedy CTC with the blank at index 36. The wheel's own ``decode`` never emits class 0
(``"0"``) and skips the last time step; its exact match is reported as ``exact_wheel_decode``.
Scoring: ``exact`` (primary) and ``cer``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .common import (
    CALIB_SEED,
    EVAL_SEED,
    LATENCY_SEED,
    EvalSet,
    Feed,
    RunFn,
    package_file,
    sample_rng,
)
from .ctc import greedy_decode, text_metrics
from .imaging import bgr_chw
from .text import font_dir

PACKAGE = "captcha-whisperer"
VERSION = "0.1.0"
CAPTCHA_PACKAGE = "captcha"
CAPTCHA_VERSION = "0.7.1"
INPUT = "image"
LABELS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_"
BLANK = 36
ALPHABET = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"
LENGTH = 4
WIDTH, HEIGHT = 160, 60
DEJAVU = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSans-Bold.ttf")


class _SeededSecrets:
    """The part of the ``secrets`` module that ``captcha.image`` uses, from a seeded RNG."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)

    def randbelow(self, n: int) -> int:
        """Uniform integer in ``[0, n)``."""
        return self._random.randrange(n)

    def randbits(self, k: int) -> int:
        """Uniform ``k``-bit integer."""
        return self._random.getrandbits(k)

    def choice(self, seq: Any) -> Any:
        """Uniform element of ``seq``."""
        return self._random.choice(seq)


@contextmanager
def _seeded_captcha(seed: int) -> Iterator[None]:
    """Make ``captcha.image`` draw from a seeded generator inside the block."""
    module = _captcha_module()
    saved = module.secrets
    module.secrets = _SeededSecrets(seed)
    try:
        yield
    finally:
        module.secrets = saved


def _captcha_module() -> Any:
    """The ``captcha.image`` module, or an error naming the install line."""
    try:
        import captcha.image as module
    except ImportError as exc:
        raise ImportError(
            f"the captcha data need: pip install {CAPTCHA_PACKAGE}=={CAPTCHA_VERSION}"
        ) from exc
    return module


@lru_cache(maxsize=2)
def _generator(fonts: str) -> Any:
    """A cached ``ImageCaptcha`` with the DejaVu fonts or the package's default font."""
    module = _captcha_module()
    if fonts == "default":
        return module.ImageCaptcha(width=WIDTH, height=HEIGHT)
    paths = [str(font_dir() / name) for name in DEJAVU]
    return module.ImageCaptcha(width=WIDTH, height=HEIGHT, fonts=paths)


def captcha_image(text: str, seed: int, fonts: str = "dejavu") -> Image.Image:
    """Draw one captcha reproducibly.

    Args:
        text: The characters.
        seed: Seed of the drawing randomness (position, rotation, warp, colour, noise).
        fonts: ``"dejavu"`` or ``"default"``.

    Returns:
        A 160x60 RGB image.
    """
    with _seeded_captcha(seed):
        return _generator(fonts).generate_image(text)


def captcha_feed(image: Image.Image) -> Feed:
    """captcha-whisperer's preprocessing: 1x3x60x160 float32 BGR in 0..255."""
    image = image.convert("RGB")
    if image.size != (WIDTH, HEIGHT):
        image = image.resize((WIDTH, HEIGHT), Image.BILINEAR)
    return {INPUT: bgr_chw(np.asarray(image))[None]}


def decode(outputs: list[np.ndarray]) -> str:
    """Greedy CTC decoding of the ``(20, 1, 37)`` logits, blank 36."""
    return greedy_decode(outputs[0][:, 0, :], LABELS, blank=BLANK)


def wheel_decode(outputs: list[np.ndarray]) -> str:
    """captcha-whisperer's own ``decode`` (class 0 never emitted, last step skipped)."""
    logits = outputs[0][:, 0, :]
    out, previous = [], BLANK
    for step in range(logits.shape[0] - 1):
        best = int(np.argmax(logits[step, 1:]))
        if best != BLANK and best != previous:
            out.append(LABELS[best + 1])
        previous = best
    return "".join(out).replace("_", "").strip()


def _samples(seed: int, n: int, fonts: str) -> tuple[list[Feed], list[str]]:
    """Feeds and texts of ``n`` captchas of one stream."""
    feeds, texts = [], []
    for index in range(n):
        rng = sample_rng(seed, index)
        text = "".join(ALPHABET[int(i)] for i in rng.integers(len(ALPHABET), size=LENGTH))
        feeds.append(captcha_feed(captcha_image(text, int(rng.integers(2**62)), fonts)))
        texts.append(text)
    return feeds, texts


class CaptchaModel:
    """The captcha-whisperer CRNN with captchas from the ``captcha`` package."""

    name = "captcha"
    package = PACKAGE
    version = VERSION
    primary_metric = "exact"
    higher_is_better = True

    def __init__(self, fonts: str = "dejavu") -> None:
        """Choose the captcha fonts.

        Args:
            fonts: ``"dejavu"`` (matplotlib's DejaVu faces, the default) or ``"default"``
                (the ``captcha`` package's DroidSansMono).
        """
        if fonts not in ("dejavu", "default"):
            raise ValueError(f"fonts must be 'dejavu' or 'default', not {fonts!r}")
        self.fonts = fonts

    def model_path(self) -> Path:
        """Path of the ONNX file."""
        return package_file("captcha_whisperer", "models/captcha_crnn.onnx", PACKAGE, VERSION)

    def calibration_feeds(self, n: int) -> list[Feed]:
        """``n`` captchas from the calibration seed."""
        return _samples(CALIB_SEED, n, self.fonts)[0]

    def eval_set(self, n: int) -> EvalSet:
        """``n`` captchas; targets are their texts."""
        feeds, texts = _samples(EVAL_SEED, n, self.fonts)
        return EvalSet(feeds, list(texts), {"fonts": self.fonts})

    def score(self, run: RunFn, data: EvalSet) -> dict[str, float]:
        """``exact``, ``cer`` and ``exact_wheel_decode``."""
        outputs = [run(feed) for feed in data.feeds]
        metrics = text_metrics([decode(o) for o in outputs], data.targets)
        wheel = [wheel_decode(o) == t for o, t in zip(outputs, data.targets, strict=True)]
        return {
            "exact": metrics["exact"],
            "cer": metrics["cer"],
            "exact_wheel_decode": float(np.mean(wheel)) if wheel else 0.0,
        }

    def latency_feed(self) -> Feed:
        """One captcha."""
        return _samples(LATENCY_SEED, 1, self.fonts)[0][0]
