"""Real English text and its rendering: licence text lines and pages drawn with DejaVu fonts.

Text comes from the licence files of Debian's ``base-files`` (``/usr/share/common-licenses``):
each line is split into word chunks of at most 40 characters, duplicates are dropped, and the
chunks are divided by a hash of their text into an ``"eval"`` and a ``"calib"`` pool, so
evaluation and calibration never share a line. Lines and pages are drawn with Pillow in the
DejaVu fonts that ship with matplotlib: dark text on a light background, with seeded variation
of font, size, margins, colour, blur and pixel noise.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

LICENCE_DIR = Path("/usr/share/common-licenses")
MAX_CHARS = 40
SPLITS = ("eval", "calib")
NOISE_BANK = 1 << 22

# (file name, weight): regular faces dominate, as in most documents.
FONTS: tuple[tuple[str, float], ...] = (
    ("DejaVuSans.ttf", 0.35),
    ("DejaVuSerif.ttf", 0.3),
    ("DejaVuSansMono.ttf", 0.2),
    ("DejaVuSans-Bold.ttf", 0.1),
    ("DejaVuSerif-Bold.ttf", 0.05),
)


def font_dir() -> Path:
    """Folder of the TrueType fonts bundled with matplotlib."""
    from importlib.util import find_spec

    spec = find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("matplotlib is needed for its DejaVu fonts: pip install matplotlib")
    return Path(next(iter(spec.submodule_search_locations))) / "mpl-data" / "fonts" / "ttf"


@lru_cache(maxsize=256)
def load_font(name: str, size: int) -> ImageFont.FreeTypeFont:
    """A cached TrueType font.

    Args:
        name: File name in matplotlib's font folder.
        size: Pixel size.

    Returns:
        The Pillow font.
    """
    return ImageFont.truetype(str(font_dir() / name), size)


def pick_font(rng: np.random.Generator) -> str:
    """A font file name drawn with the weights of :data:`FONTS`."""
    weights = np.array([w for _, w in FONTS])
    return FONTS[int(rng.choice(len(FONTS), p=weights / weights.sum()))][0]


def _chunks(line: str, max_chars: int) -> list[str]:
    """Greedily pack the words of one line into chunks of at most ``max_chars`` characters."""
    chunks: list[str] = []
    current = ""
    for word in line.split():
        candidate = f"{current} {word}" if current else word
        if len(candidate) <= max_chars or not current:
            current = candidate
        else:
            chunks.append(current)
            current = word
    if current:
        chunks.append(current)
    return chunks


def _licence_files() -> list[Path]:
    """The licence files, symlinks resolved and deduplicated, in name order."""
    if not LICENCE_DIR.is_dir():
        raise FileNotFoundError(
            f"{LICENCE_DIR} is missing: it ships with Debian's base-files package"
        )
    seen: dict[Path, None] = {}
    for path in sorted(LICENCE_DIR.iterdir()):
        if path.is_file():
            seen.setdefault(path.resolve(), None)
    return list(seen)


def _usable(chunk: str) -> bool:
    """Whether a chunk is printable ASCII with a few letters or digits."""
    return (
        len(chunk) >= 4
        and chunk.isascii()
        and chunk.isprintable()
        and sum(c.isalnum() for c in chunk) >= 3
    )


@lru_cache(maxsize=1)
def licence_chunks() -> tuple[str, ...]:
    """All distinct text chunks of the licence files, in document order."""
    out: dict[str, None] = {}
    for path in _licence_files():
        for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
            line = re.sub(r"\s+", " ", raw).strip()
            for chunk in _chunks(line, MAX_CHARS):
                if _usable(chunk):
                    out.setdefault(chunk, None)
    return tuple(out)


def split_of(text: str) -> str:
    """The pool (``"eval"`` or ``"calib"``) a chunk belongs to, from a hash of its text."""
    return SPLITS[zlib.crc32(text.encode()) % 2]


@lru_cache(maxsize=2)
def text_pool(split: str) -> tuple[str, ...]:
    """The chunks of one pool, in document order.

    Args:
        split: ``"eval"`` or ``"calib"``.

    Returns:
        The chunks of that pool; the two pools are disjoint.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    return tuple(c for c in licence_chunks() if split_of(c) == split)


def pick_line(split: str, rng: np.random.Generator) -> str:
    """One chunk of a pool, drawn uniformly."""
    pool = text_pool(split)
    return pool[int(rng.integers(len(pool)))]


def word_stream(split: str, rng: np.random.Generator, n_words: int) -> list[str]:
    """``n_words`` consecutive words of a pool, starting at a random chunk.

    Args:
        split: ``"eval"`` or ``"calib"``.
        rng: Random generator of the sample.
        n_words: How many words to return.

    Returns:
        Words in document order (wrapping round the pool).
    """
    pool = text_pool(split)
    start = int(rng.integers(len(pool)))
    words: list[str] = []
    index = start
    while len(words) < n_words:
        words.extend(pool[index % len(pool)].split())
        index += 1
    return words[:n_words]


