"""Run the real `voicechat serve` in a subprocess on loopback, and always stop it.

Used by the server tests, the browser tests and the benchmarks; `served_by_fake_llm` makes the pytest
fixtures of a test module that talks to one such server on a fake LLM.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fake_llm import FakeLLM, Script


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServerProcess:
    url: str  # http://127.0.0.1:PORT
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws"

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def metric(self, name: str) -> float:
        """The value of one unlabelled Prometheus metric from /metrics."""
        for line in httpx.get(f"{self.url}/metrics", timeout=10).text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{}"):
                return float(line.rsplit(" ", 1)[1])
        raise KeyError(name)

    async def metrics_at_zero(self, names: tuple[str, ...], timeout: float = 60.0) -> dict[str, float]:
        """The values of ``names`` once all are 0 (a closed connection's work ends a moment later), or
        as they are when ``timeout`` has passed."""
        deadline = time.monotonic() + timeout
        while True:
            values = {name: self.metric(name) for name in names}
            if not any(values.values()) or time.monotonic() > deadline:
                return values
            await asyncio.sleep(0.2)


@contextlib.contextmanager
def running_server(
    *,
    checkpoint: Path,
    stt_model: Path,
    llm_url: str | None,  # None: no --base-url (the local provider needs no server)
    provider: str = "ollama",
    model: str = "llama3.2:3b",  # the fake LLM's default model
    port: int | None = None,
    env: dict[str, str] | None = None,
    ready_timeout: float = 300.0,
    wait_ready: bool = True,
) -> Iterator[ServerProcess]:
    """Start `voicechat serve` with the given models and LLM; yield once /readyz says ready."""
    port = port or free_port()
    log_file = tempfile.NamedTemporaryFile(prefix="voicechat-server-", suffix=".log", delete=False)
    command = [
        sys.executable, "-m", "voicechat.cli", "serve",
        "--host", "127.0.0.1", "--port", str(port),
        "--checkpoint", str(checkpoint), "--stt-model", str(stt_model), "--device", "cpu",
        "--provider", provider, "--model", model, *(["--base-url", llm_url] if llm_url else []),
    ]  # fmt: skip
    process_env = {
        **os.environ,
        "OMP_NUM_THREADS": "2",
        "HF_HUB_OFFLINE": "1",
        "VOICECHAT_API_KEY": "test-key",  # from the environment: a key on the command line shows in `ps`
        "VOICECHAT_MAX_SESSIONS_PER_IP": "100",  # every test client comes from 127.0.0.1
        "VOICECHAT_VOICES_DIR": tempfile.mkdtemp(prefix="voicechat-voices-"),
        **(env or {}),
    }
    process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=process_env)
    server = ServerProcess(f"http://127.0.0.1:{port}", process, Path(log_file.name))
    try:
        if wait_ready:
            wait_until_ready(server, ready_timeout)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)
        log_file.close()


def served_by_fake_llm(reply: str, *, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    """The fixtures of a test module that talks to one real server on a loopback LLM.

    ``fake_llm``: the fake LLM, answering ``reply`` at 10 ms a token; ``server``: `voicechat serve` on the
    tiny models and that LLM, ``env`` added to its environment; both live for the module. ``default_script``
    (autouse) gives the fake its ``reply`` back before each test, whatever the last test scripted. A test
    module binds all three under these names::

        fake_llm, server, default_script = served_by_fake_llm(REPLY, env={"VOICECHAT_MAX_SESSIONS": "4"})
    """

    def script() -> Script:
        return Script(reply=reply, token_delay=0.01)

    @pytest.fixture(scope="module")
    def fake_llm() -> Iterator[FakeLLM]:
        with FakeLLM(script()) as fake:
            yield fake

    @pytest.fixture(scope="module")
    def server(fake_llm: FakeLLM, tiny_checkpoint: Path, whisper_tiny_dir: Path) -> Iterator[ServerProcess]:
        with running_server(
            checkpoint=tiny_checkpoint, stt_model=whisper_tiny_dir, llm_url=fake_llm.url, env=env
        ) as process:
            yield process

    @pytest.fixture(autouse=True)
    def default_script(fake_llm: FakeLLM) -> None:
        fake_llm.set_scripts(script())

    return fake_llm, server, default_script


def wait_until_ready(server: ServerProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    reason = "no answer yet"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"voicechat serve exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            answer = httpx.get(f"{server.url}/readyz", timeout=5)
            if answer.status_code == 200:
                return
            reason = answer.json().get("reason", answer.text)
        except httpx.HTTPError as error:
            reason = str(error)
        time.sleep(0.3)
    raise TimeoutError(f"server not ready after {timeout} s ({reason}):\n{server.log_tail()}")
