"""Speech for tests: espeak-ng renders text to WAV at test time (no audio is committed)."""

from __future__ import annotations

import hashlib
import subprocess
import wave
from pathlib import Path

import numpy as np

from conftest_paths import CACHE_DIR


def espeak_wav(
    text: str, *, rate: int = 16000, voice: str = "en-us", words_per_minute: int = 165, ssml: bool = False
) -> Path:
    """Render ``text`` with espeak-ng to a mono 16-bit WAV at ``rate`` Hz, cached by its arguments.

    With ``ssml`` the text is SSML, e.g. ``<speak>I want to <break time="600ms"/> go home</speak>``: a
    pause inside one sentence, keeping its intonation (rendering the halves apart would end both).
    """
    key_text = f"{text}|{rate}|{voice}|{words_per_minute}" + ("|ssml" if ssml else "")
    key = hashlib.sha1(key_text.encode()).hexdigest()[:16]
    out = CACHE_DIR / "speech" / f"{key}.wav"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    raw = out.with_suffix(".raw.wav")
    subprocess.run(
        ["espeak-ng", *(["-m"] if ssml else []), "-v", voice, "-s", str(words_per_minute), "-w", str(raw), text],
        check=True,
        capture_output=True,
    )
    subprocess.run(["sox", str(raw), "-r", str(rate), "-c", "1", "-b", "16", str(out)], check=True)
    raw.unlink()
    return out


def read_pcm16(path: Path) -> tuple[np.ndarray, int]:
    """The int16 samples and the sample rate of a mono 16-bit WAV file."""
    with wave.open(str(path), "rb") as wav:
        assert wav.getnchannels() == 1 and wav.getsampwidth() == 2, path
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16), wav.getframerate()


def silence(seconds: float, rate: int = 16000) -> np.ndarray:
    return np.zeros(int(seconds * rate), dtype=np.int16)
