"""Is what the microphone hears the assistant's own voice coming back? A reference-correlation detector.

The server knows exactly which audio it sent and, from the client's playback reports, how much of it
has played. Sound from the loudspeaker reaches the microphone delayed (buffers, air: tens to hundreds
of ms), quieter and filtered by the speaker and the room, and whatever the browser's echo canceller
leaves of it is such a filtered copy too. So for each frequency band the microphone's audio is, up to
one gain and phase per band, the played reference at some delay. :class:`EchoReference` finds the
delay at which the reference explains the most of the microphone's energy (a least-squares fit per
band of a short-time Fourier transform): near all of it for echo, little of it when a person speaks,
also over the echo, since their voice is not in the reference.
"""

from __future__ import annotations

from collections import deque

import numpy as np

RATE = 16000
_FRAME = 512  # 32 ms analysis frames
_HOP = 256
_DELAY_STEP = 80  # 5 ms between the delays tried
ECHO_SHARE = 0.75  # share of the microphone's energy the reference must explain to call it echo


def _stft(audio: np.ndarray) -> np.ndarray:
    frames = np.lib.stride_tricks.sliding_window_view(audio, _FRAME)[::_HOP]
    return np.fft.rfft(frames * np.hanning(_FRAME), axis=1)


def explained_share(mic: np.ndarray, reference: np.ndarray) -> float:
    """Share (0-1) of the energy of ``mic`` that a per-band linear filter of ``reference`` explains
    (both float32, the same length, time-aligned)."""
    m, r = _stft(mic), _stft(reference)
    cross = np.abs(np.sum(m * np.conj(r), axis=0)) ** 2
    power = np.sum(np.abs(r) ** 2, axis=0)
    explained = np.sum(cross / np.maximum(power, 1e-12))
    return float(min(1.0, explained / max(float(np.sum(np.abs(m) ** 2)), 1e-12)))


class EchoReference:
    """The assistant audio one conversation has sent, in play order, and how much of it has played.

    ``sent`` appends audio as it goes to the client; ``played`` takes the client's playback report
    (samples played in total, at 16 kHz); ``share_explained`` tells how much of a microphone window
    ending now the played audio explains, over ``max_delay_s`` of possible delays.
    """

    def __init__(self, *, keep_s: float = 10.0, max_delay_s: float = 0.4) -> None:
        self._chunks: deque[np.ndarray] = deque()
        self._kept = 0
        self._keep = round(keep_s * RATE)
        self._first = 0  # stream position (samples) of the first kept sample
        self._played = 0
        self._max_delay = round(max_delay_s * RATE)

    def sent(self, audio: np.ndarray) -> None:
        self._chunks.append(np.asarray(audio, dtype=np.float32))
        self._kept += len(self._chunks[-1])
        while self._chunks and self._kept - len(self._chunks[0]) >= self._keep:
            dropped = self._chunks.popleft()
            self._kept -= len(dropped)
            self._first += len(dropped)

    def played(self, samples: int) -> None:
        self._played = max(self._played, int(samples))

    def _span(self, start: int, end: int) -> np.ndarray:
        """Reference samples [start, end) of the stream; silence where nothing was (or is kept)."""
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)
        out = np.zeros(end - start, np.float32)
        lo, hi = max(start, self._first), min(end, self._first + len(audio))
        if hi > lo:
            out[lo - start : hi - start] = audio[lo - self._first : hi - self._first]
        return out

    def share_explained(self, mic: np.ndarray) -> float:
        """How much (0-1) of ``mic`` (float32, 16 kHz, ending at the latest playback report) the played
        assistant audio explains, at the best delay."""
        mic = np.asarray(mic, dtype=np.float32)
        if len(mic) < _FRAME * 4 or not self._played:
            return 0.0
        span = self._span(self._played - len(mic) - self._max_delay, self._played)
        best = 0.0
        for delay in range(0, self._max_delay + 1, _DELAY_STEP):
            start = len(span) - len(mic) - delay
            best = max(best, explained_share(mic, span[start : start + len(mic)]))
        return best

    def is_echo(self, mic: np.ndarray) -> bool:
        return self.share_explained(mic) >= ECHO_SHARE
