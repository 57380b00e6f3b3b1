"""OpenAI and OpenAI-compatible servers (LM Studio, vLLM, llama.cpp server, Ollama's /v1) through the
official ``openai`` async client, streaming Server-Sent Events from /chat/completions."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncGenerator
from urllib.parse import urlsplit

import openai
import pydantic

from voicechat.config import Settings
from voicechat.llm.base import LLMStream
from voicechat.llm.errors import (
    LLMError,
    LLMModelNotFound,
    LLMStreamError,
    LLMTimeout,
    LLMUnreachable,
    error_for_status,
    redact_url,
    short,
)

log = logging.getLogger(__name__)


def normalize_base_url(url: str | None) -> str | None:
    """A bare server address (``http://localhost:1234``) gets the ``/v1`` every compatible server uses."""
    if url is None:
        return None
    url = url.rstrip("/")
    return url + "/v1" if urlsplit(url).path in ("", "/") else url


class OpenAILLM:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._model = settings.llm_model()
        base_url = normalize_base_url(settings.base_url)
        # Local servers need no key, but the client insists on one.
        api_key = settings.effective_api_key() or os.environ.get("OPENAI_API_KEY") or "no-key"
        self._client = openai.AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,  # LLMStream retries, and only before the first token
            timeout=openai.Timeout(settings.llm_first_token_timeout_s, connect=5.0),
        )
        url = redact_url(str(self._client.base_url).rstrip("/"))
        self._where = f"the OpenAI-compatible server at {url}"
        self.name = f"openai {self._model} at {url}"
        # The official API wants max_completion_tokens (max_tokens is refused by its reasoning models);
        # other servers know max_tokens best.
        self._max_tokens_field = "max_completion_tokens" if base_url is None else "max_tokens"

    def stream(self, messages: list[dict[str, str]]) -> LLMStream:
        return LLMStream(
            lambda: self._deltas(messages),
            where=self._where,
            first_token_timeout_s=self._settings.llm_first_token_timeout_s,
            retries=self._settings.llm_retries,
            max_chars=self._settings.llm_max_reply_chars,
        )

    async def check_ready(self) -> None:
        try:
            ids = [model.id async for model in self._client.models.list()]
        except openai.NotFoundError:
            log.warning("%s has no model list (/models); cannot check that %s exists", self._where, self._model)
            return
        except Exception as exc:
            raise self._error(exc, streaming=False) from None
        if self._model not in ids:
            offered = ", ".join(ids[:10]) or "none"
            raise LLMModelNotFound(
                f"model {self._model} not found on {self._where}; it offers: {offered}. "
                "Set VOICECHAT_MODEL to one of them."
            )

    async def aclose(self) -> None:
        await self._client.close()

    async def _deltas(self, messages: list[dict[str, str]]) -> AsyncGenerator[str, None]:
        stream = None
        try:
            stream = await self._client.chat.completions.create(
                model=self._model,
                messages=messages,  # type: ignore[arg-type]
                stream=True,
                temperature=self._settings.llm_temperature,
                **{self._max_tokens_field: self._settings.llm_max_tokens},  # type: ignore[arg-type]
            )
            finished = False
            async for chunk in stream:
                if not chunk.choices:  # e.g. a usage-only chunk
                    continue
                choice = chunk.choices[0]
                finished = finished or choice.finish_reason is not None
                # delta.reasoning_content / delta.reasoning (separate thinking fields) are ignored.
                if choice.delta is not None and choice.delta.content:
                    yield choice.delta.content
            if not finished:
                raise LLMStreamError(f"{self._where} ended the reply before it was complete", retryable=True)
        except LLMError:
            raise
        except Exception as exc:
            raise self._error(exc, streaming=stream is not None) from None
        finally:
            if stream is not None:
                await stream.close()  # closes the HTTP response now, not at garbage collection

    def _error(self, exc: BaseException, *, streaming: bool) -> LLMError:
        """The typed error for whatever the openai client raised; ``streaming``: after the 200."""
        if isinstance(exc, openai.APIStatusError):
            return error_for_status(
                exc.status_code,
                exc.message,
                where=self._where,
                not_found=f"model {self._model} not found on {self._where} (HTTP 404: {short(exc.message)}). "
                "Check VOICECHAT_MODEL, and that VOICECHAT_BASE_URL is the API root (usually ending in /v1).",
            )
        if isinstance(exc, openai.APITimeoutError):
            if type(exc.__cause__).__name__ == "ConnectTimeout":  # httpx or httpx2, by openai version
                return LLMUnreachable(f"cannot reach {self._where} (connecting timed out)", retryable=True)
            return LLMTimeout(
                f"{self._where} stopped answering (nothing for {self._settings.llm_first_token_timeout_s:g} s)"
            )
        if isinstance(exc, openai.APIConnectionError):
            if streaming:
                return LLMStreamError(f"the connection to {self._where} was cut mid-reply", retryable=True)
            return LLMUnreachable(
                f"cannot reach {self._where}. Is the server running and is VOICECHAT_BASE_URL right?",
                retryable=True,
            )
        if isinstance(exc, openai.APIError):  # an error event inside the stream, after a 200
            return LLMStreamError(f"{self._where} reported an error mid-reply: {short(exc.message)}", retryable=True)
        if isinstance(exc, (json.JSONDecodeError, pydantic.ValidationError, TypeError, AttributeError)):
            return LLMStreamError(f"{self._where} sent a malformed chunk: {short(exc)}")
        return LLMStreamError(f"unexpected error talking to {self._where}: {short(exc)}")
