"""Chatterbox is the one TTS engine: the old TTS library is nowhere in code, requirements or Docker files.

Prose may name it (docs/migration.md explains what replaced it); nothing that runs or installs may.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess

from deploy_helpers import REPO

OLD = re.compile("realtime[_-]?" + "tts", re.IGNORECASE)  # split so that this file does not match itself
PROSE = {".md", ".txt", ".rst"}


def project_files() -> list[str]:
    """Tracked files, and new files git does not ignore (what the next commit could hold)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    return [name for name in listed if (REPO / name).is_file()]


def test_not_in_any_code_requirement_or_docker_file() -> None:
    files = project_files()
    assert "Dockerfile" in files and "pyproject.toml" in files
    offenders = []
    for name in files:
        path = REPO / name
        if path.suffix in PROSE and not path.name.startswith("requirements"):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary (images)
        offenders += [f"{name}:{number}" for number, line in enumerate(text.splitlines(), 1) if OLD.search(line)]
        if OLD.search(name):
            offenders.append(name)
    assert not offenders, f"the old TTS library is mentioned in: {offenders}"


def test_not_installed() -> None:
    installed = {dist.metadata["Name"] for dist in importlib.metadata.distributions()}
    assert not [name for name in installed if name and OLD.search(name)]
