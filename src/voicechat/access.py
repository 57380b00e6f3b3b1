"""Who may use the server: the access token, the Host and Origin allow-lists, CSRF-proof changes.

One ASGI middleware applies every rule, before any route runs:
- Host: on a loopback bind only loopback names are served, so a DNS-rebinding page (evil.example
  resolving to 127.0.0.1) is refused. ``allowed_hosts`` replaces the list.
- Token: ``/ws``, ``/api/*``, ``/metrics`` and the API docs need the access token when there is one
  (``Authorization: Bearer TOKEN``; ``?token=TOKEN`` on ``/ws``, where browsers cannot set headers).
  The page, its scripts, ``/healthz`` and ``/readyz`` stay public: they hold no secrets, and probes
  and the page's first load must reach them.
- Origin: a browser's ``Origin`` must be the server's own (same host and port as the request's
  ``Host``) or one of ``allowed_origins``, on ``/ws`` and on every state-changing request.
- CSRF: a state-changing request must carry ``Authorization`` or ``X-Voicechat-Client``. Neither can
  be sent by a cross-site "simple" request, so a foreign page's form or beacon never gets through.

HTTP refusals are ``{"error": code, "message": ...}`` with 400/401/403. A refused WebSocket is
accepted and at once closed with 1008 and the reason: browsers hide the HTTP status of a refused
handshake, but show a close code and reason. No session exists and nothing else is sent.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import secrets
import sys
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from voicechat.config import Settings

log = logging.getLogger(__name__)

CLIENT_HEADER = "x-voicechat-client"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CLOSE_POLICY = 1008


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_token(settings: Settings) -> str | None:
    """The configured token; a fresh random one when the server is reachable from other machines."""
    if settings.access_token:
        return settings.access_token
    if is_loopback(settings.host):
        return None
    token = secrets.token_urlsafe(24)
    shown = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    # Printed, not only logged: without it nobody can use the server (as Jupyter does).
    print(
        "\nThe server is reachable from other machines, so it needs an access token. Open:\n"
        f"    http://{shown}:{settings.port}/?token={token}\n"
        "(or this machine's name or address instead of the host). Set VOICECHAT_ACCESS_TOKEN to keep "
        "one token across restarts.\n",
        file=sys.stderr,
        flush=True,
    )
    return token


def _split(value: str) -> frozenset[str]:
    return frozenset(item.strip().rstrip("/").lower() for item in value.split(",") if item.strip())


def _hostname(host_header: str) -> str:
    """``example.com:8000`` -> ``example.com``; ``[::1]:8000`` -> ``::1``."""
    parsed = urlsplit("//" + host_header)
    return (parsed.hostname or "").lower()


@dataclass(frozen=True)
class AccessPolicy:
    token: str | None
    origins: frozenset[str]  # extra allowed origins, scheme://host[:port], lower case
    hosts: frozenset[str] | None  # allowed host names; None: any

    @classmethod
    def from_settings(cls, settings: Settings, token: str | None) -> AccessPolicy:
        hosts = _split(settings.allowed_hosts)
        if not hosts:
            hosts = LOOPBACK_NAMES if is_loopback(settings.host) else frozenset()
        return cls(token=token, origins=_split(settings.allowed_origins), hosts=hosts or None)

    # --- the rules, each a plain reason or None ---------------------------------------------------

    def host_problem(self, headers: dict[str, str]) -> str | None:
        if self.hosts is None:
            return None
        name = _hostname(headers.get("host", ""))
        if name in self.hosts:
            return None
        return f"this server does not answer to the host name {name[:100]!r} (VOICECHAT_ALLOWED_HOSTS)"

    def origin_problem(self, headers: dict[str, str]) -> str | None:
        origin = headers.get("origin")
        if origin is None:
            return None  # not a browser: CSRF and cross-site WebSockets need one
        origin = origin.strip().rstrip("/").lower()
        if origin in self.origins or urlsplit(origin).netloc == headers.get("host", "").lower():
            return None
        return f"pages from {origin[:100]} may not use this server (VOICECHAT_ALLOWED_ORIGINS)"

    def token_problem(self, headers: dict[str, str], query: str = "", *, in_query: bool = False) -> str | None:
        if self.token is None:
            return None
        given = ""
        scheme, _, value = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            given = value.strip()
        elif in_query:
            given = (parse_qs(query).get("token") or [""])[0]
        if given and secrets.compare_digest(given.encode(), self.token.encode()):
            return None
        return "an access token is needed: open the link with ?token= that the server printed at start"

    @staticmethod
    def csrf_problem(headers: dict[str, str]) -> str | None:
        if "authorization" in headers or CLIENT_HEADER in headers:
            return None
        return "changes need the access token or an X-Voicechat-Client header"


_TOKEN_IN_QUERY = re.compile(r"([?&]token=)[^&\s\"']+")


class HideTokens(logging.Filter):
    """Keeps access tokens out of log lines (uvicorn logs each WebSocket's path with its query)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "token=" in message:
            record.msg, record.args = _TOKEN_IN_QUERY.sub(r"\1***", message), ()
        return True


def hide_tokens_in_logs() -> None:
    for name in ("uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        if not any(isinstance(existing, HideTokens) for existing in logger.filters):
            logger.addFilter(HideTokens())


def _protected(path: str) -> bool:
    return path == "/ws" or path == "/metrics" or path.startswith(("/api/", "/docs", "/redoc", "/openapi.json"))


class AccessMiddleware:
    """Applies an AccessPolicy to every HTTP request and WebSocket before the app sees it."""

    def __init__(self, app, policy: AccessPolicy) -> None:  # noqa: ANN001 - any ASGI app
        self.app = app
        self.policy = policy

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001 - ASGI
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        refusal = self._check(scope, headers)
        if refusal is None:
            return await self.app(scope, receive, send)
        status, code, reason = refusal
        client = scope.get("client")
        log.info(
            "refused %s %s from %s: %s", scope.get("method", "WebSocket"), scope["path"], client and client[0], reason
        )
        if scope["type"] == "websocket":
            if (await receive())["type"] == "websocket.connect":
                await send({"type": "websocket.accept"})
                await send({"type": "websocket.close", "code": CLOSE_POLICY, "reason": reason[:120]})
            return None
        body = json.dumps({"error": code, "message": reason}).encode()
        extra = [(b"www-authenticate", b"Bearer")] if status == 401 else []
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra],
            }
        )
        await send({"type": "http.response.body", "body": body})
        return None

    def _check(self, scope, headers: dict[str, str]) -> tuple[int, str, str] | None:  # noqa: ANN001
        policy = self.policy
        if problem := policy.host_problem(headers):
            return 403, "forbidden_host", problem
        websocket = scope["type"] == "websocket"
        changes = websocket or scope["method"] in STATE_CHANGING
        if changes and (problem := policy.origin_problem(headers)):
            return 403, "forbidden_origin", problem
        if _protected(scope["path"]) and (
            problem := policy.token_problem(headers, scope.get("query_string", b"").decode("latin-1"), in_query=websocket)
        ):
            return 401, "unauthorized", problem
        if changes and not websocket and (problem := policy.csrf_problem(headers)):
            return 403, "forbidden", problem
        return None
