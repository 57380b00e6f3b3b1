"""The local provider on the tiny hand-set Qwen2 checkpoint, loaded through the real from_pretrained path."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from voicechat.config import Settings
from voicechat.llm import History, LLMContextOverflow, LLMModelNotFound, LLMOutOfMemory, create_llm
from voicechat.llm.local import LocalLLM
from voicechat.llm.local_scheduler import DONE, Reply
from voicechat.llm.tiny_checkpoint import REPLIES

SYSTEM = "You are a friendly voice assistant."


def local_settings(model: str | Path, **overrides: object) -> Settings:
    values: dict[str, object] = {"provider": "local", "model": str(model), "device": "cpu", "llm_temperature": 0.7}
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def llm(tiny_llm: Path) -> Iterator[LocalLLM]:
    local = create_llm(local_settings(tiny_llm))
    assert isinstance(local, LocalLLM)
    local.load()
    yield local
    asyncio.run(local.aclose())


def ask(text: str, history: History | None = None) -> list[dict[str, str]]:
    history = history or History(SYSTEM, 12_000)
    return history.messages_with_user(text)


async def reply_of(llm: LocalLLM, messages: list[dict[str, str]]) -> tuple[list[str], float | None]:
    async with llm.stream(messages) as stream:
        deltas = [delta async for delta in stream]
    return deltas, stream.first_token_s


async def test_streams_an_ordinary_reply_word_by_word(llm: LocalLLM) -> None:
    await llm.check_ready()
    deltas, first_token_s = await reply_of(llm, ask("Tell me about the sea please"))
    assert "".join(deltas) == REPLIES["sea"]
    assert len(deltas) == len(REPLIES["sea"].split()) + 1  # one delta per word, then the period
    assert first_token_s is not None and first_token_s > 0
    assert llm.name == f"local {llm.source}"


async def test_the_reply_follows_the_user_and_the_system_prompt_is_sent(llm: LocalLLM) -> None:
    deltas, _ = await reply_of(llm, ask("hi there"))
    assert "".join(deltas) == REPLIES[""]
    system_with_topic = [{"role": "system", "content": "You love music"}, {"role": "user", "content": "hi"}]
    deltas, _ = await reply_of(llm, system_with_topic)
    assert "".join(deltas) == REPLIES["music"]  # the system prompt reached the model, through the template


async def test_cancel_mid_reply_stops_the_model_before_its_next_token(llm: LocalLLM) -> None:
    stream = llm.stream(ask("Tell me about the moon"))
    first = await anext(stream)
    await stream.aclose()
    assert first == REPLIES["moon"].split()[0]
    assert await asyncio.to_thread(llm._scheduler.wait_idle, 30)  # the reply left the owner thread

    # On the owner thread itself: a reply cancelled while it delivers its 2nd word gets no 3rd step.
    seen: list[object] = []
    done = asyncio.Event()
    loop = asyncio.get_running_loop()

    def deliver(item: object) -> None:
        seen.append(item)
        if len(seen) == 2:
            reply.cancel()
            loop.call_soon_threadsafe(done.set)

    reply = Reply(ask("Tell me about the moon"), max_tokens=50, temperature=0.0, deliver=deliver)
    llm._scheduler.submit(reply)
    await done.wait()
    assert await asyncio.to_thread(llm._scheduler.wait_idle, 30)
    assert seen == [" " + word for word in REPLIES["moon"].split()[:2]]  # raw deltas: LLMStream strips the first
    assert DONE not in seen


async def test_two_conversations_at_once_each_get_their_own_reply(llm: LocalLLM) -> None:
    topics = ["sea", "moon", "food", "dog"]
    replies = await asyncio.gather(*(reply_of(llm, ask(f"Tell me about the {topic}")) for topic in topics))
    assert ["".join(deltas) for deltas, _ in replies] == [REPLIES[topic] for topic in topics]
    assert await asyncio.to_thread(llm._scheduler.wait_idle, 30)  # every reply left the owner thread


async def test_a_history_too_long_for_the_context_is_trimmed_oldest_first(llm: LocalLLM) -> None:
    history = History(SYSTEM, 100_000)
    for _ in range(40):  # about 1500 tokens of old turns about the moon: over the 1024-token context
        history.add_user("Tell me about the moon and the moon")
        history.add_assistant(REPLIES["moon"])
    messages = history.messages_with_user("Tell me about the sea")
    deltas, _ = await reply_of(llm, messages)
    assert "".join(deltas) == REPLIES["moon"]  # a whole reply (the moon turns that fit still outweigh the sea)

    reply = Reply(messages, max_tokens=400, temperature=0.0, deliver=lambda item: None)
    prompt = llm._scheduler._prompt_ids(reply)  # what that request sent the model
    assert reply.trimmed_turns > 0 and len(prompt) <= 1024 - 400  # room left for a whole reply
    text = llm._scheduler.loaded.tokenizer.decode(prompt)
    assert text.startswith(f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n")  # then a user turn
    assert text.endswith("<|im_start|>user\nTell me about the sea<|im_end|>\n<|im_start|>assistant\n")
    kept = text.count("<|im_start|>user") - 1
    assert kept == 40 - reply.trimmed_turns // 2  # the oldest turns went, in user/assistant pairs

    with pytest.raises(LLMContextOverflow) as caught:
        await reply_of(llm, ask("the sea " * 800))
    assert "too long for the language model" in str(caught.value) and caught.value.code == "llm_error"


async def test_out_of_memory_retries_once_with_a_shorter_history_then_says_so(
    llm: LocalLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = llm._scheduler.loaded.model
    real_forward = model.forward
    failures = {"left": 1}
    prompts: list[int] = []

    def forward(*args: object, **kwargs: object) -> object:
        if kwargs["past_key_values"].get_seq_length() == 0:
            prompts.append(kwargs["input_ids"].shape[1])
        if failures["left"] > 0:
            failures["left"] -= 1
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", forward)
    history = History(SYSTEM, 100_000)
    for question in ("Tell me about the dog and the dog", "hello", "hello"):
        history.add_user(question)
        history.add_assistant(REPLIES[""])
    deltas, _ = await reply_of(llm, history.messages_with_user("Tell me about the sea"))
    assert "".join(deltas) == REPLIES["sea"]  # not the dog's: the oldest turn was left out
    assert len(prompts) == 2 and prompts[1] < prompts[0]  # retried once, with the older half left out

    failures["left"] = 2
    with pytest.raises(LLMOutOfMemory) as caught:
        await reply_of(llm, ask("Tell me about the sea"))
    assert "ran out of memory" in str(caught.value)


async def test_a_bad_model_path_is_one_plain_sentence(tmp_path: Path) -> None:
    for model, words in (
        (tmp_path / "no-such-model", "is not a directory"),
        (tmp_path, "without a model (no config.json)"),
    ):
        bad = LocalLLM(local_settings(model))
        with pytest.raises(LLMModelNotFound) as caught:
            bad.load()
        message = str(caught.value)
        assert words in message and "\n" not in message and "Traceback" not in message
        with pytest.raises(LLMModelNotFound):
            await bad.check_ready()  # /readyz says the same sentence
        with pytest.raises(LLMModelNotFound):
            await reply_of(bad, ask("hi"))


async def test_offline_without_a_local_copy_is_one_plain_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    bad = LocalLLM(local_settings("nobody/no-such-model"))
    assert bad.hub_repo == "nobody/no-such-model"
    with pytest.raises(LLMModelNotFound) as caught:
        bad.load()
    message = str(caught.value)
    assert "nobody/no-such-model is not on this machine" in message and "HF_HUB_OFFLINE" in message
    assert "voicechat download-models" in message and "\n" not in message


def test_the_model_setting_defaults_per_provider() -> None:
    from voicechat.config import LOCAL_MODEL_CPU, SERVER_MODEL

    assert Settings(_env_file=None).provider == "local"
    assert Settings(_env_file=None, device="cpu").llm_model() == LOCAL_MODEL_CPU
    assert Settings(_env_file=None, provider="ollama").llm_model() == SERVER_MODEL
    assert Settings(_env_file=None, provider="openai", model="gpt-4o-mini").llm_model() == "gpt-4o-mini"
    assert Settings(_env_file=None, model="").llm_model() == Settings(_env_file=None).llm_model()


def test_download_models_fetches_or_checks_the_local_model(
    tiny_llm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    from voicechat.commands.download_models import DownloadError, fetch_local_llm

    assert fetch_local_llm(local_settings(tiny_llm)) == f"local model {tiny_llm.resolve()}, nothing to download"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(DownloadError, match="is not on this machine and cannot be downloaded"):
        fetch_local_llm(local_settings("nobody/no-such-model"))


async def test_make_checkpoint_llm_builds_a_model_that_answers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from voicechat.cli import main

    out = tmp_path / "tiny-llm"
    assert await asyncio.to_thread(main, ["make-checkpoint", "--llm", str(out)]) == 0
    assert f"VOICECHAT_MODEL={out}" in capsys.readouterr().out
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {
        path.name for path in out.iterdir()
    }
    built = LocalLLM(local_settings(out))
    await asyncio.to_thread(built.load)
    try:
        deltas, _ = await reply_of(built, ask("Tell me about the weather"))
        assert "".join(deltas) == REPLIES["weather"]
    finally:
        await built.aclose()
    assert await asyncio.to_thread(main, ["make-checkpoint", "--llm", str(out)]) == 2  # exists already
    assert await asyncio.to_thread(main, ["make-checkpoint", "--llm", str(tmp_path / "b"), str(tmp_path / "c")]) == 2


async def test_closing_the_model_ends_a_reply_in_progress_with_an_error(tiny_llm: Path) -> None:
    from voicechat.llm import LLMStreamError

    local = LocalLLM(local_settings(tiny_llm))
    await asyncio.to_thread(local.load)
    items: asyncio.Queue[object] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    reply = Reply(ask("hi"), max_tokens=50, temperature=0.0, deliver=lambda item: loop.call_soon_threadsafe(items.put_nowait, item))
    with local._scheduler._wake:  # submitted and closed in one go: the reply cannot finish first
        local._scheduler._replies.append(reply)
        local._scheduler._closed = True
        local._scheduler._wake.notify()
    await local.aclose()
    item = await items.get()
    assert isinstance(item, LLMStreamError) and "shut down" in str(item)
