"""Image folders: the --preprocess syntax, the preprocessing graph, and the folder reader.

Images are written byte by byte here (PNG with zlib + struct, a DC-only baseline JPEG), so the
tests need no imaging library and know exactly what the decoder should return.
"""

from __future__ import annotations

import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qconv.data import InputSpec
from qconv.data.images import ImageFolderReader, image_files
from qconv.data.preprocess import (
    Preprocess,
    build_preprocess_model,
    format_preprocess,
    parse_preprocess,
    preprocess_from_mapping,
)
from qconv.errors import ConfigError, DataError
from qconv.runtime import create_session

F32 = np.dtype(np.float32)
RGB8 = InputSpec("x", F32, ("N", 3, 8, 8))
IMAGENET = (
    "resize=256,crop=224,mean=0.485,0.456,0.406,std=0.229,0.224,0.225,"
    "layout=NCHW,scale=1/255,bgr=false"
)


# -- writing images -----------------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_bytes(rgb: np.ndarray, interlace: int = 0) -> bytes:
    """An 8-bit RGB PNG (color type 2) of an ``H x W x 3`` uint8 array."""
    height, width, _ = rgb.shape
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, interlace)
    rows = b"".join(b"\x00" + row.tobytes() for row in np.ascontiguousarray(rgb, np.uint8))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows))
        + _chunk(b"IEND", b"")
    )


def _segment(marker: int, body: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body


def jpeg_bytes(height: int, width: int, rgb: tuple[int, int, int]) -> bytes:
    """A baseline JPEG of one color: YCbCr, no subsampling, every block DC-only.

    With a quantization table of ones, a constant 8x8 block has DC = 8 * (value - 128). The DC
    Huffman table gives category k the 4-bit code k; the AC table has only end-of-block, code 0.
    """
    r, g, b = rgb
    ycc = (
        0.299 * r + 0.587 * g + 0.114 * b,
        -0.168736 * r - 0.331264 * g + 0.5 * b + 128,
        0.5 * r - 0.418688 * g - 0.081312 * b + 128,
    )
    dcs = [round(8 * (v - 128)) for v in ycc]
    bits: list[str] = []
    previous = [0, 0, 0]
    for _ in range(-(-height // 8) * -(-width // 8)):
        for c in range(3):
            diff, previous[c] = dcs[c] - previous[c], dcs[c]
            size = abs(diff).bit_length()
            bits.append(format(size, "04b"))
            if size:
                bits.append(format(diff if diff > 0 else diff + (1 << size) - 1, f"0{size}b"))
            bits.append("0")
    stream = "".join(bits)
    stream += "1" * (-len(stream) % 8)
    scan = bytes(int(stream[i : i + 8], 2) for i in range(0, len(stream), 8))
    scan = scan.replace(b"\xff", b"\xff\x00")
    frame = struct.pack(">BHHB", 8, height, width, 3) + bytes([1, 0x11, 0, 2, 0x11, 0, 3, 0x11, 0])
    dc_table = bytes([0x00, 0, 0, 0, 12] + [0] * 12) + bytes(range(12))
    ac_table = bytes([0x10, 1] + [0] * 15) + b"\x00"
    return (
        b"\xff\xd8"
        + _segment(0xDB, b"\x00" + b"\x01" * 64)
        + _segment(0xC0, frame)
        + _segment(0xC4, dc_table)
        + _segment(0xC4, ac_table)
        + _segment(0xDA, bytes([3, 1, 0x00, 2, 0x00, 3, 0x00, 0, 63, 0]))
        + scan
        + b"\xff\xd9"
    )


def solid(height: int, width: int, rgb: tuple[int, int, int]) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, np.uint8), (height, width, 3)).copy()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def run_graph(preprocess: Preprocess, data: bytes) -> np.ndarray:
    session = create_session(build_preprocess_model(preprocess))
    return session.run(None, {"image": np.frombuffer(data, np.uint8)})[0]


def reference(rgb: np.ndarray, p: Preprocess) -> np.ndarray:
    """The preprocessing in numpy, for images that need no resize."""
    x = rgb[..., ::-1] if p.bgr else rgb
    if p.crop is not None:
        top, left = (x.shape[0] - p.crop) // 2, (x.shape[1] - p.crop) // 2
        x = x[top : top + p.crop, left : left + p.crop]
    x = x.astype(np.float32) * np.float32(p.scale)
    x = (x - np.array(p.mean, np.float32)) / np.array(p.std, np.float32)
    return (x.transpose(2, 0, 1) if p.layout == "NCHW" else x)[None]


# -- the --preprocess syntax --------------------------------------------------------------------


def test_parse_reads_every_key():
    p = parse_preprocess(IMAGENET)
    assert (p.resize, p.crop, p.layout, p.bgr) == (256, 224, "NCHW", False)
    assert p.mean == (0.485, 0.456, 0.406) and p.std == (0.229, 0.224, 0.225)
    assert p.scale == 1 / 255


def test_parse_defaults_and_spelling():
    assert parse_preprocess("") == Preprocess()
    p = parse_preprocess("layout=nhwc, bgr=1, scale=0.5, crop=none")
    assert (p.layout, p.bgr, p.scale, p.crop) == ("NHWC", True, 0.5, None)


@st.composite
def preprocesses(draw: st.DrawFn) -> Preprocess:
    finite = st.floats(-1e6, 1e6, allow_nan=False)
    resize = draw(st.none() | st.integers(1, 4096))
    crop = draw(st.none() | st.integers(1, resize or 4096))
    return Preprocess(
        resize=resize,
        crop=crop,
        mean=draw(st.tuples(finite, finite, finite)),
        std=draw(st.tuples(*[finite.filter(bool)] * 3)),
        layout=draw(st.sampled_from(["NCHW", "NHWC"])),
        scale=draw(st.floats(1e-9, 1e9)),
        bgr=draw(st.booleans()),
    )


@settings(max_examples=200, deadline=None)
@given(preprocesses())
def test_format_then_parse_round_trips(p):
    assert parse_preprocess(format_preprocess(p)) == p


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("size=224", "size"),
        ("resize=256,mean=0.5,0.5", "mean"),
        ("std=1,2,3,4", "std"),
        ("resize=big", "resize"),
        ("scale=1/0", "scale"),
        ("scale=one", "scale"),
        ("bgr=maybe", "bgr"),
        ("layout=NCWH", "layout"),
        ("std=0,1,1", "std"),
        ("resize=256,crop=300", "crop"),
        ("crop=224,224", "crop"),
        ("crop=0", "crop"),
        ("resize=256,resize=224", "resize"),
        ("0.5,resize=256", "0.5"),
    ],
)
def test_parse_rejects_naming_the_key(text, key):
    with pytest.raises(ConfigError) as info:
        parse_preprocess(text)
    assert key in info.value.message and "--preprocess" in info.value.message
    assert info.value.hint


