"""PP-OCR 0/180 text-line classifier (rapidocr-onnxruntime 1.4.4): upright or flipped lines.

Data: licence text lines (:mod:`bench.realmodels.text`); sample ``i`` is rotated by 180 degrees
when ``i`` is odd, so any slice of even length is balanced. Preprocessing is rapidocr's
``resize_norm_img`` for the classifier: 3x48x192, height 48 keeping the aspect ratio (lines
wider than 4:1 are squeezed to 192), BGR, ``(x / 255 - 0.5) / 0.5``, zero padding.

Scoring: argmax of the ``(1, 2)`` softmax, label 0 = ``"0"``, 1 = ``"180"``; ``accuracy``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

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
from .imaging import ppocr_resize_norm
from .text import pick_line, render_line

PACKAGE = "rapidocr-onnxruntime"
VERSION = "1.4.4"
INPUT = "x"
LABELS = ("0", "180")


def line_feed(image: np.ndarray) -> Feed:
    """The 1x3x48x192 classifier feed of one HxWx3 uint8 RGB text line."""
    return {INPUT: ppocr_resize_norm(image, 48, 192)[None]}


def _samples(seed: int, split: str, n: int) -> tuple[list[Feed], list[int]]:
    """Feeds and labels of ``n`` lines, the odd ones turned upside down."""
    feeds, labels = [], []
    for index in range(n):
        rng = sample_rng(seed, index)
        image = render_line(pick_line(split, rng), rng)
        label = index % 2
        if label:
            image = np.ascontiguousarray(image[::-1, ::-1])
        feeds.append(line_feed(image))
        labels.append(label)
    return feeds, labels


class ClsModel:
    """The PP-OCR direction classifier with upright and flipped licence-text lines."""

    name = "cls"
    package = PACKAGE
    version = VERSION
    primary_metric = "accuracy"
    higher_is_better = True

    def model_path(self) -> Path:
        """Path of the ONNX file."""
        return package_file(
            "rapidocr_onnxruntime", "models/ch_ppocr_mobile_v2.0_cls_infer.onnx", PACKAGE, VERSION
        )

    def calibration_feeds(self, n: int) -> list[Feed]:
        """``n`` lines from the calibration text pool, half of them flipped."""
        return _samples(CALIB_SEED, "calib", n)[0]

    def eval_set(self, n: int) -> EvalSet:
        """``n`` lines from the evaluation pool; targets are 0 (upright) or 1 (flipped)."""
        feeds, labels = _samples(EVAL_SEED, "eval", n)
        return EvalSet(feeds, list(labels), {"labels": LABELS})

    def score(self, run: RunFn, data: EvalSet) -> dict[str, float]:
        """``accuracy`` and the accuracy on each class."""
        predicted = np.array([int(run(feed)[0][0].argmax()) for feed in data.feeds])
        targets = np.asarray(data.targets)
        metrics = {"accuracy": float(np.mean(predicted == targets))}
        for label, name in enumerate(LABELS):
            mask = targets == label
            if mask.any():
                metrics[f"accuracy_{name}"] = float(np.mean(predicted[mask] == label))
        return metrics

    def latency_feed(self) -> Feed:
        """One upright line."""
        rng = sample_rng(LATENCY_SEED, 1)
        return line_feed(render_line(pick_line("calib", rng), rng))
