"""A conversation survives a dropped connection: the server's hello carries a resume token; a new
socket's hello with ``resume: {session_id, token}`` gets back the history, settings and voice (and a
conversation still held on a dead socket is handed over); a wrong, reused, unknown or expired token gets
``resume_failed`` and a fresh conversation.

In-process, scripted (tests/server/session_script.py): each connection is a Session on a fake socket,
all sharing one ResumeStore as the server's do. Against the real server: a resume at a full server (here)
and a TCP abort then resume (test_session_limits.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import websockets
from fake_llm import SHORT_REPLY, FakeLLM, Script
from server_process import running_server
from loop_guard import no_loop_exceptions  # noqa: F401  (autouse fixture)
from server.session_script import CHUNK, WAIT_S, Conversation

from voicechat.client import VoiceChatClient
from voicechat.config import Settings
from voicechat.guard import Ending
from voicechat.resume import ResumeStore

REPLY = "Paris is the capital of France. It has about two million people. The Seine runs through it."


@pytest.fixture
def fake():
    with FakeLLM(Script(reply=REPLY)) as server:
        yield server


class Server:
    """Connections that share one resume store, as the conversations of one server process do."""

    def __init__(self, fake: FakeLLM) -> None:
        self.fake = fake
        self.resumes = ResumeStore(grace_s=60.0, max_parked=8)
        self.settings = Settings(  # type: ignore[call-arg]
            _env_file=None, provider="ollama", base_url=fake.url, model="llama3.2:3b", api_key=None, llm_retries=0
        )

    @asynccontextmanager
    async def connect(self, resume: dict[str, str] | None = None) -> AsyncIterator[tuple[Conversation, asyncio.Task]]:
        conv = Conversation(self.fake, self.settings)
        conv.session.services.resumes = self.resumes
        task = asyncio.create_task(conv.session.run())
        hello: dict[str, Any] = {"type": "hello", "protocol": 1, "sample_rate": 16000}
        if resume is not None:
            hello["resume"] = resume
        try:
            conv.send(hello)
            await conv.next("status", state="listening")
            yield conv, task
        finally:
            conv.ws.client_leaves()
            async with asyncio.timeout(WAIT_S):
                await task
            await conv.llm.aclose()
        assert conv.tts.open_streams == 0 and conv.gauge("voicechat_replies_active") == 0


def resume_of(conv: Conversation) -> dict[str, str]:
    hello = conv.of_type("hello")[0]
    return {"session_id": hello["session_id"], "token": hello["resume_token"]}


async def played_turn(conv: Conversation, text: str) -> int:
    turn = await conv.type(text)
    await conv.next("final_assistant_answer", turn_id=turn)
    conv.send({"type": "tts_stop", "turn_id": turn, "played_samples": 10**7})
    await conv.state_becomes("listening")
    return turn


async def test_a_dropped_conversation_resumes_with_history_settings_and_voice(fake: FakeLLM) -> None:
    server = Server(fake)
    async with server.connect() as (first, _):
        first.send({"type": "set_settings", "settings": {"voice": "alice", "speed": 70, "temperature": 0.3}})
        await first.next("settings")
        turn = await played_turn(first, "My name is Ada")
        resume = resume_of(first)
        assert len(resume["token"]) >= 32
    # The socket dropped: the conversation is parked for the grace period.
    async with server.connect(resume) as (second, _):
        hello = second.of_type("hello")[0]
        assert hello["resumed"] is True and hello["session_id"] == resume["session_id"]
        assert hello["resume_token"] != resume["token"]  # a token resumes once
        assert hello["settings"]["voice"] == "alice" and hello["settings"]["speed"] == 70
        assert hello["settings"]["temperature"] == 0.3 and not second.of_type("error")
        next_turn = await second.type("What is my name?")
        assert next_turn > turn  # turn ids go on
        await second.next("final_assistant_answer", turn_id=next_turn)
        assert second.llm_messages() == [("user", "My name is Ada"), ("assistant", REPLY), ("user", "What is my name?")]
        assert second.tts.params[-1].voice == "alice"


@pytest.mark.parametrize("how", ["wrong token", "unknown session", "used twice", "ended by the server"])
async def test_a_resume_that_cannot_be_had_is_told_and_starts_fresh(fake: FakeLLM, how: str) -> None:
    server = Server(fake)
    async with server.connect() as (first, _):
        await played_turn(first, "My name is Ada")
        resume = resume_of(first)
        if how == "ended by the server":
            first.ws.ending = Ending("idle_timeout", "no audio and no message for 10 minutes", 1001)  # as GuardedSocket sets it
    if how == "wrong token":
        resume = {**resume, "token": resume["token"][:-2] + "xx"}
    elif how == "unknown session":
        resume = {**resume, "session_id": "0123456789ab"}
    elif how == "used twice":
        async with server.connect(resume) as (taken, _):
            assert taken.of_type("hello")[0]["resumed"] is True
            taken.ws.ending = Ending("session_expired", "too long", 1001)  # this one is not parked again
    async with server.connect(resume) as (fresh, _):
        hello = fresh.of_type("hello")[0]
        assert hello["resumed"] is False and hello["resume_token"]
        (error,) = fresh.of_type("error")
        assert error["code"] == "resume_failed" and error["fatal"] is False and "fresh" in error["message"]
        await fresh.type("What is my name?")
        await fresh.next("final_assistant_answer")
        assert fresh.llm_messages() == [("user", "What is my name?")]


async def test_a_conversation_still_held_on_a_dead_socket_is_handed_over(fake: FakeLLM) -> None:
    """The page's network dropped; the server has not noticed (no ping timed out yet) when the page comes
    back: the old session stops its reply at what was played, gives up the conversation and ends."""
    server = Server(fake)
    async with server.connect() as (old, old_task):
        await played_turn(old, "My name is Ada")
        old.tts.hold()
        turn = await old.type("Tell me about Paris")
        old.tts.release(8)  # the first sentence (six words) and two words of the next
        await old.samples(turn, 8 * CHUNK)
        old.send({"type": "playback", "turn_id": turn, "played_samples": 6 * CHUNK})
        await old.settled()
        async with server.connect(resume_of(old)) as (new, _):
            assert new.of_type("hello")[0]["resumed"] is True
            async with asyncio.timeout(WAIT_S):
                await old_task  # the old connection ended by itself
            assert old.tts.open_streams == 0
            new_turn = await new.type("And Berlin?")
            await new.next("final_assistant_answer", turn_id=new_turn)
            assert new.llm_messages() == [
                ("user", "My name is Ada"),
                ("assistant", REPLY),
                ("user", "Tell me about Paris"),
                ("assistant", "Paris is the capital of France. —"),  # what was played, marked cut short
                ("user", "And Berlin?"),
            ]
    assert len(server.resumes) == 1  # only the newest connection parked it


async def test_a_live_conversation_is_claimed_once_and_only_with_its_token() -> None:
    """What lets a resume past a full server's caps: its own live conversation's token, once."""
    store = ResumeStore(grace_s=60.0, max_parked=8)

    async def hand_over() -> str:
        return "the conversation"

    store.live("abc", "right", hand_over)
    assert not store.claim("abc", "wrong") and not store.claim("nobody", "right")
    assert store.claim("abc", "right")
    assert not store.claim("abc", "right")  # one token never lets two connections past a cap
    assert await store.take("abc", "right") == "the conversation"  # the claim does not spend the token
    store.park("parked", "its-token", "state")
    assert not store.claim("parked", "its-token")  # it holds no slot: it waits for a free one
    store.close()


async def stranger(url: str, resume: dict[str, str] | None = None) -> tuple[str, int | None]:
    """A new connection's hello (with ``resume`` if given): the error it gets and its close code."""
    client = await VoiceChatClient(url).connect(send_hello=False)
    try:
        hello: dict[str, Any] = {"type": "hello", "protocol": 1, "sample_rate": 16000}
        if resume is not None:
            hello["resume"] = resume
        with contextlib.suppress(websockets.ConnectionClosed):  # a server that refuses at once may be gone
            await client.send(hello)
        error = await client.wait_for("error", timeout=60)
        await client.wait_until(lambda: client.closed_code is not None, timeout=60)
        return error["code"], client.closed_code
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("cap", "refusal"),
    [("VOICECHAT_MAX_SESSIONS", "server_full"), ("VOICECHAT_MAX_SESSIONS_PER_IP", "too_many_connections")],
)
async def test_a_resume_is_let_in_at_a_full_server_and_a_stranger_is_not(
    cap: str, refusal: str, tiny_checkpoint, whisper_tiny_dir
) -> None:
    """A cap of 1, held by a conversation whose network dropped (its socket neither reads nor closes, as a
    dropped network looks until the server's ping times out). Its page comes back with its token at once:
    the conversation goes on. A newcomer without a token, or with a made-up one, is still refused."""
    with FakeLLM(Script(reply=SHORT_REPLY, token_delay=0.01)) as fake, running_server(
        checkpoint=tiny_checkpoint, stt_model=whisper_tiny_dir, llm_url=fake.url, env={cap: "1"}
    ) as server:
        first = await VoiceChatClient(server.ws_url).connect(timeout=120)
        try:
            await first.send({"type": "text_message", "content": "My name is Ada."})
            answer = await first.wait_for("final_assistant_answer", timeout=120)
            await first.wait_for("tts_end", where=lambda m: m["turn_id"] == answer["turn_id"], timeout=120)
            await first.report_played(answer["turn_id"])  # all of it was heard before the drop
            await first.wait_until(lambda: first.of_type("status")[-1]["state"] == "listening", timeout=60)
            assert first.hello is not None
            resume = {"session_id": first.hello["session_id"], "token": first.hello["resume_token"]}
            first._ws.transport.pause_reading()  # the network drops: nothing more is read, no pong, no close

            assert await stranger(server.ws_url) == (refusal, 1013)
            made_up = {**resume, "token": "made-up-" + resume["token"][8:]}
            assert await stranger(server.ws_url, made_up) == (refusal, 1013)

            second = await VoiceChatClient(server.ws_url).connect(send_hello=False)
            try:
                await second.send({"type": "hello", "protocol": 1, "sample_rate": 16000, "resume": resume})
                greeting = await second.wait_for("hello", timeout=60)
                assert greeting["resumed"] is True and greeting["session_id"] == resume["session_id"]
                await second.send({"type": "text_message", "content": "What is my name?"})
                await second.wait_for("final_assistant_answer", timeout=120)
                sent = [(m["role"], m["content"]) for m in fake.chat_requests()[-1].body["messages"][1:]]
                assert sent == [("user", "My name is Ada."), ("assistant", SHORT_REPLY), ("user", "What is my name?")]
                assert not second.of_type("error")
                assert await stranger(server.ws_url) == (refusal, 1013)  # the resumed one holds the slot
                assert await stranger(server.ws_url, resume) == (refusal, 1013)  # a spent token lets nobody in
            finally:
                await second.close()
        finally:
            first._ws.transport.abort()
            await asyncio.gather(first._reader, return_exceptions=True)
        assert "Traceback" not in server.log_tail(100000)
