"""The real server under attack and misuse: `voicechat serve` with an access token, the tiny models and
a loopback LLM, probed by real HTTP and WebSocket clients.

One table: each bad case gets its typed answer (an HTTP error code, or a WebSocket close code with a
reason), the server stays up, and a conversation opened before the cases and kept open beside them
completes its turn afterwards.
"""

from __future__ import annotations

import asyncio
import io
import re
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
import soundfile
import websockets
from server_process import served_by_fake_llm
from speech import espeak_wav

from voicechat.client import VoiceChatClient

pytestmark = pytest.mark.timeout(300)

TOKEN = "a-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
REPLY = "Paris is the capital of France."
BODY_TIMEOUT_S = 2
PER_IP = 3  # the neighbour and two more
ENV = {
    "VOICECHAT_ACCESS_TOKEN": TOKEN,
    "VOICECHAT_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
    "VOICECHAT_MAX_SESSIONS_PER_IP": str(PER_IP),
    "VOICECHAT_MAX_SESSIONS": "8",
}

fake_llm, server, default_script = served_by_fake_llm(REPLY, env=ENV)


def ws_url(server, token: str | None = TOKEN) -> str:
    return server.ws_url + (f"?token={token}" if token is not None else "")


def voice_wav(seconds: float = 4.0, *, nan: bool = False) -> bytes:
    samples = (0.3 * np.sin(np.arange(int(seconds * 16000)) * 0.05)).astype(np.float32)
    if nan:
        samples[500] = np.nan
    out = io.BytesIO()
    soundfile.write(out, samples, 16000, format="WAV", subtype="FLOAT" if nan else "PCM_16")
    return out.getvalue()


def flac_declaring_an_hour() -> bytes:
    out = io.BytesIO()
    soundfile.write(out, (np.random.default_rng(0).standard_normal(32000) * 0.1).astype(np.float32), 16000, format="FLAC")
    data = bytearray(out.getvalue())
    field = int.from_bytes(data[18:26], "big") & ~((1 << 36) - 1)
    data[18:26] = (field | 3600 * 16000).to_bytes(8, "big")
    return bytes(data)


# --- the cases ------------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    probe: Callable[[object], Awaitable[object]]  # returns what the check compares
    expected: object


async def http(server, method: str, path: str, *, headers=None, content: bytes | None = None) -> tuple[int, str]:
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        answer = await client.request(method, path, headers=headers, content=content)
    body = answer.json() if answer.headers.get("content-type", "").startswith("application/json") else {}
    return answer.status_code, body.get("error", "") if isinstance(body, dict) else ""


async def ws_close(url: str, **connect) -> tuple[int | None, str]:
    """Open a WebSocket as given and return the server's close code and reason."""
    async with websockets.connect(url, open_timeout=30, **connect) as ws:
        try:
            await asyncio.wait_for(ws.recv(), timeout=30)
        except websockets.ConnectionClosed:
            pass
        await asyncio.wait_for(ws.wait_closed(), timeout=30)
        return ws.close_code, ws.close_reason


async def slow_upload(server) -> tuple[int, str]:
    """Declare a 1 MB voice and send 4 bytes: the server answers 408 after the body deadline."""
    address = urlsplit(server.url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    try:
        writer.write(
            b"POST /api/voices?name=slow HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
            + TOKEN.encode() + b"\r\nContent-Length: 1000000\r\n\r\nRIFF"
        )  # fmt: skip
        await writer.drain()
        # The head and the body of the answer may come in separate reads: read both, as a client would.
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=BODY_TIMEOUT_S + 30)
        length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        body = await asyncio.wait_for(reader.readexactly(int(length.group(1))), timeout=30) if length else b""
    finally:
        writer.close()
    status = int(head.split(b" ", 2)[1])
    return status, "upload_timeout" if b"upload_timeout" in body else ""


