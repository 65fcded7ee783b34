"""The bench's peak-RSS figure belongs to the measured process, not to its parent.

``make bench`` measures ``rss_growth_ratio`` and the ``pag_coco``-shaped peak in fresh child
processes of a parent that has already held a full-size SD 1.5 UNet (about 6 GB). Linux's
``ru_maxrss`` keeps the parent's high-water mark across fork and exec, which once made every
child report the parent's 6 GB peak (and a growth ratio of exactly 0).
"""

from __future__ import annotations

import subprocess
import sys

from harness import REPO_ROOT
from harness.bench.scale import peak_rss_bytes

MIB = 1024 * 1024
#: Larger than the child's own peak (importing harness.bench.scale loads torch: about 530 MiB
#: here, plus the child's 96 MiB block), so inheriting the parent's peak cannot pass unseen.
PARENT_BLOCK = 2048 * MIB


def test_peak_rss_of_a_child_ignores_a_larger_parent():
    parent_block = bytearray(PARENT_BLOCK)
    parent_block[::4096] = b"\x01" * len(parent_block[::4096])  # touch every page: resident
    parent_peak = peak_rss_bytes()
    assert parent_peak >= PARENT_BLOCK
    child = ("import sys; sys.path.insert(0, sys.argv[1]); from harness.bench.scale import peak_rss_bytes; "
             "block = bytearray(96 * 1024 * 1024); block[::4096] = b'\\x01' * len(block[::4096]); "
             "print(peak_rss_bytes())")
    out = subprocess.run([sys.executable, "-c", child, str(REPO_ROOT)], check=True, capture_output=True,
                         text=True).stdout
    child_peak = int(out.split()[-1])
    assert child_peak >= 96 * MIB  # its own block counts
    assert child_peak < PARENT_BLOCK  # the parent's does not
    del parent_block
