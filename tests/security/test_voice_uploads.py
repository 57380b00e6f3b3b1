"""Voice uploads are judged by their header before they are decoded, decoded with a cap, and stored at
Chatterbox's rate; every refusal is a plain sentence."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import soundfile

from voicechat.voices import STORED_RATE, UploadError, VoiceLimits, check_quota, prepare_voice

LIMITS = VoiceLimits(max_bytes=10 << 20, min_seconds=3.0, max_seconds=30.0, max_voices=2, max_total_bytes=4 << 20)


def tone(seconds: float, rate: int = 16000) -> np.ndarray:
    return (0.3 * np.sin(np.arange(int(seconds * rate)) * 0.05)).astype(np.float32)


def encode(samples: np.ndarray, rate: int = 16000, fmt: str = "WAV", subtype: str | None = None) -> bytes:
    out = io.BytesIO()
    soundfile.write(out, samples, rate, format=fmt, subtype=subtype)
    return out.getvalue()


def flac_declaring(total_samples: int, seconds: float = 2.0, rate: int = 16000) -> bytes:
    """A short FLAC whose STREAMINFO claims ``total_samples`` (0 = unknown length)."""
    noise = (np.random.default_rng(0).standard_normal(int(seconds * rate)) * 0.1).astype(np.float32)
    data = bytearray(encode(noise, rate, "FLAC"))
    field = int.from_bytes(data[18:26], "big") & ~((1 << 36) - 1)  # low 36 bits: total samples
    data[18:26] = (field | total_samples).to_bytes(8, "big")
    return bytes(data)


def wav_declaring_4gb() -> bytes:
    data = bytearray(encode(tone(2.0)))
    at = data.find(b"data")
    struct.pack_into("<I", data, at + 4, 0xFFFFFFF0)
    struct.pack_into("<I", data, 4, 0xFFFFFFF8)
    return bytes(data)


def with_nan() -> bytes:
    samples = tone(5.0)
    samples[1000] = np.nan
    return encode(samples, subtype="FLOAT")


CASES = [
    ("not audio", lambda: b"RIFF garbage", "not a readable audio file"),
    ("a Python object repr", lambda: b"<_io.BytesIO object at 0x7f>", "not a readable audio file"),
    ("an hour declared in a small FLAC", lambda: flac_declaring(3600 * 16000), "header says 3600 s"),
    ("unknown length, really too long", lambda: flac_declaring(0, seconds=40.0, rate=8000), "longer than 30 s"),
    ("a WAV declaring 4 GB", wav_declaring_4gb, "too short"),
    ("NaN samples", with_nan, "invalid samples (NaN"),
    ("silence", lambda: encode(np.zeros(5 * 16000, np.float32)), "silent"),
    ("too short", lambda: encode(tone(1.0)), "too short: 1.0 s"),
    ("too long", lambda: encode(tone(31.0, 8000), 8000), "too long"),
    ("a strange rate", lambda: encode(tone(5.0, 4000), 4000), "4000 Hz"),
]


@pytest.mark.parametrize(("make", "reason"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_recordings_are_refused_in_plain_words(make, reason) -> None:
    with pytest.raises(UploadError) as refused:
        prepare_voice(make(), LIMITS)
    assert refused.value.status == 400 and refused.value.code == "bad_voice"
    assert reason in refused.value.message
    assert "object at 0x" not in refused.value.message and "Error" not in refused.value.message


@pytest.mark.parametrize(("rate", "fmt"), [(44100, "WAV"), (16000, "FLAC"), (48000, "OGG")])
def test_good_recordings_are_stored_at_the_engine_rate(rate: int, fmt: str) -> None:
    stereo = np.stack([tone(4.0, rate), tone(4.0, rate)], axis=1)
    stored = prepare_voice(encode(stereo, rate, fmt), LIMITS)
    info = soundfile.info(io.BytesIO(stored))
    assert (info.samplerate, info.channels, info.subtype) == (STORED_RATE, 1, "PCM_16")
    assert abs(info.duration - 4.0) < 0.05
    assert len(stored) < 4.1 * STORED_RATE * 2 + 100  # 16-bit mono: a 44.1 kHz stereo upload shrinks


def test_quota_counts_and_bytes(tmp_path) -> None:
    (tmp_path / "a.wav").write_bytes(b"x" * (3 << 20))
    check_quota(tmp_path, "a", 1 << 20, LIMITS)  # replacing a voice does not count it twice
    check_quota(tmp_path, "b", 1 << 20, LIMITS)
    with pytest.raises(UploadError, match="more than 4 MB") as over:
        check_quota(tmp_path, "b", 2 << 20, LIMITS)
    assert over.value.status == 507 and over.value.code == "voice_quota"
    (tmp_path / "b.wav").write_bytes(b"x")
    with pytest.raises(UploadError, match="at most 2 voices"):
        check_quota(tmp_path, "c", 1, LIMITS)