def test_mapping_takes_the_same_keys_as_the_flag():
    table = {
        "resize": 256,
        "crop": 224,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "layout": "NCHW",
        "scale": "1/255",
        "bgr": False,
    }
    assert preprocess_from_mapping(table) == parse_preprocess(IMAGENET)
    with pytest.raises(ConfigError, match="normalise"):
        preprocess_from_mapping({"normalise": True})
    with pytest.raises(ConfigError, match="mean"):
        preprocess_from_mapping({"mean": [0.5]})


# -- the preprocessing graph --------------------------------------------------------------------


def test_graph_passes_the_onnx_checker():
    model = build_preprocess_model(parse_preprocess(IMAGENET))
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["image"]
    assert {o.domain: o.version for o in model.opset_import}["com.microsoft.extensions"] == 1


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("bgr", [False, True])
@pytest.mark.parametrize("crop", [None, 4])
def test_graph_without_resize_equals_numpy(layout, bgr, crop):
    rgb = np.random.default_rng(0).integers(0, 256, (9, 12, 3), dtype=np.uint8)
    p = Preprocess(crop=crop, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3), layout=layout, bgr=bgr)
    got = run_graph(p, png_bytes(rgb))
    want = reference(rgb, p)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("size", "resize", "expected"),
    [
        ((30, 50), 20, (20, 33)),
        ((50, 30), 20, (33, 20)),
        ((333, 500), 224, (224, 336)),  # torchvision: int(224 * 500 / 333) = 336
        ((10, 15), 20, (20, 30)),
        ((16, 16), 16, (16, 16)),
    ],
)
def test_resize_makes_the_shorter_side_exact(size, resize, expected):
    out = run_graph(Preprocess(resize=resize), png_bytes(solid(*size, (1, 2, 3))))
    assert out.shape == (1, 3, *expected)


