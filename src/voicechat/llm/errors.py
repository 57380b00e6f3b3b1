"""Typed LLM errors, each with a plain-words message a user can act on.

``code`` is the error code of the WebSocket protocol (docs/protocol.md), so the server can pass an
error on as ``{"type": "error", "code": err.code, "message": str(err)}`` without translating it.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit


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


class LLMContextOverflow(LLMError):
    """The conversation does not fit the local model's context, even after trimming the history."""

    code = "llm_error"


class LLMOutOfMemory(LLMError):
    """The local model ran out of memory on its device, even after trimming the history."""

    code = "llm_error"


_SECRETS: set[str] = set()  # the API key(s) in use: never shown, whatever a server echoes back
_CREDENTIALS = re.compile(
    r"(?i)(bearer\s+|(?:api[_-]?key|token|password|secret|key)[\"']?\s*[:=]\s*[\"']?)[^\s\"',;&]+"
)
_KEY_LIKE = re.compile(r"\b(?=[A-Za-z0-9_-]*\d)(?=[A-Za-z0-9_-]*[A-Za-z])[A-Za-z0-9_-]{24,}\b")
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@")


def register_secret(value: str | None) -> None:
    """Remember a secret (the API key) so that no error message ever shows it."""
    if value:
        _SECRETS.add(value)


def redact_url(url: str) -> str:
    """A URL as it may be shown: without ``user:password@`` and without its query string."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def short(detail: object, limit: int = 120) -> str:
    """A summary of a server's error text that is safe to show a user: one line, short, and with every
    credential (the API key, bearer tokens, ``key=...``, key-like strings, passwords in URLs) removed."""
    text = " ".join(str(detail).split())
    for secret in _SECRETS:
        text = text.replace(secret, "***")
    text = _URL_USERINFO.sub(r"\1", text)
    text = _CREDENTIALS.sub(r"\1***", text)
    text = _KEY_LIKE.sub("***", text)
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
