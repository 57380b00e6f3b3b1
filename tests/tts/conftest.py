"""Fixtures for the TTS tests: one tiny random-weight Chatterbox, one engine on it, two espeak voices."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from speech import espeak_wav
from loop_guard import no_loop_exceptions  # noqa: F401  (autouse fixture)
from tts_helpers import tts_settings

ALICE_TEXT = "The quick brown fox jumps over the lazy dog."
BOB_TEXT = "She sells sea shells by the sea shore today."


@pytest.fixture(scope="session")
def alice_wav() -> Path:
    return espeak_wav(ALICE_TEXT, rate=24000, voice="en-us")


@pytest.fixture(scope="session")
def bob_wav() -> Path:
    return espeak_wav(BOB_TEXT, rate=16000, voice="en-gb", words_per_minute=140)


@pytest.fixture(scope="session")
def voices_dir(tmp_path_factory: pytest.TempPathFactory, alice_wav: Path, bob_wav: Path) -> Path:
    folder = tmp_path_factory.mktemp("voices")
    shutil.copy(alice_wav, folder / "alice.wav")
    shutil.copy(bob_wav, folder / "bob.wav")
    return folder


@pytest.fixture(scope="session")
def chatterbox(tiny_checkpoint: Path):
    """The tiny checkpoint loaded once through the real ChatterboxTTS.from_local."""
    import torch

    from voicechat.tts.checkpoint import load_chatterbox

    # One intra-op thread: with two, OpenMP's spinning workers collapse as soon as anything else wants a
    # core (measured: 20x slower T3 decoding while another test process was busy on a 2-core machine).
    torch.set_num_threads(1)
    return load_chatterbox(tiny_checkpoint, "cpu")


@pytest.fixture(scope="session")
def engine(chatterbox, tiny_checkpoint: Path, voices_dir: Path):
    from voicechat.tts.engine import TTSEngine

    engine = TTSEngine(chatterbox, tts_settings(tiny_checkpoint, voices_dir))
    yield engine
    engine.close()
