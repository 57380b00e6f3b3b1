"""A client of the original app's protocol, at the edge (voicechat.legacy.ClientSocket), in-process.

The socket alone: how a connection is classified, held until its rate is measured, and translated. Then
a scripted Session behind it (session_script.py: no models, a clock moved by hand): the original
message sequence of a turn and of an interruption, what was heard estimated without any playback
report, clear_history, set_speed and a typed turn.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest
from fake_llm import FakeLLM, Script
from loop_guard import no_loop_exceptions  # noqa: F401  (autouse fixture)
from session_script import CHUNK, WAIT_S, Conversation, FakeSocket, speech

from voicechat import protocol as p
from voicechat.config import Settings
from voicechat.legacy import MAX_HELD_MESSAGES, ClientSocket
from voicechat.session import Session

REPLY = "Paris is the capital of France. It has about two million people. The Seine runs through it."
BARGE_IN = "Wait, tell me about Berlin instead"
FRAME = 2048  # the original page's samples per frame
ORIGINAL_TYPES = {
    "partial_user_request", "final_user_request", "partial_assistant_answer", "final_assistant_answer",
    "tts_chunk", "stop_tts", "tts_interruption",
}  # fmt: skip


def page_frame(index: int, rate: int, *, start_ms: int = 7_000, playing: bool = False) -> bytes:
    """The original page's frame number ``index``: 2048 samples, stamped with its clock in ms."""
    timestamp = (start_ms + round(index * FRAME * 1000 / rate)) & 0xFFFFFFFF
    return p.FRAME_HEADER.pack(timestamp, int(playing)) + np.zeros(FRAME, "<i2").tobytes()


def measuring_frames(rate: int) -> list[bytes]:
    """Enough frames for the server to measure the page's rate (a little more than LEGACY_MEASURE_MS)."""
    return [page_frame(i, rate) for i in range(int(1.2 * rate / FRAME) + 1)]


def tts_audio(messages: list[dict[str, Any]]) -> np.ndarray:
    chunks = [np.frombuffer(base64.b64decode(m["content"]), "<i2") for m in messages if m["type"] == "tts_chunk"]
    return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)


# --- the socket alone ----------------------------------------------------------------------------


async def test_a_client_that_says_hello_first_passes_through_untouched() -> None:
    ws = FakeSocket()
    edge = ClientSocket(ws)  # type: ignore[arg-type]
    ws.client_sends({"type": "hello", "protocol": 1, "sample_rate": 16000})
    ws.client_sends(page_frame(0, 16000))
    assert (await edge.receive())["text"] == '{"type": "hello", "protocol": 1, "sample_rate": 16000}'
    assert (await edge.receive())["bytes"] == page_frame(0, 16000)
    assert edge.legacy is False
    await edge.send_text(p.encode(p.StopTts(turn_id=2)))
    await edge.send_bytes(p.encode_audio_frame(2, 0, np.ones(240, np.int16)))
    assert ws.messages == [{"type": "stop_tts", "turn_id": 2}] and len(ws.audio[2][0]) == 240


@pytest.mark.parametrize("rate", [44_100, 48_000])
async def test_audio_first_is_the_original_protocol_at_its_measured_rate(rate: int) -> None:
    ws = FakeSocket()
    edge = ClientSocket(ws)  # type: ignore[arg-type]
    frames = measuring_frames(rate)
    ws.client_sends(frames[0])
    ws.client_sends({"type": "set_speed", "speed": 30})  # before the rate is known: kept, in order
    ws.client_sends({"type": "tts_start"})
    for frame in frames[1:]:
        ws.client_sends(frame)
    ws.client_sends({"type": "tts_stop"})
    ws.client_sends({"type": "clear_history"})
    hello = p.parse_client_message((await edge.receive())["text"])
    assert edge.legacy is True
    assert hello == p.Hello(type="hello", sample_rate=rate, client=p.LEGACY_CLIENT)
    assert (await edge.receive())["bytes"] == frames[0]  # audio passes unchanged: the same frame format
    assert (await edge.receive())["text"] == '{"type":"set_speed","speed":30}'
    for frame in frames[1:]:  # tts_start and tts_stop (the page's queue started, ran dry) stop at the edge
        assert (await edge.receive())["bytes"] == frame
    assert (await edge.receive())["text"] == '{"type":"clear_history"}'
    ws.client_leaves()
    assert (await edge.receive())["type"] == "websocket.disconnect"


