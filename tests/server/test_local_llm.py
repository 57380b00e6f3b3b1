"""The real server with the default `local` provider and no LLM server anywhere: the tiny hand-set
Qwen2 checkpoint runs inside `voicechat serve`, and a typed and a spoken turn get their replies."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest
from conftest_paths import CACHE_DIR
from server_process import running_server
from speech import espeak_wav, read_pcm16, silence

from voicechat.client import VoiceChatClient
from voicechat.llm.tiny_checkpoint import REPLIES, ensure_tiny_llm

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def server(tiny_checkpoint, whisper_tiny_dir):
    tiny_llm = ensure_tiny_llm(CACHE_DIR / "tiny-llm")
    with running_server(
        checkpoint=tiny_checkpoint, stt_model=whisper_tiny_dir, llm_url=None, provider="local", model=str(tiny_llm)
    ) as process:
        yield process


def test_ready_with_the_model_loaded_in_process(server) -> None:
    assert httpx.get(f"{server.url}/readyz").json()["ready"] is True
    assert "language model" in server.log_tail(200).lower()


async def test_typed_then_spoken_turn(server) -> None:
    async with VoiceChatClient(server.ws_url) as client:
        await client.send({"type": "text_message", "content": "Hello there"})
        answer = await client.wait_for("final_assistant_answer", timeout=120)
        assert answer["content"] == REPLIES[""] and not answer["interrupted"]
        end = await client.wait_for("tts_end", timeout=120)
        assert end["turn_id"] == answer["turn_id"] and end["samples"] > 0
        await client.report_played(answer["turn_id"])

        pcm, rate = read_pcm16(espeak_wav("Tell me about the moon."))
        assert rate == 16000
        await client.send_audio(np.concatenate([silence(0.3), pcm, silence(2.5)]))
        heard = await client.wait_for("final_user_request", timeout=60)
        spoken = await client.wait_for("final_assistant_answer", timeout=120, where=lambda m: m["turn_id"] == heard["turn_id"])
        # The tiny model answers about the moon if Whisper heard the word, else with its default sentence.
        topic = "moon" if " moon" in heard["content"].lower() else ""
        assert spoken["content"] == REPLIES[topic] and not spoken["interrupted"]
        metrics = await client.wait_for("turn_metrics", timeout=30, where=lambda m: m["turn_id"] == heard["turn_id"])
        assert metrics["llm_first_token_ms"] is not None and metrics["llm_first_token_ms"] >= 0


def test_a_model_that_cannot_be_had_is_one_plain_sentence_and_the_server_stays_up(
    tiny_checkpoint, whisper_tiny_dir, tmp_path
) -> None:
    missing = tmp_path / "no-such-model"
    with running_server(
        checkpoint=tiny_checkpoint,
        stt_model=whisper_tiny_dir,
        llm_url=None,
        provider="local",
        model=str(missing),
        wait_ready=False,
    ) as server:
        reason = ""
        deadline = time.monotonic() + 240
        while "language model:" not in reason and time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise AssertionError(f"the server exited:\n{server.log_tail()}")
            try:
                answer = httpx.get(f"{server.url}/readyz", timeout=5)
                reason = answer.json()["reason"] if answer.status_code == 503 else ""
            except httpx.HTTPError:
                pass
            time.sleep(0.3)  # another process's start-up: nothing in this one to wait on
        assert reason == f"language model: VOICECHAT_MODEL={missing} is not a directory; name a model directory or a hub id."
        log = server.log_tail(400)
        assert "language model not loaded: VOICECHAT_MODEL=" in log and "Traceback" not in log
