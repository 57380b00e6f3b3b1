"""A client written for the original RealtimeVoiceChat app, on the real server (`voicechat serve` with the
tiny Chatterbox, Whisper tiny.en and the loopback LLM), beside a version-1 client.

:class:`OriginalPage` does on the wire exactly what the original page (static/app.js) does: no hello;
2048-sample int16 frames at its AudioContext's rate, stamped with its clock and its playing flag; JSON
messages in, base64 ``tts_chunk`` audio included; ``tts_stop`` in answer to ``stop_tts``. The edge's
logic (every message of the translation, the heard-text estimate on a clock moved by hand) is tested
in-process in test_legacy_edge.py; these are the few real ones."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import websockets
from fake_llm import LONG_REPLY, SHORT_REPLY, FakeLLM, Script
from server_process import served_by_fake_llm
from speech import espeak_wav, read_pcm16, silence

from voicechat.audio import resample
from voicechat.client import VoiceChatClient
from voicechat.protocol import FRAME_HEADER, LEGACY_OUTPUT_RATE

pytestmark = pytest.mark.timeout(300)

ORIGINAL_TYPES = {
    "partial_user_request", "final_user_request", "partial_assistant_answer", "final_assistant_answer",
    "tts_chunk", "stop_tts", "tts_interruption",
}  # fmt: skip
FRAME = 2048  # the page's samples per frame


class OriginalPage:
    """The original page's side of the WebSocket, in Python."""

    def __init__(self, url: str, rate: int) -> None:
        self.url = url
        self.rate = rate  # its AudioContext's rate, never told to the server
        self.messages: list[dict[str, Any]] = []
        self.binary_frames = 0  # the original page has no use for binary frames
        self.playing = False  # what the page's playback worklet would say (the frames' flag bit 0)
        self._changed = asyncio.Condition()
        self._ws: Any = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> OriginalPage:
        self._ws = await websockets.connect(self.url, max_size=None, open_timeout=120)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._ws.close()
        assert self._reader is not None
        await asyncio.gather(self._reader, return_exceptions=True)

    async def send(self, message: dict[str, Any]) -> None:
        await self._ws.send(json.dumps(message))

    async def speak(self, pcm: np.ndarray) -> None:
        """Microphone audio at the page's rate, in its frames, at real-time pace, stamped as it stamps them."""
        start = time.monotonic()
        for index, offset in enumerate(range(0, len(pcm), FRAME)):
            frame = np.zeros(FRAME, np.int16)
            part = pcm[offset : offset + FRAME]
            frame[: len(part)] = part  # the page pads its last frame with zeros
            header = FRAME_HEADER.pack(int(time.time() * 1000) & 0xFFFFFFFF, int(self.playing))
            await self._ws.send(header + frame.astype("<i2").tobytes())
            delay = start + (index + 1) * FRAME / self.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    async def _read(self) -> None:
        try:
            async for data in self._ws:
                if isinstance(data, bytes):
                    self.binary_frames += 1
                    continue
                message = json.loads(data)
                self.messages.append(message | {"_at": time.monotonic()})
                if message.get("type") == "stop_tts":
                    await self.send({"type": "tts_stop"})  # what the page answers (its queue is cleared)
                async with self._changed:
                    self._changed.notify_all()
        except websockets.ConnectionClosed:
            pass

    async def wait_for(self, kind: str, *, where: Callable[[dict[str, Any]], bool] = lambda m: True,
                       after: int = 0, timeout: float = 120.0) -> dict[str, Any]:  # fmt: skip
        def find() -> dict[str, Any] | None:
            return next((m for m in self.messages[after:] if m["type"] == kind and where(m)), None)

        async with asyncio.timeout(timeout), self._changed:
            while (found := find()) is None:
                assert self._reader is not None and not self._reader.done(), "the server closed the connection"
                await self._changed.wait()
            return found

    def kinds(self) -> list[str]:
        return [m["type"] for m in self.messages]

    def audio(self, start: int = 0, end: int | None = None) -> np.ndarray:
        """The tts_chunk audio among messages[start:end]: int16 mono at 48 kHz."""
        chunks = [base64.b64decode(m["content"]) for m in self.messages[start:end] if m["type"] == "tts_chunk"]
        return np.frombuffer(b"".join(chunks), dtype="<i2")


def speech(text: str, rate: int, *, before: float = 0.3, after: float = 2.5) -> np.ndarray:
    pcm, wav_rate = read_pcm16(espeak_wav(text))
    return np.concatenate([silence(before, rate), resample(pcm, wav_rate, rate), silence(after, rate)])


fake_llm, server, default_script = served_by_fake_llm(SHORT_REPLY)


