"""The WebSocket as a conversation sees it: every send has a deadline, and a SessionGuard watches it.

``app.py`` puts one of these between the socket and the ``Session``, and runs :meth:`watch` beside it:
- a send that does not complete within ``send_timeout_s`` (a client that stopped reading) ends the
  conversation: the session's next ``receive()`` is a disconnect, so it releases its reply, LLM stream
  and TTS stream at once instead of waiting for the ping timeout;
- every message that arrives counts as activity; until the client's hello, each other message is a
  strike, and a few are enough to close;
- the guard's endings (no hello in time, idle, too long, too many strikes) are sent as a typed error,
  then the socket is closed with the ending's close code.

:class:`LimitedLLM` gives each conversation its own rate limit on LLM requests; a refused request
fails like any LLM error, with the code ``rate_limited`` and a plain reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from voicechat import protocol as p
from voicechat.guard import Ending, SessionGuard
from voicechat.llm import LLM, LLMError, LLMStream

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 5.0  # a goodbye to a client that does not read is not waited for longer


class GuardedSocket:
    def __init__(self, websocket: WebSocket, guard: SessionGuard, send_timeout_s: float) -> None:
        self._ws = websocket
        self._guard = guard
        self._send_timeout_s = send_timeout_s
        self._send_lock = asyncio.Lock()
        self._ended = asyncio.Event()
        self._hello = False
        self.ending: Ending | None = None  # why the server ended the conversation, if it did

    def __getattr__(self, name: str) -> Any:  # client, application_state, close ...: the socket's own
        return getattr(self._ws, name)

    async def receive(self) -> dict[str, Any]:
        """The next message, or a disconnect once the conversation was ended on this side."""
        message = await receive_unless(self._ws, self._ended)
        if message is None:
            return {"type": "websocket.disconnect", "code": self.ending.close_code if self.ending else 1006}
        if message["type"] == "websocket.receive":
            self._guard.activity()
            if not self._hello:
                await self._before_hello(message.get("text"))
        return message

    async def send_text(self, text: str) -> None:
        await self._send(self._ws.send_text, text)

    async def send_bytes(self, data: bytes) -> None:
        await self._send(self._ws.send_bytes, data)

    async def watch(self) -> None:
        """Run beside the session: end the conversation when the guard says so."""
        await self.end(await self._guard.watch())

    async def end(self, ending: Ending) -> None:
        """Tell the client why (a typed error), close with the ending's code, and end the session."""
        if self.ending is not None:
            return
        self.ending = ending
        log.info("conversation ended by the server: %s (%s)", ending.message, ending.code)
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                if self._ws.application_state == WebSocketState.CONNECTED:
                    async with self._send_lock:
                        await self._ws.send_text(p.error_message(ending.code, ending.message, fatal=True))
                    await self._ws.close(ending.close_code, ending.message[:120])
        except (TimeoutError, WebSocketDisconnect, RuntimeError, OSError):
            pass  # the client is gone or not listening: ending the session is what matters
        self._ended.set()

    async def _send(self, send: Any, data: str | bytes) -> None:
        if self._ended.is_set():
            raise WebSocketDisconnect(self.ending.close_code if self.ending else 1006)
        async with self._send_lock:
            try:
                async with asyncio.timeout(self._send_timeout_s):
                    await send(data)
                return
            except TimeoutError:
                pass
        message = f"the client took no data for {self._send_timeout_s:g} s (VOICECHAT_SEND_TIMEOUT_S)"
        await self.end(Ending("send_timeout", message, p.CLOSE_POLICY))
        raise WebSocketDisconnect(p.CLOSE_POLICY)

    async def _before_hello(self, text: str | None) -> None:
        try:
            self._hello = text is not None and isinstance(p.parse_client_message(text), p.Hello)
        except p.ProtocolError:
            self._hello = False
        if self._hello:
            self._guard.hello()
        elif (ending := self._guard.strike()) is not None:
            await self.end(ending)


class TooManyRequests(LLMError):
    code = "rate_limited"


class LimitedLLM:
    """One conversation's view of the shared LLM: at most ``llm_requests_per_minute`` requests."""

    def __init__(self, llm: LLM, guard: SessionGuard) -> None:
        self._llm = llm
        self._guard = guard
        self.name = llm.name

    def stream(self, messages: list[dict[str, str]]) -> LLMStream:
        refusal = self._guard.llm_request()
        if refusal is None:
            return self._llm.stream(messages)

        async def refused() -> AsyncGenerator[str, None]:
            raise TooManyRequests(refusal)
            yield ""  # pragma: no cover - makes this an async generator

        return LLMStream(refused, where=self.name, first_token_timeout_s=1.0, retries=0)

    async def check_ready(self) -> None:
        await self._llm.check_ready()

    async def aclose(self) -> None:
        """Nothing of its own to close: the shared LLM is closed by the app."""


async def receive_unless(ws: WebSocket, event: asyncio.Event) -> dict[str, Any] | None:
    """The socket's next message, or None if ``event`` is set first (the receive is then cancelled)."""
    receiving = asyncio.ensure_future(ws.receive())
    setting = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({receiving, setting}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        setting.cancel()
        if not receiving.done():
            receiving.cancel()
    if not receiving.done() or receiving.cancelled():
        return None
    return receiving.result()
