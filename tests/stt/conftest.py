"""Speech-input fixtures: the real models (Silero, Smart Turn, Whisper tiny.en), loaded once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from voicechat.config import load_settings
from voicechat.stt.listener import Listener, SpeechModels


@pytest.fixture(scope="session")
def speech_models(whisper_tiny_dir: Path) -> SpeechModels:
    models = SpeechModels.load(load_settings(stt_model=str(whisper_tiny_dir), stt_device="cpu"))
    yield models
    models.close()


@pytest.fixture
async def listener(speech_models: SpeechModels) -> Listener:
    listener = Listener(speech_models)
    yield listener
    await listener.aclose()
