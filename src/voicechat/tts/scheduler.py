"""Which stream the TTS owner thread advances next: earliest deadline first, at chunk granularity.

A stream's deadline is the moment its listener runs out of audio: the time its first chunk was handed
over plus the seconds of audio handed over since. A stream with nothing handed over yet is the most
urgent of all (its listener is waiting in silence); ties go to the oldest. A stream whose consumer has
not taken its last ``MAX_PENDING_CHUNKS`` chunks is not advanced, so a slow client cannot grow memory.

Also here: each stream's private random state, swapped in around each of its steps, so that streams
interleaved on one model sample exactly what they would have sampled alone with the same seed.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

MAX_PENDING_CHUNKS = 4


class StreamRng:
    """A stream's own torch random state (CPU, plus the accelerator's), active only while it runs."""

    def __init__(self, seed: int, device: str):
        self._device = device
        self._accelerator = _accelerator_rng(device)
        self._cpu = torch.Generator().manual_seed(seed).get_state()
        self._accel_state = None
        if self._accelerator is not None:
            saved = self._accelerator.get_rng_state()
            self._accelerator.manual_seed(seed)
            self._accel_state = self._accelerator.get_rng_state()
            self._accelerator.set_rng_state(saved)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        torch.set_rng_state(self._cpu)
        if self._accelerator is not None:
            self._accelerator.set_rng_state(self._accel_state)
        try:
            yield
        finally:
            self._cpu = torch.get_rng_state()
            if self._accelerator is not None:
                self._accel_state = self._accelerator.get_rng_state()


def _accelerator_rng(device: str) -> Any:
    if device.startswith("cuda"):
        return torch.cuda
    if device.startswith("mps"):
        return torch.mps
    return None


@dataclass(eq=False)
class Job:
    """The owner thread's state of one stream. Fields other than ``generator`` are guarded by the
    engine's lock; ``generator`` and ``rng`` are touched only by the owner thread."""

    segments: deque[str]
    params: Any  # TTSParams
    inbox: Any  # the consumer side, fed with loop.call_soon_threadsafe
    rng: StreamRng
    created: float = field(default_factory=time.monotonic)
    first_handover: float | None = None
    audio_s: float = 0.0
    pending: int = 0  # chunks handed over that the consumer has not taken yet
    cancelled: bool = False
    generator: Iterator | None = None

    @property
    def deadline(self) -> float:
        return -math.inf if self.first_handover is None else self.first_handover + self.audio_s

    @property
    def runnable(self) -> bool:
        return not self.cancelled and self.pending < MAX_PENDING_CHUNKS

    def handed_over(self, seconds: float, now: float) -> None:
        if self.first_handover is None:
            self.first_handover = now
        self.audio_s += seconds
        self.pending += 1


def next_job(jobs: Iterable[Job]) -> Job | None:
    """The runnable job whose listener runs out of audio soonest (oldest first among equals)."""
    runnable = [job for job in jobs if job.runnable]
    return min(runnable, key=lambda job: (job.deadline, job.created), default=None)
