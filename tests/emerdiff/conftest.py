"""Shared fixtures for the EmerDiff tests: one tiny_random pipeline and a small synthetic image set."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from threadpoolctl import threadpool_limits

# One thread: the tiny UNet's ops are too small to gain from more, and on a shared 2-core machine
# extra threads only contend (10x slower measured under load).
torch.set_num_threads(1)
threadpool_limits(1)


@pytest.fixture(scope="session")
def tiny_model():
    from harness.models.loader import LoadedModel
    from harness.models.tiny import build_tiny_random

    pipeline = build_tiny_random()
    return LoadedModel("tiny_random", pipeline, "tiny-test", torch.device("cpu"), torch.float32, 32, 32)


@pytest.fixture(scope="session")
def synthetic_set(tmp_path_factory):
    from harness.data.image_sets import build_synthetic_segments

    folder = tmp_path_factory.mktemp("synthetic")
    return build_synthetic_segments(SimpleNamespace(seed=0, size=3, path=str(folder), params={}))


@pytest.fixture(scope="session")
def make_method(tiny_model):
    """make_method(**options) -> an EmerDiff on tiny_random with a 4-step grid and 3 clusters."""
    from harness.methods.base import GenerationSettings
    from harness.methods.emerdiff import EmerDiff
    from harness.schemas.emerdiff import EmerDiffConfig

    def _make(**options):
        settings = {"inversion_steps": 4, "clusters": 3, "kmeans_restarts": 1, "gaussian_sigma": 1.0, **options}
        return EmerDiff(EmerDiffConfig(**settings), tiny_model, GenerationSettings(4, 1.0, 32, 32, "", 1))

    return _make
