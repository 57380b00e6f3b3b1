"""Typed LLM errors, each with a plain-words message a user can act on.

``code`` is the error code of the WebSocket protocol (docs/protocol.md), so the server can pass an
error on as ``{"type": "error", "code": err.code, "message": str(err)}`` without translating it.
"""

from __future__ import annotations


class LLMError(Exception):
    """Any LLM failure. ``retryable`` marks failures that are safe to retry before the first token."""

    code: str = "llm_error"

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class LLMUnreachable(LLMError):
    code = "llm_unreachable"


class LLMModelNotFound(LLMError):
    code = "llm_model_not_found"


class LLMAuthError(LLMError):
    code = "llm_auth"


class LLMRateLimited(LLMError):
    code = "llm_rate_limited"


class LLMTimeout(LLMError):
    code = "llm_timeout"


class LLMStreamError(LLMError):
    """The reply broke: the connection was cut mid-reply, a chunk could not be read, or a 5xx."""

    code = "llm_error"


def short(detail: object, limit: int = 200) -> str:
    """A server's error text, on one line and short enough to show a user."""
    text = " ".join(str(detail).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_for_status(status: int, detail: object, *, where: str, not_found: str) -> LLMError:
    """The typed error for an HTTP error status. ``not_found`` is the message for a 404."""
    reason = short(detail)
    if status in (401, 403):
        return LLMAuthError(
            f"{where} rejected the request as unauthorized (HTTP {status}): {reason}. "
            "Set VOICECHAT_API_KEY (or OPENAI_API_KEY) to a valid key."
        )
    if status == 404:
        return LLMModelNotFound(not_found)
    if status == 429:
        return LLMRateLimited(
            f"{where} is limiting requests (HTTP 429): {reason}. Wait a moment and try again, "
            "or check the limits of your plan.",
            retryable=True,
        )
    if status >= 500:
        return LLMStreamError(f"{where} failed with a server error (HTTP {status}): {reason}", retryable=True)
    return LLMError(f"{where} refused the request (HTTP {status}): {reason}")
