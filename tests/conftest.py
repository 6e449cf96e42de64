from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_models"
SAMPLE_MODELS = ("digits_cnn", "digits_mobilenet", "digits_resnet")


@pytest.fixture
def samples() -> Path:
    return SAMPLES


@pytest.fixture(autouse=True)
def quantize_small_islands(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """Most test graphs are a few thousand multiply-adds: qconv.islands would keep them float
    for speed and the test would check nothing. Tests of that rule are marked ``islands``."""
    if "islands" not in request.keywords:
        monkeypatch.setattr("qconv.islands.ISLAND_MACS", 0)
