"""Speech input for one conversation: voice activity, end of turn and live transcription.

:class:`SpeechModels` holds the models every conversation of a process shares; a :class:`Listener` is
one conversation's ear. Time is the audio's own clock (seconds of audio fed), never the wall clock, so
a file fed faster than real time gives the same turns as a live microphone. Model work runs on worker
threads; the event loop only walks 32 ms VAD frames through the small state machine below.

A turn:  speech_started -> partial* -> [turn_probably_complete -> (speech_started -> partial*)]* -> turn_end
Each pause of ``PAUSED_AFTER_S`` of silence also gives one ``speech_paused`` (for barge-in), whatever
the models are doing.
In a pause, once ``probe_s`` of silence has passed, Smart Turn and a candidate final transcription
start in the background. When both say "complete", ``turn_probably_complete`` carries the candidate
text (the server may start the LLM on it), and ``turn_end`` follows at ``complete_wait_s`` of silence,
reusing that transcript. A pause judged incomplete ends the turn only at ``max_wait_s``.

Decisions never stand in the audio's way: :meth:`Listener.push` runs the VAD over new audio at once and
queues its frames; the turn state machine walks them in a task of its own, which may wait for Smart Turn
or Whisper while more audio is pushed (a server session uses push and :meth:`Listener.next_events`).
:meth:`Listener.feed` is push, then waiting until the state machine has caught up.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from voicechat.audio import StreamResampler, int16_to_float32
from voicechat.echo import EchoGate
from voicechat.stt.transcriber import Transcriber, Transcript, clean_text
from voicechat.stt.turn import SmartTurn, TurnPolicy, pause_ends_turn
from voicechat.stt.vad import FRAME_S, SAMPLE_RATE, SileroVad, VadStream

if TYPE_CHECKING:
    from voicechat.config import Settings

log = logging.getLogger(__name__)

SPEECH_THRESHOLD = 0.5  # a frame at or above this probability is voice (to start or resume speech)
SILENCE_THRESHOLD = 0.35  # while speaking, a frame below this is silence (hysteresis against flicker)
START_FRAMES = 3  # 96 ms of voice before a turn starts: a click or a tap on the mic does not
RESUME_FRAMES = 2  # 64 ms of voice ends a pause
PREROLL_S = 0.5  # audio kept from before the trigger: Silero fires late on soft onsets ("the")
PARTIAL_EVERY_S = 0.4  # seconds of new voice between partial transcripts
# Silence before ``speech_paused`` (barge-in: a held reply resumes here unless real words came). Longer
# than most gaps between the words of one sentence, short enough that a backchannel's hold ends within
# about a second of its onset (espeak's "Mm-hmm.": 0.6 s of voice, then this).
PAUSED_AFTER_S = 0.3

EventType = Literal["speech_started", "partial", "speech_paused", "turn_probably_complete", "turn_end"]


@dataclass(frozen=True)
class SpeechEvent:
    type: EventType
    time_s: float  # position in the conversation's audio stream (seconds since the first sample fed)
    text: str = ""  # partial / turn_probably_complete / turn_end: transcript so far / final ("" = no words)
    speech_s: float = 0.0  # seconds of voiced audio in the current turn so far
    stt_ms: float | None = None  # turn_end: wall ms the event waited for models once the audio reached the decision
    end_of_speech_s: float | None = None  # turn_end / turn_probably_complete: where voiced audio ended
    forced: bool = False  # turn_end forced by max_utterance_s


class ListenerClosed(RuntimeError):
    """feed() or poll() on a listener after aclose()."""


class SpeechModels:
    """The VAD, Smart Turn and Whisper models, loaded once per process and shared by every Listener."""

    def __init__(self, vad: SileroVad, smart_turn: SmartTurn, transcriber: Transcriber, *, language: str) -> None:
        self.vad = vad
        self.smart_turn = smart_turn
        self.transcriber = transcriber
        self.language = language

    @classmethod
    def load(cls, settings: Settings) -> SpeechModels:
        """Load and warm up all three models (blocking: call it before serving, or in a thread)."""
        started = time.perf_counter()
        vad = SileroVad()
        smart_turn = SmartTurn(threads=min(2, os.cpu_count() or 1))
        transcriber = Transcriber.load(
            settings.stt_model,
            device=settings.stt_device,
            compute_type=settings.stt_compute_type,
            language=settings.stt_language,
        )
        loaded = time.perf_counter()
        # Warm-up: the first inference of each model pays for memory allocation and kernel selection.
        noise = np.random.default_rng(0).normal(0, 0.01, SAMPLE_RATE).astype(np.float32)
        vad.stream().process(noise)
        smart_turn.probability(noise)
        transcriber.submit(noise, final=True).result()
        log.info(
            "speech models loaded in %.1f s, warmed up in %.1f s",
            loaded - started,
            time.perf_counter() - loaded,
        )
        return cls(vad, smart_turn, transcriber, language=settings.stt_language)

    def close(self) -> None:
        self.transcriber.close()
        self.smart_turn.close()


@dataclass
class _Pause:
    """Background judgement of one pause: Smart Turn and the candidate final transcript."""

    smart: asyncio.Future[float]
    candidate: asyncio.Future[Transcript]
    announced: bool = False  # turn_probably_complete sent for this pause
    complete: bool | None = None  # the judgement, once both are in


@dataclass
class _Turn:
    start_s: float
    frames: list[np.ndarray]
    speech_s: float
    end_of_speech_s: float
    speaking: bool = True
    voiced_run: int = 0  # voiced frames in a row during a pause
    pause_told: bool = False  # speech_paused sent for the current pause
    pause: _Pause | None = None
    speculated: bool = False  # turn_probably_complete sent since the last speech_started
    partial_busy: bool = False
    partial_mark_s: float = 0.0  # speech_s when the last partial was requested
    last_partial: str = ""
    over: bool = False  # ended or reset: late background results are dropped
    background: list[Future] = field(default_factory=list)

    def audio(self) -> np.ndarray:
        return np.concatenate(self.frames)


class Listener:
    """One conversation's speech input. Call its coroutines from one event loop; ``reset`` is synchronous."""

    def __init__(
        self, models: SpeechModels, *, speed: int = 50, max_utterance_s: float = 30.0, sample_rate: int = 16000
    ) -> None:
        if not isinstance(sample_rate, int) or not 8000 <= sample_rate <= 192000:
            raise ValueError(f"sample_rate must be an integer from 8000 to 192000 Hz, got {sample_rate!r}")
        if not (isinstance(max_utterance_s, (int, float)) and math.isfinite(max_utterance_s) and max_utterance_s > 1):
            raise ValueError(f"max_utterance_s must be a finite number above 1 s, got {max_utterance_s!r}")
        self._models = models
        self._policy = TurnPolicy.for_speed(speed)
        self._max_utterance_s = float(max_utterance_s)
        self._sample_rate = sample_rate
        self._resampler = StreamResampler(sample_rate, SAMPLE_RATE)
        self._vad: VadStream = models.vad.stream()
        self._lock = asyncio.Lock()
        self._frames_seen = 0
        self._preroll: deque[np.ndarray] = deque(maxlen=round(PREROLL_S / FRAME_S))
        self._voiced_run = 0
        self._turn: _Turn | None = None
        self._ready: list[SpeechEvent] = []  # produced by background work, handed out by the next feed/poll
        self._closed = False
        # Set by the server session: silences the assistant's own voice before the VAD hears it (echo.py).
        self.echo_gate: EchoGate | None = None
        self._frames: deque[tuple[np.ndarray, float]] = deque()  # VAD done, waiting for the state machine
        self._walker: asyncio.Task[None] | None = None  # walks self._frames; may wait for models
        self._changed = asyncio.Event()  # set when events are ready or the walker has caught up

    # --- public -----------------------------------------------------------------------------------

    def set_speed(self, speed: int) -> None:
        """Change the turn-taking speed (0-100); takes effect in the current pause already."""
        if isinstance(speed, bool) or not isinstance(speed, int):
            raise ValueError(f"speed must be an integer from 0 to 100, got {speed!r}")
        self._policy = TurnPolicy.for_speed(speed)

    async def feed(self, pcm: np.ndarray) -> list[SpeechEvent]:
        """Process int16 mono PCM at the listener's sample rate; return the events it caused, in order
        (waiting for the models the decisions need)."""
        await self.push(pcm)
        while self._walker is not None:
            self._changed.clear()
            await self._changed.wait()
        return self._take_ready()

    async def push(self, pcm: np.ndarray) -> None:
        """Hear int16 mono PCM without waiting for a turn decision: the VAD runs over it now, the state
        machine walks it beside the caller, and its events come from :meth:`next_events`."""
        pcm = self._validate(pcm)
        async with self._lock:
            if self._closed:
                raise ListenerClosed("this listener is closed")
            if len(pcm) == 0:
                return
            frames, probabilities = await asyncio.to_thread(self._vad_frames, pcm)
            if self._closed:
                return
            self._frames.extend(zip(frames, probabilities.tolist()))
            if self._walker is None and self._frames:
                self._walker = asyncio.create_task(self._walk(), name="listener-turns")

    @property
    def backlog_s(self) -> float:
        """Seconds of audio the VAD has taken in that the turn state machine has not walked yet."""
        return len(self._frames) * FRAME_S

    async def walked_to(self, backlog_s: float) -> None:
        """Wait until at most ``backlog_s`` of pushed audio is still to be walked (or the listener closes)."""
        while self.backlog_s > backlog_s and not self._closed:
            self._changed.clear()
            await self._changed.wait()

    async def next_events(self) -> list[SpeechEvent]:
        """The events ready so far, in order; waits until there is at least one."""
        while not self._ready:
            if self._closed:
                raise ListenerClosed("this listener is closed")
            self._changed.clear()
            await self._changed.wait()
        return self._take_ready()

    async def _walk(self) -> None:
        """The state machine over every frame pushed, one at a time (it may wait for models)."""
        try:
            while self._frames and not self._closed:
                frame, probability = self._frames.popleft()
                try:
                    caused = await self._on_frame(frame, probability)
                    # Partials that finished while this frame awaited a model came from earlier audio: first.
                    self._ready.extend(caused)  # (not bound before the await: _take_ready swaps the list)
                except Exception:  # noqa: BLE001 - one failed decision must not deafen the conversation
                    log.exception("listener: a turn decision failed; the turn is dropped")
                    self.reset()
                self._changed.set()
        finally:
            self._walker = None
            self._changed.set()

    async def poll(self) -> list[SpeechEvent]:
        """Events finished in the background since the last call (partials, turn_probably_complete).

        Time only moves with audio: a turn ends only when the silence after it is fed (clients send
        silence too, as microphones do).
        """
        async with self._lock:
            if self._closed:
                raise ListenerClosed("this listener is closed")
            events = self._take_ready()
            if self._walker is None and self._turn is not None and self._turn.pause is not None:
                events.extend(self._announce_if_complete(self._turn))
            return events

    def reset(self) -> None:
        """Forget the current turn. Speech still going on starts a new turn (with a new speech_started)."""
        if self._turn is not None:
            self._drop_turn(self._turn)
        self._ready.clear()
        self._preroll.clear()
        self._voiced_run = 0

    async def aclose(self) -> None:
        self._closed = True
        self.reset()
        self._frames.clear()
        walker = self._walker
        if walker is not None:
            walker.cancel()
            await asyncio.gather(walker, return_exceptions=True)
        self._changed.set()

    @property
    def time_s(self) -> float:
        """Seconds of (16 kHz) audio processed so far."""
        return self._frames_seen * FRAME_S

    # --- audio in ---------------------------------------------------------------------------------

    def _validate(self, pcm: np.ndarray) -> np.ndarray:
        if not isinstance(pcm, np.ndarray):
            raise ValueError(f"feed() takes a numpy int16 array, got {type(pcm).__name__}")
        if pcm.dtype != np.int16:
            raise ValueError(f"feed() takes int16 PCM samples, got dtype {pcm.dtype}")
        if pcm.ndim != 1:
            raise ValueError(f"feed() takes mono audio (a 1-D array), got shape {pcm.shape}")
        return pcm

    def _vad_frames(self, pcm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Worker thread: convert, resample, silence the assistant's own echo, run the VAD over a chunk."""
        audio = self._resampler.process(int16_to_float32(pcm))
        if self.echo_gate is not None:
            audio = self.echo_gate.process(audio)
        return self._vad.process(audio)

    # --- the state machine, one 32 ms frame at a time -------------------------------------------

    async def _on_frame(self, frame: np.ndarray, probability: float) -> list[SpeechEvent]:
        self._frames_seen += 1
        now = self.time_s
        turn = self._turn
        if turn is None:
            self._preroll.append(frame)
            self._voiced_run = self._voiced_run + 1 if probability >= SPEECH_THRESHOLD else 0
            if self._voiced_run < START_FRAMES:
                return []
            turn = self._turn = _Turn(
                start_s=now - START_FRAMES * FRAME_S,
                frames=list(self._preroll),
                speech_s=START_FRAMES * FRAME_S,
                end_of_speech_s=now,
            )
            self._preroll.clear()
            self._voiced_run = 0
            return [SpeechEvent("speech_started", now, speech_s=turn.speech_s)]

        turn.frames.append(frame)
        events: list[SpeechEvent] = []
        if turn.speaking:
            if probability >= SILENCE_THRESHOLD:
                turn.speech_s += FRAME_S
                turn.end_of_speech_s = now
                self._request_partial(turn, now)
            else:
                turn.speaking = False
                turn.voiced_run = 0
        else:
            turn.voiced_run = turn.voiced_run + 1 if probability >= SPEECH_THRESHOLD else 0
            if turn.voiced_run >= RESUME_FRAMES:
                events.extend(self._resume(turn, now))
            else:
                events.extend(await self._in_pause(turn, now))
        if not turn.over and now - turn.start_s >= self._max_utterance_s:
            events.extend(await self._end_turn(turn, now, forced=True))
        return events

    def _resume(self, turn: _Turn, now: float) -> list[SpeechEvent]:
        turn.speaking = True
        turn.speech_s += turn.voiced_run * FRAME_S
        turn.end_of_speech_s = now
        turn.voiced_run = 0
        turn.pause_told = False
        self._cancel_pause(turn)
        if not turn.speculated:
            return []
        turn.speculated = False  # the server must drop its speculative reply: the user goes on
        return [SpeechEvent("speech_started", now, speech_s=turn.speech_s)]

    async def _in_pause(self, turn: _Turn, now: float) -> list[SpeechEvent]:
        silence = now - turn.end_of_speech_s
        policy = self._policy
        if not turn.pause_told and silence >= PAUSED_AFTER_S - 1e-9:
            # Out at once, not after this frame's model waits: a held reply must not wait on a judgement.
            turn.pause_told = True
            self._ready.append(SpeechEvent("speech_paused", now, speech_s=turn.speech_s, end_of_speech_s=turn.end_of_speech_s))
            self._changed.set()
        if turn.pause is None and silence >= policy.probe_s - 1e-9:
            audio = turn.audio()
            turn.pause = _Pause(
                smart=self._background(turn, self._models.smart_turn.submit(audio)),
                candidate=self._background(turn, self._models.transcriber.submit(audio, final=True)),
            )
        if silence >= policy.max_wait_s - 1e-9:
            return await self._end_turn(turn, now, forced=False)
        if turn.pause is None:
            return []
        if silence >= policy.complete_wait_s - 1e-9:
            decided_at = time.perf_counter()
            if await self._judge(turn, turn.pause):
                return await self._end_turn(turn, now, forced=False, decided_at=decided_at)
            return []
        return self._announce_if_complete(turn)

    def _announce_if_complete(self, turn: _Turn) -> list[SpeechEvent]:
        """turn_probably_complete, once per pause, as soon as both background judgements are in."""
        pause = turn.pause
        if pause is None or pause.announced or not (pause.smart.done() and pause.candidate.done()):
            return []
        if not self._judgement(turn, pause):
            return []
        pause.announced = turn.speculated = True
        return [
            SpeechEvent(
                "turn_probably_complete",
                self.time_s,
                text=self._transcript(pause.candidate, turn).text,
                speech_s=turn.speech_s,
                end_of_speech_s=turn.end_of_speech_s,
            )
        ]

    async def _judge(self, turn: _Turn, pause: _Pause) -> bool:
        await asyncio.wait([pause.smart, pause.candidate])
        return self._judgement(turn, pause)

    def _judgement(self, turn: _Turn, pause: _Pause) -> bool:
        if pause.complete is None:
            transcript = self._transcript(pause.candidate, turn)
            pause.complete = self._is_complete(self._result(pause.smart), transcript)
        return pause.complete

    def _is_complete(self, smart: float | None, transcript: Transcript) -> bool:
        return pause_ends_turn(smart, transcript, self._models.language)

    async def _end_turn(
        self, turn: _Turn, now: float, *, forced: bool, decided_at: float | None = None
    ) -> list[SpeechEvent]:
        """Emit turn_end. ``decided_at`` (perf_counter) is when the audio reached the decision, so stt_ms
        counts all the waiting for models that held the event back."""
        turn.over = True  # from here on, late partials of this turn are dropped
        if turn.pause is not None and not forced:
            candidate = turn.pause.candidate  # covers all of the turn's speech: no voice since it started
        else:
            candidate = self._background(turn, self._models.transcriber.submit(turn.audio(), final=True))
        waited_from = time.perf_counter() if decided_at is None else decided_at
        await asyncio.wait([candidate])
        stt_ms = (time.perf_counter() - waited_from) * 1000
        if self._turn is not turn:
            return []  # reset() while we waited
        text = self._transcript(candidate, turn).text
        end_of_speech = now if turn.speaking else turn.end_of_speech_s
        self._drop_turn(turn)
        return [
            SpeechEvent(
                "turn_end",
                now,
                text=text,
                speech_s=turn.speech_s,
                stt_ms=stt_ms,
                end_of_speech_s=end_of_speech,
                forced=forced,
            )
        ]

    # --- partial transcripts ------------------------------------------------------------------------

    def _request_partial(self, turn: _Turn, now: float) -> None:
        # Skipped, not queued, while the previous one runs: partials must never fall behind the speaker.
        if turn.partial_busy or turn.speech_s - turn.partial_mark_s < PARTIAL_EVERY_S:
            return
        turn.partial_busy = True
        turn.partial_mark_s = turn.speech_s
        speech_s = turn.speech_s
        future = self._background(turn, self._models.transcriber.submit(turn.audio(), final=False))
        future.add_done_callback(lambda done: self._on_partial(turn, done, now, speech_s))

    def _on_partial(self, turn: _Turn, future: asyncio.Future[Transcript], requested_s: float, speech_s: float) -> None:
        turn.partial_busy = False
        if turn.over or self._turn is not turn:
            return
        text = self._transcript(future, turn).text
        if text and text != turn.last_partial:
            turn.last_partial = text
            self._ready.append(SpeechEvent("partial", requested_s, text=text, speech_s=speech_s))
            self._changed.set()

    # --- helpers --------------------------------------------------------------------------------------

    def _background(self, turn: _Turn, work: Future) -> asyncio.Future:
        turn.background.append(work)
        return asyncio.wrap_future(work)

    def _result(self, future: asyncio.Future[float]) -> float | None:
        if future.cancelled():
            return None
        error = future.exception()
        if error is not None:
            log.warning("end-of-turn model failed: %r", error)
            return None
        return future.result()

    def _transcript(self, future: asyncio.Future[Transcript], turn: _Turn) -> Transcript:
        """The job's transcript with its text cleaned up; an empty one if the job was cancelled or failed."""
        if future.cancelled():
            return Transcript("")
        error = future.exception()
        if error is not None:
            log.warning("transcription failed: %r", error)
            return Transcript("")
        heard = future.result()
        return Transcript(clean_text(heard.text, turn.speech_s), heard.logprob, heard.last_word_probability)

    def _cancel_pause(self, turn: _Turn) -> None:
        if turn.pause is not None:
            turn.pause.smart.cancel()  # cancels the queued work too, if it has not started yet
            turn.pause.candidate.cancel()
            turn.pause = None

    def _drop_turn(self, turn: _Turn) -> None:
        turn.over = True
        for work in turn.background:
            work.cancel()
        turn.background.clear()
        self._turn = None
        self._preroll.clear()
        self._voiced_run = 0

    def _take_ready(self) -> list[SpeechEvent]:
        events, self._ready = self._ready, []
        return events
