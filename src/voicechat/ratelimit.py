"""A sliding-window rate limit: at most N events in any window of W seconds, in bounded memory."""

from __future__ import annotations

import time
from collections import deque


class RateWindow:
    def __init__(self, limit: int, window_s: float = 60.0) -> None:
        self.limit = limit
        self.window_s = window_s
        self._times: deque[float] = deque(maxlen=limit)  # never more than `limit` entries are needed

    def allow(self, now: float | None = None) -> bool:
        """Count an event now if the window has room for it; False (and nothing counted) otherwise."""
        now = time.monotonic() if now is None else now
        while self._times and now - self._times[0] >= self.window_s:
            self._times.popleft()
        if len(self._times) >= self.limit:
            return False
        self._times.append(now)
        return True

    def retry_after_s(self, now: float | None = None) -> float:
        """Seconds until the next event would be allowed."""
        now = time.monotonic() if now is None else now
        if len(self._times) < self.limit:
            return 0.0
        return max(0.0, self._times[0] + self.window_s - now)