def ink_colours(rng: np.random.Generator) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A dark text colour and a light background colour, each with a slight tint."""
    fg_base, bg_base = int(rng.integers(0, 70)), int(rng.integers(215, 256))
    fg = tuple(int(np.clip(fg_base + t, 0, 255)) for t in rng.integers(-10, 11, size=3))
    bg = tuple(int(np.clip(bg_base + t, 0, 255)) for t in rng.integers(-8, 9, size=3))
    return fg, bg


def degrade(image: Image.Image, rng: np.random.Generator, max_sigma: float = 6.0) -> np.ndarray:
    """Apply mild blur (sometimes) and Gaussian pixel noise.

    Args:
        image: RGB image.
        rng: Random generator of the sample.
        max_sigma: Largest noise standard deviation, in grey levels.

    Returns:
        The degraded image as an HxWx3 uint8 array.
    """
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 0.8))))
    pixels = np.array(image, dtype=np.float32)
    pixels += float(rng.uniform(0.0, max_sigma)) * _noise(pixels.shape, rng)
    pixels += 0.5
    return np.clip(pixels, 0, 255, out=pixels).astype(np.uint8)


@lru_cache(maxsize=1)
def _noise_bank() -> np.ndarray:
    """A fixed block of standard normal noise that samples take random windows of."""
    return np.random.default_rng(0).standard_normal(NOISE_BANK, dtype=np.float32)


def _noise(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Standard normal noise of ``shape``: a random window of the bank (fast), or fresh."""
    size = int(np.prod(shape))
    bank = _noise_bank()
    if size > bank.size:
        return rng.standard_normal(size=shape, dtype=np.float32)
    start = int(rng.integers(0, bank.size - size + 1))
    return bank[start : start + size].reshape(shape)


def render_line(text: str, rng: np.random.Generator) -> np.ndarray:
    """Draw one text line as a tight crop, the way a detector would hand it over.

    Args:
        text: The line.
        rng: Random generator of the sample.

    Returns:
        An HxWx3 uint8 RGB image (height about 30 to 50 pixels).
    """
    font = load_font(pick_font(rng), int(rng.integers(14, 34)))
    left, top, right, bottom = font.getbbox(text)
    pad_x = int(rng.integers(2, 12))
    pad_top, pad_bottom = (int(v) for v in rng.integers(2, 9, size=2))
    fg, bg = ink_colours(rng)
    size = (right - left + 2 * pad_x, bottom - top + pad_top + pad_bottom)
    image = Image.new("RGB", size, bg)
    ImageDraw.Draw(image).text((pad_x - left, pad_top - top), text, font=font, fill=fg)
    return degrade(image, rng)


@dataclass(frozen=True)
class Page:
    """A rendered page of text.

    Attributes:
        image: HxWx3 uint8 RGB page.
        lines: The text lines, top to bottom.
        boxes: Ink box of each line, ``(n, 4)`` int array of x0, y0, x1, y1.
    """

    image: np.ndarray
    lines: tuple[str, ...]
    boxes: np.ndarray

    @property
    def text(self) -> str:
        """The page text, lines joined by single spaces."""
        return " ".join(self.lines)


def wrap_words(
    words: list[str], font: ImageFont.FreeTypeFont, width: float, max_lines: int | None = None
) -> list[str]:
    """Wrap words into lines no wider than ``width`` pixels.

    Args:
        words: Words in order.
        font: Font the lines are drawn in.
        width: Largest line width in pixels.
        max_lines: Stop after this many full lines (all words when None).

    Returns:
        The lines.
    """
    lines: list[str] = []
    current = ""
    for word in words:
        candidate = f"{current} {word}" if current else word
        if font.getlength(candidate) <= width or not current:
            current = candidate
            continue
        lines.append(current)
        current = word
        if max_lines is not None and len(lines) >= max_lines:
            return lines
    if current:
        lines.append(current)
    return lines


def render_page(split: str, rng: np.random.Generator, width: int = 736, height: int = 960) -> Page:
    """Draw a page of consecutive licence text in one font.

    Args:
        split: Text pool, ``"eval"`` or ``"calib"``.
        rng: Random generator of the page.
        width: Page width in pixels.
        height: Page height in pixels.

    Returns:
        The page with its lines and line boxes.
    """
    size = int(rng.integers(19, 29))
    font = load_font(pick_font(rng), size)
    pitch = size * float(rng.uniform(1.7, 2.2))
    left = int(rng.integers(30, 80))
    right = int(rng.integers(30, 80))
    top = int(rng.integers(30, 90))
    n_lines = max(1, int((height - top - 40) // pitch))
    words = word_stream(split, rng, 14 * n_lines)
    lines = wrap_words(words, font, width - left - right, max_lines=n_lines)
    fg, bg = ink_colours(rng)
    image = Image.new("RGB", (width, height), bg)
    draw = ImageDraw.Draw(image)
    boxes = []
    for index, line in enumerate(lines):
        x = left + int(rng.integers(0, 6))
        y = int(top + index * pitch)
        draw.text((x, y), line, font=font, fill=fg)
        x0, y0, x1, y1 = font.getbbox(line)
        boxes.append((x + x0, y + y0, x + x1, y + y1))
    pixels = degrade(image, rng, max_sigma=5.0)
    return Page(pixels, tuple(lines), np.array(boxes, dtype=np.int64).reshape(-1, 4))
