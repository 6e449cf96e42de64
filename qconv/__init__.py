"""qconv: convert float ONNX models into fast, accurate, verified INT8 models.

Library entry points: :func:`qconv.quantize.quantize_model` (protobuf in, result out, no I/O)
and :func:`qconv.job.run_quantize` (files in, files and a report out).
"""

from __future__ import annotations

__version__ = "0.1.0"