def half_sent_headers(server) -> Callable[[object], Awaitable[bytes]]:
    async def probe(_server) -> bytes:
        address = urlsplit(server.url)
        reader, writer = await asyncio.open_connection(address.hostname, address.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half: ")
        await writer.drain()
        try:
            return await asyncio.wait_for(reader.read(), timeout=60)  # b"" once the server closes it
        finally:
            writer.close()

    return probe


async def one_too_many(server) -> tuple[int | None, str]:
    """Beside the neighbour, open conversations up to the per-address cap; the next one is refused."""
    others = [await VoiceChatClient(ws_url(server)).connect() for _ in range(PER_IP - 1)]
    try:
        extra = await VoiceChatClient(ws_url(server)).connect(send_hello=False)
        error = await extra.wait_for("error")
        await extra.wait_until(lambda: extra.closed_code is not None)
        return extra.closed_code, error["code"]
    finally:
        await asyncio.gather(*(other.close() for other in others))


CASES = [
    Case("one conversation too many from one address", one_too_many, (1013, "too_many_connections")),
    Case("metrics need the token", lambda s: http(s, "GET", "/metrics"), (401, "unauthorized")),
    Case("API needs the token", lambda s: http(s, "GET", "/api/voices"), (401, "unauthorized")),
    Case("docs are off", lambda s: http(s, "GET", "/openapi.json", headers=AUTH), (404, "")),
    Case(
        "upload without token",
        lambda s: http(s, "POST", "/api/voices?name=x", headers={"X-Voicechat-Client": "t"}, content=voice_wav()),
        (401, "unauthorized"),
    ),
    Case(
        "cross-site upload",
        lambda s: http(
            s, "POST", "/api/voices?name=x", content=voice_wav(),
            headers={**AUTH, "Origin": "https://evil.example", "Content-Type": "text/plain"},
        ),  # fmt: skip
        (403, "forbidden_origin"),
    ),
    Case("upload without a name", lambda s: http(s, "POST", "/api/voices", headers=AUTH, content=voice_wav()), (400, "bad_voice")),
    Case(
        "NaN samples",
        lambda s: http(s, "POST", "/api/voices?name=nan", headers=AUTH, content=voice_wav(nan=True)),
        (400, "bad_voice"),
    ),
    Case(
        "an hour declared in a FLAC",
        lambda s: http(s, "POST", "/api/voices?name=hour", headers=AUTH, content=flac_declaring_an_hour()),
        (400, "bad_voice"),
    ),
    Case("slow upload body", slow_upload, (408, "upload_timeout")),
    Case("delete an unknown voice", lambda s: http(s, "DELETE", "/api/voices/nobody", headers=AUTH), (404, "unknown_voice")),
    Case("ws without token", lambda s: ws_close(ws_url(s, None)), (1008, "an access token is needed")),
    Case("ws with a wrong token", lambda s: ws_close(ws_url(s, "nope")), (1008, "an access token is needed")),
    Case(
        "ws from a foreign page",
        lambda s: ws_close(ws_url(s), origin="https://evil.example"),
        (1008, "pages from https://evil.example may not use this server"),
    ),
]


async def check(case: Case, server) -> None:
    got = await case.probe(server)
    if isinstance(case.expected, tuple) and isinstance(got, tuple) and isinstance(case.expected[1], str):
        got = (got[0], got[1][: len(case.expected[1])])  # close reasons go on after the part we check
    assert got == case.expected, case.name


async def test_every_bad_case_is_refused_and_a_neighbour_talks_on(server, fake_llm) -> None:
    async with VoiceChatClient(ws_url(server)) as neighbour:
        for case in CASES:
            await check(case, server)
            assert (await http(server, "GET", "/healthz"))[0] == 200, f"server down after {case.name}"
        assert await half_sent_headers(server)(server) == b""
        await neighbour.send({"type": "text_message", "content": "What is the capital of France?"})
        answer = await neighbour.wait_for("final_assistant_answer", timeout=120)
        assert answer["content"] == REPLY and not answer["interrupted"]
    log = server.log_tail(2000)
    assert "Traceback" not in log and TOKEN not in log and "token=***" in log


async def test_voice_lifecycle_with_the_token(server) -> None:
    wav = espeak_wav("This is my reference voice for cloning, spoken clearly.", rate=44100).read_bytes()

    async def post(query: str) -> tuple[int, str]:
        return await http(server, "POST", f"/api/voices?{query}", headers=AUTH, content=wav)

    assert await post("name=mine") == (200, "")
    assert await post("name=mine") == (409, "voice_exists")
    assert await post("name=mine&replace=1") == (200, "")
    async with httpx.AsyncClient(base_url=server.url, headers=AUTH) as client:
        listed = (await client.get("/api/voices")).json()
        assert "mine" in listed["voices"] and listed["limits"]["max_seconds"] == 30.0
    async with VoiceChatClient(ws_url(server)) as client:
        assert "mine" in client.hello["voices"]
    assert await http(server, "DELETE", "/api/voices/mine", headers=AUTH) == (200, "")
    assert await http(server, "DELETE", "/api/voices/mine", headers=AUTH) == (404, "unknown_voice")


def test_the_api_key_stays_off_the_command_line(server) -> None:
    with open(f"/proc/{server.process.pid}/cmdline", "rb") as cmdline:
        assert b"test-key" not in cmdline.read()


def test_loopback_host_names_only(server) -> None:
    port = urlsplit(server.url).port
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: rebind.evil.example\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 403") and b"forbidden_host" in answer
