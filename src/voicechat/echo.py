"""Is what the microphone hears the assistant's own voice coming back? A reference-correlation detector.

The server knows exactly which audio it sent and, from the client's playback reports, how much of it
has played. Sound from the loudspeaker reaches the microphone delayed (buffers, air: tens to hundreds
of ms), quieter and filtered by the speaker and the room, and whatever the browser's echo canceller
leaves of it is such a filtered copy too. So for each frequency band the microphone's audio is, up to
one gain and phase per band, the played reference at some delay. :class:`EchoReference` finds the
delay at which the reference explains the most of the microphone's energy (a least-squares fit per
band of a short-time Fourier transform): near all of it for echo, little of it when a person speaks,
also over the echo, since their voice is not in the reference.

:class:`EchoGate` uses it on the live microphone stream, before the VAD: a stretch the played audio
explains is replaced by silence, so the assistant's own voice never starts a user turn, never becomes
words and never interrupts the reply, while a user speaking over it passes (their voice is the part
the reference cannot explain).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from voicechat.audio import StreamResampler

RATE = 16000
_FRAME = 512  # 32 ms analysis frames
_HOP = 256
_DELAY_STEP = 64  # 4 ms between the delays tried
ECHO_SHARE = 0.75  # share of the microphone's energy the reference must explain to call it echo
GATE_WINDOW = 4096  # 256 ms of microphone audio per gate decision
GATE_EVERY = 512  # a new decision every 32 ms of audio (one VAD frame)
QUIET_RMS = 3e-4  # a window this quiet (about -70 dBFS) is left as it is: there is nothing to hear in it
REPORT_AGE_S = 0.3  # a playback position is extrapolated at most this far past the client's last report


def _stft(audio: np.ndarray) -> np.ndarray:
    frames = np.lib.stride_tricks.sliding_window_view(audio, _FRAME)[::_HOP]
    return np.fft.rfft(frames * np.hanning(_FRAME), axis=1)


def _share(m: np.ndarray, r: np.ndarray) -> float:
    cross = np.abs(np.sum(m * np.conj(r), axis=0)) ** 2
    power = np.sum(np.abs(r) ** 2, axis=0)
    explained = np.sum(cross / np.maximum(power, 1e-12))
    return float(min(1.0, explained / max(float(np.sum(np.abs(m) ** 2)), 1e-12)))


def explained_share(mic: np.ndarray, reference: np.ndarray) -> float:
    """Share (0-1) of the energy of ``mic`` that a per-band linear filter of ``reference`` explains
    (both float32, the same length, time-aligned)."""
    return _share(_stft(mic), _stft(reference))


class EchoReference:
    """The assistant audio one conversation has sent, in play order, and how much of it has played.

    ``sent`` appends a turn's audio as it goes to the client (at ``rate``; kept at 16 kHz); ``played``
    takes the client's playback report for that turn (samples of the turn played, at ``rate``);
    ``share_explained`` tells how much of a microphone window ending now the played audio explains,
    over delays from ``lead_s`` before the reported position (reports are up to 250 ms old and the
    position between them is estimated) to ``max_delay_s`` after it. Safe from any thread.
    """

    def __init__(
        self,
        *,
        rate: int = RATE,
        keep_s: float = 10.0,
        max_delay_s: float = 0.4,
        lead_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rate = rate
        self._lock = threading.Lock()
        self._chunks: deque[np.ndarray] = deque()
        self._kept = 0
        self._keep = round(keep_s * RATE)
        self._first = 0  # stream position (samples) of the first kept sample
        self._turn: int | None = None
        self._turn_start = 0  # stream position where the current turn's audio begins
        self._resampler = StreamResampler(rate, RATE)
        self._played = 0  # stream position the client had played at its last report
        self._reported_at: float | None = None
        self._advancing = False  # the client was playing at its last report
        self._reports = 0  # changes of the position as reported (or held, or resumed)
        self._clock = clock
        self._max_delay = round(max_delay_s * RATE)
        self._lead = round(lead_s * RATE)

    # --- what was sent and played (the session, on the event loop) ---------------------------------

    def sent(self, audio: np.ndarray, turn_id: int = 0) -> None:
        """Audio of ``turn_id`` (float32 or int16 at ``rate``) as it goes to the client, in order."""
        audio = np.asarray(audio)
        samples = audio.astype(np.float32) / 32768 if audio.dtype == np.int16 else audio.astype(np.float32)
        with self._lock:
            if turn_id != self._turn:
                self._turn, self._turn_start = turn_id, self._first + self._kept
                self._resampler = StreamResampler(self._rate, RATE)
            self._append(self._resampler.process(samples))

    def played(self, samples: int, turn_id: int = 0, *, playing: bool = True) -> None:
        """The client's report: ``samples`` (at ``rate``) of ``turn_id`` have played; ``playing`` False
        when it has stopped or holds that turn. Reports about an earlier turn are ignored."""
        with self._lock:
            if turn_id != self._turn:
                return
            position = self._turn_start + round(int(samples) * RATE / self._rate)
            self._played = max(self._played, min(position, self._first + self._kept))
            self._reported_at = self._clock()
            self._advancing = playing
            self._reports += 1

    def hold(self) -> None:
        """The client was told to hold playback: the position stops where it is estimated to be now."""
        with self._lock:
            self._played = self._position()
            self._advancing = False
            self._reports += 1

    def resume(self) -> None:
        """The client was told to play on: the position moves on again from where it was held."""
        with self._lock:
            self._reported_at = self._clock()
            self._advancing = self._turn is not None
            self._reports += 1

    # --- is it echo? -------------------------------------------------------------------------------

    def share_explained(self, mic: np.ndarray, *, ago: int = 0) -> float:
        """How much (0-1) of ``mic`` (float32, 16 kHz, ending ``ago`` samples before now) the played
        assistant audio explains, at the best delay."""
        return self.search(mic, ago=ago)[0]

    def report(self) -> tuple[int, int, bool, int]:
        """The last report: (how many so far, position, still playing, how far audio was sent)."""
        with self._lock:
            return self._reports, self._played, self._advancing, self._first + self._kept

    def search(
        self, mic: np.ndarray, *, ago: int = 0, at: int | None = None, near: int | None = None
    ) -> tuple[float, int | None]:
        """The best share explained and its delay (samples the microphone lags the estimated playback
        position; None when nothing was played). The window ends at playback position ``at`` (default:
        now, less ``ago`` samples). ``near``: try only delays within two hops of it."""
        mic = np.asarray(mic, dtype=np.float32)
        with self._lock:
            if len(mic) < _FRAME * 4 or self._reported_at is None:
                return 0.0, None
            end = self._position() - ago if at is None else at
            span = self._span(end - len(mic) - self._max_delay, end + self._lead)
        if float(np.mean(span**2)) < QUIET_RMS**2:
            return 0.0, None  # nothing audible was played then
        m = _stft(mic)
        best, best_delay = 0.0, None
        # Delays a whole hop apart share one transform of the span; a shift within a frame is mostly
        # a phase per band, which the per-band fit absorbs, so offsets a quarter hop apart suffice.
        # A start in the span is a delay of max_delay - start.
        low, high = 0, len(span) - len(mic)
        if near is not None:
            low = max(low, self._max_delay - near - 2 * _HOP)
            high = min(high, self._max_delay - near + 2 * _HOP)
        for offset in range(0, _HOP, _DELAY_STEP):
            firsts = range(max(0, -(-(low - offset) // _HOP)), (high - offset) // _HOP + 1)
            if not firsts:
                continue
            r = _stft(span[offset + firsts[0] * _HOP : offset + (firsts[-1] + len(m)) * _HOP + _FRAME - _HOP])
            for first in firsts:
                share = _share(m, r[first - firsts[0] : first - firsts[0] + len(m)])
                if share > best:
                    best, best_delay = share, self._max_delay - (offset + first * _HOP)
        return best, best_delay

    def is_echo(self, mic: np.ndarray) -> bool:
        return self.share_explained(mic) >= ECHO_SHARE

    # --- inside, under the lock --------------------------------------------------------------------

    def _append(self, audio: np.ndarray) -> None:
        if len(audio) == 0:
            return
        self._chunks.append(audio)
        self._kept += len(audio)
        while self._chunks and self._kept - len(self._chunks[0]) >= self._keep:
            dropped = self._chunks.popleft()
            self._kept -= len(dropped)
            self._first += len(dropped)

    def _position(self) -> int:
        """Where the client's playback is now: its last report, moved on in real time while it plays."""
        position = self._played
        if self._advancing and self._reported_at is not None:
            age = min(max(0.0, self._clock() - self._reported_at), REPORT_AGE_S)
            position = min(position + round(age * RATE), self._first + self._kept)
        return position

    def _span(self, start: int, end: int) -> np.ndarray:
        """Reference samples [start, end) of the stream; silence where nothing was (or is kept)."""
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)
        out = np.zeros(end - start, np.float32)
        lo, hi = max(start, self._first), min(end, self._first + len(audio))
        if hi > lo:
            out[lo - start : hi - start] = audio[lo - self._first : hi - self._first]
        return out


