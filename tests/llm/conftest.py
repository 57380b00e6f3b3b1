"""Fixtures for the LLM tests: a Settings factory pointed at the fake server, and a guard that no
exception escapes into the event loop."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from fake_llm import FakeLLM
from voicechat.config import Settings
from loop_guard import no_loop_exceptions  # noqa: F401  (autouse fixture)


def llm_settings(fake: FakeLLM | None, provider: str, **overrides: object) -> Settings:
    """Settings for ``provider`` talking to ``fake`` (or to a closed port when ``fake`` is None)."""
    if fake is None:
        url = f"http://127.0.0.1:{free_port()}"
    else:
        url = fake.url if provider == "ollama" else fake.openai_url
    values: dict[str, object] = {"provider": provider, "base_url": url, "model": "llama3.2:3b", "api_key": None}
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def free_port() -> int:
    """A port with nothing listening on it (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(params=["ollama", "openai"])
def provider(request: pytest.FixtureRequest) -> str:
    return request.param




@pytest.fixture(scope="session")
def tiny_llm(cache_dir: Path) -> Path:
    """The tiny hand-set Qwen2 checkpoint (voicechat make-checkpoint --llm), built once and cached."""
    from voicechat.llm.tiny_checkpoint import ensure_tiny_llm

    return ensure_tiny_llm(cache_dir / "tiny-llm")
