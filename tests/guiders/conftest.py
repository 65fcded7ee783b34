"""Fixtures of the guider tests: one tiny_random model per session."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

TINY_MODEL_CFG = {"name": "tiny_random", "architecture": {}, "weights_seed": 0, "device": "cpu", "dtype": "float32",
                  "scheduler": None, "height": 32, "width": 32}


@pytest.fixture(scope="session")
def tiny_model():
    from harness.models.loader import load_tiny_random

    return load_tiny_random(OmegaConf.create(TINY_MODEL_CFG))
