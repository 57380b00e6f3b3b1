"""uvicorn's HTTP protocol with deadlines: a client must send a request's headers, then its body, in time.

uvicorn times out only idle keep-alive connections; a client that sends half a request line, or
declares a large body and sends a few bytes, holds its connection (and a file descriptor) for as long
as it likes. Here each connection is in one phase at a time (waiting for headers, reading a body, or
answered / upgraded to a WebSocket) and the first two have a deadline; a missed deadline closes it.
"""

from __future__ import annotations

import asyncio
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

# The body deadline is a backstop: the upload handler enforces body_timeout_s itself, with a typed
# answer, and this fires only a little later for requests that nobody reads.
BODY_BACKSTOP_S = 5.0


def deadline_protocol(header_timeout_s: float, body_timeout_s: float) -> type[H11Protocol]:
    """The protocol class to pass to ``uvicorn.run(http=...)``."""

    class DeadlineProtocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _phase: str | None = None
        _upgraded = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._follow_phase()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._follow_phase()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._follow_phase()

        def handle_websocket_upgrade(self, event: h11.Request) -> None:
            self._upgraded = True  # the WebSocket protocol owns the connection now: no more deadlines
            self._arm(None, 0.0)
            super().handle_websocket_upgrade(event)

        def connection_lost(self, exc: Exception | None) -> None:
            self._arm(None, 0.0)
            super().connection_lost(exc)

        def _follow_phase(self) -> None:
            state = self.conn.their_state
            if self._upgraded or self.transport.is_closing():
                phase = None
            elif state is h11.IDLE:
                phase = "headers"
            elif state is h11.SEND_BODY:
                phase = "body"
            else:
                phase = None  # the request is in, or the connection became a WebSocket
            if phase != self._phase:
                limit = header_timeout_s if phase == "headers" else body_timeout_s + BODY_BACKSTOP_S
                self._arm(phase, limit)

        def _arm(self, phase: str | None, seconds: float) -> None:
            self._phase = phase
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            if phase is not None:
                self._deadline = self.loop.call_later(seconds, self._expired, phase, seconds)

        def _expired(self, phase: str, seconds: float) -> None:
            self._deadline = None
            if self._phase == phase and not self.transport.is_closing():
                client = "%s:%d" % self.client if self.client else "a client"
                log.info("closed the connection of %s: request %s not complete after %g s", client, phase, seconds)
                self.transport.close()

    return DeadlineProtocol