def test_resize_and_crop_keep_a_constant_color():
    p = Preprocess(resize=20, crop=16, mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4))
    out = run_graph(p, png_bytes(solid(30, 47, (200, 100, 50))))
    assert out.shape == (1, 3, 16, 16)
    want = (np.array([200, 100, 50]) / 255 - np.array(p.mean)) / np.array(p.std)
    np.testing.assert_allclose(out[0].reshape(3, -1), want[:, None].repeat(256, 1), atol=1e-5)


@pytest.mark.parametrize(
    ("encode", "tolerance"),
    [
        (lambda: png_bytes(solid(4, 6, (255, 0, 0))), 0),
        (lambda: jpeg_bytes(12, 20, (255, 0, 0)), 3),
    ],
    ids=["png", "jpeg"],
)
def test_channel_order_follows_bgr(encode, tolerance):
    rgb = run_graph(Preprocess(scale=1.0), encode())[0]
    bgr = run_graph(Preprocess(scale=1.0, bgr=True), encode())[0]
    assert np.all(rgb[0] >= 255 - tolerance) and np.all(rgb[2] <= tolerance)
    assert np.all(bgr[2] >= 255 - tolerance) and np.all(bgr[0] <= tolerance)


# -- the folder reader --------------------------------------------------------------------------

COLORS = {"cat": (10, 20, 30), "dog": (40, 50, 60), "ant": (70, 80, 90)}


@pytest.fixture
def classes(tmp_path: Path) -> Path:
    """Two images per class; the red channel tells the class, green the index in the class."""
    for name, (red, _, _) in COLORS.items():
        for i in range(2):
            write(tmp_path / name / f"{i}.png", png_bytes(solid(8, 8, (red, i, 0))))
    write(tmp_path / "ant" / "notes.txt", b"not an image, ignored")
    write(tmp_path / "dog" / ".hidden.png", b"AppleDouble junk, ignored")
    return tmp_path


def reds(reader: ImageFolderReader) -> list[int]:
    """The red value (unscaled) of every sample, in feed order."""
    return [round(float(v) * 255) for feed in reader for v in feed["x"][:, 0, 0, 0]]


def test_class_folders_give_sorted_labels(classes):
    reader = ImageFolderReader(classes, [RGB8], Preprocess(), batch_size=4)
    assert reader.classes == ["ant", "cat", "dog"]
    assert reader.num_samples == 6 and reader.num_batches == 2
    assert reader.labels().tolist() == [0, 0, 1, 1, 2, 2]
    assert reds(reader) == [70, 70, 10, 10, 40, 40]
    feeds = list(reader)
    assert [f["x"].shape for f in feeds] == [(4, 3, 8, 8), (2, 3, 8, 8)]
    assert all(f["x"].dtype == np.float32 for f in feeds)


def test_images_at_several_depths_have_no_labels(tmp_path):
    write(tmp_path / "a.png", png_bytes(solid(8, 8, (1, 1, 1))))
    write(tmp_path / "b" / "c.png", png_bytes(solid(8, 8, (2, 2, 2))))
    reader = ImageFolderReader(tmp_path, [RGB8], Preprocess())
    assert reader.classes is None and reader.labels() is None
    assert reds(reader) == [1, 2]
    assert "a.png" in reader.unlabelled  # a stray image beside class folders: said, for eval
    flat = tmp_path / "flat"
    write(flat / "x.png", png_bytes(solid(8, 8, (1, 1, 1))))
    assert ImageFolderReader(flat, [RGB8], Preprocess()).unlabelled is None


def test_samples_pick_the_same_seeded_subset(classes):
    first = ImageFolderReader(classes, [RGB8], Preprocess(), batch_size=2, samples=3)
    second = ImageFolderReader(classes, [RGB8], Preprocess(), batch_size=2, samples=3)
    index = np.sort(np.random.default_rng(0).choice(6, 3, replace=False))
    assert first.num_samples == 3 and first.num_batches == 2
    assert first.labels().tolist() == np.array([0, 0, 1, 1, 2, 2])[index].tolist()
    assert reds(first) == reds(second) == np.array([70, 70, 10, 10, 40, 40])[index].tolist()


