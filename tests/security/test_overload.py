"""Overload is the server's problem, never the client's: a session whose listener cannot keep up keeps the
connection, keeps the speech, sheds silence first and tells the client ``server_busy`` once; a pending turn
decision (Smart Turn, Whisper) never stops the VAD from taking in more audio.

In-process: the real Session and the real Listener state machine over gated stand-ins for the models
(a VAD, Smart Turn and a transcriber that answer only when the test opens their gate; no sleeps), the
fake socket, TTS and clock of tests/server/session_script.py and the loopback fake LLM.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from concurrent.futures import Future
from contextlib import asynccontextmanager

import numpy as np
from fake_llm import FakeLLM, Script
from loop_guard import no_loop_exceptions  # noqa: F401  (autouse fixture)
from server.session_script import WAIT_S, Conversation

from voicechat import protocol as p
from voicechat.config import Settings
from voicechat.inbox import KEEP_SILENCE_S, SHED_AFTER_S
from voicechat.session import LISTENER_BACKLOG_S
from voicechat.stt.listener import Listener, SpeechModels
from voicechat.stt.transcriber import Transcript

RATE = 16000
FRAME = 320  # 20 ms, as the page sends
VAD_FRAME = 512
TEXT = "What is the capital of France?"
REPLY = "Paris is the capital of France."


class Gate:
    """Model work that finishes only while the gate is open (it is open unless held)."""

    def __init__(self, answer: object) -> None:
        self.answer = answer
        self.held = False
        self.waiting: list[Future] = []
        self.calls = 0
        self.held_one = asyncio.Event()  # set once work is waiting behind the gate

    def submit(self, audio: np.ndarray, **_: object) -> Future:
        self.calls += 1
        future: Future = Future()
        if self.held:
            self.waiting.append(future)
            self.held_one.set()
        else:
            future.set_result(self.answer)
        return future

    def release(self) -> None:
        self.held = False
        for future in self.waiting:
            if not future.cancelled():
                future.set_result(self.answer)
        self.waiting.clear()


class GatedVad:
    """A VAD whose every stream blocks on ``gate`` (a threading.Event: it runs on a worker thread) and
    calls a 32 ms frame voice when it is loud. Counts the samples it took in and the voiced frames."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.taken = 0
        self.voiced = 0
        self.progress = threading.Condition()

    def stream(self) -> GatedVad.Stream:
        return GatedVad.Stream(self)

    class Stream:
        def __init__(self, vad: GatedVad) -> None:
            self._vad = vad
            self._left = np.zeros(0, np.float32)

        def process(self, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            assert self._vad.gate.wait(WAIT_S), "the test never opened the VAD's gate"
            audio = np.concatenate([self._left, audio])
            count = len(audio) // VAD_FRAME
            frames = audio[: count * VAD_FRAME].reshape(count, VAD_FRAME)
            self._left = audio[count * VAD_FRAME :]
            voiced = (np.abs(frames).mean(axis=1) > 0.05).astype(np.float32)
            with self._vad.progress:
                self._vad.taken += count * VAD_FRAME
                self._vad.voiced += int(voiced.sum())
                self._vad.progress.notify_all()
            return frames, voiced

    def wait_taken(self, samples: int) -> None:
        with self.progress:
            assert self.progress.wait_for(lambda: self.taken >= samples, WAIT_S), (self.taken, samples)


class Models:
    def __init__(self) -> None:
        self.vad = GatedVad()
        self.smart_turn = Gate(0.99)
        self.transcriber = Gate(Transcript(TEXT))
        self.speech = SpeechModels(self.vad, self.smart_turn, self.transcriber, language="en")  # type: ignore[arg-type]


def frames(seconds: float, *, loud: bool) -> list[bytes]:
    n = round(seconds * RATE / FRAME)
    pcm = (np.sin(np.arange(FRAME) * 0.3) * 12000).astype(np.int16) if loud else np.zeros(FRAME, np.int16)
    return [p.FRAME_HEADER.pack(0, 0) + pcm.tobytes()] * n


@asynccontextmanager
async def conversation(models: Models) -> AsyncIterator[Conversation]:
    with FakeLLM(Script(reply=REPLY)) as fake:
        settings = Settings(_env_file=None, provider="ollama", base_url=fake.url, model="llama3.2:3b", api_key=None, llm_retries=0)  # type: ignore[call-arg]
        conv = Conversation(fake, settings)
        listeners: list[Listener] = []

        def make_listener(*_: object) -> Listener:
            listeners.append(Listener(models.speech, speed=50, sample_rate=RATE))
            return listeners[-1]

        conv.session._make_listener = make_listener  # type: ignore[assignment]
        task = asyncio.create_task(conv.session.run())
        try:
            conv.send({"type": "hello", "protocol": 1, "sample_rate": RATE})
            await conv.next("status", state="listening")
            yield conv
        finally:
            models.vad.gate.set()
            conv.ws.client_leaves()
            async with asyncio.timeout(WAIT_S):
                await task
            await conv.llm.aclose()
        assert conv.gauge("voicechat_replies_active") == 0 and conv.tts.open_streams == 0
        assert listeners and all(listener._walker is None for listener in listeners)


async def send_in_real_time(conv: Conversation, audio: list[bytes]) -> None:
    """The frames at the pace of the (fake) clock: each second's are received before the clock moves on."""
    for index, frame in enumerate(audio, 1):
        conv.send(frame)
        if index % (RATE // FRAME) == 0:
            await conv.settled()
            conv.clock.advance(1.0)
    await conv.settled()


async def test_a_listener_that_cannot_keep_up_sheds_silence_keeps_speech_and_says_busy_once() -> None:
    models = Models()
    async with conversation(models) as conv:
        models.vad.gate.clear()  # the listener is stuck (a busy CPU)
        speech = frames(1.0, loud=True)
        silence = frames(8.0, loud=False)
        await send_in_real_time(conv, speech + silence)  # every frame was received: 9 s are waiting
        errors = conv.of_type("error")
        assert [e["code"] for e in errors] == ["server_busy"] and errors[0]["fatal"] is False
        assert conv.session._bad_messages == 0 and conv.ws.closed_code is None
        inbox = conv.session._audio.inbox
        assert inbox.shed_s >= 8.0 - KEEP_SILENCE_S - 0.5  # the silence was cut down...
        models.vad.gate.set()  # ...and once the server catches up, the turn is heard in full
        final = await conv.next("final_user_request")
        assert final["content"] == TEXT
        await conv.next("final_assistant_answer", turn_id=final["turn_id"], content=REPLY)
        voiced_frames = len(speech) * FRAME // VAD_FRAME
        assert models.vad.voiced >= voiced_frames  # no speech was dropped
        assert [e["code"] for e in conv.of_type("error")] == ["server_busy"]  # said once
        assert conv.ws.closed_code is None


async def test_the_vad_keeps_taking_audio_while_the_turn_decision_waits_for_the_models() -> None:
    models = Models()
    async with conversation(models) as conv:
        models.smart_turn.held = models.transcriber.held = True  # Smart Turn and Whisper are busy elsewhere
        audio = frames(1.0, loud=True) + frames(3.0, loud=False)  # past the longest wait at speed 50 (1.6 s)
        await send_in_real_time(conv, audio)
        await asyncio.to_thread(models.vad.wait_taken, (len(audio) * FRAME // VAD_FRAME) * VAD_FRAME)
        async with asyncio.timeout(WAIT_S):
            await models.smart_turn.held_one.wait()
        # All four seconds went through the VAD while the decision (at 1.3 s) still waits for Smart Turn:
        # nothing piled up before the listener, and the frames after the pause wait inside it.
        listener = conv.session.listener
        assert listener is not None and listener._walker is not None and len(listener._frames) > 0
        assert not conv.of_type("final_user_request")
        assert conv.session._audio.inbox.backlog_s == 0 and not conv.of_type("error")
        models.smart_turn.release()
        models.transcriber.release()
        final = await conv.next("final_user_request")
        assert final["content"] == TEXT
        await conv.next("final_assistant_answer", turn_id=final["turn_id"], content=REPLY)
        assert not conv.of_type("error")


async def test_a_small_backlog_is_only_coalesced() -> None:
    seconds = SHED_AFTER_S / 2
    models = Models()
    async with conversation(models) as conv:
        models.vad.gate.clear()
        await send_in_real_time(conv, frames(seconds, loud=False))
        models.vad.gate.set()
        await asyncio.to_thread(models.vad.wait_taken, int(seconds * RATE) // VAD_FRAME * VAD_FRAME)
        assert not conv.of_type("error") and conv.session._audio.inbox.shed_s == 0


async def test_a_decision_that_waits_long_leaves_the_audio_in_the_inbox_which_sheds_and_says_busy() -> None:
    models = Models()
    async with conversation(models) as conv:
        models.smart_turn.held = models.transcriber.held = True  # the models are stuck for a long while
        listener, inbox = conv.session.listener, conv.session._audio.inbox
        assert listener is not None

        async def audio_loop_parked() -> None:
            """Each second of audio is taken in, or left in the inbox once the listener is far enough behind."""
            async with asyncio.timeout(WAIT_S):
                while not (listener.backlog_s > LISTENER_BACKLOG_S or (inbox.backlog_s == 0 and not listener._lock.locked())):
                    await asyncio.sleep(0)  # the VAD runs on a worker thread

        for second in [frames(1.0, loud=True)] + [frames(1.0, loud=False)] * 12:
            await send_in_real_time(conv, second)
            await audio_loop_parked()
        assert LISTENER_BACKLOG_S < listener.backlog_s <= LISTENER_BACKLOG_S + 1.0  # bounded inside...
        assert inbox.shed_s > 0 and [e["code"] for e in conv.of_type("error")] == ["server_busy"]  # ...shed outside
        assert conv.ws.closed_code is None and conv.session._bad_messages == 0
        models.smart_turn.release()
        models.transcriber.release()
        final = await conv.next("final_user_request")
        assert final["content"] == TEXT
        await conv.next("final_assistant_answer", turn_id=final["turn_id"], content=REPLY)
        assert [e["code"] for e in conv.of_type("error")] == ["server_busy"]
