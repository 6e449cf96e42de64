"""Reader for folders of PNG and JPEG images.

Images (``.png``, ``.jpg``, ``.jpeg``, any case) are found recursively and ordered by their path
relative to the folder, so runs are reproducible; hidden files and folders (``.name``) are
skipped. One onnxruntime session of :func:`qconv.data.preprocess.build_preprocess_model` decodes
and preprocesses them one at a time, so memory depends on the batch, never on the folder.

Guarantees:
    * The model has exactly one input, a 4-D float tensor; the preprocessed first image matches
      its static sizes (checked on open), and every later image is checked the same way.
    * No file reaches the native decoder unless it looks decodable: its first bytes are checked
      for every file on open (PNG or JPEG signature; interlaced PNG is refused because the
      decoder silently garbles it), and a JPEG's marker structure is walked before decoding.
      The JPEG decoder inside onnxruntime-extensions ends the whole process on malformed
      headers or truncated data, so these files become a :class:`DataError` instead.
    * Labels exist when every image lies in a class folder directly below the root; the label
      is the index of the folder name in sorted order.
    * ``samples`` picks the same subset every run (seeded, kept in folder order).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from qconv.data import Feed, InputSpec
from qconv.data.preprocess import INPUT_NAME, Preprocess, build_preprocess_model
from qconv.errors import DataError, cannot_read
from qconv.runtime import create_session

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
SUBSET_SEED = 0
_HEADER_BYTES = 29  # PNG signature + IHDR up to its interlace byte
_DECODE_ERRORS = (ort_errors.Fail, ort_errors.InvalidArgument, ort_errors.RuntimeException)


class ImageFolderReader:
    """Feeds from a folder of images, preprocessed for the model's single image input.

    Attributes:
        path: The image folder.
        spec: The model input the images feed.
        preprocess: How files become input tensors.
        classes: Class folder names in label order, or None when the folder is not laid out
            one sub-folder per class.
        unlabelled: Why a folder with class folders gives no labels (images elsewhere too),
            or None.
    """

    def __init__(
        self,
        path: Path,
        specs: Sequence[InputSpec],
        preprocess: Preprocess,
        batch_size: int = 1,
        samples: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.spec = image_input(specs)
        self.preprocess = preprocess
        self._files = _find_images(self.path)
        for file in self._files:
            _check_header(file)
        self.classes = _classes(self.path, self._files)
        self.unlabelled = _unlabelled(self.path, self._files)
        self._all_labels = _labels(self.path, self._files, self.classes)
        self._batch = self._batch_size(batch_size)
        self._index = self._trimmed(_subset(len(self._files), samples))
        self._session = create_session(build_preprocess_model(preprocess))
        self._pixels(self._files[self._index[0]])  # fail on open, not mid-calibration
        log.info(
            "%s: %d of %d images, %s, batches of %d",
            self.path,
            len(self._index),
            len(self._files),
            f"{len(self.classes)} classes" if self.classes else "no class folders",
            self._batch,
        )

    @property
    def num_samples(self) -> int:
        return len(self._index)

    @property
    def num_batches(self) -> int:
        return -(-self.num_samples // self._batch)

    def labels(self) -> np.ndarray | None:
        return None if self._all_labels is None else self._all_labels[self._index]

    def __iter__(self) -> Iterator[Feed]:
        for start in range(0, len(self._index), self._batch):
            files = [self._files[i] for i in self._index[start : start + self._batch]]
            yield {self.spec.name: self._stack(files)}

    def _stack(self, files: list[Path]) -> np.ndarray:
        arrays = [self._pixels(file) for file in files]
        for file, array in zip(files[1:], arrays[1:], strict=True):
            if array.shape != arrays[0].shape:
                raise DataError(
                    f"{file} preprocesses to {list(array.shape)} but {files[0]} in the same "
                    f"batch to {list(arrays[0].shape)}",
                    "set --preprocess crop=... so every image gets the same size",
                )
        return np.concatenate(arrays, axis=0).astype(self.spec.dtype, copy=False)

    def _pixels(self, file: Path) -> np.ndarray:
        """Decode and preprocess one file into a ``[1, ...]`` float array."""
        data = _read(file)
        problem = _jpeg_problem(data) if data.startswith(JPEG_SIGNATURE) else None
        if problem:
            raise DataError(f"{file} {problem}", "re-encode it or remove it from the folder")
        try:
            (pixels,) = self._session.run(None, {INPUT_NAME: np.frombuffer(data, np.uint8)})
        except _DECODE_ERRORS as exc:
            raise DataError(
                f"{file} could not be decoded ({_reason(exc)})",
                "re-encode it as PNG or JPEG, or remove it from the folder",
            ) from exc
        self._check_shape(pixels.shape, file)
        return pixels

    def _check_shape(self, shape: tuple[int, ...], file: Path) -> None:
        wanted = self.spec.shape[1:]
        if all(not _is_static(w) or w == got for got, w in zip(shape[1:], wanted, strict=True)):
            return
        raise DataError(
            f"{file} preprocesses to shape {list(shape)}, which does not fit input "
            f"{self.spec.describe()}",
            _shape_hint(self.preprocess, self.spec, shape),
        )

    def _batch_size(self, requested: int) -> int:
        fixed_batch = self.spec.shape[0]
        if _is_static(fixed_batch) and fixed_batch != requested:
            raise DataError(
                f"input {self.spec.describe()} takes batches of exactly {fixed_batch} "
                f"but the batch size is {requested}",
                f"pass --batch-size {fixed_batch}",
            )
        if requested > 1 and not _is_static(fixed_batch) and not self._same_size_outputs():
            log.info("%s: images may differ in size without a crop; using batches of 1", self.path)
            return 1
        return requested

    def _same_size_outputs(self) -> bool:
        if self.preprocess.crop is not None:
            return True
        spatial = self.spec.shape[2:] if self.preprocess.channels_first else self.spec.shape[1:3]
        return all(_is_static(d) for d in spatial)

    def _trimmed(self, index: np.ndarray) -> np.ndarray:
        """Drop a last partial batch when the model input has a fixed batch size."""
        if not _is_static(self.spec.shape[0]):
            return index
        usable = len(index) - len(index) % self._batch
        if usable == 0:
            raise DataError(
                f"{self.path} has {len(index)} image(s), fewer than the fixed batch of "
                f"input {self.spec.describe()}",
                f"give at least {self._batch} images",
            )
        if usable < len(index):
            log.warning(
                "%s: dropping the last %d image(s), which do not fill a batch of %d",
                self.path,
                len(index) - usable,
                self._batch,
            )
        return index[:usable]


# -- finding and checking files ---------------------------------------------------------------


def image_input(specs: Sequence[InputSpec]) -> InputSpec:
    if len(specs) != 1:
        names = ", ".join(spec.describe() for spec in specs) or "none"
        raise DataError(
            f"image folders feed models with exactly one input, this model has {len(specs)} "
            f"({names})",
            "give an .npz with one array per input instead",
        )
    spec = specs[0]
    if spec.rank != 4 or not np.issubdtype(spec.dtype, np.floating):
        raise DataError(
            f"image folders feed a 4-D float input, but the model input is {spec.describe()}",
            "give an .npz with arrays of the input's shape instead",
        )
    channels = [spec.shape[axis] for axis in (1, 3)]
    if all(_is_static(size) and size != 3 for size in channels):
        raise DataError(
            f"image folders give 3 channels, but the model input is {spec.describe()}",
            "give an .npz with arrays of the input's shape instead",
        )
    return spec


def image_files(root: Path) -> list[Path]:
    """The images under ``root``, in reading order; empty if there are none.

    Images are ``.png``, ``.jpg`` and ``.jpeg`` files (any case) at any depth, sorted by their
    path relative to ``root``. Hidden files and folders (``.name``) are skipped, which also
    drops the ``._name.jpg`` resource forks macOS leaves on copied folders.
    """
    root = Path(root)
    found = [
        path
        for path in root.rglob("*")
        if path.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in path.relative_to(root).parts)
        and path.is_file()
    ]
    return sorted(found, key=lambda path: path.relative_to(root).parts)


def _find_images(root: Path) -> list[Path]:
    if not root.is_dir():
        raise DataError(f"{root} is not a folder", "give a folder of .png/.jpg images")
    found = image_files(root)
    if not found:
        raise DataError(
            f"{root} contains no .png, .jpg or .jpeg images", "check the --calib/--eval path"
        )
    return found


def _check_header(file: Path) -> None:
    """Refuse a file whose first bytes are not a PNG or JPEG the decoder handles."""
    try:
        with file.open("rb") as stream:
            head = stream.read(_HEADER_BYTES)
    except OSError as exc:
        raise cannot_read(file, exc) from exc
    if head.startswith(JPEG_SIGNATURE):
        return
    if not head.startswith(PNG_SIGNATURE):
        raise DataError(
            f"{file} is not a PNG or JPEG image (its first bytes are {head[:8]!r})",
            "remove it from the folder or convert it to PNG/JPEG",
        )
    if len(head) < _HEADER_BYTES or head[12:16] != b"IHDR":
        raise DataError(f"{file} is a truncated or malformed PNG", "re-encode it")
    if head[28] != 0:
        raise DataError(
            f"{file} is an interlaced PNG, which the image decoder does not read correctly",
            "re-save it without interlacing",
        )


def _read(file: Path) -> bytes:
    try:
        return file.read_bytes()
    except OSError as exc:
        raise cannot_read(file, exc) from exc


def _depth(root: Path, file: Path) -> int:
    """1 for a file directly in ``root``, 2 for one in a sub-folder (a class folder), ..."""
    return len(file.relative_to(root).parts)


def _classes(root: Path, files: list[Path]) -> list[str] | None:
    depths = {_depth(root, file) for file in files}
    if depths != {2}:
        return None
    return sorted({file.relative_to(root).parts[0] for file in files})


def _unlabelled(root: Path, files: list[Path]) -> str | None:
    """Why a folder with images in class folders still has no labels: images elsewhere too
    (fine for calibration, where labels do not matter, but worth saying for evaluation)."""
    depths = {_depth(root, file) for file in files}
    if 2 not in depths or len(depths) == 1:
        return None
    stray = next(file for file in files if _depth(root, file) != 2)
    return (
        f"NO LABELS: {root} has images in class folders and elsewhere ({stray}), so it gives "
        "no labels; put every image in a class folder directly under it to measure accuracy"
    )


def _labels(root: Path, files: list[Path], classes: list[str] | None) -> np.ndarray | None:
    if classes is None:
        return None
    index = {name: i for i, name in enumerate(classes)}
    return np.array([index[file.relative_to(root).parts[0]] for file in files], np.int64)


def _subset(total: int, samples: int | None) -> np.ndarray:
    if samples is not None and samples < 1:
        raise DataError(f"--samples {samples} selects no images", "give 1 or more")
    if samples is None or samples >= total:
        return np.arange(total)
    rng = np.random.default_rng(SUBSET_SEED)
    return np.sort(rng.choice(total, size=samples, replace=False))


# -- messages ---------------------------------------------------------------------------------


def _is_static(dim: object) -> bool:
    return isinstance(dim, int) and dim > 0


def _reason(exc: Exception) -> str:
    text = str(exc)
    marker = "Status Message:"
    return text.split(marker, 1)[1].strip() if marker in text else text


def _shape_hint(preprocess: Preprocess, spec: InputSpec, shape: tuple[int, ...]) -> str:
    """Which ``--preprocess`` keys would make ``shape`` fit ``spec``."""
    channel_axis = 1 if preprocess.channels_first else 3
    other_layout = "NHWC" if preprocess.channels_first else "NCHW"
    if spec.shape[channel_axis] != 3 and _is_static(spec.shape[channel_axis]):
        if spec.shape[4 - channel_axis] == 3:
            return f"set --preprocess layout={other_layout}"
        return "images always give 3 channels; for other inputs give an .npz instead"
    spatial = [d for axis, d in enumerate(spec.shape) if axis not in (0, channel_axis)]
    if len(set(spatial)) == 1 and _is_static(spatial[0]):
        return f"set --preprocess crop={spatial[0]} (and resize to at least {spatial[0]})"
    return "set --preprocess resize=... and crop=... to produce the input's height and width"


# -- JPEG structure ---------------------------------------------------------------------------
#
# libjpeg's default error handler calls exit(): the decoder in onnxruntime-extensions ends the
# process on a bad marker, a truncated file or an unsupported coding. This walk mirrors
# libjpeg's fatal checks on the marker structure so such files are refused first. It reads
# markers the way libjpeg's next_marker does (0xFF fill bytes, 0xFF00 stuffing and other bytes
# between segments are skipped) and requires the end-of-image marker, since the decoder's
# memory source cannot supply libjpeg's fake EOI for a truncated file.

_SOI, _EOI, _SOS, _DQT, _DHT, _DRI = 0xD8, 0xD9, 0xDA, 0xDB, 0xC4, 0xDD
_SUPPORTED_SOF = frozenset({0xC0, 0xC1, 0xC2})
_UNSUPPORTED_SOF = frozenset({0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
_SKIPPED = frozenset({*range(0xE0, 0xF0), 0xFE})
_KNOWN = _SUPPORTED_SOF | _UNSUPPORTED_SOF | _SKIPPED | {_DQT, _DHT, _DRI, _SOS}


@dataclass
class _JpegState:
    """What the markers seen so far have defined."""

    components: dict[int, int] = field(default_factory=dict)  # component id -> quant table
    progressive: bool = False
    frame: bool = False
    scans: int = 0
    quant_tables: set[int] = field(default_factory=set)
    huffman_tables: set[tuple[int, int]] = field(default_factory=set)  # (class, id); 0 = DC


def _jpeg_problem(data: bytes) -> str | None:
    """Why libjpeg would abort on ``data``, or None if its marker structure is sound."""
    if not data.startswith(b"\xff\xd8"):
        return "does not start with a JPEG start-of-image marker"
    state = _JpegState()
    pos = 2
    while True:
        found = _next_marker(data, pos)
        if found is None:
            return "is truncated (no JPEG end-of-image marker)"
        marker, pos = found
        if marker == _EOI:
            return None if state.scans else "has no image data before its end-of-image marker"
        if marker in _STANDALONE:
            continue
        if marker == _SOI:
            return "has a second JPEG start-of-image marker"
        if marker not in _KNOWN:
            return f"has a JPEG marker the decoder rejects (0x{marker:02X})"
        if marker in _UNSUPPORTED_SOF:
            return (
                f"uses a JPEG coding the decoder lacks (frame marker 0x{marker:02X}); "
                "only baseline and progressive JPEG are supported"
            )
        if pos + 2 > len(data):
            return "is truncated inside a JPEG segment"
        length = int.from_bytes(data[pos : pos + 2], "big")
        if length < 2 or pos + length > len(data):
            return f"has a JPEG segment (marker 0x{marker:02X}) with a bad length"
        problem = _segment_problem(marker, data[pos + 2 : pos + length], state)
        if problem:
            return problem
        pos += length


def _next_marker(data: bytes, pos: int) -> tuple[int, int] | None:
    """The next marker code at or after ``pos`` and the position after it."""
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0:
            return None
        while pos < len(data) and data[pos] == 0xFF:
            pos += 1
        if pos >= len(data):
            return None
        if data[pos] != 0:
            return data[pos], pos + 1
        pos += 1


def _segment_problem(marker: int, body: bytes, state: _JpegState) -> str | None:
    if marker in _SUPPORTED_SOF:
        return _frame_problem(marker, body, state)
    if marker == _DQT:
        return _quant_problem(body, state)
    if marker == _DHT:
        return _huffman_problem(body, state)
    if marker == _SOS:
        return _scan_problem(body, state)
    if marker == _DRI and len(body) != 2:
        return "has a malformed JPEG restart interval"
    return None  # APPn and COM segments carry nothing the decoder checks


def _frame_problem(marker: int, body: bytes, state: _JpegState) -> str | None:
    if state.frame:
        return "has two JPEG frame headers"
    if len(body) < 6 or len(body) != 6 + 3 * body[5]:
        return "has a malformed JPEG frame header"
    precision, height, width = body[0], body[1:3], body[3:5]
    if precision != 8:
        return f"has {precision}-bit samples; only 8-bit JPEG is supported"
    if not any(height) or not any(width):
        return "has a zero image size in its JPEG frame header"
    if body[5] == 1:  # onnxruntime-extensions' DecodeImage reads its bytes as if they were RGB
        return "is a grayscale JPEG, which the image decoder misreads (RGB JPEG and PNG are fine)"
    if body[5] != 3:
        return f"has {body[5]} color components; only 3-channel JPEG is supported"
    for i in range(body[5]):
        component, sampling, table = body[6 + 3 * i : 9 + 3 * i]
        if not (1 <= sampling >> 4 <= 4 and 1 <= sampling & 0xF <= 4) or table > 3:
            return "has bad sampling factors or table numbers in its JPEG frame header"
        state.components[component] = table
    state.frame = True
    state.progressive = marker == 0xC2
    return None


def _quant_problem(body: bytes, state: _JpegState) -> str | None:
    pos = 0
    while pos < len(body):
        precision, table = body[pos] >> 4, body[pos] & 0xF
        size = 1 + 64 * (2 if precision else 1)
        if precision > 1 or table > 3 or pos + size > len(body):
            return "has a malformed JPEG quantization table"
        state.quant_tables.add(table)
        pos += size
    return None


def _huffman_problem(body: bytes, state: _JpegState) -> str | None:
    pos = 0
    while pos < len(body):
        if pos + 17 > len(body) or body[pos] & 0xEC:  # class is 0/1 (bit 4), id is 0..3
            return "has a malformed JPEG Huffman table"
        table_class, table = body[pos] >> 4, body[pos] & 0x3
        counts = body[pos + 1 : pos + 17]
        symbols = body[pos + 17 : pos + 17 + sum(counts)]
        if sum(counts) > 256 or len(symbols) < sum(counts) or not _prefix_code_fits(counts):
            return "has a malformed JPEG Huffman table"
        if table_class == 0 and any(symbol > 15 for symbol in symbols):
            return "has a malformed JPEG Huffman table"
        state.huffman_tables.add((table_class, table))
        pos += 17 + sum(counts)
    return None


def _prefix_code_fits(counts: bytes) -> bool:
    """libjpeg's check that the code lengths form a valid code without an all-ones code."""
    code = 0
    for length, count in enumerate(counts, start=1):
        code += count
        if count and code >= 1 << length:
            return False
        code <<= 1
    return True


