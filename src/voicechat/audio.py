"""PCM conversions and resampling, in one place.

Formats meet only at the edges: clients send int16 PCM, models want float32, Chatterbox gives float32
and the wire carries int16. Every conversion in the app goes through these functions.
"""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np
import soundfile
import soxr

INT16_SCALE = 32768.0
# Chatterbox speaks at 24 kHz (S3GEN_SR): the rate of every TTS chunk, of the audio sent to clients and
# of stored reference voices (prepare_conditionals resamples references to it).
SPEECH_SAMPLE_RATE = 24_000


class AudioFormatError(ValueError):
    """Audio bytes or files that cannot be read as the format they claim to be."""


def pcm16_bytes_to_int16(data: bytes | bytearray | memoryview) -> np.ndarray:
    """Little-endian int16 PCM bytes to an int16 array (zero-copy). Odd byte counts are an error."""
    if len(data) % 2:
        raise AudioFormatError(f"int16 PCM needs an even number of bytes, got {len(data)}")
    return np.frombuffer(data, dtype="<i2")


def int16_to_float32(samples: np.ndarray) -> np.ndarray:
    return samples.astype(np.float32) / INT16_SCALE


def float32_to_int16(samples: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1] to int16 (the inverse of int16_to_float32), clipping instead of wrapping."""
    scaled = np.rint(np.asarray(samples, dtype=np.float32) * INT16_SCALE)
    return np.clip(scaled, -32768, 32767).astype(np.int16)


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample mono audio (float32 or int16; the dtype is kept). A no-op when the rates match."""
    if from_rate == to_rate or len(samples) == 0:
        return samples
    if from_rate <= 0 or to_rate <= 0:
        raise AudioFormatError(f"sample rates must be positive, got {from_rate} -> {to_rate}")
    return soxr.resample(samples, from_rate, to_rate, quality="HQ")


def read_audio(source: str | Path | bytes, *, rate: int | None = None) -> tuple[np.ndarray, int]:
    """Decode a WAV/FLAC/OGG file or its bytes to mono float32, resampled to ``rate`` when given.

    Raises AudioFormatError with a plain reason for anything that is not decodable audio.
    """
    try:
        handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
        data, file_rate = soundfile.read(handle, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        raise AudioFormatError(f"not a readable audio file: {error}") from error
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if rate is not None:
        mono = resample(mono, file_rate, rate)
        file_rate = rate
    return np.ascontiguousarray(mono, dtype=np.float32), file_rate


def write_wav(path: str | Path, samples: np.ndarray, rate: int) -> None:
    """Write mono 16-bit PCM WAV; float input is converted with :func:`float32_to_int16`."""
    pcm = samples if samples.dtype == np.int16 else float32_to_int16(samples)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm.astype("<i2").tobytes())


class StreamResampler:
    """Resamples a stream chunk by chunk, keeping the filter state between chunks.

    Resampling each small chunk on its own (``resample``) leaves a click at every chunk joint; a live
    microphone stream at a rate other than the model's goes through one of these instead.
    """

    def __init__(self, from_rate: int, to_rate: int) -> None:
        if from_rate <= 0 or to_rate <= 0:
            raise AudioFormatError(f"sample rates must be positive, got {from_rate} -> {to_rate}")
        self._stream = (
            None if from_rate == to_rate else soxr.ResampleStream(from_rate, to_rate, 1, dtype="float32", quality="HQ")
        )

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Float32 mono in, float32 mono out (possibly empty while the filter fills)."""
        samples = np.asarray(samples, dtype=np.float32)
        if self._stream is None or len(samples) == 0:
            return samples
        return self._stream.resample_chunk(samples, last=False)

    def flush(self) -> np.ndarray:
        """The end of the stream: what the filter still holds (float32; a few ms). Nothing may follow."""
        if self._stream is None:
            return np.zeros(0, dtype=np.float32)
        return self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
