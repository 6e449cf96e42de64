"""qconv: convert float ONNX models into fast, accurate, verified INT8 models.

Library entry points: :func:`qconv.quantize.quantize_model` (protobuf in, result out, no I/O)
and :func:`qconv.job.run_quantize` (files in, files and a report out).
"""

from __future__ import annotations

__version__ = "0.1.0"


def _import_onnxruntime_quietly() -> None:
    """Import onnxruntime with stderr muted: its import logs a warning (no telemetry ID could
    be saved, when HOME is not writable, as in many CI containers) before any log level can be
    set, and qconv's stderr is for qconv's own one-line messages. Errors still raise."""
    import os
    import sys

    if "onnxruntime" in sys.modules:
        return
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to protect
        import onnxruntime

        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            import onnxruntime  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)


_import_onnxruntime_quietly()
