"""The echo detector: the assistant's own voice coming back is echo; a user talking, also over it, is not."""

from __future__ import annotations

import numpy as np
import pytest

from speech import espeak_wav, read_pcm16
from voicechat.audio import int16_to_float32
from voicechat.echo import ECHO_SHARE, EchoReference

RATE = 16000
ASSISTANT = "The capital of France is Paris. It is known for the Eiffel Tower, its fine food and its long history."
USER = "Wait, stop, tell me about Berlin instead please."


def speech(text: str, voice: str) -> np.ndarray:
    pcm, rate = read_pcm16(espeak_wav(text, voice=voice))
    assert rate == RATE
    return int16_to_float32(pcm)


def loudspeaker_and_room(audio: np.ndarray, delay_ms: int, gain: float) -> np.ndarray:
    """What a microphone hears of played audio: later, quieter, band-limited by a small speaker (a
    short FIR low-pass), over a noise floor."""
    taps = np.hanning(9) / np.hanning(9).sum()
    filtered = np.convolve(audio, taps, mode="same")
    return np.concatenate([np.zeros(delay_ms * RATE // 1000, np.float32), gain * filtered])


@pytest.fixture(scope="module")
def voices() -> tuple[np.ndarray, np.ndarray]:
    return speech(ASSISTANT, "en-us"), speech(USER, "en-gb")


@pytest.mark.parametrize("delay_ms", [50, 120, 300])
@pytest.mark.parametrize("gain", [0.5, 0.1])
def test_the_assistants_own_audio_is_echo_and_a_user_over_it_is_not(voices, delay_ms: int, gain: float) -> None:
    assistant, user = voices
    reference = EchoReference()
    reference.sent(assistant[: RATE * 2])
    reference.sent(assistant[RATE * 2 :])  # sent in pieces, as the reply streams
    played = RATE * 3
    reference.played(played)
    noise = np.random.default_rng(delay_ms).normal(0, 0.002, played).astype(np.float32)
    mic = (loudspeaker_and_room(assistant, delay_ms, gain)[:played] + noise)[-RATE:]
    assert reference.share_explained(mic) > ECHO_SHARE and reference.is_echo(mic)
    # The user speaks as loud as the echo reaches the microphone: the reference explains only the echo.
    over = mic + gain * user[RATE // 4 : RATE // 4 + RATE]
    assert reference.share_explained(over) < ECHO_SHARE and not reference.is_echo(over)


def test_a_user_alone_is_not_echo_and_nothing_played_is_never_echo(voices) -> None:
    assistant, user = voices
    reference = EchoReference()
    reference.sent(assistant)
    window = user[RATE // 4 : RATE // 4 + RATE]
    assert not reference.is_echo(window)  # no playback report yet: nothing has reached the room
    reference.played(RATE * 3)
    assert reference.share_explained(window) < 0.3
    assert not reference.is_echo(np.zeros(100, np.float32))  # too short to judge
