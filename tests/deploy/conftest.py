"""Fixtures for the deployment tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def clean_env(tmp_path: Path) -> dict[str, str]:
    """The environment minus any VOICECHAT_* of the developer's, with an empty Hugging Face cache and
    HF_HUB_OFFLINE=1, so that nothing tries the network."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("VOICECHAT_", "HF_"))}
    env.update(HF_HOME=str(tmp_path / "hf-home"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="2")
    env["VOICECHAT_PROVIDER"] = "ollama"  # as docker-compose.yml sets it: these tests use a (fake) Ollama
    return env