def test_input_dtype_is_followed(classes):
    spec = InputSpec("x", np.dtype(np.float16), ("N", 3, 8, 8))
    feed = next(iter(ImageFolderReader(classes, [spec], Preprocess())))
    assert feed["x"].dtype == np.float16


def test_uncropped_images_of_different_sizes_come_one_per_batch(tmp_path):
    write(tmp_path / "a.png", png_bytes(solid(8, 8, (1, 1, 1))))
    write(tmp_path / "b.png", png_bytes(solid(6, 10, (1, 1, 1))))
    spec = InputSpec("x", F32, ("N", 3, "H", "W"))
    reader = ImageFolderReader(tmp_path, [spec], Preprocess(), batch_size=4)
    assert reader.num_batches == 2
    assert [f["x"].shape for f in reader] == [(1, 3, 8, 8), (1, 3, 6, 10)]


def test_jpeg_and_png_decode_alike(tmp_path):
    write(tmp_path / "a.jpg", jpeg_bytes(8, 8, (30, 120, 210)))
    write(tmp_path / "b.png", png_bytes(solid(8, 8, (30, 120, 210))))
    jpeg, png = (f["x"] for f in ImageFolderReader(tmp_path, [RGB8], Preprocess(scale=1.0)))
    np.testing.assert_allclose(jpeg, png, atol=3)


def test_a_grayscale_jpeg_is_refused_not_misread(tmp_path):
    # onnxruntime-extensions' DecodeImage read one-channel JPEG bytes as three channels:
    # pixels shifted in a period-3 pattern with bgr=true, an index error with bgr=false.
    image = pytest.importorskip("PIL.Image")
    gray = np.zeros((8, 8), np.uint8)
    gray[2:6, 2:6] = 255
    image.fromarray(gray, "L").save(tmp_path / "gray.jpg", quality=95)
    with pytest.raises(DataError, match="is a grayscale JPEG") as info:
        list(ImageFolderReader(tmp_path, [RGB8], Preprocess(bgr=True)))
    assert "gray.jpg" in info.value.message


def test_text_with_an_image_suffix_is_refused_on_open(classes):
    bad = write(classes / "cat" / "readme.png", b"hello, I am text")
    with pytest.raises(DataError) as info:
        ImageFolderReader(classes, [RGB8], Preprocess())
    assert str(bad) in info.value.message


def test_interlaced_png_is_refused_on_open(tmp_path):
    bad = write(tmp_path / "a.png", png_bytes(solid(8, 8, (1, 2, 3)), interlace=1))
    with pytest.raises(DataError, match="interlaced") as info:
        ImageFolderReader(tmp_path, [RGB8], Preprocess())
    assert str(bad) in info.value.message


def test_corrupt_png_data_is_a_data_error(tmp_path):
    good = png_bytes(solid(8, 8, (1, 2, 3)))
    bad = write(tmp_path / "a.png", good[:33] + b"\x00" * 40)
    with pytest.raises(DataError, match="could not be decoded") as info:
        ImageFolderReader(tmp_path, [RGB8], Preprocess())
    assert str(bad) in info.value.message


BROKEN_JPEG_SCRIPT = """
import sys
from pathlib import Path
import numpy as np
from qconv.data import InputSpec
from qconv.data.images import ImageFolderReader, image_files
from qconv.data.preprocess import Preprocess
from qconv.errors import DataError

spec = InputSpec("x", np.dtype(np.float32), ("N", 3, "H", "W"))
for folder in sorted(Path(sys.argv[1]).iterdir()):
    try:
        list(ImageFolderReader(folder, [spec], Preprocess()))
        print("decoded", folder.name)
    except DataError as exc:
        print("refused", exc.message)
"""


def test_broken_jpegs_are_refused_and_the_process_survives(tmp_path):
    # libjpeg ends the process on these, so they must be caught before decoding
    good = jpeg_bytes(16, 16, (10, 200, 30))
    cases = {
        "garbage": b"\xff\xd8\xff" + b"garbage" * 10,
        "header_cut": good[:100],
        "scan_cut": good[:-4],
        "no_eoi": good[:-2],
        "zero_length": good[:4] + b"\x00\x00" + good[6:],
    }
    for name, data in cases.items():
        write(tmp_path / "cases" / name / f"{name}.jpg", data)
    write(tmp_path / "cases" / "ok" / "ok.jpg", good)
    script = textwrap.dedent(BROKEN_JPEG_SCRIPT)
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "cases")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "decoded ok" in lines
    for name in cases:
        assert any(line.startswith("refused") and f"{name}.jpg" in line for line in lines), name


