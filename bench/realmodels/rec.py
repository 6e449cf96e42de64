"""PP-OCRv4 text recogniser (rapidocr-onnxruntime 1.4.4): licence text lines, read by CTC.

Data: single text lines of licence text (:mod:`bench.realmodels.text`), drawn with DejaVu fonts
and cropped tightly as a detector would. Preprocessing is rapidocr's ``resize_norm_img`` for a
batch of one: height 48 keeping the aspect ratio, width ``int(48 * max(320 / 48, w / h))``,
BGR, ``(x / 255 - 0.5) / 0.5``, zero padding on the right.

Scoring: greedy CTC decoding over the model's own character list (its ``character`` metadata,
with the blank at index 0 and a space appended at the end, as rapidocr does); exact-line
accuracy and character error rate (``cer``, the primary metric, whitespace normalised).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from .common import (
    CALIB_SEED,
    EVAL_SEED,
    LATENCY_SEED,
    EvalSet,
    Feed,
    RunFn,
    make_session,
    package_file,
    sample_rng,
    session_runner,
)
from .ctc import greedy_decode, text_metrics
from .imaging import ppocr_resize_norm
from .text import pick_line, render_line

PACKAGE = "rapidocr-onnxruntime"
VERSION = "1.4.4"
MODULE = "rapidocr_onnxruntime"
INPUT = "x"
HEIGHT = 48
MIN_WIDTH = 320


def rec_model_path() -> Path:
    """Path of the recogniser inside the rapidocr-onnxruntime wheel."""
    return package_file(MODULE, "models/ch_PP-OCRv4_rec_infer.onnx", PACKAGE, VERSION)


@lru_cache(maxsize=1)
def characters() -> tuple[str, ...]:
    """The recogniser's classes: blank, the ``character`` metadata lines, then a space."""
    import onnx

    model = onnx.load(str(rec_model_path()), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    return ("blank", *meta["character"].splitlines(), " ")


def line_feed(image: np.ndarray) -> Feed:
    """The batch-1 recogniser feed of one HxWx3 uint8 RGB text line."""
    h, w = image.shape[:2]
    width = int(HEIGHT * max(MIN_WIDTH / HEIGHT, w / float(h)))
    return {INPUT: ppocr_resize_norm(image, HEIGHT, width)[None]}


def decode(outputs: list[np.ndarray]) -> str:
    """Greedy CTC decoding of the recogniser's ``(1, T, 6625)`` softmax output."""
    return greedy_decode(outputs[0][0], characters(), blank=0)


@lru_cache(maxsize=1)
def float_reader() -> RunFn:
    """A cached single-thread onnxruntime runner of the float recogniser."""
    return session_runner(make_session(rec_model_path()))


def read_line(image: np.ndarray, run: RunFn | None = None) -> str:
    """Read one text line with the (float, by default) recogniser.

    Args:
        image: HxWx3 uint8 RGB crop.
        run: Model runner; the float model when None.

    Returns:
        The decoded text.
    """
    return decode((run or float_reader())(line_feed(image)))


def _lines(seed: int, split: str, n: int) -> tuple[list[Feed], list[str]]:
    """Feeds and texts of ``n`` rendered lines of one stream."""
    feeds, texts = [], []
    for index in range(n):
        rng = sample_rng(seed, index)
        text = pick_line(split, rng)
        feeds.append(line_feed(render_line(text, rng)))
        texts.append(text)
    return feeds, texts


class RecModel:
    """The PP-OCRv4 recogniser with licence-text lines."""

    name = "rec"
    package = PACKAGE
    version = VERSION
    primary_metric = "cer"
    higher_is_better = False

    def model_path(self) -> Path:
        """Path of the ONNX file."""
        return rec_model_path()

    def calibration_feeds(self, n: int) -> list[Feed]:
        """``n`` lines from the calibration text pool."""
        return _lines(CALIB_SEED, "calib", n)[0]

    def eval_set(self, n: int) -> EvalSet:
        """``n`` lines from the evaluation text pool, with their text as targets."""
        feeds, texts = _lines(EVAL_SEED, "eval", n)
        return EvalSet(feeds, list(texts), {})

    def score(self, run: RunFn, data: EvalSet) -> dict[str, float]:
        """Exact-line accuracy (``exact``), ``cer`` and ``cer_nospace``."""
        predictions = [decode(run(feed)) for feed in data.feeds]
        return text_metrics(predictions, data.targets)

    def latency_feed(self) -> Feed:
        """A typical line of about 30 to 40 characters."""
        rng = sample_rng(LATENCY_SEED, 0)
        text = pick_line("calib", rng)
        while len(text) < 30:
            text = pick_line("calib", rng)
        return line_feed(render_line(text, rng))
