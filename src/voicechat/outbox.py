"""The one way out to the client: every message and audio chunk of a conversation goes through here.

Writes are serialised (the receive loop, the speech task and each reply's task all send), a socket
already closed swallows them, errors are counted by code, a flood of the same mistake gets one answer
every ``ERROR_REPEAT_S``, the status is sent only when it changes, and every audio chunk sent is
recorded for the echo gate. Kept apart from Session so that no turn logic writes to the socket itself.
"""

from __future__ import annotations

import asyncio

import numpy as np
from starlette.websockets import WebSocket, WebSocketState

from voicechat import protocol as p
from voicechat.echo import EchoReference
from voicechat.metrics import Metrics
from voicechat.playback import Clock

ERROR_REPEAT_S = 2.0  # the same error code is sent at most this often


class Outbox:
    """Everything one conversation sends to its client, in order, through one lock: one rule in one place."""

    def __init__(self, ws: WebSocket, metrics: Metrics, clock: Clock, echo: EchoReference) -> None:
        self._ws, self._metrics, self._clock, self._echo = ws, metrics, clock, echo
        self._lock = asyncio.Lock()
        self.last_error_at: dict[str, float] = {}
        self._state: p.State | None = None

    async def send(self, message: p.ServerMessage) -> None:
        if isinstance(message, p.Error):
            self._metrics.errors.labels(message.code).inc()
        await self._send(p.encode(message))

    async def tell_mistake(self, code: str, message: str) -> None:
        """A problem with what the client sent: a flood of the same one gets one answer every few
        seconds. (A reply's own failure goes through send: each failed turn needs its answer.)"""
        now = self._clock.now()
        if now - self.last_error_at.get(code, -1e9) < ERROR_REPEAT_S:
            return
        self.last_error_at[code] = now
        await self.send(p.Error(code=code, message=message))

    async def send_audio(self, turn_id: int, seq: int, pcm: np.ndarray) -> None:
        self._echo.sent(pcm, turn_id)
        await self._send(p.encode_audio_frame(turn_id, seq, pcm))

    async def send_turn_metrics(self, message: p.TurnMetrics) -> None:
        if message.first_audio_ms is not None:
            self._metrics.first_audio.observe(message.first_audio_ms / 1000)
        await self.send(message)

    async def set_state(self, state: p.State) -> None:
        if state != self._state:
            self._state = state
            await self.send(p.Status(state=state))

    async def _send(self, data: str | bytes) -> None:
        if self._ws.application_state != WebSocketState.CONNECTED:
            return
        async with self._lock:
            await (self._ws.send_text(data) if isinstance(data, str) else self._ws.send_bytes(data))
