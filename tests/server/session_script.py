"""A Session driven in-process on cue: a fake socket, a scripted listener, a fake TTS engine with exact
chunk durations, the loopback fake LLM server (through the real LLM client) and a clock moved by hand.

No models, no sleeps: every wait is for something the session does, so a test takes milliseconds.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from fake_llm import FakeLLM
from starlette.websockets import WebSocketDisconnect, WebSocketState

from voicechat import protocol as p
from voicechat.config import Settings
from voicechat.llm import create_llm
from voicechat.metrics import Metrics
from voicechat.session import Services, Session
from voicechat.stt.listener import SpeechEvent
from voicechat.tts.engine import TTSError, TTSParams

CHUNK = 2400  # samples of every fake TTS chunk: 0.1 s at 24 kHz, one chunk per word
WAIT_S = 10.0  # a deadline against hanging, never reached when the session works


class Changes:
    """Something that changes, and a way to await the next change (no polling)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def until(self, condition: Callable[[], Any]) -> Any:
        async with asyncio.timeout(WAIT_S):
            while True:
                event = self._event
                if result := condition():
                    return result
                await event.wait()


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self.t

    async def sleep_until(self, when: float) -> None:
        if when <= self.t:
            return
        future = asyncio.get_running_loop().create_future()
        entry = (when, future)
        self._sleepers.append(entry)
        try:
            await future
        finally:
            self._sleepers.remove(entry)

    def advance(self, seconds: float) -> None:
        self.t += seconds
        for deadline, future in self._sleepers:
            if deadline <= self.t and not future.done():
                future.set_result(None)


class FakeSocket:
    """The server side of a WebSocket: what the client sends is queued, what the session sends is kept."""

    def __init__(self) -> None:
        self.application_state = WebSocketState.CONNECTED
        self.messages: list[dict[str, Any]] = []
        self.audio: dict[int, list[np.ndarray]] = {}
        self.closed_code: int | None = None
        self.gone = False  # sends raise WebSocketDisconnect, as GuardedSocket's do once the client stopped reading
        self.changes = Changes()
        self._incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    # the session's side
    async def receive(self) -> dict[str, Any]:
        return await self._incoming.get()

    async def send_text(self, text: str) -> None:
        self.messages.append(json.loads(text))
        self.changes.notify()

    async def send_bytes(self, data: bytes) -> None:
        if self.gone:
            raise WebSocketDisconnect(1008)
        turn_id, seq, pcm = p.decode_downlink_frame(data)
        assert seq == len(self.audio.get(turn_id, [])), "chunks of a turn go out in order"
        self.audio.setdefault(turn_id, []).append(pcm)
        self.changes.notify()

    async def close(self, code: int = 1000) -> None:
        self.closed_code = code
        self.application_state = WebSocketState.DISCONNECTED
        self._incoming.put_nowait({"type": "websocket.disconnect", "code": code})

    # the client's side
    def client_sends(self, message: dict[str, Any] | str | bytes) -> None:
        if isinstance(message, bytes):
            self._incoming.put_nowait({"type": "websocket.receive", "bytes": message})
        else:
            text = message if isinstance(message, str) else json.dumps(message)
            self._incoming.put_nowait({"type": "websocket.receive", "text": text})

    def client_leaves(self) -> None:
        self.application_state = WebSocketState.DISCONNECTED
        self._incoming.put_nowait({"type": "websocket.disconnect", "code": 1001})


