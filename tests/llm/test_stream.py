"""The real ollama and openai clients against the loopback fake server, for both providers."""

from __future__ import annotations

import asyncio
import time

import pytest
from llm_helpers import llm_settings

from fake_llm import DEFAULT_REPLY, FakeLLM, Script
from voicechat.llm import base
from voicechat.llm import (
    History,
    LLMAuthError,
    LLMError,
    LLMModelNotFound,
    LLMRateLimited,
    LLMStreamError,
    LLMTimeout,
    LLMUnreachable,
    create_llm,
)

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]


async def collect(fake: FakeLLM | None, provider: str, **settings: object) -> tuple[list[str], float | None]:
    llm = create_llm(llm_settings(fake, provider, **settings))
    try:
        async with llm.stream(MESSAGES) as stream:
            deltas = [delta async for delta in stream]
        return deltas, stream.first_token_s
    finally:
        await llm.aclose()


async def collect_until_error(fake: FakeLLM, provider: str, **settings: object) -> tuple[list[str], LLMError]:
    deltas: list[str] = []
    llm = create_llm(llm_settings(fake, provider, **settings))
    try:
        async with llm.stream(MESSAGES) as stream:
            with pytest.raises(LLMError) as caught:
                async for delta in stream:
                    deltas.append(delta)
        return deltas, caught.value
    finally:
        await llm.aclose()


# --- replies ----------------------------------------------------------------------------------
async def test_streams_the_reply_and_sends_history_and_sampling_settings(provider: str) -> None:
    with FakeLLM(Script(first_token_delay=0.1, token_delay=0.005)) as fake:
        deltas, first_token_s = await collect(fake, provider, llm_temperature=0.3, llm_max_tokens=77)
        assert "".join(deltas) == DEFAULT_REPLY
        assert len(deltas) > 10  # streamed token by token, not in one piece
        assert first_token_s is not None and first_token_s >= 0.1  # the fake waits 0.1 s before it
        (request,) = fake.chat_requests()
        assert request.body["messages"] == MESSAGES
        assert request.body["stream"] is True
        if provider == "ollama":
            assert request.body["options"] == {"temperature": 0.3, "num_predict": 77}
        else:
            assert request.body["temperature"] == 0.3 and request.body["max_tokens"] == 77


async def test_history_object_feeds_a_conversation(provider: str) -> None:
    with FakeLLM(Script(reply="First answer."), Script(reply="Second answer.")) as fake:
        llm = create_llm(llm_settings(fake, provider))
        history = History("Be brief.", 1000)
        for question in ("One?", "Two?"):
            history.add_user(question)
            async with llm.stream(history.messages()) as stream:
                history.add_assistant("".join([delta async for delta in stream]))
        await llm.aclose()
        assert fake.chat_requests()[1].body["messages"] == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "One?"},
            {"role": "assistant", "content": "First answer."},
            {"role": "user", "content": "Two?"},
        ]


async def test_thinking_removed_from_tags_split_across_deltas_and_reasoning_fields(provider: str) -> None:
    tokens = ["<th", "ink>The user", " says hi.</th", "ink>", "\n\n", "Hello", " there", ".", " <think>again</think>", " Bye."]
    with FakeLLM(Script(tokens=tokens, thinking="separate reasoning field", token_delay=0.01)) as fake:
        deltas, first_token_s = await collect(fake, provider)
    assert "".join(deltas) == "Hello there.  Bye."
    assert deltas[0] == "Hello"  # the first visible token, blank lines after </think> dropped
    assert first_token_s is not None and first_token_s >= 0.05  # measured to visible text, not to thinking


async def test_first_token_deadline_is_lifted_once_the_reply_flows(provider: str) -> None:
    script = Script(reply="one two three four five six seven eight", token_delay=0.1)
    with FakeLLM(script) as fake:
        deltas, _ = await collect(fake, provider, llm_first_token_timeout_s=0.4)
    assert "".join(deltas) == script.reply  # took ~0.7 s in all, longer than the deadline


# --- errors -----------------------------------------------------------------------------------
async def test_unreachable_server(provider: str) -> None:
    llm = create_llm(llm_settings(None, provider, llm_retries=1))
    with pytest.raises(LLMUnreachable) as caught:
        await llm.check_ready()
    assert "cannot reach" in str(caught.value) and caught.value.code == "llm_unreachable"
    started = time.monotonic()
    with pytest.raises(LLMUnreachable):
        async with llm.stream(MESSAGES) as stream:
            async for _ in stream:
                pass
    assert time.monotonic() - started < 3
    await llm.aclose()


