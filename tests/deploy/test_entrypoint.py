"""The container's entry command, run outside Docker: the Dockerfile's CMD with the environment the
image sets, its HEALTHCHECK command against it, and a `docker stop` (SIGTERM, 10 s grace).

Container paths map to this machine: /opt/venv to this venv, /models and /data to a temporary
directory. The one deliberate difference: the server binds 127.0.0.1, not the image's 0.0.0.0.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from deploy_helpers import dockerfile, exec_form, final_stage, image_env
from fake_llm import FakeLLM
from server_process import free_port

DOCKER_STOP_GRACE_S = 10  # what `docker stop` waits after SIGTERM before it kills


def container_env(root: Path, base_env: dict[str, str]) -> dict[str, str]:
    env = dict(base_env)
    for key, value in image_env(dockerfile()).items():
        if key in ("PATH", "LD_LIBRARY_PATH"):
            value = value.replace("/opt/venv", sys.prefix).replace("$PATH", base_env["PATH"])
        elif value.startswith("/"):
            value = str(root / value.lstrip("/"))
            Path(value).mkdir(parents=True, exist_ok=True)
        env[key] = value
    env["VOICECHAT_HOST"] = "127.0.0.1"  # tests listen on loopback only
    env["VOICECHAT_PORT"] = str(free_port())
    return env


def healthcheck(env: dict[str, str]) -> int:
    """Run the image's HEALTHCHECK command, as Docker would inside the container."""
    command = exec_form(next(i for i in final_stage(dockerfile()) if i.keyword == "HEALTHCHECK"))
    return subprocess.run(command, env=env, capture_output=True, timeout=10, check=False).returncode


@contextmanager
def container(env: dict[str, str], home: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Start the image's CMD; stop it like `docker stop` whatever happens."""
    home.mkdir(parents=True, exist_ok=True)  # the image's WORKDIR: no .env there
    command = exec_form(next(i for i in final_stage(dockerfile()) if i.keyword == "CMD"))
    log = home / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, cwd=home, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{env['VOICECHAT_PORT']}", process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=DOCKER_STOP_GRACE_S + 20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def wait_for(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float, want: int = 200) -> httpx.Response:
    deadline = time.monotonic() + timeout
    answer = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            answer = httpx.get(url, timeout=5)
            if answer.status_code == want:
                return answer
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    pytest.fail(f"{url} did not answer {want} in {timeout} s (last: {answer and answer.text}):\n{log.read_text()[-3000:]}")


def stop_like_docker(process: subprocess.Popen[bytes], log: Path) -> str:
    """SIGTERM, then the shutdown must finish within Docker's grace period; returns what it logged."""
    logged_before = len(log.read_text())
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    returncode = process.wait(timeout=DOCKER_STOP_GRACE_S + 20)
    took = time.monotonic() - started
    shutdown_log = log.read_text()[logged_before:]
    # uvicorn re-raises the SIGTERM after its graceful shutdown, so -15 is a clean stop too.
    assert returncode in (0, -signal.SIGTERM), shutdown_log
    assert took < DOCKER_STOP_GRACE_S, f"stopping took {took:.1f} s: docker stop would have killed it"
    assert "Traceback" not in shutdown_log, shutdown_log
    return shutdown_log


def test_first_start_without_models_is_alive_but_not_ready(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """No models in the volume and no hub (HF_HUB_OFFLINE): alive, not ready, and it says why."""
    env = container_env(tmp_path, clean_env) | {"VOICECHAT_BASE_URL": "http://127.0.0.1:9"}
    home = tmp_path / "home" / "voicechat"
    with container(env, home) as (url, process):
        wait_for(f"{url}/healthz", process, home / "server.log", timeout=60)
        failed = wait_for(f"{url}/readyz", process, home / "server.log", timeout=120, want=503)
        while "loading failed" not in failed.json()["reason"]:
            time.sleep(0.3)
            failed = wait_for(f"{url}/readyz", process, home / "server.log", timeout=30, want=503)
        assert "model loading failed" in failed.json()["reason"]
        assert healthcheck(env) != 0, "the HEALTHCHECK must report an unready server as unhealthy"
        stop_like_docker(process, home / "server.log")


def test_ready_with_local_models(
    tmp_path: Path, clean_env: dict[str, str], tiny_checkpoint: Path, whisper_tiny_dir: Path
) -> None:
    """Models from local directories (offline use) and a reachable LLM: ready, and healthy."""
    home = tmp_path / "home" / "voicechat"
    with FakeLLM() as llm:
        env = container_env(tmp_path, clean_env) | {
            "VOICECHAT_CHECKPOINT": str(tiny_checkpoint),
            "VOICECHAT_STT_MODEL": str(whisper_tiny_dir),
            "VOICECHAT_DEVICE": "cpu",
            "VOICECHAT_BASE_URL": llm.url,
            "VOICECHAT_MODEL": llm.models[0],
        }
        with container(env, home) as (url, process):
            ready = wait_for(f"{url}/readyz", process, home / "server.log", timeout=300)
            assert ready.json()["ready"] is True
            assert healthcheck(env) == 0
            stop_like_docker(process, home / "server.log")
