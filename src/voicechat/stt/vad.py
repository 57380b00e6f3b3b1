"""Voice activity: Silero VAD v5 on onnxruntime, using the model file packaged in the pipecat-ai wheel.

One ONNX session is shared by every conversation (``InferenceSession.run`` is thread-safe); each
conversation keeps its own recurrent state in a :class:`VadStream`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnxruntime

SAMPLE_RATE = 16000
FRAME_SAMPLES = 512  # Silero v5 takes exactly 32 ms windows at 16 kHz
FRAME_S = FRAME_SAMPLES / SAMPLE_RATE
_CONTEXT_SAMPLES = 64  # v5 also wants the last 64 samples of the previous window in front of each one


def packaged_model_path() -> Path:
    return pipecat_package_dir() / "audio" / "vad" / "data" / "silero_vad.onnx"


def pipecat_package_dir() -> Path:
    """Where pipecat-ai is installed, found without importing it (its import logs a banner via loguru)."""
    spec = importlib.util.find_spec("pipecat")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("pipecat-ai is not installed; it carries the Silero VAD and Smart Turn models")
    return Path(next(iter(spec.submodule_search_locations)))


class SileroVad:
    """The shared Silero model. Create one per process; get a stream per conversation."""

    def __init__(self, model_path: Path | None = None) -> None:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # a 32 ms window takes ~0.1 ms; more threads only add overhead
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(
            str(model_path or packaged_model_path()), sess_options=options, providers=["CPUExecutionProvider"]
        )

    def stream(self) -> VadStream:
        return VadStream(self._session)


class VadStream:
    """Speech probability per 32 ms frame for one audio stream. Not thread-safe: one caller at a time."""

    def __init__(self, session: onnxruntime.InferenceSession) -> None:
        self._session = session
        self._rate = np.array(SAMPLE_RATE, dtype=np.int64)
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros(_CONTEXT_SAMPLES, dtype=np.float32)
        self._leftover = np.zeros(0, dtype=np.float32)

    def process(self, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Feed float32 16 kHz audio; return the completed frames (n, 512) and their speech probabilities (n,).

        Samples that do not fill a whole frame wait for the next call.
        """
        audio = np.concatenate([self._leftover, np.asarray(audio, dtype=np.float32)])
        count = len(audio) // FRAME_SAMPLES
        frames = audio[: count * FRAME_SAMPLES].reshape(count, FRAME_SAMPLES)
        self._leftover = audio[count * FRAME_SAMPLES :].copy()
        probabilities = np.empty(count, dtype=np.float32)
        for index, frame in enumerate(frames):
            window = np.concatenate([self._context, frame])[np.newaxis, :]
            output, self._state = self._session.run(
                None, {"input": window, "state": self._state, "sr": self._rate}
            )
            probabilities[index] = output[0, 0]
            self._context = frame[-_CONTEXT_SAMPLES:]
        return frames, probabilities
