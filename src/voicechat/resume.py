"""Conversations kept for a grace period after their socket drops, so a reconnecting page resumes them.

A session that ends without a goodbye parks what makes the conversation (its history, settings and
voice: whatever the session hands over) under its id and a secret resume token. A new socket's hello
with ``resume: {session_id, token}`` takes it back, once; after ``grace_s`` it is dropped. Tokens are
compared in constant time. Everything lives in this process, so a load balancer must send a
reconnecting page back to the same instance (docs/deployment.md).
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from typing import Any


def new_token() -> str:
    return secrets.token_urlsafe(24)


@dataclass
class _Parked:
    token: str
    state: Any
    timer: asyncio.TimerHandle


class ResumeStore:
    def __init__(self, grace_s: float, max_parked: int) -> None:
        self.grace_s = grace_s
        self.max_parked = max_parked
        self._parked: dict[str, _Parked] = {}

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

    def take(self, session_id: str, token: str) -> Any | None:
        """The parked state, once, if the token matches; None when unknown, expired or wrong."""
        parked = self._parked.get(session_id)
        if parked is None or not secrets.compare_digest(parked.token.encode(), token.encode()):
            return None
        self._drop(session_id)
        return parked.state

    def close(self) -> None:
        for session_id in list(self._parked):
            self._drop(session_id)

    def _drop(self, session_id: str) -> None:
        parked = self._parked.pop(session_id, None)
        if parked is not None:
            parked.timer.cancel()
