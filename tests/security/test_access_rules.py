"""Access rules of the real app, in process: token, Host, Origin, CSRF, API docs, error shapes.

The app is built by ``create_app`` as `voicechat serve` builds it, without starting its lifespan, so no
model loads: every request below is decided by the access middleware or answered as "not ready".
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from voicechat.access import AccessPolicy, is_loopback, resolve_token
from voicechat.app import create_app
from voicechat.config import Settings
from voicechat.llm.errors import redact_url, register_secret, short

TOKEN = "s3cret-token-for-tests"
LOCAL = {"host": "127.0.0.1:8000"}
CHANGE = {"X-Voicechat-Client": "test"}
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def client(**settings: object) -> TestClient:
    app = create_app(Settings(_env_file=None, **settings))
    return TestClient(app, base_url="http://127.0.0.1:8000")


@pytest.fixture(scope="module")
def open_app() -> TestClient:
    """Bound to loopback, no token: the default on a desktop."""
    return client(host="127.0.0.1")


@pytest.fixture(scope="module")
def token_app() -> TestClient:
    return client(host="127.0.0.1", access_token=TOKEN, allowed_origins="https://chat.example.com")


# Each case: (app, method, path, headers, expected status, expected error code or None)
HTTP_CASES = [
    # Host allow-list on loopback: DNS rebinding is refused, loopback names are served.
    ("open", "GET", "/healthz", {"host": "evil.example:8000"}, 403, "forbidden_host"),
    ("open", "GET", "/healthz", {"host": "localhost:8000"}, 200, None),
    ("open", "GET", "/healthz", {"host": "[::1]:8000"}, 200, None),
    # Without a token, API reads are open on loopback; changes need the custom header (never "simple").
    ("open", "GET", "/api/voices", {}, 503, "not_ready"),
    ("open", "POST", "/api/voices?name=x", {"content-type": "text/plain"}, 403, "forbidden"),
    ("open", "POST", "/api/voices?name=x", CHANGE, 503, "not_ready"),
    ("open", "DELETE", "/api/voices/x", {}, 403, "forbidden"),
    # A foreign page's origin is refused on changes, the server's own origin is fine.
    ("open", "POST", "/api/voices?name=x", {**CHANGE, "origin": "https://evil.example"}, 403, "forbidden_origin"),
    ("open", "POST", "/api/voices?name=x", {**CHANGE, "origin": "http://127.0.0.1:8000"}, 503, "not_ready"),
    # Missing ?name gets the documented shape, not FastAPI's 422.
    ("open", "POST", "/api/voices", CHANGE, 400, "bad_voice"),
    ("open", "POST", "/api/voices?name=x&replace=maybe", CHANGE, 400, "bad_request"),
    # API docs are off by default.
    ("open", "GET", "/docs", {}, 404, None),
    ("open", "GET", "/openapi.json", {}, 404, None),
    # With a token: API, metrics need it; the page and probes do not.
    ("token", "GET", "/api/voices", {}, 401, "unauthorized"),
    ("token", "GET", "/api/voices", {"Authorization": "Bearer wrong"}, 401, "unauthorized"),
    ("token", "GET", "/api/voices?token=" + TOKEN, {}, 401, "unauthorized"),  # not in a URL for HTTP
    ("token", "GET", "/api/voices", BEARER, 503, "not_ready"),
    ("token", "GET", "/metrics", {}, 401, "unauthorized"),
    ("token", "GET", "/metrics", BEARER, 200, None),
    ("token", "GET", "/healthz", {}, 200, None),
    ("token", "GET", "/readyz", {}, 503, None),
    ("token", "GET", "/", {}, 200, None),
    ("token", "POST", "/api/voices?name=x", {**BEARER, "origin": "https://chat.example.com"}, 503, "not_ready"),
    ("token", "POST", "/api/voices?name=x", {**BEARER, "origin": "https://evil.example"}, 403, "forbidden_origin"),
]


@pytest.mark.parametrize(("which", "method", "path", "headers", "status", "code"), HTTP_CASES)
def test_http_access(open_app, token_app, which, method, path, headers, status, code) -> None:
    app = open_app if which == "open" else token_app
    answer = app.request(method, path, headers={**LOCAL, **headers})
    assert answer.status_code == status, answer.text
    if code is not None:
        body = answer.json()
        assert body["error"] == code and isinstance(body["message"], str) and "<" not in body["message"]


WS_CASES = [
    ("token", "/ws", {}, "access token"),
    ("token", "/ws?token=wrong", {}, "access token"),
    ("open", "/ws", {"origin": "https://evil.example"}, "may not use this server"),
    ("open", "/ws", {"host": "evil.example"}, "host name"),
    ("token", "/ws?token=" + TOKEN, {"origin": "https://evil.example"}, "may not use this server"),
]


@pytest.mark.parametrize(("which", "path", "headers", "reason"), WS_CASES)
def test_websocket_refused_with_1008_and_a_reason(open_app, token_app, which, path, headers, reason) -> None:
    app = open_app if which == "open" else token_app
    with pytest.raises(WebSocketDisconnect) as closed:
        with app.websocket_connect(path, headers={**LOCAL, **headers}) as ws:
            ws.receive_text()
    assert closed.value.code == 1008
    assert reason in closed.value.reason


def test_api_docs_when_enabled() -> None:
    app = client(host="127.0.0.1", api_docs=True)
    assert app.get("/openapi.json", headers=LOCAL).status_code == 200


def test_voice_limits_are_listed_for_the_page() -> None:
    app = client(host="127.0.0.1", voice_max_bytes=2_000_000, voice_max_s=20.0)
    limits = app.get("/api/voices", headers=LOCAL).json()["limits"]
    assert limits["max_bytes"] == 2_000_000 and limits["max_seconds"] == 20.0
    assert {"min_seconds", "max_voices", "max_total_bytes", "formats"} <= set(limits)


def test_upload_declaring_too_much_is_refused_before_its_body() -> None:
    app = client(host="127.0.0.1", voice_max_bytes=1024 * 1024)
    headers = {**LOCAL, **CHANGE, "content-length": str(100 * 1024 * 1024)}
    answer = app.post("/api/voices?name=big", headers=headers)  # the body is never sent
    assert answer.status_code == 413 and "1 MB" in answer.json()["message"]


def test_token_is_made_only_off_loopback(capsys) -> None:
    assert resolve_token(Settings(_env_file=None, host="127.0.0.1")) is None
    assert resolve_token(Settings(_env_file=None, host="0.0.0.0", access_token="mine")) == "mine"
    made = resolve_token(Settings(_env_file=None, host="0.0.0.0", port=8123))
    assert made and len(made) >= 24
    assert f":8123/?token={made}" in capsys.readouterr().err
    assert is_loopback("::1") and is_loopback("localhost") and not is_loopback("0.0.0.0")


def test_hosts_are_open_off_loopback_and_settable() -> None:
    assert AccessPolicy.from_settings(Settings(_env_file=None, host="0.0.0.0"), "t").hosts is None
    policy = AccessPolicy.from_settings(Settings(_env_file=None, host="0.0.0.0", allowed_hosts="chat.example.com"), "t")
    assert policy.host_problem({"host": "chat.example.com:443"}) is None
    assert policy.host_problem({"host": "other.example"})


def test_secrets_never_shown() -> None:
    register_secret("my-api-key-1")
    assert redact_url("http://bob:hunter2@llm.local:8080/v1?key=abc") == "http://llm.local:8080/v1"
    summary = short("bad key my-api-key-1; Authorization: Bearer abc.def; see http://u:pw@host/x; api_key=zzz")
    for secret in ("my-api-key-1", "abc.def", "pw@", "zzz"):
        assert secret not in summary
    assert short("model llama3.2:3b not found") == "model llama3.2:3b not found"
    assert len(short("x" * 1000)) <= 120


def test_api_key_from_a_file(tmp_path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("from-the-file\n")
    settings = Settings(_env_file=None, api_key="from-env", api_key_file=key_file)
    assert settings.effective_api_key() == "from-the-file"
    with pytest.raises(ValueError, match="not a file"):
        Settings(_env_file=None, api_key_file=tmp_path / "missing")
