"""`voicechat chat` in a subprocess, against the fake server (in-process, and as its own process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fake_llm import DEFAULT_REPLY, FakeLLM, Script
from server_process import free_port

FAKE_LLM_SCRIPT = Path(__file__).parents[1] / "fake_llm.py"


def chat(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICECHAT_") and k != "OPENAI_API_KEY"}
    env["VOICECHAT_LLM_RETRIES"] = "0"
    return subprocess.run(
        [sys.executable, "-m", "voicechat.cli", "chat", *args],
        cwd=tmp_path,  # no stray .env
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_chat_streams_the_reply_and_prints_time_to_first_token(tmp_path: Path) -> None:
    with FakeLLM(Script(token_delay=0.005)) as fake:
        for provider, url in (("ollama", fake.url), ("openai", fake.openai_url)):
            result = chat(tmp_path, "Say hello", "--provider", provider, "--base-url", url)
            assert result.returncode == 0, result.stderr
            assert result.stdout == DEFAULT_REPLY + "\n"
            assert "first token" in result.stderr and f"{provider} llama3.2:3b" in result.stderr
            assert fake.chat_requests()[-1].body["messages"][-1] == {"role": "user", "content": "Say hello"}


def test_chat_unknown_model_exits_nonzero_with_the_plain_words_message(tmp_path: Path) -> None:
    with FakeLLM() as fake:
        result = chat(tmp_path, "Hi", "--provider", "ollama", "--base-url", fake.url, "--model", "nope:1b")
    assert result.returncode == 1 and result.stdout == ""
    assert "run `ollama pull nope:1b`" in result.stderr and "Traceback" not in result.stderr


def test_chat_unreachable_server(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = chat(tmp_path, "Hi", "--provider", "openai", "--base-url", url)
    assert result.returncode == 1
    assert "error (llm_unreachable): cannot reach" in result.stderr and "Traceback" not in result.stderr


def test_chat_error_mid_reply_keeps_what_arrived(tmp_path: Path) -> None:
    with FakeLLM(Script(reply="One two three four.", cut_after=2)) as fake:
        result = chat(tmp_path, "Hi", "--provider", "ollama", "--base-url", fake.url)
    assert result.returncode == 1
    assert result.stdout == "One two\n" and "error (llm_error)" in result.stderr


def test_fake_server_runs_as_its_own_process_for_other_tests(tmp_path: Path) -> None:
    server = subprocess.Popen(
        [sys.executable, str(FAKE_LLM_SCRIPT), "--port", "0", "--reply", "Hi from afar.", "--token-delay", "0.01"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = server.stdout.readline().strip()  # type: ignore[union-attr]
        assert url.startswith("http://127.0.0.1:")
        result = chat(tmp_path, "Hi", "--provider", "ollama", "--base-url", url)
        assert result.returncode == 0, result.stderr
        assert result.stdout == "Hi from afar.\n"
    finally:
        server.terminate()
        assert server.wait(timeout=10) == 0


def test_chat_with_the_local_model_needs_no_server(tmp_path: Path, tiny_llm: Path) -> None:
    from voicechat.llm.tiny_checkpoint import REPLIES

    result = chat(tmp_path, "Tell me about the sea", "--provider", "local", "--model", str(tiny_llm))
    assert result.returncode == 0, result.stderr
    assert result.stdout == REPLIES["sea"] + "\n"
    assert f"[local {tiny_llm}: first token" in result.stderr
