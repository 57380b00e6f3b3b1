"""Where the speech engine's threads spend their time: seconds and calls per (thread, stage).

Always counted (a clock read at each stage's start and end, a few per decode step): it answers the
first question about a slow engine, which thread is the bottleneck and on what, without a profiler.
``/metrics`` exports it (``voicechat_tts_stage_seconds_total``) and ``benchmarks/tts_concurrency.py
--stages`` prints it per row. Each stage is also a ``torch.profiler`` range (``tts.<stage>``), so a
profiler trace shows the same names.

On CUDA a stage's seconds are the time its thread spends in it, not GPU time: kernels run
asynchronously, so a stage that reads results back (T3's ``sample``, the vocoder's copy to the host)
also holds the wait for the GPU work queued before it. ``idle`` is time spent waiting for work.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from torch.profiler import record_function


class StageClock:
    """Seconds and calls per (thread name, stage). Each thread writes only its own keys, so the
    counting needs no lock; ``snapshot`` copies the totals at one moment."""

    def __init__(self) -> None:
        self._totals: dict[tuple[str, str], tuple[float, int]] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Count the time the calling thread spends inside the block as stage ``name``."""
        started = time.perf_counter()
        try:
            with record_function(f"tts.{name}"):
                yield
        finally:
            self.add(name, time.perf_counter() - started)

    def add(self, name: str, seconds: float) -> None:
        key = (threading.current_thread().name, name)
        total, calls = self._totals.get(key, (0.0, 0))
        self._totals[key] = (total + seconds, calls + 1)

    def snapshot(self) -> dict[tuple[str, str], tuple[float, int]]:
        """{(thread, stage): (seconds, calls)} so far."""
        return dict(self._totals)


def difference(after: dict, before: dict) -> dict[tuple[str, str], tuple[float, int]]:
    """What was counted between two snapshots."""
    return {key: (seconds - before.get(key, (0.0, 0))[0], calls - before.get(key, (0.0, 0))[1])
            for key, (seconds, calls) in after.items() if calls != before.get(key, (0.0, 0))[1]}
