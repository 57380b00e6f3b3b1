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
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.websockets import WebSocket

from voicechat import protocol as p
from voicechat.guarded_socket import receive_unless
from voicechat.llm import History

log = logging.getLogger(__name__)

RESUME_FAILED = (
    "the conversation could not be resumed (it ended more than {grace:g} s ago, or is unknown); "
    "this is a fresh one"
)


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
    claimed: bool = False  # a connection was let in past the caps to take it over (claim)


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

    def claim(self, session_id: str, token: str) -> bool:
        """True, once, if ``token`` resumes the conversation held live under ``session_id``. A server at a cap
        lets that connection in: the conversation it resumes holds a slot, which the hand-over frees. Once
        only, so that one token never brings two connections past a cap. A parked conversation holds no
        slot and is not claimed: it waits for a free one like any other."""
        live = self._live.get(session_id)
        if live is None or live.claimed or not _same(live.token, token):
            return False
        live.claimed = True
        return True

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


async def resuming_past_cap(websocket: WebSocket, store: ResumeStore, timeout_s: float) -> WebSocket | None:
    """At a cap: read the new connection's first message (within ``timeout_s``). If it is a hello that
    claims a live conversation (ResumeStore.claim), the connection goes on, its hello read again first;
    otherwise None, and the door refuses it as it would have at once."""
    try:
        first = await asyncio.wait_for(websocket.receive(), timeout_s)
    except asyncio.TimeoutError:
        return None
    try:
        hello = p.parse_client_message(first.get("text") or "")
    except p.ProtocolError:
        return None
    resume = hello.resume if isinstance(hello, p.Hello) else None
    if resume is None or not store.claim(resume.session_id, resume.token):
        return None
    log.info("resume of %s let in past the cap (it takes its own place)", resume.session_id)
    return _Replayed(websocket, first)  # type: ignore[return-value]


class _Replayed:
    """A socket whose first message was already read: it gives that message again, then the rest."""

    def __init__(self, websocket: WebSocket, first: dict[str, Any]) -> None:
        self._ws = websocket
        self._first: dict[str, Any] | None = first

    def __getattr__(self, name: str) -> Any:  # client, send_text, close ...: the socket's own
        return getattr(self._ws, name)

    async def receive(self) -> dict[str, Any]:
        first, self._first = self._first, None
        return first if first is not None else await self._ws.receive()


def _same(expected: str, given: str) -> bool:
    return secrets.compare_digest(expected.encode(), given.encode())


@dataclass
class Parked:
    """What a conversation is, without its connection: what a resume gives back."""

    history: History
    settings: p.ConversationSettings
    next_turn_id: int


class Resumption:
    """One connection's part in resume: the token its hello offers, taking back the conversation a hello
    asks for, noticing when another connection takes this one over, and parking it at the end. Kept apart
    from Session so that the turn logic never has to think about a conversation outliving its socket."""

    def __init__(self, store: ResumeStore | None) -> None:
        self.store = store  # None: conversations are never resumed
        self.token = new_token()
        self.greeted = False  # the server's hello was sent: there is a conversation to resume
        self.handed_over = asyncio.Event()  # another connection resumed this conversation

    @property
    def offered_token(self) -> str | None:
        return self.token if self.store is not None else None

    async def take(self, session_id: str, request: p.ResumeRequest | None) -> Parked | None:
        """The conversation the hello asks for; None (a fresh one) if it cannot be had."""
        if request is None or self.store is None:
            return None
        parked = await self.store.take(request.session_id, request.token)
        if not isinstance(parked, Parked):
            log.info("session %s: resume of %s refused (unknown, expired or wrong token)", session_id, request.session_id[:12])
            return None
        log.info("session %s resumed", request.session_id)
        return parked

    async def greeted_as(
        self,
        session_id: str,
        request: p.ResumeRequest | None,
        resumed: bool,
        hand_over: Callable[[], Awaitable[Parked]],
        send: Callable[[p.ServerMessage], Awaitable[None]],
    ) -> None:
        """The server's hello went out: the conversation is live (resumable), and a client whose resume
        failed is told so."""
        self.greeted = True
        if self.store is not None:
            self.store.live(session_id, self.token, hand_over)
        if request is not None and not resumed:
            grace = self.store.grace_s if self.store is not None else 0
            await send(p.Error(code="resume_failed", message=RESUME_FAILED.format(grace=grace)))

    async def receive(self, ws: WebSocket) -> dict[str, Any]:
        """The next message from the client, or a disconnect once another connection took over."""
        message = await receive_unless(ws, self.handed_over)
        if message is None or self.handed_over.is_set():  # a message that came with the hand-over is not ours
            return {"type": "websocket.disconnect", "code": 1000}
        return message

    def park(self, session_id: str, parked: Parked, ws: WebSocket) -> None:
        """The connection ended: park the conversation, unless it was handed over or ended by the server."""
        if self.store is None or not self.greeted or self.handed_over.is_set():
            return
        self.store.gone(session_id)
        if not _ended_by_server(ws):
            self.store.park(session_id, self.token, parked)


def _ended_by_server(ws: WebSocket) -> bool:
    """The server ended this conversation for a limit (idle, too long, abuse): it is not resumable.
    (A client that stopped reading may be on a bad network: it may resume.)"""
    ending = getattr(ws, "ending", None)  # set by GuardedSocket (app.py)
    return ending is not None and ending.code != "send_timeout"
