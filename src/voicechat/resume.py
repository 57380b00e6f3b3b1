"""Conversations kept for a grace period after their socket drops, so a reconnecting page resumes them.

A session that ends parks what makes the conversation (its history, settings and voice: whatever the
session hands over) under its id and a secret resume token. A new socket's hello with
``resume: {session_id, token}`` takes it back, once; after ``grace_s`` it is dropped. A conversation
whose old socket the server still holds (a network drop is noticed only when pings go unanswered) is
handed over at once: the old session gives up its state and ends. Tokens are compared in constant time;
an unknown id, a wrong token and an expired conversation get the same answer. Everything lives in this
process, so a load balancer must send a reconnecting page back to the same instance (docs/deployment.md).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any


def new_token() -> str:
    return secrets.token_urlsafe(24)


@dataclass
class _Parked:
    token: str
    state: Any
    timer: asyncio.TimerHandle


@dataclass
class _Live:
    token: str
    hand_over: Callable[[], Awaitable[Any]]  # the live session gives up its state and ends


class ResumeStore:
    def __init__(self, grace_s: float, max_parked: int) -> None:
        self.grace_s = grace_s
        self.max_parked = max_parked
        self._parked: dict[str, _Parked] = {}
        self._live: dict[str, _Live] = {}

    def __len__(self) -> int:
        return len(self._parked)

    def park(self, session_id: str, token: str, state: Any) -> None:
        """Keep ``state`` for the grace period (the oldest parked one goes when the store is full)."""
        if self.grace_s <= 0:
            return
        self._drop(session_id)
        while len(self._parked) >= self.max_parked:
            self._drop(next(iter(self._parked)))
        timer = asyncio.get_running_loop().call_later(self.grace_s, self._drop, session_id)
        self._parked[session_id] = _Parked(token, state, timer)

    def live(self, session_id: str, token: str, hand_over: Callable[[], Awaitable[Any]]) -> None:
        """A conversation being served now: a resume with its token takes it over (``hand_over()``)."""
        if self.grace_s > 0:
            self._live[session_id] = _Live(token, hand_over)

    def gone(self, session_id: str) -> None:
        """The live conversation ended (it parks itself next, if it may be resumed)."""
        self._live.pop(session_id, None)

    async def take(self, session_id: str, token: str) -> Any | None:
        """The conversation's state, once, if the token matches; None when unknown, expired or wrong."""
        live = self._live.get(session_id)
        if live is not None and _same(live.token, token):
            del self._live[session_id]
            return await live.hand_over()
        parked = self._parked.get(session_id)
        if parked is None or not _same(parked.token, token):
            return None
        self._drop(session_id)
        return parked.state

    def close(self) -> None:
        for session_id in list(self._parked):
            self._drop(session_id)
        self._live.clear()

    def _drop(self, session_id: str) -> None:
        parked = self._parked.pop(session_id, None)
        if parked is not None:
            parked.timer.cancel()


def _same(expected: str, given: str) -> bool:
    return secrets.compare_digest(expected.encode(), given.encode())
