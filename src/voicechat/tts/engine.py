"""The Chatterbox text-to-speech engine shared by every conversation of the process.

One owner thread runs the model; nothing else touches it. Each request is a stream: its text is split
into sentences (one ``generate_stream`` call never exceeds Chatterbox's 1000-token cap), and the owner
advances the most urgent stream by one chunk at a time (see scheduler.py), handing each chunk to the
stream's asyncio consumer with ``loop.call_soon_threadsafe``. Every stream runs on its own shallow copy of
the ``ChatterboxTTS`` object, sharing the modules but holding its own conditionals and random state, so a
voice never leaks from one stream into another, and interleaved streams sound exactly as they would
alone. Voice conditionals are computed once per (voice, exaggeration) and cached.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import logging
import math
import re
import secrets
import threading
import os
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from voicechat.audio import AudioFormatError, float32_to_int16, read_audio, write_wav
from voicechat.tts.scheduler import Job, StreamRng, next_job
from voicechat.tts.segmenter import Segmenter

if TYPE_CHECKING:
    from chatterbox.tts import ChatterboxTTS, Conditionals

    from voicechat.config import Settings

logger = logging.getLogger(__name__)

SAMPLE_RATE = 24_000
MAX_TEXT_CHARS = 5_000  # about five minutes of speech in one request
MAX_SEGMENT_CHARS = 300  # about 20 s of speech: far below generate_stream's 1000-token (40 s) cap
VOICE_MIN_S, VOICE_MAX_S = 1.0, 60.0
FADE_OUT_S = 0.01  # each chunk ends in a 10 ms fade: Chatterbox fades every chunk in, but not out
CONDITIONALS_CACHE = 64  # (voice, exaggeration) pairs kept
DEFAULT_VOICE = "default"
_VOICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_FADE_OUT = ((1 + np.cos(np.linspace(0, np.pi, int(FADE_OUT_S * SAMPLE_RATE)))) / 2).astype(np.float32)


class TTSError(Exception):
    """Speech could not be produced; the message says why in plain words."""

    code = "tts_error"


class UnknownVoiceError(TTSError):
    code = "unknown_voice"


class VoiceError(TTSError):
    """A reference recording that cannot serve as a voice: unreadable, silent, too short or too long."""

    code = "bad_voice"


class BadSettingError(TTSError):
    """An out-of-range parameter, or text that is empty, unspeakable or too long."""

    code = "bad_setting"


def _bounds(name: str) -> tuple[float, float]:
    """The allowed range of a TTS setting, read from its declaration in config.py (one source of truth)."""
    from voicechat.config import Settings

    low, high = -math.inf, math.inf
    for rule in Settings.model_fields[name].metadata:
        low = getattr(rule, "ge", low)
        high = getattr(rule, "le", high)
    return low, high


@dataclass(frozen=True)
class TTSParams:
    """Per-request speech parameters. ``seed`` makes a stream reproducible (None: a fresh random seed)."""

    voice: str = DEFAULT_VOICE
    exaggeration: float = 0.5
    cfg_weight: float = 0.5
    temperature: float = 0.8
    chunk_size: int = 25
    seed: int | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **changes: Any) -> TTSParams:
        """The configured defaults, with ``changes`` (e.g. a client's choices) on top."""
        params = cls(
            exaggeration=settings.exaggeration,
            cfg_weight=settings.cfg_weight,
            temperature=settings.temperature,
            chunk_size=settings.chunk_size,
        )
        return replace(params, **changes)

    def validate(self) -> None:
        """Raise BadSettingError naming the first parameter that is out of range."""
        if not isinstance(self.voice, str) or not (self.voice == DEFAULT_VOICE or _VOICE_NAME.fullmatch(self.voice)):
            raise BadSettingError(f"voice must be a voice name (letters, digits, _ and -), got {self.voice!r}")
        for item in fields(self):
            if item.name in ("voice", "seed"):
                continue
            value = getattr(self, item.name)
            low, high = _bounds(item.name)
            wants_int = item.name == "chunk_size"
            if isinstance(value, bool) or not isinstance(value, int if wants_int else (int, float)):
                kind = "a whole number" if wants_int else "a number"
                raise BadSettingError(f"{item.name} must be {kind}, got {value!r}")
            if not (math.isfinite(value) and low <= value <= high):
                raise BadSettingError(f"{item.name} must be between {low:g} and {high:g}, got {value!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0):
            raise BadSettingError(f"seed must be a non-negative whole number, got {self.seed!r}")


def split_for_speech(text: str) -> list[str]:
    """Text -> the pieces spoken by one ``generate_stream`` call each: whole sentences (cut at clause or
    word breaks when longer than MAX_SEGMENT_CHARS), cleaned of markdown, emoji and code by the
    Segmenter. Raises BadSettingError for empty, unspeakable or too-long text.

    No quick short first piece here: callers that want one (the reply pipeline) segment the text
    themselves and send each segment as its own stream."""
    if not isinstance(text, str) or not text.strip():
        raise BadSettingError("the text is empty: there is nothing to say")
    if len(text) > MAX_TEXT_CHARS:
        raise BadSettingError(f"the text is too long: {len(text)} characters, at most {MAX_TEXT_CHARS} per request")
    whole_sentences = 10**9  # first-segment word limits that never cut a first sentence short
    segmenter = Segmenter(first_segment_min_words=whole_sentences, first_segment_max_words=whole_sentences,
                          max_chars=MAX_SEGMENT_CHARS)
    pieces = segmenter.push(text) + segmenter.flush()
    if not pieces:
        raise BadSettingError("the text has nothing to say: it contains no letters or digits")
    return pieces


def detect_device(requested: str = "auto") -> str:
    """``auto``: cuda, else mps, else cpu. An explicit device that is not available is an error."""
    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise TTSError(f"device {requested!r} was requested but no CUDA GPU is available")
    if requested == "mps" and not torch.backends.mps.is_available():
        raise TTSError("device 'mps' was requested but Apple's Metal backend is not available")
    if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", requested):
        raise TTSError(f"unknown device {requested!r} (use auto, cpu, cuda, cuda:N or mps)")
    return requested


def check_voice_audio(source: bytes | Path) -> tuple[np.ndarray, int]:
    """Decode a reference recording; VoiceError says why it cannot serve as a voice."""
    try:
        samples, rate = read_audio(source)
    except (AudioFormatError, OSError) as error:
        raise VoiceError(f"the voice recording is not a readable audio file ({error})") from error
    seconds = len(samples) / rate
    if seconds < VOICE_MIN_S:
        raise VoiceError(f"the voice recording is too short: {seconds:.2f} s, at least {VOICE_MIN_S:g} s needed")
    if seconds > VOICE_MAX_S:
        raise VoiceError(f"the voice recording is too long: {seconds:.1f} s, at most {VOICE_MAX_S:g} s")
    if not np.all(np.isfinite(samples)) or np.sqrt(np.mean(samples**2)) < 1e-3:
        raise VoiceError("the voice recording is silent: record a few seconds of clear speech")
    return samples, rate


class _Inbox:
    """A stream's consumer side, on the event loop: chunks arrive with ``call_soon_threadsafe``."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.started = time.perf_counter()
        self.first_chunk_s: float | None = None
        self._chunks: deque[np.ndarray] = deque()
        self._ended = False
        self._error: TTSError | None = None
        self._waiter: asyncio.Future | None = None

    # --- called by the owner thread ---
    def post(self, chunk: np.ndarray) -> None:
        self.loop.call_soon_threadsafe(self._on_chunk, chunk)

    def post_end(self, error: TTSError | None = None) -> None:
        self.loop.call_soon_threadsafe(self._on_end, error)

    # --- on the event loop ---
    def _on_chunk(self, chunk: np.ndarray) -> None:
        if self._ended:
            return
        if self.first_chunk_s is None:
            self.first_chunk_s = time.perf_counter() - self.started
        self._chunks.append(chunk)
        self._wake()

    def _on_end(self, error: TTSError | None) -> None:
        if not self._ended:
            self._ended, self._error = True, error
            self._wake()

    def close(self) -> None:
        self._ended = True
        self._chunks.clear()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self) -> np.ndarray:
        while not self._chunks:
            if self._ended:
                error, self._error = self._error, None
                if error is not None:
                    raise error
                raise StopAsyncIteration
            self._waiter = self.loop.create_future()
            await self._waiter
        return self._chunks.popleft()


class TTSStream:
    """Speech for one request: an async iterator of int16 mono PCM chunks at 24 kHz, each yielded as
    soon as Chatterbox produces it. Errors during generation are raised here as TTSError.

    ``cancel()`` (or ``await aclose()``) stops generation at the next chunk boundary; it is idempotent.
    A stream that is dropped without being read to the end is cancelled when garbage-collected.
    """

    def __init__(self, engine: TTSEngine, job: Job, inbox: _Inbox):
        self._engine, self._job, self._inbox = engine, job, inbox
        self._finalizer = weakref.finalize(self, engine._cancel, job)
        self._finalizer.atexit = False

    @property
    def first_chunk_s(self) -> float | None:
        """Seconds from ``stream()`` to the first chunk reaching this consumer (None before it does)."""
        return self._inbox.first_chunk_s

    def __aiter__(self) -> TTSStream:
        return self

    async def __anext__(self) -> np.ndarray:
        chunk = await self._inbox.get()
        self._engine._taken(self._job)
        return chunk

    def cancel(self) -> None:
        self._inbox.close()
        self._finalizer()  # runs engine._cancel(job) once

    async def aclose(self) -> None:
        self.cancel()

    async def __aenter__(self) -> TTSStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.cancel()


class TTSEngine:
    """One Chatterbox model, one owner thread, any number of concurrent streams."""

    sample_rate = SAMPLE_RATE

    def __init__(self, tts: ChatterboxTTS, settings: Settings):
        """Serve ``tts`` (already loaded). Prefer :meth:`load`, which also detects the device and warms up."""
        self._tts = tts
        self._device = str(tts.device)
        self._voices_dir = Path(settings.voices_dir)
        self._default_voice_file = Path(settings.voice) if settings.voice else None
        self._lock = threading.Condition()
        self._jobs: list[Job] = []
        self._dropped: list[Job] = []
        self._calls: deque[tuple[Callable[[], Any], concurrent.futures.Future]] = deque()
        self._closing = False
        self._voice_conds: dict[str, Conditionals] = {}
        self._conds_cache: OrderedDict[tuple[str, float], Conditionals] = OrderedDict()
        if self._default_voice_file is None:
            if tts.conds is None:
                raise TTSError("the checkpoint has no built-in voice (conds.pt): set VOICECHAT_VOICE to a reference WAV")
            self._voice_conds[DEFAULT_VOICE] = tts.conds
        elif not self._default_voice_file.is_file():
            raise VoiceError(f"the default voice file {self._default_voice_file} does not exist")
        self._owner = threading.Thread(target=self._owner_loop, name="tts-owner", daemon=True)
        self._owner.start()

    @classmethod
    def load(cls, settings: Settings) -> TTSEngine:
        """Load Chatterbox as configured (blocking): device, model, default voice, warm-up."""
        from voicechat.tts.checkpoint import CheckpointError, load_chatterbox

        device = detect_device(settings.device)
        if device == "cpu":
            # Speech input shares the CPU; with every core, T3 decoding oversubscribes them and runs
            # many times slower (measured 20x on 2 busy cores). Half the cores for TTS.
            torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
        source = settings.checkpoint or "the Hugging Face hub (ResembleAI/chatterbox)"
        logger.info("loading Chatterbox from %s on %s", source, device)
        started = time.perf_counter()
        try:
            tts = load_chatterbox(settings.checkpoint, device)
        except CheckpointError as error:
            raise TTSError(str(error)) from error
        except (OSError, RuntimeError, ValueError, KeyError) as error:
            raise TTSError(f"could not load Chatterbox from {source}: {error}") from error
        logger.info("Chatterbox loaded in %.2f s", time.perf_counter() - started)
        engine = cls(tts, settings)
        try:
            params = TTSParams.from_settings(settings)
            if settings.tts_warmup:
                started = time.perf_counter()
                engine.warm_up(params)
                logger.info("TTS warm-up took %.2f s", time.perf_counter() - started)
            else:  # still prepare the default voice now: a bad VOICECHAT_VOICE fails at start, not later
                engine._on_owner(lambda: engine._conditionals(DEFAULT_VOICE, params.exaggeration))
        except BaseException:
            engine.close()
            raise
        return engine

    def warm_up(self, params: TTSParams) -> None:
        """Generate the first chunk of a short sentence in the default voice and discard it (blocking),
        so that the first real request does not pay for lazy initialisation and the voice's preparation."""
        self._on_owner(lambda: self._warm_up(params))

    # --- Public API ---------------------------------------------------------------------------

    def voices(self) -> list[str]:
        """``default`` and the stems of the ``*.wav`` files in the voices directory."""
        names = {DEFAULT_VOICE}
        if self._voices_dir.is_dir():
            names.update(path.stem for path in self._voices_dir.glob("*.wav") if _VOICE_NAME.fullmatch(path.stem))
        return [DEFAULT_VOICE, *sorted(names - {DEFAULT_VOICE})]

    def add_voice(self, name: str, wav: bytes | Path) -> str:
        """Validate a reference recording, save it as ``voices_dir/NAME.wav`` and compute its conditionals.

        Blocking (the conditionals are computed on the owner thread): call it from a worker thread,
        e.g. ``await asyncio.to_thread(engine.add_voice, name, data)``. Returns the voice name.
        """
        if not isinstance(name, str) or not _VOICE_NAME.fullmatch(name) or name == DEFAULT_VOICE:
            raise BadSettingError(
                f"a voice name must be 1-64 letters, digits, _ or - (and not {DEFAULT_VOICE!r}), got {name!r}"
            )
        samples, rate = check_voice_audio(wav)
        self._voices_dir.mkdir(parents=True, exist_ok=True)
        target = self._voices_dir / f"{name}.wav"
        partial = target.with_suffix(".wav.partial")
        write_wav(partial, samples, rate)
        partial.replace(target)
        self._on_owner(lambda: self._forget_voice(name))
        try:
            self._on_owner(lambda: self._conditionals(name, 0.5))
        except TTSError:
            target.unlink(missing_ok=True)
            raise
        return name

    def stream(self, text: str, params: TTSParams) -> TTSStream:
        """Start speaking ``text`` (must be called from a running event loop). Bad input raises now:
        BadSettingError, UnknownVoiceError; later failures arrive through the stream as TTSError."""
        params.validate()
        segments = deque(split_for_speech(text))
        if params.voice not in self.voices():
            raise UnknownVoiceError(f"unknown voice {params.voice!r}; available: {', '.join(self.voices())}")
        inbox = _Inbox(asyncio.get_running_loop())
        seed = params.seed if params.seed is not None else secrets.randbits(62)
        job = Job(segments=segments, params=params, inbox=inbox, rng=StreamRng(seed, self._device))
        with self._lock:
            if self._closing:
                raise TTSError("the speech engine is shut down")
            self._jobs.append(job)
            self._lock.notify()
        return TTSStream(self, job, inbox)

    @property
    def active_streams(self) -> int:
        """Streams started and not yet finished or cancelled."""
        with self._lock:
            return len(self._jobs)

    @property
    def device(self) -> str:
        return self._device

    def close(self) -> None:
        """Stop the owner thread; streams still running end with TTSError. Idempotent."""
        with self._lock:
            self._closing = True
            self._lock.notify()
        if threading.current_thread() is not self._owner:
            self._owner.join(timeout=120)

    # --- Consumer callbacks (event loop) ----------------------------------------------------------

    def _taken(self, job: Job) -> None:
        with self._lock:
            job.pending -= 1
            self._lock.notify()

    def _cancel(self, job: Job) -> None:
        with self._lock:
            if job in self._jobs:
                self._jobs.remove(job)
                job.cancelled = True
                self._dropped.append(job)
                self._lock.notify()

    # --- Owner thread -------------------------------------------------------------------------

    def _on_owner(self, function: Callable[[], Any]) -> Any:
        """Run ``function`` on the owner thread, before any further stream step, and wait for it."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            if self._closing:
                raise TTSError("the speech engine is shut down")
            self._calls.append((function, future))
            self._lock.notify()
        return future.result()

    def _owner_loop(self) -> None:
        # Chatterbox's generators enter and leave inference mode around their yields; interleaved, they
        # would restore each other's states out of order. Inside a thread-wide inference mode every
        # restore leaves it on.
        with torch.inference_mode():
            while True:
                with self._lock:
                    while not (self._closing or self._calls or self._dropped) and next_job(self._jobs) is None:
                        self._lock.wait()
                    if self._closing:
                        break
                    dropped, self._dropped = self._dropped, []
                    call = self._calls.popleft() if self._calls else None
                    job = None if call or dropped else next_job(self._jobs)
                for gone in dropped:
                    _close_generator(gone)
                if call is not None:
                    function, future = call
                    if future.set_running_or_notify_cancel():
                        try:
                            future.set_result(function())
                        except BaseException as error:  # handed to the caller, never kills this thread
                            future.set_exception(error)
                elif job is not None:
                    self._step(job)
            self._shut_down()

    def _shut_down(self) -> None:
        with self._lock:
            jobs, self._jobs = self._jobs + self._dropped, []
            calls, self._calls = list(self._calls), deque()
        for job in jobs:
            _close_generator(job)
            if not job.cancelled:
                try:
                    job.inbox.post_end(TTSError("the speech engine was shut down"))
                except RuntimeError:  # that consumer's event loop is already closed
                    pass
        for _, future in calls:
            future.cancel()

    def _step(self, job: Job) -> None:
        """Advance ``job`` by one chunk and hand it over; end the job when its text is spoken."""
        try:
            chunk = self._next_chunk(job)
        except Exception as error:
            _close_generator(job)
            if not isinstance(error, TTSError):
                logger.exception("speech generation failed")
                error = TTSError(f"speech generation failed: {error}")
            self._end(job, error)
            return
        if chunk is None:
            self._end(job, None)
            return
        with self._lock:
            if job.cancelled:
                return
            job.handed_over(len(chunk) / SAMPLE_RATE, time.monotonic())
        try:
            job.inbox.post(chunk)
        except RuntimeError:  # the consumer's event loop is closed: nobody is listening
            self._cancel(job)

    def _end(self, job: Job, error: TTSError | None) -> None:
        with self._lock:
            if job.cancelled or job not in self._jobs:
                return
            self._jobs.remove(job)
        try:
            job.inbox.post_end(error)
        except RuntimeError:
            pass

    def _next_chunk(self, job: Job) -> np.ndarray | None:
        """The job's next int16 chunk, starting its next sentence when needed; None when all is spoken."""
        from chatterbox.tts import Conditionals

        params = job.params
        while True:
            if job.generator is None:
                if not job.segments:
                    return None
                conds = self._conditionals(params.voice, params.exaggeration)
                speaker = copy.copy(self._tts)  # shares the modules, owns its conditionals
                speaker.conds = Conditionals(conds.t3, conds.gen)
                job.generator = speaker.generate_stream(
                    job.segments.popleft(),
                    # the exact float32 value stored in the conditionals, so Chatterbox does not rebuild them
                    exaggeration=float(conds.t3.emotion_adv.flatten()[0]),
                    cfg_weight=params.cfg_weight,
                    temperature=params.temperature,
                    chunk_size=params.chunk_size,
                    print_metrics=False,
                )
            with job.rng.active():
                try:
                    audio, _metrics = next(job.generator)
                except StopIteration:
                    job.generator = None
                    continue
            samples = np.asarray(audio.squeeze(0).numpy(), dtype=np.float32)
            if len(samples) == 0:
                continue
            fade = _FADE_OUT[-len(samples):]
            samples[-len(fade):] *= fade
            return float32_to_int16(samples)

    def _conditionals(self, voice: str, exaggeration: float) -> Conditionals:
        """Conditionals of (voice, exaggeration): the voice's are computed once, the rest derived."""
        from chatterbox.models.t3.modules.cond_enc import T3Cond
        from chatterbox.tts import Conditionals

        key = (voice, float(exaggeration))
        if key in self._conds_cache:
            self._conds_cache.move_to_end(key)
            return self._conds_cache[key]
        base = self._voice_conds.get(voice)
        if base is None:
            base = self._voice_conds[voice] = self._prepare_voice(voice)
        t3 = T3Cond(
            speaker_emb=base.t3.speaker_emb,
            cond_prompt_speech_tokens=base.t3.cond_prompt_speech_tokens,
            emotion_adv=exaggeration * torch.ones(1, 1, 1),
        ).to(device=self._device)
        conds = self._conds_cache[key] = Conditionals(t3, base.gen)
        while len(self._conds_cache) > CONDITIONALS_CACHE:
            self._conds_cache.popitem(last=False)
        return conds

    def _prepare_voice(self, voice: str) -> Conditionals:
        path = self._default_voice_file if voice == DEFAULT_VOICE else self._voices_dir / f"{voice}.wav"
        if path is None or not path.is_file():
            raise UnknownVoiceError(f"unknown voice {voice!r}")
        check_voice_audio(path)
        started = time.perf_counter()
        scratch = copy.copy(self._tts)
        try:
            scratch.prepare_conditionals(str(path), exaggeration=0.5)
        except Exception as error:
            raise VoiceError(f"could not compute the voice {voice!r} from {path.name}: {error}") from error
        logger.info("voice %r prepared in %.2f s", voice, time.perf_counter() - started)
        return scratch.conds

    def _forget_voice(self, voice: str) -> None:
        self._voice_conds.pop(voice, None)
        for key in [key for key in self._conds_cache if key[0] == voice]:
            del self._conds_cache[key]

    def _warm_up(self, params: TTSParams) -> None:
        """One short generation up to its first chunk: loads kernels and caches before the first user."""
        job = Job(segments=deque(["Hello, this is a warm-up."]), params=replace(params, voice=DEFAULT_VOICE),
                  inbox=None, rng=StreamRng(0, self._device))
        try:
            self._next_chunk(job)
        finally:
            _close_generator(job)


def _close_generator(job: Job) -> None:
    """Close a job's generator on the owner thread: frees its KV cache and leaves inference mode cleanly."""
    generator, job.generator = job.generator, None
    if generator is not None:
        try:
            generator.close()
        except Exception:  # a failing close must not take the owner thread down
            logger.exception("closing a speech generator failed")