async def test_a_page_whose_clock_stands_still_gets_the_48khz_guess() -> None:
    ws = FakeSocket()
    edge = ClientSocket(ws)  # type: ignore[arg-type]
    for _ in range(MAX_HELD_MESSAGES):
        ws.client_sends(page_frame(0, 44_100))
    assert p.parse_client_message((await edge.receive())["text"]).sample_rate == 48_000  # type: ignore[union-attr]


async def test_replies_go_out_in_the_original_shapes() -> None:
    ws = FakeSocket()
    edge = ClientSocket(ws)  # type: ignore[arg-type]
    edge.legacy = True  # as a first audio frame decides
    tone = (np.sin(np.arange(12_000) * 2 * np.pi * 300 / 24_000) * 8_000).astype(np.int16)  # 0.5 s at 24 kHz
    for message in (p.Status(state="speaking"), p.PartialAssistantAnswer(content="Hi", turn_id=1)):
        await edge.send_text(p.encode(message))
    await edge.send_text('{"type": "not_a_server_message"}')  # unknown to the edge: not sent, no exception
    for seq, part in enumerate(np.split(tone, 5)):
        await edge.send_bytes(p.encode_audio_frame(1, seq, part))
    await edge.send_text(p.encode(p.TtsEnd(turn_id=1, samples=len(tone))))
    await edge.send_text(p.encode(p.FinalAssistantAnswer(content="Hi there.", turn_id=1, interrupted=False)))
    # A barge-in after the reply was generated: the original pair, then no second answer for the turn.
    await edge.send_text(p.encode(p.TtsInterruption(turn_id=1)))
    await edge.send_text(p.encode(p.StopTts(turn_id=1)))
    await edge.send_text(p.encode(p.FinalAssistantAnswer(content="Hi", turn_id=1, interrupted=True)))
    await edge.send_bytes(p.encode_audio_frame(1, 5, tone[:100]))  # late audio of the stopped turn
    assert all(set(m) == {"type", "content"} for m in ws.messages)
    kinds = [m["type"] for m in ws.messages]
    assert kinds == ["partial_assistant_answer", *["tts_chunk"] * (len(kinds) - 4), "final_assistant_answer",
                     "stop_tts", "tts_interruption"]  # fmt: skip
    assert ws.messages[-3]["content"] == "Hi there." and ws.audio == {}
    audio = tts_audio(ws.messages)
    assert abs(len(audio) - 2 * len(tone)) <= 2  # 48 kHz, every sample (the resampler's tail included)
    expected = (np.sin(np.arange(len(audio)) * 2 * np.pi * 300 / 48_000) * 8_000).astype(np.int16)
    middle = slice(200, len(audio) - 200)  # one stream: no clicks at the joints of the five chunks
    assert np.abs(audio[middle].astype(int) - expected[middle]).max() < 200


# --- a scripted conversation behind it -------------------------------------------------------------


class LegacyConversation(Conversation):
    """session_script's conversation, its client speaking the original protocol through the edge."""

    def __init__(self, fake_llm: FakeLLM, settings: Settings) -> None:
        super().__init__(fake_llm, settings)
        self.hellos: list[p.Hello] = []

        def make_listener(models: Any, hello: p.Hello, *_: Any) -> Any:
            self.hellos.append(hello)
            return self.listener

        self.session = Session(ClientSocket(self.ws), self.session.services, clock=self.clock, make_listener=make_listener)  # type: ignore[arg-type]


@asynccontextmanager
async def legacy_conversation(fake_llm: FakeLLM, rate: int = 44_100) -> AsyncIterator[LegacyConversation]:
    values: dict[str, Any] = {
        "provider": "ollama", "base_url": fake_llm.url, "model": "llama3.2:3b", "api_key": None, "llm_retries": 0,
    }  # fmt: skip
    conv = LegacyConversation(fake_llm, Settings(_env_file=None, **values))  # type: ignore[arg-type]
    task = asyncio.create_task(conv.session.run())
    try:
        frames = measuring_frames(rate)
        for frame in frames:
            conv.send(frame)
        await conv.listener.changes.until(lambda: conv.listener.frames >= len(frames))
        yield conv
    finally:
        conv.ws.client_leaves()
        async with asyncio.timeout(WAIT_S):
            await task
        await conv.llm.aclose()
    assert conv.listener.closed and conv.tts.open_streams == 0 and conv.session.playback.live_turns() == set()
    assert all(m["type"] in ORIGINAL_TYPES and set(m) == {"type", "content"} for m in conv.ws.messages)
    assert conv.ws.audio == {}  # never a binary frame


