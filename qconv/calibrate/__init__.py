"""Calibration: collect per-tensor statistics in one streaming pass, then derive ranges.

``histogram`` holds the mergeable statistics, ``ranges`` turns them into clipping ranges by each
method, and ``collect`` runs onnxruntime over the calibration data to fill them.
"""
