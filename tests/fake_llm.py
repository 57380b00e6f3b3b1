"""A scripted LLM server on loopback that speaks the real Ollama and OpenAI wire protocols.

One server answers both:
- Ollama: ``GET /api/tags``, ``POST /api/show``, ``POST /api/pull`` (NDJSON progress) and
  ``POST /api/chat`` (NDJSON stream). Base URL for clients: ``fake.url``.
- OpenAI: ``GET /v1/models`` and ``POST /v1/chat/completions`` (Server-Sent Events). Base URL for
  clients: ``fake.openai_url``.

Each chat request takes the next :class:`Script` of the queue (the last one repeats), which decides
what it sends: the reply split into tokens, a first-token delay and a per-token delay, an HTTP error
status instead of a reply, a cut connection or a malformed chunk after N tokens, thinking text.
Requests are recorded (:attr:`FakeLLM.requests`), and each chat stream records whether the client
closed the connection before the end (:attr:`ChatRecord.client_closed`), for cancellation tests.

In a test::

    with FakeLLM(Script(reply="Hello there.", token_delay=0.01)) as fake:
        ...  # Settings(base_url=fake.url, model=fake.models[0]) or base_url=fake.openai_url

From another process (prints the base URL on its first line of stdout, serves until killed)::

    python tests/fake_llm.py --port 0 --reply "Hi there. How are you?" --token-delay 0.02
"""

from __future__ import annotations

import argparse
import json
import re
import select
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_REPLY = (
    "Hello! It is nice to hear from you. I am a test assistant on a loopback server. "
    "Ask me anything, and I will answer in a few short sentences."
)
DEFAULT_MODEL = "llama3.2:3b"  # the default of VOICECHAT_MODEL
# What the tests of the real server script it to say: one sentence, and a story long enough to talk over.
SHORT_REPLY = "Paris is the capital of France."
LONG_REPLY = " ".join(
    [
        "Once upon a time there was a little lighthouse on a rocky island far out at sea.",
        "Every night it sent its beam across the water to guide the fishing boats home.",
        "The keeper was an old woman who loved the storms and the seabirds.",
        "One winter a great fog rolled in and the light had to shine brighter than ever.",
        "The boats followed it through the dark and every one of them came home safely.",
    ]
)


def split_tokens(text: str) -> list[str]:
    """Word-like tokens with their leading whitespace, as LLMs stream them ("Hello", " there", ".")."""
    return re.findall(r"\s*[\w']+|\s*[^\w\s]|\s+$", text)


@dataclass
class Script:
    """What one chat request gets."""

    reply: str = DEFAULT_REPLY
    tokens: list[str] | None = None  # exact deltas to send; default: split_tokens(reply)
    thinking: str = ""  # sent first in the separate reasoning field (Ollama message.thinking,
    # OpenAI delta.reasoning_content), one word per chunk
    first_token_delay: float = 0.0  # seconds before the first chunk
    token_delay: float = 0.0  # seconds between chunks
    status: int | None = None  # answer with this HTTP error status (and a protocol error body) instead
    error_message: str = "scripted failure"
    cut_after: int | None = None  # close the connection abruptly after this many tokens
    malformed_after: int | None = None  # send an unparsable chunk after this many tokens
    stream_error_after: int | None = None  # send the protocol's in-stream error object after N tokens

    def deltas(self) -> list[str]:
        return list(self.tokens) if self.tokens is not None else split_tokens(self.reply)


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # parsed JSON, or None


@dataclass
class ChatRecord:
    """One chat stream, as the server saw it."""

    protocol: str  # "ollama" or "openai"
    request: RecordedRequest
    tokens_sent: int = 0
    completed: bool = False  # the whole scripted stream was sent
    client_closed: bool = False  # the client closed the connection before the end
    ended: threading.Event = field(default_factory=threading.Event)  # set when the handler is done


class _ClientGone(Exception):
    pass


