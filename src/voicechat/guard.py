"""The limits of one conversation's life, in one place: a deadline for hello, an idle timeout, a longest
session, a strike limit for malformed input, and a rate limit on LLM requests.

The session reports what happens (``hello()``, ``activity()``, ``strike()``, ``llm_request()``);
:meth:`SessionGuard.watch` sleeps until the earliest deadline and returns the :class:`Ending` that the
session sends as a typed error before it closes with its close code (docs/protocol.md, "Limits").
Only genuinely malformed input is a strike: audio the server is too slow to hear is never one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from voicechat.config import Settings
from voicechat.ratelimit import RateWindow

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
MAX_STRIKES_BEFORE_HELLO = 5  # a client that cannot say hello gets few chances
MAX_STRIKES = 50  # malformed messages in one conversation before it is closed


@dataclass(frozen=True)
class Ending:
    code: str  # the error code sent before closing
    message: str
    close_code: int


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:g} minutes" if seconds >= 120 else f"{seconds:g} s"


class SessionGuard:
    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._clock = clock
        self._opened = self._last_activity = clock()
        self._hello_at: float | None = None
        self._strikes = 0
        self._llm = RateWindow(settings.llm_requests_per_minute, 60.0)
        self._woken = asyncio.Event()

    def hello(self) -> None:
        self._hello_at = self._clock()
        self._woken.set()

    def activity(self) -> None:
        """Audio or a message arrived."""
        self._last_activity = self._clock()

    def strike(self) -> Ending | None:
        """A malformed message; the Ending when this one is one too many."""
        self._strikes += 1
        limit = MAX_STRIKES if self._hello_at is not None else MAX_STRIKES_BEFORE_HELLO
        if self._strikes < limit:
            return None
        return Ending("too_many_errors", f"{limit} malformed messages: closing", CLOSE_POLICY)

    def llm_request(self) -> str | None:
        """None if one more LLM request is allowed now, else the plain reason to send (rate_limited)."""
        if self._llm.allow(self._clock()):
            return None
        wait = self._llm.retry_after_s(self._clock())
        return (
            f"more than {self._llm.limit} questions a minute (VOICECHAT_LLM_REQUESTS_PER_MINUTE): "
            f"wait {wait:.0f} s before the next one"
        )

    async def watch(self) -> Ending:
        """Return when the conversation must end: no hello in time, idle too long, or too old."""
        settings = self._settings
        while True:
            now = self._clock()
            if self._hello_at is None:
                deadline = self._opened + settings.hello_timeout_s
                if now >= deadline:
                    return Ending("hello_timeout", f"no hello within {settings.hello_timeout_s:g} s", CLOSE_POLICY)
            else:
                idle_end = self._last_activity + settings.idle_timeout_s
                session_end = self._opened + settings.max_session_s
                if now >= session_end:
                    message = f"a conversation lasts at most {_minutes(settings.max_session_s)}; reconnect to go on"
                    return Ending("session_expired", message, CLOSE_GOING_AWAY)
                if now >= idle_end:
                    message = f"nothing was heard for {_minutes(settings.idle_timeout_s)}; reconnect to go on"
                    return Ending("idle_timeout", message, CLOSE_GOING_AWAY)
                deadline = min(idle_end, session_end)
            self._woken.clear()
            try:
                await asyncio.wait_for(self._woken.wait(), timeout=max(0.0, deadline - now))
            except TimeoutError:
                pass
