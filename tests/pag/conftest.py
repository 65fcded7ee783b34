"""Fixtures of the PAG tests: one tiny_random model per session, generation settings, records."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

TINY_MODEL_CFG = {"name": "tiny_random", "architecture": {}, "weights_seed": 0, "device": "cpu", "dtype": "float32",
                  "scheduler": None, "height": 32, "width": 32}


@pytest.fixture(scope="session")
def tiny_model():
    from harness.models.loader import load_tiny_random

    return load_tiny_random(OmegaConf.create(TINY_MODEL_CFG))


@pytest.fixture
def settings():
    from harness.methods.base import GenerationSettings

    def make(guidance_scale: float = 3.0, steps: int = 2):
        return GenerationSettings(steps=steps, guidance_scale=guidance_scale, height=32, width=32,
                                  negative_prompt="", batch_size=2)

    return make


@pytest.fixture
def method_cfg():
    """method_cfg(name, **overrides): a method config as Hydra composes it (schema defaults + overrides)."""
    from harness.schemas.guidance import CFGConfig, CFGPAGConfig, PAGConfig, PlainConfig

    def make(name: str, **overrides):
        schema = {"plain": PlainConfig, "cfg": CFGConfig, "pag": PAGConfig, "cfg_pag": CFGPAGConfig}[name]
        return OmegaConf.merge(OmegaConf.structured(schema), overrides)

    return make
