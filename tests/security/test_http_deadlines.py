"""Half-sent requests are dropped: uvicorn with the deadline protocol, on loopback, with raw sockets."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
import uvicorn

from voicechat.http_deadlines import deadline_protocol

pytestmark = pytest.mark.timeout(60)


async def reading_app(scope, receive, send) -> None:  # noqa: ANN001 - a plain ASGI app that reads bodies
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    config = uvicorn.Config(
        reading_app, host="127.0.0.1", port=free, http=deadline_protocol(0.5, 0.5), log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            threading.Event().wait(0.05)
        yield free
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def closed_by_server(port: int, data: bytes) -> bytes:
    """Send ``data`` and read until the server closes the connection; returns what it sent."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(data)
        received = b""
        while chunk := conn.recv(65536):  # blocks until the server answers or closes; 30 s means it never did
            received += chunk
        return received


def test_half_sent_headers_are_dropped(port: int) -> None:
    assert closed_by_server(port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ") == b""


def test_silent_connection_is_dropped(port: int) -> None:
    assert closed_by_server(port, b"") == b""


def test_half_sent_body_is_dropped(port: int) -> None:
    request = b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000000\r\n\r\nfour"
    assert closed_by_server(port, request) == b""


def test_whole_requests_are_answered(port: int) -> None:
    request = b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4\r\nConnection: close\r\n\r\nfour"
    assert closed_by_server(port, request).startswith(b"HTTP/1.1 200")
