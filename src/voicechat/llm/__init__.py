"""The LLM: streamed replies from a model in this process, Ollama or an OpenAI-compatible server, and the
conversation history.

The server needs only what this module exports; see docs/llm.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from voicechat.llm.base import LLM, LLMStream
from voicechat.llm.errors import (
    LLMAuthError,
    LLMContextOverflow,
    LLMError,
    LLMModelNotFound,
    LLMOutOfMemory,
    LLMRateLimited,
    LLMStreamError,
    LLMTimeout,
    LLMUnreachable,
    register_secret,
)
from voicechat.llm.history import INTERRUPTED_MARK, History, Turn

if TYPE_CHECKING:
    from voicechat.config import Settings

__all__ = [
    "INTERRUPTED_MARK",
    "LLM",
    "History",
    "LLMAuthError",
    "LLMContextOverflow",
    "LLMError",
    "LLMModelNotFound",
    "LLMOutOfMemory",
    "LLMRateLimited",
    "LLMStream",
    "LLMStreamError",
    "LLMTimeout",
    "LLMUnreachable",
    "Turn",
    "create_llm",
]


def create_llm(settings: Settings) -> LLM:
    """The configured provider's client. Nothing is contacted until check_ready() or stream()."""
    register_secret(settings.effective_api_key())
    # Imported here: each client library costs import time, and only one is used.
    if settings.provider == "local":
        from voicechat.llm.local import LocalLLM

        return LocalLLM(settings)
    if settings.provider == "ollama":
        from voicechat.llm.ollama import OllamaLLM

        return OllamaLLM(settings)
    from voicechat.llm.openai import OpenAILLM

    return OpenAILLM(settings)
