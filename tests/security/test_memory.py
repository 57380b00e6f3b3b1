"""memory.release_free_memory gives freed heap back to the OS (what keeps a server's RSS from staying
at its busiest level after conversations end; measured in docs/deployment.md, "Memory over time")."""

from __future__ import annotations

import ctypes.util
import os
import platform

import pytest

from voicechat.memory import release_free_memory

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's"
)


def resident_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_freed_heap_goes_back_to_the_os() -> None:
    """200 MB of 4 KB blocks (malloc's heap, not mmap), nine in ten freed: the one in ten still in use
    keeps glibc from giving back the holes by itself; trimming does."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(4096) for _ in range(51_200)]
    for block in blocks:
        ctypes.memset(block, 1, 4096)  # touched: resident
    kept = blocks[::10]
    for index, block in enumerate(blocks):
        if index % 10:
            libc.free(block)
    before = resident_mb()
    release_free_memory()
    after = resident_mb()
    for block in kept:
        libc.free(block)
    assert before - after > 100, f"RSS {before:.0f} MB -> {after:.0f} MB"