async def test_unauthorized(provider: str) -> None:
    with FakeLLM(Script(status=401, error_message="unauthorized"), api_key="sekret") as fake:
        deltas, error = await collect_until_error(fake, provider, api_key="wrong")
        assert isinstance(error, LLMAuthError) and error.code == "llm_auth"
        assert "VOICECHAT_API_KEY" in str(error) and deltas == []
        assert len(fake.chat_requests()) == 1  # never retried
        if provider == "openai":
            llm = create_llm(llm_settings(fake, provider, api_key="wrong"))
            with pytest.raises(LLMAuthError):
                await llm.check_ready()
            await llm.aclose()


async def test_openai_api_key_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeLLM(Script(reply="Welcome in."), api_key="sekret") as fake:
        deltas, _ = await collect(fake, "openai", api_key="sekret")
        assert "".join(deltas) == "Welcome in."
        monkeypatch.setenv("OPENAI_API_KEY", "sekret")  # used when VOICECHAT_API_KEY is unset
        deltas, _ = await collect(fake, "openai")
        assert "".join(deltas) == "Welcome in."


async def test_unknown_model(provider: str) -> None:
    with FakeLLM(models=["other:1b"]) as fake:
        llm = create_llm(llm_settings(fake, provider, model="missing:7b"))
        with pytest.raises(LLMModelNotFound) as caught:
            await llm.check_ready()
        message = str(caught.value)
        assert "missing:7b" in message and caught.value.code == "llm_model_not_found"
        if provider == "ollama":
            assert f"not found on Ollama at {fake.url}; run `ollama pull missing:7b`" in message
        else:
            assert "other:1b" in message  # says what the server does offer
        deltas, error = await collect_until_error(fake, provider, model="missing:7b")
        assert isinstance(error, LLMModelNotFound) and deltas == []
        await llm.aclose()


