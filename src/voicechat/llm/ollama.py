"""Ollama through the official ``ollama`` async client (NDJSON streaming from /api/chat)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator

import httpx
import ollama
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

DEFAULT_URL = "http://localhost:11434"


class OllamaLLM:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._model = settings.llm_model()
        self._url = (settings.base_url or DEFAULT_URL).rstrip("/")
        self._where = f"Ollama at {redact_url(self._url)}"
        self.name = f"ollama {self._model} at {redact_url(self._url)}"
        headers = {"Authorization": f"Bearer {key}"} if (key := settings.effective_api_key()) else None
        # The read timeout bounds a stall in the middle of a reply; the wait for the first token is
        # bounded by LLMStream's own deadline (equal, and started first, so it fires first).
        timeout = httpx.Timeout(settings.llm_first_token_timeout_s, connect=5.0)
        self._client = ollama.AsyncClient(host=self._url, timeout=timeout, headers=headers)

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
            await self._client.show(self._model)
            return
        except ollama.ResponseError as exc:
            if exc.status_code != 404 or not self._settings.llm_auto_pull:
                raise self._error(exc) from None
        except Exception as exc:
            raise self._error(exc) from None
        try:
            await self._pull()
        except Exception as exc:
            raise self._error(exc) from None

    async def aclose(self) -> None:
        await self._client.close()

    async def _deltas(self, messages: list[dict[str, str]]) -> AsyncGenerator[str, None]:
        parts = None
        try:
            parts = await self._client.chat(
                self._model,
                messages=messages,
                stream=True,
                options={
                    "temperature": self._settings.llm_temperature,
                    "num_predict": self._settings.llm_max_tokens,
                },
            )
            done = False
            async for part in parts:
                done = done or bool(part.done)
                # part.message.thinking (the separate reasoning field) is deliberately ignored.
                if part.message.content:
                    yield part.message.content
            if not done:
                raise LLMStreamError(f"{self._where} ended the reply before it was complete", retryable=True)
        except LLMError:
            raise
        except Exception as exc:
            raise self._error(exc) from None
        finally:
            if parts is not None:
                await parts.aclose()  # closes the HTTP response now, not at garbage collection

    async def _pull(self) -> None:
        log.info("model %s not found on %s: pulling it (VOICECHAT_LLM_AUTO_PULL)", self._model, self._where)
        last_status = ""
        try:
            async for progress in await self._client.pull(self._model, stream=True):
                if progress.status != last_status:
                    last_status = progress.status or ""
                    log.info("ollama pull %s: %s", self._model, last_status)
        except ollama.ResponseError as exc:
            raise LLMModelNotFound(
                f"model {self._model} could not be pulled by {self._where}: {short(exc.error)}"
            ) from None
        if last_status != "success":
            raise LLMStreamError(f"pulling {self._model} from {self._where} ended without success")
        log.info("model %s pulled", self._model)

    def _error(self, exc: BaseException) -> LLMError:
        """The typed error for whatever the ollama client (or httpx under it) raised."""
        if isinstance(exc, LLMError):
            return exc
        if isinstance(exc, ollama.ResponseError):
            if exc.status_code == -1:  # an error object inside the stream, after a 200
                return LLMStreamError(f"{self._where} reported an error mid-reply: {short(exc.error)}", retryable=True)
            return error_for_status(
                exc.status_code,
                exc.error,
                where=self._where,
                not_found=f"model {self._model} not found on {self._where}; run `ollama pull {self._model}` "
                "(or set VOICECHAT_LLM_AUTO_PULL=true)",
            )
        if isinstance(exc, (ConnectionError, httpx.ConnectError, httpx.ConnectTimeout)):
            return LLMUnreachable(
                f"cannot reach {self._where}. Is Ollama running (`ollama serve`) and is "
                "VOICECHAT_BASE_URL right?",
                retryable=True,
            )
        if isinstance(exc, httpx.TimeoutException):
            return LLMTimeout(
                f"{self._where} stopped answering (nothing for {self._settings.llm_first_token_timeout_s:g} s)"
            )
        if isinstance(exc, httpx.TransportError):
            return LLMStreamError(f"the connection to {self._where} was cut mid-reply ({short(exc)})", retryable=True)
        if isinstance(exc, (json.JSONDecodeError, pydantic.ValidationError, TypeError, AttributeError)):
            return LLMStreamError(f"{self._where} sent a malformed chunk: {short(exc)}")
        return LLMStreamError(f"unexpected error talking to {self._where}: {short(exc)}")