def _scan_problem(body: bytes, state: _JpegState) -> str | None:
    if not state.frame:
        return "has JPEG image data before its frame header"
    count = body[0] if body else 0
    if not 1 <= count <= 4 or len(body) != 4 + 2 * count:
        return "has a malformed JPEG scan header"
    start, end, approx = body[1 + 2 * count], body[2 + 2 * count], body[3 + 2 * count]
    if state.progressive and _bad_progression(start, end, approx >> 4, approx & 0xF, count):
        return "has invalid JPEG progressive scan parameters"
    for i in range(count):
        component, tables = body[1 + 2 * i], body[2 + 2 * i]
        if component not in state.components:
            return "has a JPEG scan naming an unknown color component"
        if state.components[component] not in state.quant_tables:
            return "refers to an undefined JPEG quantization table"
        if not _huffman_defined(state, tables >> 4, tables & 0xF, start, approx >> 4):
            return "refers to an undefined JPEG Huffman table"
    state.scans += 1
    return None


def _bad_progression(start: int, end: int, high: int, low: int, count: int) -> bool:
    bad_band = end != 0 if start == 0 else (start > end or end > 63 or count != 1)
    return bad_band or (high != 0 and low != high - 1) or low > 13


def _huffman_defined(state: _JpegState, dc: int, ac: int, start: int, refine: int) -> bool:
    needs_dc = not state.progressive or (start == 0 and refine == 0)
    needs_ac = not state.progressive or start > 0
    return (not needs_dc or (0, dc) in state.huffman_tables) and (
        not needs_ac or (1, ac) in state.huffman_tables
    )