@pytest.mark.parametrize(
    ("status", "error_type", "code"),
    [(429, LLMRateLimited, "llm_rate_limited"), (500, LLMStreamError, "llm_error"), (503, LLMStreamError, "llm_error")],
)
async def test_retryable_status_retried_before_the_first_token(
    provider: str, status: int, error_type: type[LLMError], code: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(base, "RETRY_BASE_DELAY_S", 0.02)
    with FakeLLM(Script(status=status), Script(status=status), Script(reply="Made it.")) as fake:
        deltas, _ = await collect(fake, provider, llm_retries=2)
        assert "".join(deltas) == "Made it." and len(fake.chat_requests()) == 3
    with FakeLLM(Script(status=status, error_message="overloaded")) as fake:
        deltas, error = await collect_until_error(fake, provider, llm_retries=1)
        assert type(error) is error_type and error.code == code and deltas == []
        assert f"HTTP {status}" in str(error) and "overloaded" in str(error)
        assert len(fake.chat_requests()) == 2  # one try + one retry: the openai client's own retries are off


async def test_no_retries_when_disabled(provider: str) -> None:
    with FakeLLM(Script(status=502)) as fake:
        _, error = await collect_until_error(fake, provider, llm_retries=0)
        assert isinstance(error, LLMStreamError) and len(fake.chat_requests()) == 1


async def test_timeout_before_first_token_closes_the_request(provider: str) -> None:
    with FakeLLM(Script(first_token_delay=10)) as fake:
        started = time.monotonic()
        deltas, error = await collect_until_error(fake, provider, llm_first_token_timeout_s=0.3)
        elapsed = time.monotonic() - started
        assert isinstance(error, LLMTimeout) and error.code == "llm_timeout" and deltas == []
        assert "no reply within 0.3 s" in str(error)
        assert elapsed >= 0.3  # not before the deadline (the fake would have waited 10 s)
        record = await asyncio.to_thread(fake.wait_chat_ended, -1, 3.0)
        assert record.client_closed and record.tokens_sent == 0
        assert len(fake.chat_requests()) == 1  # a timeout is not retried


async def test_stall_mid_reply_times_out(provider: str) -> None:
    with FakeLLM(Script(reply="One two three.", token_delay=2.0)) as fake:
        started = time.monotonic()
        deltas, error = await collect_until_error(fake, provider, llm_first_token_timeout_s=0.3)
        assert deltas == ["One"] and isinstance(error, LLMTimeout)
        assert "stopped answering (nothing for 0.3 s)" in str(error)
        assert time.monotonic() - started < 1.5


async def test_stream_cut_mid_reply(provider: str) -> None:
    with FakeLLM(Script(reply="One two three four five.", cut_after=3)) as fake:
        deltas, error = await collect_until_error(fake, provider)
        assert deltas == ["One", " two", " three"]
        assert isinstance(error, LLMStreamError) and error.code == "llm_error"
        assert len(fake.chat_requests()) == 1  # never retried after text was given out


async def test_stream_cut_before_first_token_is_retried(provider: str) -> None:
    with FakeLLM(Script(cut_after=0), Script(reply="Second try.")) as fake:
        deltas, _ = await collect(fake, provider)
        assert "".join(deltas) == "Second try." and len(fake.chat_requests()) == 2


async def test_malformed_chunk(provider: str) -> None:
    with FakeLLM(Script(reply="One two three four.", malformed_after=2)) as fake:
        deltas, error = await collect_until_error(fake, provider)
        assert deltas == ["One", " two"]
        assert isinstance(error, LLMStreamError) and "malformed chunk" in str(error)


async def test_error_object_inside_the_stream(provider: str) -> None:
    with FakeLLM(Script(reply="One two three.", stream_error_after=1, error_message="GPU fell over")) as fake:
        deltas, error = await collect_until_error(fake, provider)
        assert deltas == ["One"]
        assert isinstance(error, LLMStreamError) and "GPU fell over" in str(error)


async def test_stream_ending_without_completion_is_an_error(provider: str) -> None:
    # The last token is sent, then the connection drops before the protocol's "done" marker.
    with FakeLLM(Script(reply="All words sent.", cut_after=4)) as fake:
        deltas, error = await collect_until_error(fake, provider)
        assert "".join(deltas) == "All words sent." and isinstance(error, LLMStreamError)


# --- cancellation -----------------------------------------------------------------------------
async def test_aclose_from_another_task_closes_the_http_stream_at_once(provider: str) -> None:
    with FakeLLM(Script(token_delay=0.05)) as fake:
        llm = create_llm(llm_settings(fake, provider))
        stream = llm.stream(MESSAGES)
        received: list[str] = []
        three = asyncio.Event()

        async def consume() -> None:
            async for delta in stream:
                received.append(delta)
                if len(received) == 3:
                    three.set()

        consumer = asyncio.create_task(consume())
        await asyncio.wait_for(three.wait(), 5)
        closed_at = time.monotonic()
        await stream.aclose()
        await asyncio.wait_for(consumer, 1)  # the blocked consumer ends cleanly, no error
        record = await asyncio.to_thread(fake.wait_chat_ended, -1, 2.0)
        assert time.monotonic() - closed_at < 0.5
        assert record.client_closed and not record.completed
        assert record.tokens_sent < len(DEFAULT_REPLY.split())
        assert len(received) <= record.tokens_sent
        async for _ in stream:  # a closed stream stays ended
            raise AssertionError("closed stream yielded")
        await llm.aclose()


async def test_cancelling_the_consumer_task_then_aclose_closes_the_stream(provider: str) -> None:
    with FakeLLM(Script(first_token_delay=10)) as fake:
        llm = create_llm(llm_settings(fake, provider))
        stream = llm.stream(MESSAGES)
        consumer = asyncio.create_task(anext(stream))
        await asyncio.to_thread(fake.wait_chat_requests)  # cancel once the request is out
        consumer.cancel()
        await stream.aclose()
        record = await asyncio.to_thread(fake.wait_chat_ended, -1, 2.0)
        assert record.client_closed and record.tokens_sent == 0
        await llm.aclose()


async def test_aclose_before_iterating_sends_nothing(provider: str) -> None:
    with FakeLLM() as fake:
        llm = create_llm(llm_settings(fake, provider))
        stream = llm.stream(MESSAGES)
        await stream.aclose()
        assert [d async for d in stream] == [] and fake.chat_requests() == []
        await llm.aclose()


# --- readiness --------------------------------------------------------------------------------
async def test_check_ready_passes_when_the_model_exists(provider: str) -> None:
    with FakeLLM(models=["llama3.2:3b"]) as fake:
        llm = create_llm(llm_settings(fake, provider))
        await llm.check_ready()
        assert llm.name.startswith(f"{provider} llama3.2:3b at http://127.0.0.1:{fake.port}")
        await llm.aclose()


async def test_ollama_auto_pull() -> None:
    with FakeLLM(models=[]) as fake:
        llm = create_llm(llm_settings(fake, "ollama", llm_auto_pull=True))
        await llm.check_ready()
        assert "llama3.2:3b" in fake.models
        assert [r.path for r in fake.requests] == ["/api/show", "/api/pull"]
        deltas, _ = await collect(fake, "ollama")
        assert "".join(deltas) == DEFAULT_REPLY
        await llm.aclose()
    with FakeLLM(models=[], pullable=False) as fake:
        llm = create_llm(llm_settings(fake, "ollama", llm_auto_pull=True))
        with pytest.raises(LLMModelNotFound, match="could not be pulled"):
            await llm.check_ready()
        await llm.aclose()


async def test_openai_base_url_without_v1_gets_it() -> None:
    with FakeLLM(Script(reply="Found it.")) as fake:
        deltas, _ = await collect(fake, "openai", base_url=fake.url)
        assert "".join(deltas) == "Found it."
