"""PP-OCRv4 text detector (rapidocr-onnxruntime 1.4.4): pages of licence text, read end to end.

Data: 736x960 (width x height) pages of consecutive licence text in one DejaVu font
(:func:`bench.realmodels.text.render_page`). The sides are multiples of 32 and the short side
is rapidocr's ``limit_side_len`` of 736, so rapidocr would not resize them; the feed is
1x3x960x736, BGR, ``(x / 255 - 0.5) / 0.5``.

Scoring ("page CER"): a simplified DB post-processing turns the probability map into boxes
(threshold 0.3, 2x2 dilation, connected components, mean-probability filter 0.5, DB's unclip
by ``area * 1.6 / perimeter`` on the axis-aligned box), each box is cropped from the page and
read by the FLOAT recogniser (:mod:`bench.realmodels.rec`), and the texts, in reading order,
are joined and compared with the page text. ``page_cer`` is the primary metric; ``box_recall``
is the fraction of ground-truth line boxes that some detected box covers (IoU >= 0.5 after
shrinking the detected box back by its unclip margin). :func:`box_agreement` compares the boxes
of two runs (float against int8) directly.
"""

from __future__ import annotations

import hashlib
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
from .ctc import normalise, text_metrics
from .imaging import ppocr_page_norm
from .rec import read_line
from .text import Page, render_page

PACKAGE = "rapidocr-onnxruntime"
VERSION = "1.4.4"
INPUT = "x"
WIDTH, HEIGHT = 736, 960
THRESH = 0.3
BOX_THRESH = 0.5
UNCLIP_RATIO = 1.6
MIN_SIZE = 3


def _label(mask: np.ndarray) -> list[tuple[slice, slice]]:
    """Bounding slices of the 8-connected components of a boolean mask."""
    try:
        from scipy import ndimage
    except ImportError:
        return _label_numpy(mask)
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    return [s for s in ndimage.find_objects(labels) if s is not None]


def _runs(row: np.ndarray) -> list[tuple[int, int]]:
    """Half-open ``(start, stop)`` column ranges of the True runs of one mask row."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], row.view(np.int8), [0]))))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _label_numpy(mask: np.ndarray) -> list[tuple[slice, slice]]:
    """scipy-free fallback of :func:`_label`: union-find over the runs of each row."""
    parent: list[int] = []
    boxes: list[list[int]] = []  # y0, y1, x0, x1 per run

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    previous: list[tuple[int, int, int]] = []
    for y, row in enumerate(mask.astype(bool)):
        current = []
        for start, stop in _runs(row):
            index = len(parent)
            parent.append(index)
            boxes.append([y, y + 1, start, stop])
            for p_start, p_stop, p_index in previous:
                if p_start <= stop and start <= p_stop:  # touching, diagonals included
                    parent[find(p_index)] = find(index)
            current.append((start, stop, index))
        previous = current
    merged: dict[int, list[int]] = {}
    for index, (y0, y1, x0, x1) in enumerate(boxes):
        box = merged.setdefault(find(index), [y0, y1, x0, x1])
        box[:] = [min(box[0], y0), max(box[1], y1), min(box[2], x0), max(box[3], x1)]
    ordered = sorted(merged.values())
    return [(slice(y0, y1), slice(x0, x1)) for y0, y1, x0, x1 in ordered]


def _dilate(mask: np.ndarray) -> np.ndarray:
    """OpenCV's ``dilate`` with a 2x2 kernel of ones (anchor at its centre, (1, 1))."""
    out = mask.copy()
    out[1:, :] |= mask[:-1, :]
    out[:, 1:] |= mask[:, :-1]
    out[1:, 1:] |= mask[:-1, :-1]
    return out


