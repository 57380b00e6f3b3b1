"""Fixtures for the LLM tests: both providers, the tiny local checkpoint, and a guard that no exception
escapes into the event loop. Helpers the tests import are in llm_helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from loop_guard import no_loop_exceptions  # noqa: F401  (autouse fixture)


@pytest.fixture(params=["ollama", "openai"])
def provider(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def tiny_llm(cache_dir: Path) -> Path:
    """The tiny hand-set Qwen2 checkpoint (voicechat make-checkpoint --llm), built once and cached."""
    from voicechat.llm.tiny_checkpoint import ensure_tiny_llm

    return ensure_tiny_llm(cache_dir / "tiny-llm")
