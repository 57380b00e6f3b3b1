"""What the client plays of the assistant's audio: the one answer to "is the assistant audible?".

For each live turn (its audio is being sent or played; the session forgets it once its history is
written) :class:`ClientPlayback` keeps one fact per writer:

- ``sent``: samples sent to the client, and when they will have played in real time (the reply, through
  the session);
- ``played``, ``reported``, ``stopped``: what the client says (``tts_start``, ``playback``, ``tts_stop``);
- ``uplink_playing``: the flag on the client's microphone frames (only the barge-in policy reads it).

A turn is audible from its first audio until the client reports ``tts_stop`` for it. A client that has
reported nothing about the turn is taken to play it in real time from its first chunk: audible until
that audio had time to play, plus a little slack. What was heard is the client's ``played_samples`` if it
reported any, else that real-time estimate. Every report wakes :meth:`wait_silent`, so nobody polls.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Protocol

from voicechat.protocol import OUTPUT_SAMPLE_RATE

PLAYBACK_SLACK_S = 0.5  # a client that reports nothing is silent this long after its audio's estimated end


class Clock(Protocol):
    """Seconds on a monotonic clock, and sleeping on it (tests pass a clock they move by hand)."""

    def now(self) -> float: ...

    async def sleep_until(self, when: float) -> None: ...


class MonotonicClock:
    def now(self) -> float:
        return time.monotonic()

    async def sleep_until(self, when: float) -> None:
        await asyncio.sleep(max(0.0, when - time.monotonic()))


@dataclass
class _Turn:
    sent: int = 0
    ends_at: float | None = None  # when the audio sent so far has played, for a client playing as it arrives
    played: int = 0
    reported: bool = False  # the client sent tts_start or playback for it: trust its reports
    stopped: bool = False  # the client sent tts_stop: it plays nothing more of it


class ClientPlayback:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._turns: dict[int, _Turn] = {}  # live turns only: reports about any other turn are ignored
        self._changed = asyncio.Event()
        self.uplink_playing = False

    # --- writers -----------------------------------------------------------------------------------

    def track(self, turn_id: int) -> None:
        """A turn may send audio from now on."""
        self._turns.setdefault(turn_id, _Turn())

    def forget(self, turn_id: int) -> None:
        self._turns.pop(turn_id, None)
        self._notify()

    def sent(self, turn_id: int, samples: int) -> None:
        turn = self._turns.get(turn_id)
        if turn is None:
            return
        now = self._clock.now()
        turn.ends_at = max(turn.ends_at or now, now) + samples / OUTPUT_SAMPLE_RATE
        turn.sent += samples
        self._notify()

    def reported(self, turn_id: int, *, played: int | None = None, stopped: bool = False) -> None:
        """The client's tts_start (no ``played``), playback (``played``) or tts_stop (``stopped``)."""
        turn = self._turns.get(turn_id)
        if turn is None:
            return
        turn.reported = True
        if played is not None:
            turn.played = min(max(turn.played, played), turn.sent)  # never more than was sent
        turn.stopped = turn.stopped or stopped
        self._notify()

    # --- readers -----------------------------------------------------------------------------------

    def live_turns(self) -> set[int]:
        return set(self._turns)

    def audible(self, turn_id: int) -> bool:
        turn = self._turns.get(turn_id)
        if turn is None or turn.ends_at is None or turn.stopped:
            return False
        return turn.reported or self._clock.now() < turn.ends_at + PLAYBACK_SLACK_S

    def heard_samples(self, turn_id: int) -> int:
        """Samples of the turn the user has heard: as the client reports, else estimated in real time."""
        turn = self._turns.get(turn_id)
        if turn is None or turn.ends_at is None:
            return 0
        if turn.reported:
            return turn.played
        unplayed = max(0.0, turn.ends_at - self._clock.now()) * OUTPUT_SAMPLE_RATE
        return max(0, turn.sent - round(unplayed))

    async def wait_silent(self, turn_id: int) -> None:
        """Return once the turn is no longer audible."""
        while True:
            changed = self._changed
            if not self.audible(turn_id):
                return
            turn = self._turns[turn_id]
            if turn.reported:
                await changed.wait()
                continue
            waits = {
                asyncio.ensure_future(changed.wait()),
                asyncio.ensure_future(self._clock.sleep_until(turn.ends_at + PLAYBACK_SLACK_S)),
            }
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waits:
                    waiter.cancel()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
