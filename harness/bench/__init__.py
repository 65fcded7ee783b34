"""Benchmarks (`make bench`): each module here has ``run(report: dict)`` adding named figures.

Figures are measured within one process, A/B alternating where two things are compared, and
reported as ratios where possible: the machines are shared and noisy.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` torch threads, then restore the previous number. Benchmarks
    and tests of tiny models use one: on a shared 2-core machine two threads mostly contend."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