class FakeLLM:
    """The server. Use as a context manager; ``port=0`` picks a free port."""

    def __init__(
        self,
        *scripts: Script,
        models: list[str] | None = None,
        api_key: str | None = None,
        port: int = 0,
        pullable: bool = True,
    ) -> None:
        self.scripts: list[Script] = list(scripts) or [Script()]
        self.models: list[str] = list(models) if models is not None else [DEFAULT_MODEL]
        self.api_key = api_key  # when set, OpenAI requests need "Authorization: Bearer <api_key>"
        self.pullable = pullable  # whether /api/pull can fetch a missing model
        self.requests: list[RecordedRequest] = []
        self.chats: list[ChatRecord] = []
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  # notified as each request arrives
        self._sockets: set[socket.socket] = set()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # --- lifetime -------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_url(self) -> str:
        return f"{self.url}/v1"

    def start(self) -> FakeLLM:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-llm", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        with self._lock:
            for sock in list(self._sockets):  # wakes handlers waiting between tokens
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeLLM:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- for tests ------------------------------------------------------------------------------
    def set_scripts(self, *scripts: Script) -> None:
        with self._lock:
            self.scripts = list(scripts)

    def chat_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path in ("/api/chat", "/v1/chat/completions")]

    def wait_chat_requests(self, count: int = 1, timeout: float = 5.0) -> None:
        """Block until ``count`` chat requests have arrived (raises TimeoutError otherwise)."""
        chats = ("/api/chat", "/v1/chat/completions")
        with self._arrived:
            if not self._arrived.wait_for(lambda: sum(r.path in chats for r in self.requests) >= count, timeout):
                raise TimeoutError(f"fewer than {count} chat requests reached the fake LLM server")

    def wait_chat_ended(self, index: int = -1, timeout: float = 5.0) -> ChatRecord:
        """The chat record ``index`` once its handler has finished (raises TimeoutError otherwise)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                record = self.chats[index] if self.chats else None
            if record is not None and record.ended.wait(max(0.0, deadline - time.monotonic())):
                return record
            if time.monotonic() >= deadline:
                raise TimeoutError("no finished chat stream on the fake LLM server")
            time.sleep(0.01)

    def _next_script(self) -> Script:
        with self._lock:
            return self.scripts.pop(0) if len(self.scripts) > 1 else self.scripts[0]

    def _has_model(self, name: str) -> bool:
        def full(n: str) -> str:
            return n if ":" in n else n + ":latest"

        return full(name) in {full(m) for m in self.models}


def _make_handler(fake: FakeLLM) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive and chunked streaming, like the real servers

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def setup(self) -> None:
            super().setup()
            with fake._lock:
                fake._sockets.add(self.connection)

        def finish(self) -> None:
            with fake._lock:
                fake._sockets.discard(self.connection)
            try:
                super().finish()
            except OSError:
                pass

        # --- routing ---------------------------------------------------------------------------
        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def _route(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except json.JSONDecodeError:
                body = None
            request = RecordedRequest(method, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            with fake._lock:
                fake.requests.append(request)
                fake._arrived.notify_all()
            routes = {
                ("GET", "/api/tags"): self._ollama_tags,
                ("POST", "/api/show"): self._ollama_show,
                ("POST", "/api/pull"): self._ollama_pull,
                ("POST", "/api/chat"): self._ollama_chat,
                ("GET", "/v1/models"): self._openai_models,
                ("POST", "/v1/chat/completions"): self._openai_chat,
            }
            handler = routes.get((method, self.path.split("?")[0]))
            if handler is None:
                self._json(404, {"error": f"404 page not found: {self.path}"})
                return
            if self.path.startswith("/v1/") and not self._authorized():
                return
            try:
                handler(request)
            except _ClientGone:
                self.close_connection = True

        # --- plain responses -------------------------------------------------------------------
        def _json(self, status: int, payload: Any) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _openai_error(self, status: int, message: str, kind: str, code: str | None = None) -> None:
            self._json(status, {"error": {"message": message, "type": kind, "param": None, "code": code}})

        def _authorized(self) -> bool:
            if fake.api_key is None or self.headers.get("Authorization") == f"Bearer {fake.api_key}":
                return True
            self._openai_error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
            return False

        # --- streaming -------------------------------------------------------------------------
        def _start_stream(self, content_type: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()

        def _chunk(self, data: bytes) -> None:
            try:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
            except OSError:
                raise _ClientGone from None

        def _end_stream(self) -> None:
            try:
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except OSError:
                raise _ClientGone from None

        def _cut(self) -> None:
            """Drop the connection mid-body: no final chunk, as when a server crashes."""
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        def _pause(self, seconds: float) -> None:
            """Wait, but notice at once if the client closes the connection meanwhile."""
            deadline = time.monotonic() + seconds
            while True:
                remaining = deadline - time.monotonic()
                readable, _, _ = select.select([self.connection], [], [], max(0.0, remaining))
                if readable:
                    try:
                        data = self.connection.recv(1, socket.MSG_PEEK)
                    except OSError:
                        data = b""
                    if not data:
                        raise _ClientGone
                    # A pipelined request is waiting; nothing to do about it mid-stream.
                    time.sleep(max(0.0, min(remaining, 0.01)))
                if remaining <= 0:
                    return

        def _run_chat(self, protocol: str, request: RecordedRequest, script: Script, send_headers, emit) -> None:
            """The shared script runner; ``emit(kind, text)`` writes one protocol chunk."""
            record = ChatRecord(protocol, request)
            with fake._lock:
                fake.chats.append(record)
            try:
                headers_sent = False
                if protocol == "openai":  # OpenAI-style servers answer headers at once, Ollama with the 1st chunk
                    send_headers()
                    headers_sent = True
                self._pause(script.first_token_delay)
                if not headers_sent:
                    send_headers()
                for i, word in enumerate(re.findall(r"\s*\S+", script.thinking)):
                    if i:
                        self._pause(script.token_delay)
                    emit("thinking", word)
                for i, token in enumerate(script.deltas()):
                    if script.cut_after == i:
                        self._cut()
                        return
                    if script.malformed_after == i:
                        emit("malformed", "")
                    if script.stream_error_after == i:
                        emit("error", script.error_message)
                        self._end_stream()
                        record.completed = True
                        return
                    if i or script.thinking:
                        self._pause(script.token_delay)
                    emit("content", token)
                    record.tokens_sent += 1
                if script.cut_after is not None and script.cut_after >= len(script.deltas()):
                    self._cut()
                    return
                emit("done", "")
                self._end_stream()
                record.completed = True
            except _ClientGone:
                record.client_closed = True
                raise
            finally:
                record.ended.set()

        # --- Ollama ----------------------------------------------------------------------------
        def _ollama_tags(self, request: RecordedRequest) -> None:
            self._json(200, {"models": [_ollama_model_entry(name) for name in fake.models]})

        def _ollama_show(self, request: RecordedRequest) -> None:
            name = (request.body or {}).get("model") or (request.body or {}).get("name") or ""
            if not fake._has_model(name):
                self._json(404, {"error": f"model '{name}' not found"})
                return
            self._json(
                200,
                {
                    "modelfile": f"FROM {name}",
                    "parameters": "",
                    "template": "{{ .Prompt }}",
                    "details": _ollama_model_entry(name)["details"],
                    "model_info": {"general.architecture": "llama"},
                    "capabilities": ["completion"],
                    "modified_at": "2025-01-01T00:00:00Z",
                },
            )

        def _ollama_pull(self, request: RecordedRequest) -> None:
            name = (request.body or {}).get("model") or ""
            self._start_stream("application/x-ndjson")

            def line(payload: dict[str, Any]) -> None:
                self._chunk(json.dumps(payload).encode() + b"\n")

            line({"status": "pulling manifest"})
            if not fake.pullable:
                line({"error": "pull model manifest: file does not exist"})
                self._end_stream()
                return
            for done in (0, 50, 100):
                line({"status": f"pulling {'0' * 12}", "digest": "sha256:" + "0" * 64, "total": 100, "completed": done})
            line({"status": "verifying sha256 digest"})
            line({"status": "writing manifest"})
            with fake._lock:
                fake.models.append(name)
            line({"status": "success"})
            self._end_stream()

        def _ollama_chat(self, request: RecordedRequest) -> None:
            body = request.body or {}
            model = body.get("model", "")
            script = fake._next_script()
            if script.status is not None:
                self._json(script.status, {"error": script.error_message})
                return
            if not fake._has_model(model):
                self._json(404, {"error": f'model "{model}" not found, try pulling it first'})
                return

            def line(payload: dict[str, Any]) -> None:
                self._chunk(json.dumps(payload).encode() + b"\n")

            def emit(kind: str, text: str) -> None:
                base = {"model": model, "created_at": _now_iso()}
                if kind == "content":
                    line({**base, "message": {"role": "assistant", "content": text}, "done": False})
                elif kind == "thinking":
                    line({**base, "message": {"role": "assistant", "content": "", "thinking": text}, "done": False})
                elif kind == "malformed":
                    self._chunk(b'{"model": "' + model.encode() + b'", "message": {"role": "assist\n')
                elif kind == "error":
                    line({"error": text})
                else:  # done
                    line(
                        {
                            **base,
                            "message": {"role": "assistant", "content": ""},
                            "done": True,
                            "done_reason": "stop",
                            "total_duration": 1_000_000,
                            "load_duration": 1_000,
                            "prompt_eval_count": 10,
                            "prompt_eval_duration": 1_000,
                            "eval_count": 10,
                            "eval_duration": 1_000,
                        }
                    )

            if body.get("stream") is False:
                self._json(
                    200,
                    {"model": model, "created_at": _now_iso(), "done": True, "done_reason": "stop",
                     "message": {"role": "assistant", "content": "".join(script.deltas())}},
                )
                return
            self._run_chat("ollama", request, script, lambda: self._start_stream("application/x-ndjson"), emit)

        # --- OpenAI ----------------------------------------------------------------------------
        def _openai_models(self, request: RecordedRequest) -> None:
            data = [{"id": name, "object": "model", "created": 1_700_000_000, "owned_by": "fake"} for name in fake.models]
            self._json(200, {"object": "list", "data": data})

        def _openai_chat(self, request: RecordedRequest) -> None:
            body = request.body or {}
            model = body.get("model", "")
            script = fake._next_script()
            if script.status is not None:
                kinds = {429: "rate_limit_exceeded", 401: "invalid_request_error", 404: "invalid_request_error"}
                self._openai_error(script.status, script.error_message, kinds.get(script.status, "server_error"))
                return
            if not fake._has_model(model):
                self._openai_error(
                    404, f"The model `{model}` does not exist or you do not have access to it.",
                    "invalid_request_error", "model_not_found",
                )
                return
            created = int(time.time())

            def event(payload: Any) -> None:
                self._chunk(b"data: " + (payload if isinstance(payload, bytes) else json.dumps(payload).encode()) + b"\n\n")

            def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
                return {
                    "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
                }

            def emit(kind: str, text: str) -> None:
                if kind == "content":
                    event(chunk({"content": text}))
                elif kind == "thinking":
                    event(chunk({"content": None, "reasoning_content": text}))
                elif kind == "malformed":
                    event(b'{"id": "chatcmpl-fake", "choices": [{"delta": {"content": "oops')
                elif kind == "error":
                    event({"error": {"message": text, "type": "server_error", "code": None}})
                    event(b"[DONE]")
                else:  # done
                    event(chunk({}, "stop"))
                    event(b"[DONE]")

            def headers() -> None:
                self._start_stream("text/event-stream; charset=utf-8")
                event(chunk({"role": "assistant", "content": ""}))

            self._run_chat("openai", request, script, headers, emit)

    return Handler


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime())


def _ollama_model_entry(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "model": name,
        "modified_at": "2025-01-01T00:00:00Z",
        "size": 2_019_393_189,
        "digest": "a80c4f17acd5" + "0" * 52,
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": "llama",
            "families": ["llama"],
            "parameter_size": "3.2B",
            "quantization_level": "Q4_K_M",
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A scripted Ollama + OpenAI-compatible server on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0, help="TCP port (0: any free port)")
    parser.add_argument("--reply", default=DEFAULT_REPLY, help="the reply to every chat request")
    parser.add_argument("--token-delay", type=float, default=0.0, help="seconds between tokens")
    parser.add_argument("--first-token-delay", type=float, default=0.0, help="seconds before the first token")
    parser.add_argument("--thinking", default="", help="text sent first in the separate reasoning field")
    parser.add_argument("--model", action="append", dest="models", help="a model the server has (repeatable)")
    parser.add_argument("--api-key", default=None, help="require this key on OpenAI requests")
    parser.add_argument("--status", type=int, default=None, help="answer every chat request with this HTTP status")
    args = parser.parse_args(argv)
    script = Script(
        reply=args.reply,
        token_delay=args.token_delay,
        first_token_delay=args.first_token_delay,
        thinking=args.thinking,
        status=args.status,
    )
    fake = FakeLLM(script, models=args.models, api_key=args.api_key, port=args.port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with fake:
        print(fake.url, flush=True)
        stop.wait()


if __name__ == "__main__":
    main()
