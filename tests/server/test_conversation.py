"""The real server end to end: `voicechat serve` in a subprocess with the tiny random Chatterbox,
Whisper tiny.en and a loopback LLM, driven by a real WebSocket client.

The conversation logic (speculation, barge-in at each moment, history, interrupts, failures,
disconnects) is in test_session.py, scripted in-process; these are the few real ones."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import numpy as np
import pytest
import websockets
from fake_llm import LONG_REPLY, SHORT_REPLY, Script
from server_process import served_by_fake_llm
from speech import espeak_wav, read_pcm16, silence

from voicechat.audio import resample
from voicechat.client import VoiceChatClient
from voicechat.protocol import FRAME_HEADER, OUTPUT_SAMPLE_RATE

pytestmark = pytest.mark.timeout(300)

MAX_SESSIONS = 4

fake_llm, server, default_script = served_by_fake_llm(SHORT_REPLY, env={"VOICECHAT_MAX_SESSIONS": str(MAX_SESSIONS)})


def speech(text: str, *, before: float = 0.3, after: float = 2.5) -> np.ndarray:
    pcm, rate = read_pcm16(espeak_wav(text))
    assert rate == 16000
    return np.concatenate([silence(before), pcm, silence(after)])


async def until_no_work(server, timeout: float = 20.0) -> dict[str, float]:
    names = ("voicechat_replies_active", "voicechat_tts_streams_active", "voicechat_llm_streams_active")
    deadline = time.monotonic() + timeout
    while True:
        values = {name: server.metric(name) for name in names}
        if not any(values.values()) or time.monotonic() > deadline:
            return values
        await asyncio.sleep(0.2)


def test_health_ready_metrics_and_page(server) -> None:
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{server.url}/readyz").json()
    assert ready["ready"] is True and ready["max_sessions"] == MAX_SESSIONS
    metrics = httpx.get(f"{server.url}/metrics").text
    for name in ("voicechat_sessions_active", "voicechat_first_audio_seconds", "voicechat_tts_streams_active"):
        assert name in metrics
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and "<html" in page.text.lower()


async def test_spoken_turn(server) -> None:
    async with VoiceChatClient(server.ws_url) as client:
        assert client.hello["output_sample_rate"] == OUTPUT_SAMPLE_RATE
        await client.send_audio(speech("What is the capital of France?"))
        final_user = await client.wait_for("final_user_request", timeout=60)
        turn_id = final_user["turn_id"]
        assert "capital" in final_user["content"].lower() and "france" in final_user["content"].lower()
        answer = await client.wait_for("final_assistant_answer", timeout=120)
        assert answer["turn_id"] == turn_id and answer["content"] == SHORT_REPLY and not answer["interrupted"]

        kinds = [m["type"] for m in client.messages]
        assert kinds.index("partial_user_request") < kinds.index("final_user_request")
        assert "partial_assistant_answer" in kinds
        assert [m["state"] for m in client.of_type("status")][:4] == ["listening", "hearing", "thinking", "speaking"]
        end = await client.wait_for("tts_end", timeout=30)
        assert set(client.audio) == {turn_id}
        chunks = client.audio[turn_id]
        assert [c.seq for c in chunks] == list(range(len(chunks)))
        audio = client.turn_audio(turn_id)
        assert audio.dtype == np.int16 and len(audio) == end["samples"] > OUTPUT_SAMPLE_RATE // 2
        assert np.abs(audio.astype(np.int32)).max() > 100  # not silence

        metrics = await client.wait_for("turn_metrics", timeout=10)
        assert metrics["turn_id"] == turn_id
        for field in ("endpointing_ms", "stt_ms", "llm_first_token_ms", "tts_first_chunk_ms", "first_audio_ms"):
            assert metrics[field] is not None and metrics[field] >= 0, field


async def test_barge_in_stops_audio_and_trims_history(server, fake_llm) -> None:
    fake_llm.set_scripts(Script(reply=LONG_REPLY, token_delay=0.01), Script(reply=SHORT_REPLY, token_delay=0.01))
    async with VoiceChatClient(server.ws_url) as client:
        await client.send({"type": "text_message", "content": "Tell me a story"})
        turn_id = (await client.wait_for("final_user_request"))["turn_id"]
        # Play the first second of the reply, as a browser would report it, then talk over it.
        await client.wait_until(lambda: len(client.turn_audio(turn_id)) >= OUTPUT_SAMPLE_RATE, timeout=120)
        await client.send({"type": "tts_start", "turn_id": turn_id})
        await client.send({"type": "playback", "turn_id": turn_id, "played_samples": OUTPUT_SAMPLE_RATE})
        await client.send_audio(speech("Stop please, tell me about Berlin instead.", after=2.0), playing=True)
        interruption = await client.wait_for("tts_interruption", timeout=60)
        assert interruption["turn_id"] == turn_id
        await client.wait_for("stop_tts", where=lambda m: m["turn_id"] == turn_id)
        cut_at = interruption["_received_at"]
        late = [c for c in client.audio[turn_id] if c.received_at > cut_at]
        assert len(late) <= 1, "audio must stop within one TTS chunk"
        final = await client.wait_for("final_assistant_answer", where=lambda m: m["turn_id"] == turn_id)
        assert final["interrupted"] and len(final["content"]) < len(LONG_REPLY)

        next_turn = await client.wait_for("final_user_request", where=lambda m: m["turn_id"] != turn_id, timeout=60)
        assert "stop" in next_turn["content"].lower() and "tell me" in next_turn["content"].lower()
        await client.wait_for("final_assistant_answer", where=lambda m: m["turn_id"] == next_turn["turn_id"], timeout=120)
    messages = fake_llm.chat_requests()[-1].body["messages"]
    assistant = [m["content"] for m in messages if m["role"] == "assistant"]
    assert len(assistant) == 1
    assert assistant[0].endswith("—") and LONG_REPLY.startswith(assistant[0].rstrip(" —")[:20])
    assert len(assistant[0]) < len(LONG_REPLY)


async def test_own_echo_does_not_interrupt(server, fake_llm) -> None:
    fake_llm.set_scripts(Script(reply="The weather is sunny today. Enjoy the warm afternoon.", token_delay=0.01))
    async with VoiceChatClient(server.ws_url) as client:
        await client.send({"type": "text_message", "content": "How is the weather?"})
        turn_id = (await client.wait_for("final_user_request"))["turn_id"]
        sent = 0
        # Feed the assistant's own audio back through the "microphone" while it plays, as a leaky
        # echo canceller would, until the reply has been sent and echoed whole.
        while True:
            audio = client.turn_audio(turn_id)
            if len(audio) > sent:
                echo = resample(audio[sent:].astype(np.float32) / 32768, OUTPUT_SAMPLE_RATE, 16000)
                await client.send_audio((echo * 32767).astype(np.int16), playing=True)
                sent = len(audio)
            elif client.of_type("tts_end"):
                break
            else:
                await client.wait_until(lambda: len(client.turn_audio(turn_id)) > sent or client.of_type("tts_end"))
        await client.send_audio(silence(2.5))
        final = await client.wait_for("final_assistant_answer", timeout=30)
        assert not final["interrupted"]
        assert not client.of_type("tts_interruption") and not client.of_type("stop_tts")


async def test_three_conversations_stay_isolated(server, fake_llm) -> None:
    questions = ["Tell me about apples", "Tell me about boats", "Tell me about clouds"]

    async def converse(question: str) -> VoiceChatClient:
        client = await VoiceChatClient(server.ws_url).connect()
        await client.send({"type": "text_message", "content": question})
        await client.wait_for("tts_end", timeout=240)
        return client

    clients = await asyncio.gather(*(converse(q) for q in questions))
    try:
        for client, question in zip(clients, questions):
            finals = client.of_type("final_user_request")
            assert [m["content"] for m in finals] == [question]
            assert set(client.audio) == {finals[0]["turn_id"]}
            assert len(client.turn_audio(finals[0]["turn_id"])) == client.of_type("tts_end")[0]["samples"]
        for request in fake_llm.chat_requests()[-3:]:
            users = [m["content"] for m in request.body["messages"] if m["role"] == "user"]
            assert len(users) == 1 and users[0] in questions
    finally:
        await asyncio.gather(*(client.close() for client in clients))


async def test_disconnect_mid_reply_leaves_no_work(server, fake_llm) -> None:
    fake_llm.set_scripts(Script(reply=LONG_REPLY, token_delay=0.05))
    client = await VoiceChatClient(server.ws_url).connect()
    await client.send({"type": "text_message", "content": "Tell me a story"})
    turn_id = (await client.wait_for("final_user_request"))["turn_id"]
    await client.wait_until(lambda: client.audio.get(turn_id), timeout=120)
    assert server.metric("voicechat_replies_active") >= 1
    await client.close()
    assert await until_no_work(server) == {
        "voicechat_replies_active": 0,
        "voicechat_tts_streams_active": 0,
        "voicechat_llm_streams_active": 0,
    }
    assert fake_llm.wait_chat_ended().client_closed


async def test_malformed_input_gets_typed_errors_and_the_connection_survives(server) -> None:
    async with VoiceChatClient(server.ws_url) as client:
        pass  # warm path: a normal open/close first
    client = await VoiceChatClient(server.ws_url).connect(send_hello=False)
    try:
        await client.send({"type": "set_speed", "speed": 10})  # text first: a version-1 client (audio first
        assert (await client.wait_for("error"))["code"] == "hello_required"  # is the original app's protocol)
        await client.send(FRAME_HEADER.pack(0, 0) + b"\x00\x00" * 160)
        assert (await client.wait_until(lambda: client.of_type("error")[1:]))[0]["code"] == "hello_required"
        await client.send({"type": "hello", "protocol": 1, "sample_rate": 16000})
        await client.wait_for("hello")

        async def expect(payload: str | bytes | dict, code: str) -> None:
            count = len(client.of_type("error"))
            await client.send(payload)
            error = await client.wait_until(lambda: client.of_type("error")[count:] and client.of_type("error")[count])
            assert error["code"] == code and error["message"] and error["fatal"] is False

        await expect("this is not json", "bad_json")
        await expect({"type": "self_destruct"}, "unknown_type")
        await expect({"type": "tts_stop"}, "bad_message")
        await expect({"type": "set_settings", "settings": {"temperature": 100}}, "bad_setting")
        await expect({"type": "set_settings", "settings": {"voice": "nobody"}}, "unknown_voice")
        # One bad header here; every kind of bad frame is in test_protocol.py, and the rule that the
        # same error code is answered at most every few seconds in test_session.py (on a fake clock).
        await expect(FRAME_HEADER.pack(0, 0) + b"\x00" * 3, "bad_audio_header")
        await expect(FRAME_HEADER.pack(0, 0) + b"\x00" * 70_000, "frame_too_large")
        count = len(client.of_type("error"))
        flood = FRAME_HEADER.pack(0, 0) + b"\x00\x00" * 16000  # one second of audio per frame
        for _ in range(40):
            await client.send(flood)
        # 40 s at once: the server first falls behind (server_busy, once), then refuses what is too far
        # ahead of real time (rate_limited); neither closes the connection.
        error = await client.wait_until(lambda: [e for e in client.of_type("error")[count:] if e["code"] == "rate_limited"])
        assert {e["code"] for e in client.of_type("error")[count:]} <= {"server_busy", "rate_limited"}
        assert error[0]["fatal"] is False

        await client.send({"type": "set_speed", "content": 70})
        settings = await client.wait_for("settings")
        assert settings["settings"]["speed"] == 70
        await client.send({"type": "text_message", "content": "Still there?"})
        assert (await client.wait_for("final_assistant_answer", timeout=120))["content"] == SHORT_REPLY
    finally:
        await client.close()


async def test_huge_message_closes_with_1009_and_server_lives(server) -> None:
    async with websockets.connect(server.ws_url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "hello"}))
        await ws.recv()
        await ws.send(b"\x00" * (2 * 1024 * 1024))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await ws.recv()
        assert closed.value.rcvd.code == 1009
    assert httpx.get(f"{server.url}/healthz").status_code == 200


async def test_session_cap_refuses_clearly(server) -> None:
    clients = [await VoiceChatClient(server.ws_url).connect() for _ in range(MAX_SESSIONS)]
    try:
        extra = await VoiceChatClient(server.ws_url).connect(send_hello=False)
        error = await extra.wait_for("error")
        assert error["code"] == "server_full" and error["fatal"]
        await extra.wait_until(lambda: extra.closed_code is not None)
        assert extra.closed_code == 1013
    finally:
        await asyncio.gather(*(client.close() for client in clients))


async def test_voice_upload_and_selection(server) -> None:
    wav = espeak_wav("This is my reference voice for cloning, spoken clearly.", rate=24000).read_bytes()
    changes = {"X-Voicechat-Client": "test"}  # a change without the token needs it (CSRF: never a simple request)
    answer = httpx.post(f"{server.url}/api/voices", params={"name": "espeak"}, content=wav, headers=changes, timeout=120)
    assert answer.status_code == 200, answer.text
    assert "espeak" in httpx.get(f"{server.url}/api/voices").json()["voices"]
    bad = httpx.post(
        f"{server.url}/api/voices", params={"name": "broken"}, content=b"RIFF garbage", headers=changes, timeout=30
    )
    assert bad.status_code == 400 and bad.json()["error"] == "bad_voice"
    bad_name = httpx.post(f"{server.url}/api/voices", params={"name": "../etc"}, content=wav, headers=changes)
    assert bad_name.status_code == 400
    async with VoiceChatClient(server.ws_url) as client:
        assert "espeak" in client.hello["voices"]
        await client.send({"type": "set_settings", "settings": {"voice": "espeak", "exaggeration": 0.8}})
        settings = (await client.wait_for("settings"))["settings"]
        assert settings["voice"] == "espeak" and settings["exaggeration"] == 0.8
        await client.send({"type": "text_message", "content": "Say something"})
        await client.wait_for("tts_end", timeout=120)
