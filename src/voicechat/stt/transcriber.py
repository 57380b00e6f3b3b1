"""Transcription: one faster-whisper model per process, driven by one owner thread.

Every conversation submits work to the same thread through a bounded priority queue: candidate finals
(someone is waiting for an answer) jump ahead of partial transcripts (nice to have). Whisper runs only
on audio the VAD called speech, never conditions on earlier text, and drops segments it is unsure of,
so silence and noise do not turn into invented words.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import re
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
from faster_whisper import WhisperModel

log = logging.getLogger(__name__)

_FINAL, _PARTIAL = 0, 1  # queue priorities: lower runs first
_WINDOW_SAMPLES = 30 * 16000  # Whisper's input window
_QUEUE_LIMIT = 256  # each conversation has at most one partial and two finals queued, so this is never reached normally

# Segment filters, the thresholds Whisper itself uses for its fallback decisions.
_NO_SPEECH_PROB = 0.6
_LOW_LOGPROB = -1.0
_VERY_LOW_LOGPROB = -1.5
_MAX_COMPRESSION_RATIO = 2.4

# What Whisper says when it hears (almost) nothing: subtitle credits and politeness from its training data.
_HALLUCINATIONS = frozenset(
    {
        "thank you", "thank you.", "thank you!", "thanks.", "thank you so much.", "thanks for watching.",
        "thanks for watching!", "thank you for watching.", "please subscribe.", "you", "you.", "bye.",
        "the end.",
    }
)
_TOO_SHORT_FOR_WORDS_S = 0.4  # a real "thank you" has ~0.5 s of voice
_NON_SPEECH = re.compile(r"\[[^\]]*\]|\([^)]*\)|\*[^*]*\*|[♪♫]")


def clean_text(text: str, speech_s: float) -> str:
    """Remove sound tags ("[BLANK_AUDIO]", "(music)") and, when the VAD heard too little voice for them
    (a breath, a click), Whisper's stock phrases for near-silence ("Thank you.", "you")."""
    text = " ".join(_NON_SPEECH.sub(" ", text).split())
    if not any(character.isalnum() for character in text):
        return ""
    if speech_s < _TOO_SHORT_FOR_WORDS_S and text.lower() in _HALLUCINATIONS:
        return ""
    return text


@dataclass(frozen=True)
class Transcript:
    """What Whisper heard, and how sure it was: the lowest average token log-probability among the
    segments kept (0 is certain; Whisper itself retries below -1; no words gives 0), and, for finals,
    the probability of the last word (1.0 for partials and for no words). A word misheard at a pause
    ("... followed by the panel" for "the | pound key") is the transcript's least sure word, while a
    whole sentence of narrow-band phone speech may average under -0.5 and still be right."""

    text: str
    logprob: float = 0.0
    last_word_probability: float = 1.0


class TranscriberClosed(RuntimeError):
    """The shared transcriber was closed while work was pending."""


@dataclass(frozen=True)
class _Job:
    future: Future[Transcript]
    audio: np.ndarray
    final: bool


class Transcriber:
    """A faster-whisper model with its owner thread. ``submit`` is safe from any thread."""

    def __init__(self, model: WhisperModel, *, language: str | None) -> None:
        self._model = model
        self._language = language or None
        self._queue: queue.PriorityQueue[tuple[int, int, _Job | None]] = queue.PriorityQueue(_QUEUE_LIMIT)
        self._order = itertools.count()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="whisper", daemon=True)
        self._thread.start()

    @classmethod
    def load(cls, model: str, *, device: str, compute_type: str, language: str | None) -> Transcriber:
        """Load a model by name (fetched from the hub once, then cached) or from a local CTranslate2 directory."""
        resolved_device = device
        if device == "auto":
            import ctranslate2

            resolved_device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        if compute_type == "default" and resolved_device == "cpu":
            compute_type = "int8"  # float16 weights would be widened to float32 on a CPU: int8 is ~2x faster
        whisper = WhisperModel(
            model,
            device=resolved_device,
            compute_type=compute_type,
            cpu_threads=min(4, os.cpu_count() or 1),
            num_workers=1,
        )
        logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # it logs every call at INFO
        log.info("whisper %s on %s (%s)", model, resolved_device, compute_type)
        return cls(whisper, language=language)

    def submit(self, audio: np.ndarray, *, final: bool) -> Future[Transcript]:
        """Queue float32 16 kHz audio; the future gives the transcript (its text maybe "")."""
        future: Future[Transcript] = Future()
        if self._closed:
            future.set_exception(TranscriberClosed("the transcriber is closed"))
            return future
        try:
            self._queue.put_nowait((_FINAL if final else _PARTIAL, next(self._order), _Job(future, audio, final)))
        except queue.Full:
            future.set_exception(RuntimeError("too many transcriptions queued"))
        return future

    def transcribe(self, audio: np.ndarray, *, final: bool) -> Transcript:
        """Blocking transcription; call only from the owner thread (or before it gets work, as warm-up)."""
        segments, _ = self._model.transcribe(
            audio,
            language=self._language,
            beam_size=5 if final else 1,
            temperature=0.0,  # no fallback re-runs: a doubtful segment is dropped, not retried
            condition_on_previous_text=False,
            without_timestamps=True,
            word_timestamps=final,  # for the words' probabilities (one more decoder pass: ~0.1 s on a CPU)
            vad_filter=False,  # our VAD already chose the audio
        )
        if final and len(audio) <= _WINDOW_SAMPLES:
            # With word timestamps faster-whisper decodes again from the last word's end to the end of
            # the audio, where the silence turns into "Thank you."; without them one window covers
            # the clip. Without timestamp tokens a window is exactly one segment, so only the first
            # segment counts, as it would without word timestamps. Taking one item stops the generator
            # before the second decode (a test of each next segment, as takewhile does, would run it:
            # ~0.6 s of this CPU per final; the words' probabilities themselves cost ~0.13 s).
            segments = itertools.islice(segments, 1)
        kept = [
            segment
            for segment in segments
            if not (segment.no_speech_prob > _NO_SPEECH_PROB and segment.avg_logprob < _LOW_LOGPROB)
            and segment.avg_logprob > _VERY_LOW_LOGPROB
            and segment.compression_ratio <= _MAX_COMPRESSION_RATIO
        ]
        words = [word for segment in kept for word in segment.words or () if any(c.isalnum() for c in word.word)]
        return Transcript(
            " ".join(" ".join(segment.text for segment in kept).split()),
            min((segment.avg_logprob for segment in kept), default=0.0),
            words[-1].probability if words else 1.0,
        )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put((-1, next(self._order), None))  # jumps the queue: stop after the current job
        self._thread.join()
        while True:
            try:
                _, _, job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None and job.future.set_running_or_notify_cancel():
                job.future.set_exception(TranscriberClosed("the transcriber was closed"))

    def _run(self) -> None:
        while True:
            _, _, job = self._queue.get()
            if job is None:
                return
            if not job.future.set_running_or_notify_cancel():
                continue  # its conversation moved on before we got to it
            started = time.perf_counter()
            try:
                job.future.set_result(self.transcribe(job.audio, final=job.final))
            except BaseException as error:  # handed to the waiting conversation, which logs it
                job.future.set_exception(error)
            log.debug(
                "%s transcription of %.1f s took %.0f ms",
                "final" if job.final else "partial",
                len(job.audio) / 16000,
                (time.perf_counter() - started) * 1000,
            )
