from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_models"
SAMPLE_MODELS = ("digits_cnn", "digits_mobilenet", "digits_resnet")


@pytest.fixture
def samples() -> Path:
    return SAMPLES
