"""Which waiting stream the TTS owner thread admits next into a decoder slot, and which ready chunks a
render lane takes first: earliest deadline first.

A stream's deadline is the moment its listener runs out of audio: the time its first chunk was handed
over plus the seconds of audio handed over since. A stream with nothing handed over yet is the most
urgent of all (its listener is waiting in silence); ties go to the oldest. A stream whose consumer has
not taken its last ``MAX_PENDING_CHUNKS`` chunks is neither rendered further nor admitted to decode its
next segment, so a slow client cannot grow memory.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

MAX_PENDING_CHUNKS = 4


@dataclass(eq=False)
class Job:
    """The engine's state of one stream. ``pending``, ``cancelled``, ``first_handover``, ``audio_s`` and
    ``segment`` are guarded by the engine's lock (the owner thread and the render lanes share them);
    ``segment_index`` and ``tokens`` are the owner thread's alone."""

    segments: deque[str]
    params: Any  # TTSParams
    inbox: Any  # the consumer side, fed with loop.call_soon_threadsafe
    seed: int = 0
    created: float = field(default_factory=time.monotonic)
    first_handover: float | None = None
    audio_s: float = 0.0
    pending: int = 0  # chunks handed over that the consumer has not taken yet
    cancelled: bool = False
    segment: Any = None  # the engine's state of the segment being decoded / rendered
    segment_index: int = 0  # segments started so far
    tokens: list[int] = field(default_factory=list)  # speech tokens of the segments decoded so far

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


def urgency(job: Job) -> tuple[float, float]:
    """The sort key of who goes first (a decoder slot, a place in a render call): the listener's
    deadline, then age; streams whose listener has heard nothing yet therefore go oldest first."""
    return job.deadline, job.created


def next_job(jobs: Iterable[Job]) -> Job | None:
    """The runnable job whose listener runs out of audio soonest (oldest first among equals)."""
    runnable = [job for job in jobs if job.runnable]
    return min(runnable, key=urgency, default=None)
