"""Helpers of the LLM tests: Settings pointed at the fake LLM server.

A module of its own (not conftest.py): every test area's conftest.py is the top-level module `conftest`,
so `from conftest import ...` finds whichever area's conftest was loaded last."""

from __future__ import annotations

from fake_llm import FakeLLM
from server_process import free_port
from voicechat.config import Settings


def llm_settings(fake: FakeLLM | None, provider: str, **overrides: object) -> Settings:
    """Settings for ``provider`` talking to ``fake`` (or to a closed port when ``fake`` is None)."""
    if fake is None:
        url = f"http://127.0.0.1:{free_port()}"  # bound, then released: nothing listens there
    else:
        url = fake.url if provider == "ollama" else fake.openai_url
    values: dict[str, object] = {"provider": provider, "base_url": url, "model": "llama3.2:3b", "api_key": None}
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]
