"""Helpers of the TTS tests: a Settings factory for the tiny checkpoint, ways to drain and await streams,
and a call a test can hold a thread inside.

A module of its own (not conftest.py): every test area's conftest.py is the top-level module `conftest`,
so `from conftest import ...` finds whichever area's conftest was loaded last."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np

from voicechat.config import Settings


def tts_settings(checkpoint: Path, voices_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = dict(checkpoint=str(checkpoint), voices_dir=voices_dir, device="cpu",
                                     voice=None, tts_warmup=False)
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


async def collect(stream) -> np.ndarray:
    """Every chunk of a stream, joined."""
    chunks = [chunk async for chunk in stream]
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)


async def wait_until(predicate, timeout: float = 30.0) -> None:
    """Wait (without blocking the loop) until ``predicate()`` is true; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


class Held:
    """Stands in for ``function`` so that a test can hold a thread inside a call: ``inside`` is set when a
    call begins; the call goes on (to ``function``) once ``release`` is set, or after 120 s so that a
    failing test cannot hang."""

    def __init__(self, function):
        self.function = function
        self.inside, self.release = threading.Event(), threading.Event()

    def __call__(self, *args, **kwargs):
        self.inside.set()
        self.release.wait(timeout=120)
        return self.function(*args, **kwargs)
