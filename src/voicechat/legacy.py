"""Clients of the original RealtimeVoiceChat app, served by the same Session as version-1 clients.

The original page never says hello: its first message is a binary audio frame (our 8-byte header, then
int16 at its AudioContext's rate, which it never names). :class:`ClientSocket` sits between the
WebSocket and the conversation (app.py puts it under the GuardedSocket) and decides on the client's
first message. Text: a version-1 client, and every call passes straight through. Binary: the original
protocol, translated both ways here with protocol.py's legacy shapes, so the session never knows which
protocol its client speaks.

- In: frames are held until their timestamps have measured the input rate (protocol.LegacyRateMeter),
  then a hello with that rate is spoken for the client and the frames pass unchanged (the Listener
  resamples them as it would any client's). ``tts_start``/``tts_stop`` only say that the page's playback
  queue started or ran dry, several times a reply and without a turn id: not a turn's end, so they stop
  here (the frames' playing flag tells the barge-in policy the same). Everything else passes as the
  version-1 message it is, so the session answers mistakes as it does for anyone.
- Out: the original shapes (protocol.encode_legacy); a turn's audio as base64 ``tts_chunk`` at 48 kHz,
  resampled as one stream per turn (no clicks at chunk joints); every stop as the original pair
  ``stop_tts`` then ``tts_interruption`` (the page ignores all audio between the two, so they always
  come together); one ``final_assistant_answer`` per turn (the page adds a bubble for each); the rest
  (status, settings, metrics, errors) has no original counterpart and is not sent.

A legacy client reports no playback, so what the user heard of an interrupted reply is the session's
estimate for a client that reports nothing: the audio sent, played in real time from its first chunk.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

import numpy as np
from pydantic import ValidationError
from starlette.websockets import WebSocket

from voicechat import protocol as p
from voicechat.audio import StreamResampler, float32_to_int16, int16_to_float32

log = logging.getLogger(__name__)

MAX_HELD_MESSAGES = 100  # a client whose clock does not move gets the 48 kHz guess after this many (~4 s)


def _text(text: str) -> dict[str, Any]:
    return {"type": "websocket.receive", "text": text}


class ClientSocket:
    """The WebSocket as the session sees it: a version-1 client's as it is, an original one's translated."""

    def __init__(self, websocket: WebSocket) -> None:
        self._ws = websocket
        self.legacy: bool | None = None  # decided by the client's first message
        self._meter = p.LegacyRateMeter()
        self._held: list[dict[str, Any]] = []  # what arrived before the input rate was known
        self._ready: deque[dict[str, Any]] = deque()  # translated, waiting for the session
        self._said_hello = False
        self._stopped_turn = 0  # audio of this turn and older ones is never sent again
        self._answered_turn = 0  # the page has this turn's final_assistant_answer
        self._clearing = False  # from the page's clear_history until the session's history_cleared
        self._audio_turn = 0
        self._resampler: StreamResampler | None = None

    def __getattr__(self, name: str) -> Any:  # client, application_state, close ...: the socket's own
        return getattr(self._ws, name)

    # --- in ----------------------------------------------------------------------------------------

    async def receive(self) -> dict[str, Any]:
        while not self._ready:
            message = await self._ws.receive()
            if message["type"] != "websocket.receive":
                return message  # a disconnect: whatever is held leaves with the client
            if self.legacy is None:
                self.legacy = message.get("bytes") is not None
            if not self.legacy:
                return message
            self._take(message)
        return self._ready.popleft()

    def _take(self, message: dict[str, Any]) -> None:
        if self._said_hello:
            self._pass_in(message)
            return
        self._held.append(message)
        if (data := message.get("bytes")) is not None:
            try:
                self._meter.add(p.decode_audio_frame(data, max_bytes=len(data)))
            except p.ProtocolError:
                pass  # a malformed frame: the session answers it when it gets there
        if self._meter.measured or len(self._held) >= MAX_HELD_MESSAGES:
            self._said_hello = True
            log.info("a client of the original protocol, sending audio at %d Hz", self._meter.rate)
            self._ready.append(_text(p.legacy_hello(self._meter.rate).model_dump_json()))
            for held in self._held:
                self._pass_in(held)
            self._held.clear()

    def _pass_in(self, message: dict[str, Any]) -> None:
        text = message.get("text")
        if text is None:
            self._ready.append(message)  # audio: the same frame as version 1
            return
        try:
            parsed = p.parse_legacy_client_message(text)
        except p.ProtocolError:
            self._ready.append(message)  # not an original message: the session takes it as version 1
            return
        if isinstance(parsed, p.LegacyQueue):
            return
        if isinstance(parsed, p.ClearHistory):
            self._clearing = True
        self._ready.append(_text(parsed.model_dump_json()))

    # --- out ---------------------------------------------------------------------------------------

    async def send_text(self, text: str) -> None:
        if not self.legacy:
            await self._ws.send_text(text)
            return
        try:
            message = p.decode_server_message(text)
        except ValidationError:  # not a server message the edge knows: it has no original counterpart
            log.warning("legacy edge: not translated: %.80s", text)
            return
        for legacy in self._translate(message):
            await self._ws.send_text(legacy)

    async def send_bytes(self, data: bytes) -> None:
        if not self.legacy:
            await self._ws.send_bytes(data)
            return
        turn_id, _, pcm = p.decode_downlink_frame(data)
        if turn_id <= self._stopped_turn:
            return  # the page was told to stop this turn: it would play it after the next one's start
        if turn_id != self._audio_turn or self._resampler is None:
            self._audio_turn = turn_id
            self._resampler = StreamResampler(p.OUTPUT_SAMPLE_RATE, p.LEGACY_OUTPUT_RATE)
        await self._send_audio(self._resampler.process(int16_to_float32(pcm)))

    async def _send_audio(self, samples: np.ndarray) -> None:
        if len(samples):
            await self._ws.send_text(p.encode_legacy_audio(float32_to_int16(samples)))

    def _translate(self, message: p.ServerMessage) -> list[str]:
        """What the original client gets for one server message, in order."""
        if isinstance(message, p.TtsInterruption):
            return []  # said with stop_tts, which the session sends right after it
        if isinstance(message, p.StopTts):
            self._stopped_turn = max(self._stopped_turn, message.turn_id)
            self._resampler = None
            return [p.encode_legacy(p.StopTts(turn_id=message.turn_id)),  # type: ignore[list-item]
                    p.encode_legacy(p.TtsInterruption(turn_id=message.turn_id))]
        if isinstance(message, p.TtsEnd):
            return self._audio_tail(message.turn_id)
        if isinstance(message, p.FinalAssistantAnswer):
            if message.turn_id <= self._answered_turn:
                return []  # its full text is on the page already
            self._answered_turn = message.turn_id
            if self._clearing:  # the page has cleared its bubbles: end the typing one, add none
                message = message.model_copy(update={"content": ""})
        elif isinstance(message, p.HistoryCleared):
            self._clearing = False
        encoded = p.encode_legacy(message)
        return [] if encoded is None else [encoded]

    def _audio_tail(self, turn_id: int) -> list[str]:
        """The end of a turn's audio, still in the resampler's filter."""
        if turn_id != self._audio_turn or self._resampler is None:
            return []
        tail, self._resampler = self._resampler.flush(), None
        return [p.encode_legacy_audio(float32_to_int16(tail))] if len(tail) else []