def detect_boxes(prob: np.ndarray) -> np.ndarray:
    """Simplified DB post-processing of one probability map.

    Args:
        prob: ``(H, W)`` text probability (the detector output without batch/channel axes).

    Returns:
        ``(n, 4)`` int array of unclipped boxes x0, y0, x1, y1 (half-open), top to bottom.
    """
    height, width = prob.shape
    boxes = []
    for rows, cols in _label(_dilate(prob > THRESH)):
        h, w = rows.stop - rows.start, cols.stop - cols.start
        if min(h, w) < MIN_SIZE or float(prob[rows, cols].mean()) < BOX_THRESH:
            continue
        margin = w * h * UNCLIP_RATIO / (2.0 * (w + h))
        x0, x1 = max(0, round(cols.start - margin)), min(width, round(cols.stop + margin))
        y0, y1 = max(0, round(rows.start - margin)), min(height, round(rows.stop + margin))
        if min(x1 - x0, y1 - y0) >= MIN_SIZE + 2:
            boxes.append((x0, y0, x1, y1))
    return np.array(boxes, dtype=np.int64).reshape(-1, 4)


def reading_order(boxes: np.ndarray) -> np.ndarray:
    """Sort boxes into lines (by vertical centre) and each line left to right.

    Args:
        boxes: ``(n, 4)`` boxes x0, y0, x1, y1.

    Returns:
        The boxes in reading order.
    """
    if len(boxes) == 0:
        return boxes
    order = np.argsort((boxes[:, 1] + boxes[:, 3]) / 2.0, kind="stable")
    lines: list[list[int]] = []
    for index in order:
        box = boxes[index]
        centre = (box[1] + box[3]) / 2.0
        if lines:
            last = boxes[lines[-1][0]]
            if abs(centre - (last[1] + last[3]) / 2.0) < (last[3] - last[1]) / 2.0:
                lines[-1].append(int(index))
                continue
        lines.append([int(index)])
    return np.array([boxes[i] for line in lines for i in sorted(line, key=lambda j: boxes[j, 0])])


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection over union of two sets of x0, y0, x1, y1 boxes."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def box_agreement(reference: np.ndarray, candidate: np.ndarray, iou: float = 0.5) -> float:
    """Fraction of ``reference`` boxes matched by some ``candidate`` box with IoU >= ``iou``.

    Use it with the float model's boxes as reference and the int8 model's as candidate.

    Args:
        reference: ``(n, 4)`` boxes.
        candidate: ``(m, 4)`` boxes.
        iou: Matching threshold.

    Returns:
        The matched fraction (1.0 when ``reference`` is empty).
    """
    if len(reference) == 0:
        return 1.0
    if len(candidate) == 0:
        return 0.0
    return float(np.mean(iou_matrix(reference, candidate).max(axis=1) >= iou))


def shrink(boxes: np.ndarray) -> np.ndarray:
    """Undo the unclip margin of boxes from :func:`detect_boxes` (approximately)."""
    out = np.asarray(boxes, dtype=np.float64).copy()
    if len(out) == 0:
        return out
    w, h = out[:, 2] - out[:, 0], out[:, 3] - out[:, 1]
    # For the grown box (w, h) = (w0 + 2d, h0 + 2d) with d = w0 h0 r / (2 (w0 + h0)).
    w0, h0 = w.copy(), h.copy()
    for _ in range(20):
        d = w0 * h0 * UNCLIP_RATIO / (2.0 * np.maximum(w0 + h0, 1e-9))
        w0, h0 = np.maximum(w - 2 * d, 1.0), np.maximum(h - 2 * d, 1.0)
    d = (w - w0) / 2.0
    out[:, 0] += d
    out[:, 1] += d
    out[:, 2] -= d
    out[:, 3] -= d
    return out


def page_boxes(outputs: list[np.ndarray]) -> np.ndarray:
    """Boxes in reading order from the detector outputs ``[(1, 1, H, W) probability]``."""
    return reading_order(detect_boxes(outputs[0][0, 0]))


_READ_CACHE: dict[bytes, str] = {}
_READ_CACHE_SIZE = 20_000


