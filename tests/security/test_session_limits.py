"""Conversation limits and faults on the real server (`voicechat serve`, tiny models,
loopback LLM), driven by real WebSocket clients.

One table of bad cases: each gets its typed error or close code, the server stays up, and a
conversation opened before them and kept open beside them completes its turn afterwards; every gauge is
back at zero and no traceback reached the log.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
from fake_llm import Script
from server_process import served_by_fake_llm
from speech import silence

from voicechat.client import VoiceChatClient
from voicechat.protocol import FRAME_HEADER

pytestmark = pytest.mark.timeout(600)

REPLY = "Paris is the capital of France."
ENDLESS = Script(reply="and then it went on " * 2000, token_delay=0.002)
GAUGES = ("voicechat_replies_active", "voicechat_llm_streams_active", "voicechat_tts_streams_active")
ENV = {
    "VOICECHAT_HELLO_TIMEOUT_S": "2",
    "VOICECHAT_IDLE_TIMEOUT_S": "4",
    "VOICECHAT_LLM_REQUESTS_PER_MINUTE": "3",
    "VOICECHAT_SEND_TIMEOUT_S": "3",
    "VOICECHAT_MAX_SESSIONS": "8",
    "VOICECHAT_LLM_MAX_REPLY_CHARS": "60000",  # the endless reply's partial answers fill any buffer
}

fake_llm, server, default_script = served_by_fake_llm(REPLY, env=ENV)


async def closed(client: VoiceChatClient, timeout: float = 60) -> int | None:
    await client.wait_until(lambda: client._reader.done(), timeout=timeout)
    return client.closed_code


async def hello(url: str) -> VoiceChatClient:
    return await VoiceChatClient(url).connect(timeout=120)


# --- the cases: each returns what it observed, compared with its expectation ----------------------------


async def no_hello(server, fake) -> tuple[str, int | None]:
    client = await VoiceChatClient(server.ws_url).connect(send_hello=False)
    error = await client.wait_for("error", timeout=30)
    return error["code"], await closed(client)


async def garbage_before_hello(server, fake) -> tuple[str, int | None]:
    client = await VoiceChatClient(server.ws_url).connect(send_hello=False)
    for _ in range(5):
        await client.send("not json")
    await client.wait_until(lambda: client.closed_code is not None, timeout=30)
    return client.of_type("error")[-1]["code"], client.closed_code


async def idle(server, fake) -> tuple[str, int | None]:
    client = await hello(server.ws_url)
    error = await client.wait_for("error", timeout=30)
    return error["code"], await closed(client)


def one_message(message: str) -> Callable[..., Awaitable[tuple[str, int | None]]]:
    async def probe(server, fake) -> tuple[str, int | None]:
        client = await hello(server.ws_url)
        try:
            await client.send(message)
            error = await client.wait_for("error", timeout=30)
            return error["code"], client.closed_code
        finally:
            await client.close()

    return probe


async def too_many_questions(server, fake) -> tuple[str, int | None]:
    client = await hello(server.ws_url)
    try:
        for index in range(4):
            await client.send({"type": "text_message", "content": f"question {index}"})
        error = await client.wait_for("error", where=lambda m: m["code"] == "rate_limited", timeout=60)
        return error["code"], client.closed_code
    finally:
        await client.close()


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """One client WebSocket frame (RFC 6455: clients mask), written by hand for a client that never reads."""
    mask = os.urandom(4)
    size = len(payload)
    header = bytes([0x80 | opcode]) + (
        bytes([0x80 | size]) if size < 126 else bytes([0x80 | 126]) + size.to_bytes(2, "big")
    )
    return header + mask + bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))


async def stops_reading(server, fake) -> dict[str, float]:
    """A client asks for an endless reply and then never reads (it goes on sending audio, so it is not
    idle): the server gives up after the send timeout and frees the reply, LLM and TTS streams."""
    fake.set_scripts(ENDLESS)
    address = urlsplit(server.url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    await reader.readuntil(b"\r\n\r\n")  # 101 Switching Protocols; nothing is read after this
    writer.write(masked_frame(1, json.dumps({"type": "hello", "protocol": 1, "sample_rate": 16000}).encode()))
    writer.write(masked_frame(1, json.dumps({"type": "text_message", "content": "talk forever"}).encode()))
    silence_frame = masked_frame(2, FRAME_HEADER.pack(0, 0) + bytes(640))

    async def keep_talking() -> None:
        while True:
            writer.write(silence_frame)
            await asyncio.sleep(0.02)

    talking = asyncio.create_task(keep_talking())
    try:
        await asyncio.sleep(1.0)  # let the reply start before waiting for the gauges to fall back
        gauges = await server.metrics_at_zero(GAUGES, timeout=120)
    finally:
        talking.cancel()
        await asyncio.gather(talking, return_exceptions=True)
        writer.transport.abort()
    return gauges


@dataclass
class Case:
    name: str
    probe: Callable[..., Awaitable[tuple[str, int | None]]]
    expected: tuple[str, int | None]


CASES = [
    Case("no hello in time", no_hello, ("hello_timeout", 1008)),
    Case("garbage before hello", garbage_before_hello, ("too_many_errors", 1008)),
    Case("idle after hello", idle, ("idle_timeout", 1001)),
    Case("5000-digit integer", one_message('{"type": "set_speed", "speed": ' + "9" * 5000 + "}"), ("bad_json", None)),
    Case("speed: true", one_message('{"type": "set_speed", "speed": true}'), ("bad_setting", None)),
    Case("blank typed message", one_message('{"type": "text_message", "content": " \\n\\t "}'), ("bad_message", None)),
    Case("LLM requests per minute", too_many_questions, ("rate_limited", None)),
]


async def test_each_bad_case_gets_its_answer_and_a_neighbour_talks_on(server, fake_llm) -> None:
    neighbour = await hello(server.ws_url)
    keep_alive = asyncio.create_task(neighbour.send_audio(silence(600.0)))  # a quiet user, not an idle one
    try:
        for case in CASES:
            got = await case.probe(server, fake_llm)
            assert got == case.expected, case.name
            fake_llm.set_scripts(Script(reply=REPLY, token_delay=0.01))
            assert neighbour.closed_code is None, f"the neighbour was closed after {case.name}"
        await neighbour.send({"type": "text_message", "content": "What is the capital of France?"})
        answer = await neighbour.wait_for("final_assistant_answer", where=lambda m: m["content"] == REPLY, timeout=120)
        assert not answer["interrupted"]
    finally:
        keep_alive.cancel()
        await neighbour.close()
    assert await server.metrics_at_zero(GAUGES) == dict.fromkeys(GAUGES, 0.0)
    assert "Traceback" not in server.log_tail(100000)


async def test_a_client_that_stops_reading_is_dropped_after_the_send_timeout(server, fake_llm) -> None:
    await stops_reading(server, fake_llm)
    assert "the client took no data for 3 s (VOICECHAT_SEND_TIMEOUT_S) (send_timeout)" in server.log_tail(100000)
    assert await server.metrics_at_zero(GAUGES) is not None
    deadline = time.monotonic() + 60
    while server.metric("voicechat_sessions_active") and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert server.metric("voicechat_sessions_active") == 0  # the slot is free again


async def test_stopped_reader_leaves_every_gauge_at_zero_and_no_traceback(server, fake_llm) -> None:
    gauges = await stops_reading(server, fake_llm)
    assert gauges == dict.fromkeys(GAUGES, 0.0)
    assert "Traceback" not in server.log_tail(100000)


async def test_a_dropped_connection_resumes_its_conversation(server, fake_llm) -> None:
    """The network drops (no close frame); the page reconnects with its session id and resume token and
    the conversation goes on: history, settings. A made-up token gets resume_failed and a fresh one."""
    first = await hello(server.ws_url)
    talking = asyncio.create_task(first.send_audio(silence(600.0)))  # a quiet user, not an idle one
    try:
        await first.send({"type": "set_settings", "settings": {"speed": 70, "temperature": 0.3}})
        await first.wait_for("settings")
        await first.send({"type": "text_message", "content": "My name is Ada."})
        answer = await first.wait_for("final_assistant_answer", where=lambda m: m["content"] == REPLY, timeout=120)
        await first.report_played(answer["turn_id"])  # all of it was heard before the drop
        await first.wait_until(lambda: first.of_type("status")[-1]["state"] == "listening", timeout=60)
        assert first.hello is not None and first.hello["resume_token"]
        resume = {"session_id": first.hello["session_id"], "token": first.hello["resume_token"]}
    finally:
        talking.cancel()
        first._ws.transport.abort()  # no close frame: as a network drop looks to the server
        await asyncio.gather(talking, first._reader, return_exceptions=True)

    second = await VoiceChatClient(server.ws_url).connect(send_hello=False)
    talking = asyncio.create_task(second.send_audio(silence(600.0)))
    try:
        await second.send({"type": "hello", "protocol": 1, "sample_rate": 16000, "resume": resume})
        greeting = await second.wait_for("hello", timeout=60)
        assert greeting["resumed"] is True and greeting["session_id"] == resume["session_id"]
        assert greeting["settings"]["speed"] == 70 and greeting["settings"]["temperature"] == 0.3
        await second.send({"type": "text_message", "content": "What is my name?"})
        await second.wait_for("final_assistant_answer", where=lambda m: m["content"] == REPLY, timeout=120)
        sent = [(m["role"], m["content"]) for m in fake_llm.chat_requests()[-1].body["messages"][1:]]
        assert sent == [("user", "My name is Ada."), ("assistant", REPLY), ("user", "What is my name?")]
        assert not second.of_type("error")
    finally:
        talking.cancel()
        await asyncio.gather(talking, return_exceptions=True)
        await second.close()

    stolen = await VoiceChatClient(server.ws_url).connect(send_hello=False)
    try:
        await stolen.send({"type": "hello", "protocol": 1, "sample_rate": 16000,
                           "resume": {**resume, "token": "made-up-" + resume["token"][8:]}})
        greeting = await stolen.wait_for("hello", timeout=60)
        assert greeting["resumed"] is False and greeting["session_id"] != resume["session_id"]
        assert (await stolen.wait_for("error", timeout=60))["code"] == "resume_failed"
    finally:
        await stolen.close()
    assert await server.metrics_at_zero(GAUGES) == dict.fromkeys(GAUGES, 0.0)
    assert "Traceback" not in server.log_tail(100000)
