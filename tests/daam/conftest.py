"""Shared tiny_random pipelines for the DAAM tests (built once per session: about a second)."""

from __future__ import annotations

import pytest
import torch

from harness.bench import torch_threads


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """Tiny models run several times faster on one thread on a shared 2-core machine."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def tiny():
    from harness.models.tiny import build_tiny_random

    return build_tiny_random()


@pytest.fixture(scope="session")
def tiny_pag(tiny):
    from harness.methods.daam import pag_pipeline

    return pag_pipeline(tiny, ["mid"])


def generators(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed) for seed in seeds]
