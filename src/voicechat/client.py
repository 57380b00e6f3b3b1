"""A small Python client of the WebSocket protocol: tests, benchmarks and scripted conversations use it.

It records every message and audio frame with its arrival time, and can stream PCM at real-time pace.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import websockets

from voicechat.protocol import FLAG_PLAYING, FRAME_HEADER, PROTOCOL_VERSION, decode_downlink_frame


@dataclass
class AudioChunk:
    turn_id: int
    seq: int
    pcm: np.ndarray
    received_at: float  # time.monotonic()


@dataclass
class VoiceChatClient:
    url: str
    sample_rate: int = 16000
    messages: list[dict[str, Any]] = field(default_factory=list)
    audio: dict[int, list[AudioChunk]] = field(default_factory=lambda: defaultdict(list))
    hello: dict[str, Any] | None = None
    closed_code: int | None = None
    _ws: Any = None
    _reader: asyncio.Task[None] | None = None
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def connect(self, *, send_hello: bool = True, timeout: float = 120.0) -> VoiceChatClient:
        self._ws = await websockets.connect(self.url, max_size=None, open_timeout=timeout)
        self._reader = asyncio.create_task(self._read())
        if send_hello:
            await self.send({"type": "hello", "protocol": PROTOCOL_VERSION, "sample_rate": self.sample_rate})
            self.hello = await self.wait_for("hello", timeout=timeout)
        return self

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)

    async def __aenter__(self) -> VoiceChatClient:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- sending ---------------------------------------------------------------------------------

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        await self._ws.send(json.dumps(message) if isinstance(message, dict) else message)

    async def send_audio(
        self,
        pcm: np.ndarray,
        *,
        frame_ms: int = 20,
        realtime: bool = True,
        playing: bool | Callable[[], bool] = False,
    ) -> None:
        """Stream int16 PCM as protocol frames; at real-time pace unless ``realtime`` is False."""
        step = self.sample_rate * frame_ms // 1000
        start = time.monotonic()
        for index, offset in enumerate(range(0, len(pcm), step)):
            flag = playing() if callable(playing) else playing
            header = FRAME_HEADER.pack(int(time.time() * 1000) & 0xFFFFFFFF, FLAG_PLAYING if flag else 0)
            await self._ws.send(header + pcm[offset : offset + step].astype("<i2").tobytes())
            if realtime:
                delay = start + (index + 1) * frame_ms / 1000 - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)

    async def report_played(self, turn_id: int) -> None:
        """Tell the server the whole turn was played (what a browser says when its queue runs dry)."""
        samples = sum(len(chunk.pcm) for chunk in self.audio.get(turn_id, []))
        await self.send({"type": "tts_stop", "turn_id": turn_id, "played_samples": samples})

    # --- receiving -------------------------------------------------------------------------------

    async def _read(self) -> None:
        try:
            async for data in self._ws:
                now = time.monotonic()
                if isinstance(data, bytes):
                    turn_id, seq, pcm = decode_downlink_frame(data)
                    self.audio[turn_id].append(AudioChunk(turn_id, seq, pcm.copy(), now))
                else:
                    message = json.loads(data)
                    message["_received_at"] = now
                    self.messages.append(message)
                async with self._changed:
                    self._changed.notify_all()
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed_code = self._ws.close_code
            async with self._changed:
                self._changed.notify_all()

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == kind]

    async def wait_until(self, condition: Callable[[], Any], *, timeout: float = 60.0) -> Any:
        """Wait until ``condition()`` is truthy (checked on every arrival) and return its value."""
        async with asyncio.timeout(timeout):
            async with self._changed:
                while not (result := condition()):
                    if self._reader is not None and self._reader.done():
                        raise ConnectionError(f"connection closed ({self.closed_code}) while waiting")
                    await self._changed.wait()
                return result

    async def wait_for(
        self, kind: str, *, timeout: float = 60.0, where: Callable[[dict[str, Any]], bool] = lambda m: True, after: int = 0
    ) -> dict[str, Any]:
        """The first message of type ``kind`` (from index ``after`` on) for which ``where`` holds."""

        def find() -> dict[str, Any] | None:
            return next((m for m in self.messages[after:] if m["type"] == kind and where(m)), None)

        return await self.wait_until(find, timeout=timeout)

    def turn_audio(self, turn_id: int) -> np.ndarray:
        chunks = sorted(self.audio.get(turn_id, []), key=lambda c: c.seq)
        return np.concatenate([c.pcm for c in chunks]) if chunks else np.zeros(0, dtype=np.int16)
