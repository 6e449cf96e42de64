"""Whether two float models compute the same outputs on one input.

The preparation passes promise a float graph equivalent to the user's; ONNX's version converter
(opset 11 -> 13) makes the same promise and does not always keep it (an opset-10 linear Resize
changes its sampling grid; an opset-11 Hardmax its axis semantics). qconv checks the promise
on a calibration sample before it calibrates anything, so a rewrite that changed the model's
meaning is never quantized silently.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
import onnxruntime as ort

from qconv.runtime import create_session

# Relative RMS error (error norm / output norm) allowed between two float versions of a model:
# 60 dB, far above quantization error (20-40 dB) and far below a changed computation.
FLOAT_TOLERANCE = 1e-3
# Share of elements of an integer or boolean output allowed to differ (an arg-max near a tie).
DISCRETE_TOLERANCE = 0.01

Outputs = dict[str, np.ndarray]


def run(model: onnx.ModelProto, feed: Mapping[str, np.ndarray], threads: int | None) -> Outputs:
    """``model``'s graph outputs for ``feed``, by name."""
    return _outputs(create_session(model, threads=threads), feed)


def _outputs(session: ort.InferenceSession, feed: Mapping[str, np.ndarray]) -> Outputs:
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(feed)), strict=True))


def mismatch(expected: Outputs, actual: Outputs) -> str | None:
    """A description of the first output that differs beyond the tolerances, or None."""
    for name, want in expected.items():
        got = actual.get(name)
        if got is None or got.shape != want.shape:
            shape = "missing" if got is None else f"shape {got.shape}"
            return f"output {name!r} is {shape}, expected shape {want.shape}"
        if problem := _difference(want, got):
            return f"output {name!r} {problem}"
    return None


def _difference(want: np.ndarray, got: np.ndarray) -> str | None:
    if want.dtype.kind == "f":
        want64, got64 = want.astype(np.float64), got.astype(np.float64)
        if not np.array_equal(np.isfinite(want64), np.isfinite(got64)):
            return "has non-finite values in other places"
        finite = np.isfinite(want64)
        error = np.linalg.norm(want64[finite] - got64[finite])
        scale = max(float(np.linalg.norm(want64[finite])), np.finfo(np.float32).tiny)
        if error / scale > FLOAT_TOLERANCE:
            return f"differs by {error / scale:.3g} of its norm"
        return None
    differing = float(np.mean(want != got)) if want.size else 0.0
    if differing > DISCRETE_TOLERANCE:
        return f"differs in {differing:.1%} of its elements"
    return None


def reference(
    model: onnx.ModelProto, feed: Mapping[str, np.ndarray], threads: int | None
) -> Outputs | None:
    """``model``'s outputs for ``feed``, or None when two runs disagree (a random op)."""
    session = create_session(model, threads=threads)
    first, second = _outputs(session, feed), _outputs(session, feed)
    return first if mismatch(first, second) is None else None