class EchoGate:
    """Silences the stretches of a live 16 kHz microphone stream that the played assistant audio explains.

    Each decision looks at the last 256 ms of microphone audio and holds for the next 32 ms; audio
    arriving in one larger piece is judged 32 ms at a time. Each stretch is compared with the playback
    position at the moment its audio *arrived* (``arrived``, called by the session as frames come in):
    a server running behind its audio backlog judges old audio against where playback was then, not
    now. Between playback reports the position moves on with the microphone's own audio (both run on
    the client's audio clock), not with the server's wall clock, so a stalled server or a burst of
    frames changes nothing. Without arrival marks the position now (by the wall clock) is used. ``gated_s`` counts the seconds silenced.
    ``process`` runs on the Listener's worker thread, ``arrived`` on the event loop.
    """

    def __init__(self, reference: EchoReference, *, mic_rate: int = RATE) -> None:
        self._reference = reference
        self._mic_rate = mic_rate
        self._lock = threading.Lock()
        self._marks: deque[tuple[float, int]] = deque(maxlen=2048)  # (mic samples at 16 kHz so far, position)
        self._arrived = 0.0
        self._reports = -1  # the reference's report count at the last mark
        self._since_report = 0.0  # microphone samples (16 kHz) since that report
        self._heard = 0  # mic samples (16 kHz) processed
        self._history = np.zeros(GATE_WINDOW, np.float32)  # before the stream: silence
        self._since = GATE_EVERY  # samples since the last decision
        self._echo = False
        self._delay: int | None = None  # the echo's delay at the last decision that found echo
        self.gated_s = 0.0

    def arrived(self, samples: int) -> None:
        """``samples`` of microphone audio (at ``mic_rate``) arrived just now."""
        reports, played, playing, sent = self._reference.report()
        with self._lock:
            if reports != self._reports:  # a report came in before this audio: count from it
                self._reports, self._since_report = reports, 0.0
            heard = samples * RATE / self._mic_rate
            self._arrived += heard
            self._since_report += heard
            position = played
            if playing:
                position = min(played + round(min(self._since_report, REPORT_AGE_S * RATE)), sent)
            self._marks.append((self._arrived, position))

    def _position_at(self, heard: int) -> int | None:
        """The playback position when microphone sample ``heard`` arrived (None without marks)."""
        with self._lock:
            while len(self._marks) > 1 and self._marks[1][0] <= heard:
                self._marks.popleft()  # marks before the one covering ``heard`` are no longer needed
            for mic, position in self._marks:
                if mic >= heard:
                    return position - round(mic - heard)  # the frame's end arrived at ``position``
            return None

    def process(self, audio: np.ndarray) -> np.ndarray:
        audio = np.asarray(audio, dtype=np.float32)
        if len(audio) == 0:
            return audio
        history = np.concatenate([self._history, audio])
        out = audio.copy()
        offset = len(history) - len(audio)  # where this piece starts in the history
        for start in range(0, len(audio), GATE_EVERY):
            stop = min(start + GATE_EVERY, len(audio))
            if self._since >= GATE_EVERY or stop - start >= GATE_EVERY:
                window = history[max(0, offset + stop - GATE_WINDOW) : offset + stop]
                self._echo = self._judge(window, ago=len(audio) - stop, at=self._position_at(self._heard + stop))
                self._since = 0
            self._since += stop - start
            if self._echo:
                out[start:stop] = 0.0
                self.gated_s += (stop - start) / RATE
        self._history = history[-GATE_WINDOW:]
        self._heard += len(audio)
        return out

    def _judge(self, window: np.ndarray, *, ago: int, at: int | None) -> bool:
        if float(np.sqrt(np.mean(window**2))) < QUIET_RMS:
            return False
        # The echo path's delay barely moves: look near the last one first (a fifth of the work); only
        # a miss there needs the whole range before the audio may pass.
        search = self._reference.search
        share, delay = (0.0, None) if self._delay is None else search(window, ago=ago, at=at, near=self._delay)
        if share < ECHO_SHARE:
            share, delay = search(window, ago=ago, at=at)
        self._delay = delay if share >= ECHO_SHARE else None
        return share >= ECHO_SHARE