def after_stop(conv: Conversation) -> list[str]:
    """The kinds of the messages from the first stop_tts on, tts_chunk aside."""
    kinds = [m["type"] for m in conv.ws.messages if m["type"] != "tts_chunk"]
    return kinds[kinds.index("stop_tts") :]


@pytest.fixture
def llm_server():
    with FakeLLM(Script(reply=REPLY)) as fake:
        yield fake


async def test_a_spoken_turn_in_the_original_shapes(llm_server: FakeLLM) -> None:
    async with legacy_conversation(llm_server, 44_100) as conv:
        assert conv.hellos[0].sample_rate == 44_100 and conv.ws.messages == []  # no hello, no status
        await conv.hear(speech("speech_started"), speech("partial", "What is the capital"))
        await conv.hear(speech("turn_end", "What is the capital of France?"))
        await conv.next("final_user_request", content="What is the capital of France?")
        await conv.next("final_assistant_answer", content=REPLY)
        kinds = [m["type"] for m in conv.ws.messages]
        assert kinds[:2] == ["partial_user_request", "final_user_request"] and "partial_assistant_answer" in kinds
        assert abs(len(tts_audio(conv.ws.messages)) - 2 * len(REPLY.split()) * CHUNK) <= 2  # 24 -> 48 kHz


async def test_barge_in_sends_the_original_pair_and_keeps_what_was_likely_heard(llm_server: FakeLLM) -> None:
    async with legacy_conversation(llm_server) as conv:
        conv.tts.hold()
        await conv.hear(speech("turn_end", "Tell me about Paris"))
        conv.tts.release(8)  # 0.8 s of audio sent at once: the first sentence and two more words
        await conv.ws.changes.until(lambda: len(tts_audio(conv.ws.messages)) >= 2 * 8 * CHUNK - 2000)
        conv.send({"type": "tts_start"})  # the page's queue started...
        conv.clock.advance(0.25)  # ...and played 0.25 s (2.5 words) of it by the wall clock
        conv.send({"type": "tts_stop"})  # a queue that ran dry says nothing about the turn's end
        await conv.hear(speech("speech_started"), speech("partial", BARGE_IN), playing=True)
        final = await conv.next("final_assistant_answer")
        assert after_stop(conv) == ["stop_tts", "tts_interruption", "final_assistant_answer", "partial_user_request"]
        assert final["content"] == "Paris is"  # what the audio sent had time to play
        await conv.hear(speech("turn_end", BARGE_IN))
        await conv.next("final_user_request", content=BARGE_IN)
        await asyncio.to_thread(llm_server.wait_chat_requests, 2)
        assert conv.llm_messages()[:2] == [("user", "Tell me about Paris"), ("assistant", "Paris is —")]


async def test_clear_history_set_speed_and_a_typed_turn(llm_server: FakeLLM) -> None:
    llm_server.set_scripts(Script(reply=REPLY), Script(reply="Fresh."))
    async with legacy_conversation(llm_server, 48_000) as conv:
        conv.send({"type": "set_speed", "speed": 30})
        conv.send({"type": "set_speed", "speed": 300})  # out of range: answered as an error, which has no
        await conv.hear()  # original shape, so the page hears nothing; the conversation lives on
        assert conv.listener.speed == 30
        conv.tts.hold()
        conv.send({"type": "text_message", "content": "Tell me about Paris"})  # typed turns work too
        await conv.next("partial_assistant_answer")
        conv.tts.release(3)
        await conv.ws.changes.until(lambda: len(tts_audio(conv.ws.messages)) > 0)
        conv.send({"type": "clear_history"})
        await conv.next("tts_interruption")
        await conv.hear()
        assert conv.listener.resets == 1
        assert after_stop(conv) == ["stop_tts", "tts_interruption", "final_assistant_answer"]
        assert conv.of_type("final_assistant_answer")[-1]["content"] == ""  # the page cleared its bubbles
        conv.tts.release()
        conv.send({"type": "text_message", "content": "Fresh start"})
        await conv.next("final_assistant_answer", content="Fresh.")
        assert conv.llm_messages() == [("user", "Fresh start")]
