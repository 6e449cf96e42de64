"""Shared types and helpers of the real-model harness.

Nothing here makes data: it defines :class:`EvalSet` and the :class:`RealModel` protocol that
every model module implements, finds model files inside installed wheels, opens plain
onnxruntime sessions, derives per-sample random generators, and writes feeds to a folder that
``qconv quantize --calib FOLDER`` reads.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

Feed = dict[str, np.ndarray]
RunFn = Callable[[Feed], list[np.ndarray]]

# Sample streams: every model draws calibration and evaluation samples from distinct seeds.
EVAL_SEED = 20_240_601
CALIB_SEED = 7_310_113
LATENCY_SEED = 4_242


@dataclass(frozen=True)
class EvalSet:
    """Evaluation data of one model.

    Attributes:
        feeds: Batch-1 model feeds, in order.
        targets: Ground truth per feed (text, class index, page text, ...).
        extra: Anything scoring needs besides the model outputs (e.g. det page images).
    """

    feeds: list[Feed]
    targets: list[Any]
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        """Number of samples."""
        return len(self.feeds)


@runtime_checkable
class RealModel(Protocol):
    """One real pretrained model shipped in a PyPI wheel, with data and a scorer."""

    name: str
    package: str
    version: str
    primary_metric: str
    higher_is_better: bool

    def model_path(self) -> Path:
        """Path of the ONNX file; raises FileNotFoundError naming the pip line if missing."""
        ...

    def calibration_feeds(self, n: int) -> list[Feed]:
        """``n`` deterministic feeds, disjoint from the evaluation data."""
        ...

    def eval_set(self, n: int) -> EvalSet:
        """``n`` deterministic evaluation samples with their ground truth."""
        ...

    def score(self, run: RunFn, data: EvalSet) -> dict[str, float]:
        """All metrics of ``run`` on ``data``, including ``primary_metric``."""
        ...

    def latency_feed(self) -> Feed:
        """One representative batch-1 input."""
        ...


def pip_line(package: str, version: str) -> str:
    """The install command for a pinned wheel.

    Args:
        package: PyPI name.
        version: Pinned version.

    Returns:
        The pip command line.
    """
    return f"pip install --no-deps {package}=={version}"


def package_file(module: str, relative: str, package: str, version: str) -> Path:
    """Locate a file shipped inside an installed package without importing it.

    Args:
        module: Import name of the package (e.g. ``rapidocr_onnxruntime``).
        relative: Path of the file inside the package folder.
        package: PyPI name, for the error message.
        version: Pinned version, for the error message.

    Returns:
        The absolute path of the file.

    Raises:
        FileNotFoundError: If the package or the file is missing.
    """
    spec = importlib.util.find_spec(module)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / relative
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"{relative} of {package}=={version} not found (module {module!r}); "
        f"install it with: {pip_line(package, version)}"
    )


def make_session(path: Path, threads: int = 1) -> Any:
    """Open a plain CPU onnxruntime session.

    Args:
        path: ONNX file.
        threads: Intra-op thread count.

    Returns:
        An ``onnxruntime.InferenceSession``.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def session_runner(session: Any) -> RunFn:
    """Wrap a session as ``run(feed) -> outputs``, the form :meth:`RealModel.score` takes.

    Args:
        session: An ``onnxruntime.InferenceSession``.

    Returns:
        A function running all outputs of the session on one feed.
    """

    def run(feed: Feed) -> list[np.ndarray]:
        return session.run(None, feed)

    return run


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The random generator of sample ``index`` of a stream, independent of the stream length.

    Args:
        seed: Stream seed (evaluation, calibration, ...).
        index: Sample index.

    Returns:
        A numpy generator; sample ``i`` is the same whatever ``n`` is asked for.
    """
    return np.random.default_rng([seed, index])


_FEED_FILE = re.compile(r"^\d{4,}\.npz$")


def write_feed_folder(feeds: Sequence[Feed], folder: Path) -> None:
    """Write one ``.npz`` per feed (arrays named after the inputs) as 0000.npz, 0001.npz, ...

    ``qconv quantize --calib FOLDER`` reads such a folder in sorted order, so feeds may differ
    in shape. Numbered ``.npz`` files left from an earlier call are removed first; other files
    are left alone.

    Args:
        feeds: Batch-1 feeds.
        folder: Destination, created if missing.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        if _FEED_FILE.match(old.name):
            old.unlink()
    width = max(4, len(str(max(len(feeds) - 1, 0))))
    for index, feed in enumerate(feeds):
        np.savez(folder / f"{index:0{width}d}.npz", **feed)
