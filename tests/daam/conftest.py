"""Shared tiny_random pipelines for the DAAM tests (built once per session: about a second)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """Tiny models run several times faster on one thread on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
