"""A conversation's audio backlog: what the client sent that the listener has not heard yet.

When the server is slow (a busy CPU, the shared Whisper thread), audio piles up here. That is the
server's backlog, never the client's fault, so nothing is refused for it. Instead:
- the listener takes everything waiting in one piece (coalescing: one call, however many frames came);
- past ``shed_after_s`` of backlog, long silences are shortened to ``keep_silence_s`` (more than any
  turn decision waits, so turn-taking is unchanged) and the session tells the client "busy", once per
  episode;
- only past ``max_backlog_s`` (memory's bound) is the oldest audio dropped, speech included.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

import numpy as np

log = logging.getLogger(__name__)

SILENCE_RMS = 300.0  # int16 RMS below this (about -40 dBFS) is silence for shedding
SHED_AFTER_S = 4.0
KEEP_SILENCE_S = 4.0  # the longest turn decision waits 3.2 s of silence (speed 0)
MAX_BACKLOG_S = 60.0


def _silent(pcm: np.ndarray) -> bool:
    return len(pcm) == 0 or float(np.sqrt(np.mean(pcm.astype(np.float32) ** 2))) < SILENCE_RMS


class AudioInbox:
    def __init__(
        self,
        sample_rate: int,
        *,
        shed_after_s: float = SHED_AFTER_S,
        keep_silence_s: float = KEEP_SILENCE_S,
        max_backlog_s: float = MAX_BACKLOG_S,
    ) -> None:
        self.sample_rate = sample_rate
        self.shed_after_s = shed_after_s
        self.keep_silence_s = keep_silence_s
        self.max_backlog_s = max_backlog_s
        self.busy = False  # in an overload episode (the client has been told)
        self.shed_s = 0.0  # seconds of audio dropped so far (silence, then anything past the bound)
        self._chunks: deque[np.ndarray] = deque()
        self._samples = 0
        self._playing = False
        self._arrived = asyncio.Event()

    @property
    def backlog_s(self) -> float:
        return self._samples / self.sample_rate

    def put(self, pcm: np.ndarray, client_playing: bool) -> bool:
        """Queue int16 PCM. True when the client should now be told the server is busy (once per episode)."""
        self._chunks.append(pcm)
        self._samples += len(pcm)
        self._playing = client_playing
        self._arrived.set()
        if self.backlog_s <= self.shed_after_s:
            return False
        self._shorten_silences()
        while self.backlog_s > self.max_backlog_s and len(self._chunks) > 1:
            dropped = self._chunks.popleft()
            self._drop(len(dropped))
        if self.backlog_s > self.max_backlog_s:
            log.warning("audio backlog over %g s: dropped speech", self.max_backlog_s)
        told, self.busy = self.busy, True
        return not told

    async def get(self) -> tuple[np.ndarray, bool]:
        """All audio waiting, as one array, and whether the client last said it was playing audio."""
        while not self._chunks:
            self._arrived.clear()
            await self._arrived.wait()
        if self.backlog_s < self.shed_after_s / 2:
            self.busy = False  # caught up: a later overload is a new episode
        pcm = self._chunks[0] if len(self._chunks) == 1 else np.concatenate(self._chunks)
        self._chunks.clear()
        self._samples = 0
        return pcm, self._playing

    def _shorten_silences(self) -> None:
        keep = self.keep_silence_s * self.sample_rate
        kept: deque[np.ndarray] = deque()
        silent_run = 0
        for index, chunk in enumerate(self._chunks):
            last = index == len(self._chunks) - 1
            if _silent(chunk) and not last:
                silent_run += len(chunk)
                if silent_run > keep:
                    self._drop(len(chunk))
                    continue
            else:
                silent_run = 0
            kept.append(chunk)
        self._chunks = kept

    def _drop(self, samples: int) -> None:
        self._samples -= samples
        self.shed_s += samples / self.sample_rate