class ScriptedListener:
    """Stands in for the speech Listener: each piece of audio pushed releases the next batch of cued events."""

    def __init__(self) -> None:
        self.cued: list[list[SpeechEvent]] = []
        self.frames = 0  # pieces of audio pushed
        self.batches = 0  # batches of events cued so far
        self.handled = 0  # batches the session has handled (it came back for more)
        self.resets = 0
        self.speed: int | None = None
        self.closed = False
        self.changes = Changes()
        self._ready: list[list[SpeechEvent]] = []
        self._handed = 0
        self._arrived = asyncio.Event()

    def cue(self, events: list[SpeechEvent]) -> None:
        self.cued.append(events)
        self.batches += 1

    async def push(self, pcm: np.ndarray) -> None:
        self.frames += 1
        if self.cued:
            self._ready.append(self.cued.pop(0))
            self._arrived.set()
        self.changes.notify()

    async def walked_to(self, backlog_s: float) -> None:
        return  # every piece is walked at once

    async def next_events(self) -> list[SpeechEvent]:
        self.handled = self._handed  # the session is back: the batch handed before is handled
        self.changes.notify()
        while not self._ready:
            self._arrived.clear()
            await self._arrived.wait()
        self._handed += 1
        return self._ready.pop(0)

    def set_speed(self, speed: int) -> None:
        self.speed = speed

    def reset(self) -> None:
        self.resets += 1

    async def aclose(self) -> None:
        self.closed = True


class FakeStream:
    first_chunk_s = 0.05

    def __init__(self, tts: FakeTTS, text: str) -> None:
        self._tts = tts
        self._words = text.split()
        self._next = 0
        tts.open_streams += 1
        self._open = True

    def __aiter__(self) -> FakeStream:
        return self

    async def __anext__(self) -> np.ndarray:
        if self._next >= len(self._words):
            raise StopAsyncIteration
        if self._tts.gate is not None:
            await self._tts.gate.acquire()
        word = self._words[self._next]
        self._next += 1
        if self._tts.fail_on is not None and self._tts.fail_on in word:
            raise TTSError(f"the voice broke on {word!r}")
        self._tts.chunks_made += 1
        self._tts.changes.notify()
        return np.full(CHUNK, 1000, dtype=np.int16)

    async def aclose(self) -> None:
        if self._open:
            self._open = False
            self._tts.open_streams -= 1
            self._tts.changes.notify()


class FakeTTS:
    """TTSEngine's public face: one 0.1 s chunk per word; ``hold()`` then ``release(n)`` lets chunks out on cue."""

    def __init__(self) -> None:
        self.gate: asyncio.Semaphore | None = None
        self.fail_on: str | None = None  # a chunk for a word containing this raises TTSError
        self.texts: list[str] = []
        self.params: list[TTSParams] = []
        self.open_streams = 0
        self.chunks_made = 0
        self.changes = Changes()

    def voices(self) -> list[str]:
        return ["default", "alice"]

    def stream(self, text: str, params: TTSParams) -> FakeStream:
        self.texts.append(text)
        self.params.append(params)
        return FakeStream(self, text)

    def hold(self) -> None:
        self.gate = asyncio.Semaphore(0)

    def release(self, chunks: int = 1_000_000) -> None:
        assert self.gate is not None
        for _ in range(chunks):
            self.gate.release()


def speech(kind: str, text: str = "", **fields: Any) -> SpeechEvent:
    values: dict[str, Any] = {"time_s": 5.0, "speech_s": 1.5 if text else 0.0}
    if kind in ("turn_end", "turn_probably_complete"):
        values |= {"end_of_speech_s": 4.6, "stt_ms": 30.0 if kind == "turn_end" else None}
    return SpeechEvent(kind, text=text, **(values | fields))  # type: ignore[arg-type]


