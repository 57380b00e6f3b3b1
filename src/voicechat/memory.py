"""Give the heap that a finished conversation freed back to the operating system.

glibc keeps freed memory in its malloc arenas (up to 8 per core; each thread allocates in one) rather
than returning it, and a conversation's work spreads over many threads: Whisper, Smart Turn, the TTS
engine, the asyncio workers. Measured with 10 conversations on the tiny models after a warm-up at full
concurrency (docs/deployment.md, "Memory over time"): RSS rose 304 MB in 90 s and stayed up with every
conversation ended, and one ``malloc_trim(0)`` then gave back 573 MB (it took 50 ms); Python objects
had not grown. Trimming as each conversation ends, the same load left 53 MB (130 MB after 360 s). Where
there is no glibc (musl, macOS) there is nothing to call and this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc
        return None


_TRIM = _malloc_trim()


def release_free_memory() -> None:
    """Return the free pages of every malloc arena to the OS (glibc; nothing elsewhere). Blocking."""
    if _TRIM is not None:
        _TRIM(0)