def read_crop(crop: np.ndarray) -> str:
    """Read one crop with the float recogniser, remembering crops already read.

    The float and int8 detectors mostly find the same boxes, so scoring the second one reads
    few new crops. The key is a digest of the crop's pixels and shape.

    Args:
        crop: HxWx3 uint8 RGB crop.

    Returns:
        The recognised text.
    """
    key = hashlib.blake2b(np.ascontiguousarray(crop).tobytes(), digest_size=16)
    key.update(str(crop.shape).encode())
    digest = key.digest()
    text = _READ_CACHE.get(digest)
    if text is None:
        if len(_READ_CACHE) >= _READ_CACHE_SIZE:
            _READ_CACHE.clear()
        text = _READ_CACHE[digest] = read_line(crop)
    return text


def read_page(image: np.ndarray, boxes: np.ndarray) -> str:
    """Read each box of a page with the float recogniser and join the texts with spaces."""
    texts = [read_crop(image[y0:y1, x0:x1]) for x0, y0, x1, y1 in boxes]
    return normalise(" ".join(texts))


def _pages(seed: int, split: str, n: int) -> list[Page]:
    """``n`` pages of one stream."""
    return [render_page(split, sample_rng(seed, index), WIDTH, HEIGHT) for index in range(n)]


class DetModel:
    """The PP-OCRv4 detector, scored by reading its boxes with the float recogniser."""

    name = "det"
    package = PACKAGE
    version = VERSION
    primary_metric = "page_cer"
    higher_is_better = False

    def model_path(self) -> Path:
        """Path of the ONNX file."""
        return package_file(
            "rapidocr_onnxruntime", "models/ch_PP-OCRv4_det_infer.onnx", PACKAGE, VERSION
        )

    def calibration_feeds(self, n: int) -> list[Feed]:
        """``n`` pages from the calibration text pool."""
        return [{INPUT: ppocr_page_norm(p.image)} for p in _pages(CALIB_SEED, "calib", n)]

    def eval_set(self, n: int) -> EvalSet:
        """``n`` pages; targets are the page texts, ``extra`` has images and line boxes."""
        pages = _pages(EVAL_SEED, "eval", n)
        return EvalSet(
            [{INPUT: ppocr_page_norm(p.image)} for p in pages],
            [p.text for p in pages],
            {"images": [p.image for p in pages], "line_boxes": [p.boxes for p in pages]},
        )

    def boxes(self, run: RunFn, data: EvalSet) -> list[np.ndarray]:
        """The boxes ``run`` finds on each page, in reading order."""
        return [page_boxes(run(feed)) for feed in data.feeds]

    def compare_boxes(self, reference: RunFn, candidate: RunFn, data: EvalSet) -> float:
        """Mean over pages of :func:`box_agreement` between two runs (e.g. float, int8)."""
        pairs = zip(self.boxes(reference, data), self.boxes(candidate, data), strict=True)
        values = [box_agreement(ref, cand) for ref, cand in pairs]
        return float(np.mean(values)) if values else 1.0

    def score(self, run: RunFn, data: EvalSet) -> dict[str, float]:
        """``page_cer``, ``page_cer_nospace``, ``box_recall`` and ``boxes_per_page``."""
        found = self.boxes(run, data)
        texts = [read_page(image, b) for image, b in zip(data.extra["images"], found, strict=True)]
        metrics = text_metrics(texts, data.targets)
        truth = data.extra["line_boxes"]
        recall = [box_agreement(t, shrink(b)) for t, b in zip(truth, found, strict=True)]
        return {
            "page_cer": metrics["cer"],
            "page_cer_nospace": metrics["cer_nospace"],
            "box_recall": float(np.mean(recall)) if recall else 0.0,
            "boxes_per_page": float(np.mean([len(b) for b in found])) if found else 0.0,
        }

    def latency_feed(self) -> Feed:
        """One 736x960 page (feed 1x3x960x736)."""
        page = render_page("calib", sample_rng(LATENCY_SEED, 2), WIDTH, HEIGHT)
        return {INPUT: ppocr_page_norm(page.image)}