class Conversation:
    """One scripted conversation: the test plays the client and the user, and reads what the server said."""

    def __init__(self, fake_llm: FakeLLM, settings: Settings) -> None:
        self.llm_server = fake_llm
        self.settings = settings
        self.ws = FakeSocket()
        self.listener = ScriptedListener()
        self.tts = FakeTTS()
        self.clock = FakeClock()
        self.metrics = Metrics()
        self.llm = create_llm(settings)
        services = Services(settings=settings, tts=self.tts, speech=None, llm=self.llm, metrics=self.metrics)  # type: ignore[arg-type]
        self.session = Session(self.ws, services, clock=self.clock, make_listener=lambda *_: self.listener)  # type: ignore[arg-type,return-value]

    # --- the user and the client --------------------------------------------------------------------

    async def hear(self, *events: SpeechEvent, playing: bool = False) -> None:
        """The listener hears ``events`` in one audio frame; returns once the session has handled them."""
        self.listener.cue(list(events))
        batch = self.listener.batches
        self.ws.client_sends(p.FRAME_HEADER.pack(0, p.FLAG_PLAYING if playing else 0) + b"\x00\x00" * 160)
        await self.listener.changes.until(lambda: self.listener.handled >= batch)

    def send(self, message: dict[str, Any] | str | bytes) -> None:
        self.ws.client_sends(message)

    async def say(self, text: str) -> int:
        """A whole spoken turn; returns its turn id."""
        await self.hear(speech("speech_started"), speech("partial", text))
        await self.hear(speech("turn_end", text))
        return (await self.next("final_user_request", content=text))["turn_id"]

    async def type(self, text: str) -> int:
        self.send({"type": "text_message", "content": text})
        return (await self.next("final_user_request", content=text))["turn_id"]

    # --- what the server said -----------------------------------------------------------------------

    def of_type(self, kind: str, **fields: Any) -> list[dict[str, Any]]:
        return [m for m in self.ws.messages if m["type"] == kind and all(m.get(k) == v for k, v in fields.items())]

    async def next(self, kind: str, **fields: Any) -> dict[str, Any]:
        """The first message of ``kind`` with these fields, once it has been sent."""
        return await self.ws.changes.until(lambda: next(iter(self.of_type(kind, **fields)), None))

    async def samples(self, turn_id: int, at_least: int) -> int:
        await self.ws.changes.until(lambda: self.sent_samples(turn_id) >= at_least)
        return self.sent_samples(turn_id)

    def sent_samples(self, turn_id: int) -> int:
        return sum(len(chunk) for chunk in self.ws.audio.get(turn_id, []))

    def states(self) -> list[str]:
        return [m["state"] for m in self.of_type("status")]

    async def state_becomes(self, state: str) -> None:
        await self.ws.changes.until(lambda: self.states()[-1] == state)

    async def settled(self) -> None:
        """Every message sent so far has been handled (the session answers a set_speed in order)."""
        count = len(self.of_type("settings"))
        self.send({"type": "set_speed", "speed": self.session.settings.speed})
        await self.ws.changes.until(lambda: len(self.of_type("settings")) > count)

    def gauge(self, name: str) -> float:
        return self.metrics.registry.get_sample_value(name) or 0.0

    def llm_messages(self, index: int = -1) -> list[tuple[str, str]]:
        body = self.llm_server.chat_requests()[index].body
        return [(m["role"], m["content"]) for m in body["messages"][1:]]


@asynccontextmanager
async def conversation(fake_llm: FakeLLM, **overrides: Any) -> AsyncIterator[Conversation]:
    values: dict[str, Any] = {
        "provider": "ollama", "base_url": fake_llm.url, "model": "llama3.2:3b", "api_key": None, "llm_retries": 0,
    }
    settings = Settings(_env_file=None, **(values | overrides))  # type: ignore[arg-type]
    conv = Conversation(fake_llm, settings)
    task = asyncio.create_task(conv.session.run())
    try:
        conv.send({"type": "hello", "protocol": 1, "sample_rate": 16000})
        await conv.next("status", state="listening")
        yield conv
    finally:
        conv.ws.client_leaves()
        async with asyncio.timeout(WAIT_S):
            await task
        await conv.llm.aclose()
    # Whatever state it ended in, the conversation let go of everything it started.
    assert conv.listener.closed
    assert conv.tts.open_streams == 0
    assert conv.session.playback.live_turns() == set()
    assert conv.gauge("voicechat_replies_active") == 0 and conv.gauge("voicechat_llm_streams_active") == 0
    assert {t.get_name() for t in asyncio.all_tasks()} & {f"reply-{n}" for n in range(1, 50)} == set()