@pytest.mark.parametrize("rate", [44_100, 48_000])
async def test_a_spoken_turn_from_the_original_page_beside_a_version1_client(server, rate: int) -> None:
    async with OriginalPage(server.ws_url, rate) as page, VoiceChatClient(server.ws_url) as v1:
        speaking = asyncio.create_task(page.speak(speech("What is the capital of France?", rate)))
        await v1.send({"type": "text_message", "content": "Hello there"})
        final_user = await page.wait_for("final_user_request")
        answer = await page.wait_for("final_assistant_answer")
        await speaking
        v1_answer = await v1.wait_for("final_assistant_answer", timeout=120)
        v1_end = await v1.wait_for("tts_end", where=lambda m: m["turn_id"] == v1_answer["turn_id"])

    assert f"sending audio at {rate} Hz" in server.log_tail(400)  # measured from the frames' timestamps
    content = final_user["content"].lower()
    assert "capital" in content and "france" in content
    assert answer["content"] == SHORT_REPLY
    kinds = page.kinds()
    assert kinds.index("partial_user_request") < kinds.index("final_user_request")
    assert kinds.index("final_user_request") < kinds.index("partial_assistant_answer") < kinds.index("tts_chunk")
    assert set(kinds) <= ORIGINAL_TYPES and page.binary_frames == 0  # the original shapes only
    assert all(set(m) == {"type", "content", "_at"} for m in page.messages)
    audio = page.audio()  # all of it: the reply's audio ends before its final answer
    assert len(audio) > LEGACY_OUTPUT_RATE // 2 and np.abs(audio.astype(np.int32)).max() > 100  # 48 kHz, not silence

    # The version-1 client beside it got its own protocol, untouched.
    assert v1.hello is not None and v1.hello["output_sample_rate"] == 24_000
    assert v1_answer["content"] == SHORT_REPLY and not v1_answer["interrupted"]
    assert len(v1.turn_audio(v1_answer["turn_id"])) == v1_end["samples"] > 0  # binary frames, with turn ids
    assert {m["type"] for m in v1.messages} >= {"hello", "status", "final_user_request", "turn_metrics"}
    assert "tts_chunk" not in {m["type"] for m in v1.messages}


async def test_the_original_page_interrupts_types_clears_and_sets_the_speed(server, fake_llm: FakeLLM) -> None:
    fake_llm.set_scripts(
        Script(reply=LONG_REPLY, token_delay=0.01), Script(reply=SHORT_REPLY, token_delay=0.01),
        Script(reply="Fresh.", token_delay=0.01),
    )  # fmt: skip
    rate = 44_100
    async with OriginalPage(server.ws_url, rate) as page:
        await page.speak(silence(1.2, rate))  # the page streams from the start: its rate is measured
        await page.send({"type": "set_speed", "speed": 60})
        await page.send({"type": "text_message", "content": "Tell me a story"})  # a typed turn
        await page.wait_for("tts_chunk")
        # The page plays what arrives and the user talks over it.
        page.playing = True
        barge_in = asyncio.create_task(page.speak(speech("Stop please, tell me about Berlin instead.", rate, after=2.0)))
        try:
            stopped_at = page.messages.index(await page.wait_for("stop_tts", timeout=60))
            page.playing = False
            interruption = await page.wait_for("tts_interruption", after=stopped_at)
            assert page.messages.index(interruption) == stopped_at + 1  # the original sequence, in its order
            next_user = await page.wait_for("final_user_request", after=stopped_at)
            assert "stop" in next_user["content"].lower() and "tell me" in next_user["content"].lower()
            next_at = page.messages.index(next_user)
            assert page.audio(stopped_at, next_at).size == 0, "no audio of the interrupted reply after stop_tts"
            await page.wait_for("final_assistant_answer", where=lambda m: m["content"] == SHORT_REPLY, after=next_at)
            await barge_in
        finally:
            barge_in.cancel()  # a failed test stops talking, too
            await asyncio.gather(barge_in, return_exceptions=True)
        heard = [m["content"] for m in fake_llm.chat_requests()[-1].body["messages"] if m["role"] == "assistant"]
        assert len(heard) == 1 and heard[0].endswith("—") and len(heard[0]) < len(LONG_REPLY)
        assert LONG_REPLY.startswith(heard[0].rstrip(" —"))  # what was likely heard, by audio sent and time

        await page.send({"type": "clear_history"})
        await page.send({"type": "text_message", "content": "Fresh start"})
        await page.wait_for("final_assistant_answer", where=lambda m: m["content"] == "Fresh.")
    messages = fake_llm.chat_requests()[-1].body["messages"]
    assert [(m["role"], m["content"]) for m in messages[1:]] == [("user", "Fresh start")]
    errors = [line for line in server.log_tail(400).splitlines() if "Traceback" in line]
    assert errors == []