def test_empty_folder_is_refused(tmp_path):
    write(tmp_path / "notes.txt", b"no images here")
    with pytest.raises(DataError, match=r"no \.png"):
        ImageFolderReader(tmp_path, [RGB8], Preprocess())


def test_channel_mismatch_is_named_before_any_preprocessing_is_asked_for(classes):
    from qconv.data import open_reader

    gray = InputSpec("x", F32, ("N", 1, 8, 8))
    with pytest.raises(DataError) as info:
        open_reader(classes, [gray])  # no --preprocess: it would not help
    assert "give 3 channels" in info.value.message and "x float32[N,1,8,8]" in info.value.message


def test_size_mismatch_suggests_the_crop(classes):
    with pytest.raises(DataError, match="shape") as info:
        ImageFolderReader(classes, [InputSpec("x", F32, ("N", 3, 4, 4))], Preprocess())
    assert "crop=4" in info.value.hint


def test_nhwc_model_with_nchw_preprocessing_suggests_the_layout(classes):
    with pytest.raises(DataError) as info:
        ImageFolderReader(classes, [InputSpec("x", F32, ("N", 8, 8, 3))], Preprocess())
    assert "layout=NHWC" in info.value.hint


@pytest.mark.parametrize(
    "specs",
    [
        [RGB8, InputSpec("y", F32, ("N", 3, 8, 8))],
        [InputSpec("x", F32, ("N", 3, 8))],
        [InputSpec("x", np.dtype(np.int64), ("N", 3, 8, 8))],
    ],
    ids=["two_inputs", "rank_3", "integer"],
)
def test_models_without_one_float_image_input_are_refused(classes, specs):
    with pytest.raises(DataError) as info:
        ImageFolderReader(classes, specs, Preprocess())
    assert all(spec.name in info.value.message for spec in specs)


def test_fixed_batch_size_must_match(classes):
    with pytest.raises(DataError, match="exactly 1"):
        ImageFolderReader(classes, [InputSpec("x", F32, (1, 3, 8, 8))], Preprocess(), 2)


def test_image_files_lists_images_in_relative_path_order(tmp_path):
    for name in ("b/2.PNG", "a-b/1.jpeg", "a/9.jpg", "a/10.png", ".cache/x.png", "a/._9.jpg"):
        write(tmp_path / name, b"")
    write(tmp_path / "a" / "notes.txt", b"")
    found = [p.relative_to(tmp_path).as_posix() for p in image_files(tmp_path)]
    assert found == ["a/10.png", "a/9.jpg", "a-b/1.jpeg", "b/2.PNG"]
    assert image_files(tmp_path / "a-b" / "1.jpeg") == []


def test_an_image_folder_for_a_non_image_model_says_so_before_asking_for_preprocess(classes):
    from qconv.data import open_reader

    vector = InputSpec("x", np.dtype(np.float32), ("N", 64))
    with pytest.raises(DataError, match="image folders feed a 4-D float input"):
        open_reader(classes, [vector])


def test_labels_name_an_npz_array_not_a_folder(classes):
    from qconv.data import open_reader

    with pytest.raises(ConfigError, match=r"--labels label names an array of an \.npz"):
        open_reader(classes, [RGB8], labels="label", preprocess="resize=8")


def test_preprocess_without_any_folder_is_refused(tmp_path):
    from qconv.config import DataConfig

    data = tmp_path / "d.npz"
    np.savez(data, x=np.zeros((2, 3, 8, 8), np.float32))
    for calib in (data, tmp_path):  # an .npz, a folder of arrays
        with pytest.raises(ConfigError, match="--preprocess prepares image folders"):
            DataConfig(calib=calib, eval="random", preprocess="resize=8")
    images = tmp_path / "images"
    write(images / "a.png", png_bytes(solid(8, 8, (1, 2, 3))))
    assert DataConfig(calib=images, eval=data, preprocess="resize=8").preprocess
