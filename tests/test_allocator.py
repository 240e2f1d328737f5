"""retain_freed_memory: on Linux/glibc it takes effect; elsewhere it says it did not."""

from __future__ import annotations

import platform
import sys

import torch

from pdetransfer.engine.runtime.allocator import retain_freed_memory


def test_retain_freed_memory_where_glibc() -> None:
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert retain_freed_memory() is glibc
    # The process still allocates and frees large blocks normally afterwards.
    block = torch.ones(64, 1024, 1024)
    assert float(block.sum()) == 64 * 1024 * 1024
    del block
