"""The Chatterbox text-to-speech engine shared by every conversation of the process.

Three threads run the model; nothing else touches it. Each request is a stream: its text is split into
sentences (segments: Chatterbox's T3 never decodes more than 1000 tokens, 40 s, per segment).

- The owner thread runs T3's continuous-batching loop (``TTSEngine._turn``): every stream decoding a
  segment holds a slot of the batched T3 decoder (t3_decoder.py); each turn samples one token for every
  slot, publishes it to the render lanes and runs ONE forward pass for all of them; streams join
  (prefill) and leave (stop token, 1000-token cap, cancel) between turns; who gets a free slot first is
  decided earliest deadline first (scheduler.py).
- Two render lanes (``TTSEngine._render_loop``), each a thread with its own Renderer (render.py) and,
  on CUDA, its own CUDA stream, render while T3 decodes: each takes the chunks ready for it
  (``tts_first_chunk_tokens`` for a stream's first chunk, then ``chunk_size``), at most
  ``tts_render_batch`` of them, the most urgent first (scheduler.py), renders them in one batched S3Gen
  call and hands them to each stream's asyncio consumer with ``loop.call_soon_threadsafe``.
  The "first" lane takes the chunks of streams whose listener has heard nothing yet, so first chunks
  never wait behind other streams' steady chunks; the "steady" lane the rest. A lane with nothing of
  its own helps the other while that one is busy: the steady lane with first chunks, the first lane
  with steady chunks while no listener waits for first audio. A stream whose consumer has not taken its
  last ``MAX_PENDING_CHUNKS`` chunks is not rendered further nor given a new segment.
- Chunk boundaries depend on the tokens only (``_ready_chunks``), never on timing, and every stream
  samples from its own generators (seeded per segment), so a stream sounds the same alone, again, or
  beside others; voice conditionals are computed once per (voice, exaggeration) and cached.

The engine refuses streams beyond ``max_streams`` (``tts_max_streams``) with EngineFullError.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import logging
import math
import os
import re
import secrets
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from voicechat.audio import SPEECH_SAMPLE_RATE as SAMPLE_RATE
from voicechat.audio import AudioFormatError, float32_to_int16, read_audio, write_wav
from voicechat.protocol import is_voice_name
from voicechat.tts.scheduler import Job, next_job, urgency
from voicechat.tts.segmenter import Segmenter
from voicechat.tts.stages import StageClock
from voicechat.tts.t3_decoder import SPEECH_VOCAB

if TYPE_CHECKING:
    from chatterbox.tts import ChatterboxTTS, Conditionals

    from voicechat.config import Settings
    from voicechat.tts.render import Renderer
    from voicechat.tts.t3_decoder import Decoding

logger = logging.getLogger(__name__)

MAX_TEXT_CHARS = 5_000  # about five minutes of speech in one request
MAX_SEGMENT_CHARS = 300  # about 20 s of speech: far below T3's 1000-token (40 s) cap per segment
VOICE_MIN_S, VOICE_MAX_S = 1.0, 60.0
CONDITIONALS_CACHE = 64  # (voice, exaggeration) pairs kept
DEFAULT_VOICE = "default"
# Streams kept in real time when tts_max_streams is unset. CUDA: measured on an H200 (docs/tts.md,
# benchmarks/gpu_check.sh): 4 streams started at once each got 1.2 s of audio per second, 8 only 0.89.
# CPU/MPS: no real-time claim (full size on a 2-core CPU is 13 s per 1 s chunk for one stream): a bound
# on memory and on the batch.
WARM_TEXT_POSITIONS = 128  # text tokens of a long sentence: the warm-up prepares T3 prefills up to this
DEFAULT_MAX_STREAMS = {"cuda": 4, "mps": 4, "cpu": 16}
# Chunks one render call takes when tts_render_batch is unset (other devices: no cap, max_streams). CPU:
# a batch of 8 chunks costs as much as 8 renders one by one (0.98-1.05x measured, docs/tts.md), and
# each stream in it would wait for the whole batch; one chunk per call lets both lanes share the work.
DEFAULT_RENDER_BATCH = {"cpu": 1}


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


class EngineFullError(TTSError):
    """The engine already speaks as many streams as it can keep in real time."""

    code = "tts_busy"


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
        if not isinstance(self.voice, str) or not (self.voice == DEFAULT_VOICE or is_voice_name(self.voice)):
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


def stream_limits(settings: Settings, device: str) -> tuple[int, int]:
    """``(max_streams, render_batch)`` on ``device``: the streams served at once and the most chunks one
    render call takes, as set, else the measured defaults of the device's kind. A render call never has
    more than max_streams chunks to take, so render_batch is at most that."""
    kind = torch.device(device).type
    max_streams = settings.tts_max_streams or DEFAULT_MAX_STREAMS.get(kind, 4)
    render_batch = settings.tts_render_batch or DEFAULT_RENDER_BATCH.get(kind, max_streams)
    return max_streams, min(render_batch, max_streams)


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

    ``cancel()`` (or ``await aclose()``) stops generation before the next token step; it is idempotent.
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


@dataclass(eq=False)
class _Segment:
    """One stream's current segment: decoded by the owner thread, rendered by a render lane.

    The owner thread publishes each step's speech token into ``speech`` (and ``finished``) under the
    engine's lock; the lanes read only what is published. ``decoding`` is the owner's alone."""

    conds: Conditionals
    seed: int
    decoding: Decoding | None = None  # the owner's decoder slot; None once T3 has finished (or left)
    speech: list[int] = field(default_factory=list)  # published speech tokens (under the lock)
    finished: bool = False  # T3 is done with this segment (published under the lock)
    finished_on_speech: bool = False  # ... and its last token was speech (the 1000-token cap), not the stop token
    rendered: int = 0  # speech tokens rendered so far (under the lock)
    rendering: bool = False  # a chunk of this segment is in a lane now (under the lock)
    render_state: Any = None  # the renderer's carried state (the lane rendering the segment's chunk)


@dataclass(eq=False)
class _Lane:
    """A render lane: a thread with its own Renderer; ``first`` lanes take the chunks of streams whose
    listener has heard nothing yet (and steady chunks while the steady lane is busy and nobody waits for
    first audio), the others the rest (and first chunks while the first lane is busy)."""

    name: str
    renderer: Renderer
    first: bool
    rendering: bool = False  # inside a render call (under the engine's lock)


class _FirstChunk:
    """A blocking stand-in for _Inbox (warm-up): remembers the first chunk or the error."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.error: TTSError | None = None

    def post(self, chunk: np.ndarray) -> None:
        self.event.set()

    def post_end(self, error: TTSError | None = None) -> None:
        self.error = error
        self.event.set()


def _segment_seed(seed: int, index: int) -> int:
    """A stream's first segment uses its seed as given (so one segment samples what generate_stream
    would with that seed); later segments derive their own."""
    return seed if index == 0 else hash((seed, index)) & (2**62 - 1)


class TTSEngine:
    """One Chatterbox model, one owner thread, continuous batching of up to ``max_streams`` streams."""

    sample_rate = SAMPLE_RATE

    def __init__(self, tts: ChatterboxTTS, settings: Settings):
        """Serve ``tts`` (already loaded). Prefer :meth:`load`, which also detects the device and warms up."""
        from voicechat.tts.render import Renderer
        from voicechat.tts.t3_decoder import T3Decoder

        self._tts = tts
        self._device = str(tts.device)
        self._voices_dir = Path(settings.voices_dir)
        self._default_voice_file = Path(settings.voice) if settings.voice else None
        self._first_chunk_tokens = settings.tts_first_chunk_tokens
        self.max_streams, self.render_batch = stream_limits(settings, self._device)
        self.stages = StageClock()  # where the threads spend their time (stages.py; /metrics)
        self._decoder = T3Decoder(tts.t3, slots=self.max_streams, bf16=settings.tts_bf16,
                                  cuda_graphs=settings.tts_cuda_graphs)
        # Two render lanes, each a thread with its own Renderer (graph cache) and, on CUDA, its own CUDA
        # stream, so S3Gen runs while T3 decodes: "first" renders the chunks of streams whose listener
        # still hears silence (never queued behind other streams' steady chunks), "steady" the rest.
        self._lanes = [_Lane(name, Renderer(tts, first_chunk_ref_s=settings.tts_first_chunk_ref_s,
                                            cuda_graphs=settings.tts_cuda_graphs, clock=self.stages),
                             first=(name == "first"))
                       for name in ("first", "steady")]
        self._lock = threading.Condition()
        self._jobs: list[Job] = []
        self._dropped: list[Job] = []
        self._calls: deque[tuple[Callable[[], Any], concurrent.futures.Future]] = deque()
        self._closing = False
        self._voice_conds: dict[str, Conditionals] = {}
        self._conds_cache: OrderedDict[tuple[str, float], Conditionals] = OrderedDict()
        self._voice_lock = threading.Lock()
        if self._default_voice_file is None:
            if tts.conds is None:
                raise TTSError("the checkpoint has no built-in voice (conds.pt): set VOICECHAT_VOICE to a reference WAV")
            self._voice_conds[DEFAULT_VOICE] = tts.conds
        elif not self._default_voice_file.is_file():
            raise VoiceError(f"the default voice file {self._default_voice_file} does not exist")
        self._slots: list[tuple[Job, _Segment]] = []  # owner thread only: the jobs holding a decoder slot
        self._owner = threading.Thread(target=self._owner_loop, name="tts-owner", daemon=True)
        self._threads = [self._owner] + [
            threading.Thread(target=self._render_loop, args=(lane,), name=f"tts-render-{lane.name}", daemon=True)
            for lane in self._lanes]
        for thread in self._threads:
            thread.start()

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
        """Capture the CUDA graphs (T3 steps; the render lanes' flow solves for the default voice's usual
        shapes), then speak a short sentence in the default voice up to its first chunk and discard it
        (blocking; not from the event loop; before the first stream), so that the first real request
        pays for no lazy initialisation, no CUDA-graph capture and no voice preparation."""
        self._on_owner(self._decoder.warm_graphs)
        # The default voice's T3 prefix, with the unconditional row's text keys for a usual sentence.
        conds = self._on_owner(lambda: self._conditionals(DEFAULT_VOICE, params.exaggeration))
        self._on_owner(lambda: self._decoder.keep_prefix(conds.t3, WARM_TEXT_POSITIONS))
        # The render lanes' flow graphs for the default voice's usual shapes (CUDA only; the lanes are
        # idle before the first stream, so their renderers may be used from here).
        batches = [1 << k for k in range((self.render_batch - 1).bit_length() + 1)]
        first = min(params.chunk_size, self._first_chunk_tokens)
        for lane in self._lanes:  # each lane renders first chunks and steady ones (_ready_chunks)
            lane.renderer.warm_graphs(conds.gen, [first] + [params.chunk_size] * 4, batches)
        inbox = _FirstChunk()
        job = self._submit(deque(["Hello, this is a warm-up."]), replace(params, voice=DEFAULT_VOICE), inbox, 0)
        try:
            inbox.event.wait()
        finally:
            self._cancel(job)
        if inbox.error is not None:
            raise inbox.error

    # --- Public API ---------------------------------------------------------------------------

    def voices(self) -> list[str]:
        """``default`` and the stems of the ``*.wav`` files in the voices directory."""
        names = {DEFAULT_VOICE}
        if self._voices_dir.is_dir():
            names.update(path.stem for path in self._voices_dir.glob("*.wav") if is_voice_name(path.stem))
        return [DEFAULT_VOICE, *sorted(names - {DEFAULT_VOICE})]

    def add_voice(self, name: str, wav: bytes | Path) -> str:
        """Validate a reference recording, save it as ``voices_dir/NAME.wav`` and compute its conditionals.

        Blocking: call it from a worker thread, e.g. ``await asyncio.to_thread(engine.add_voice, name,
        data)``. The conditionals are computed on the calling thread (S3Gen's speech tokenizer and speaker
        encoder and the voice encoder: modules the decode loop never runs), so other conversations keep
        speaking meanwhile; the owner thread only installs the result. Returns the voice name.
        """
        if not is_voice_name(name) or name == DEFAULT_VOICE:
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
            conds = self._prepare_voice(name)
        except TTSError:
            target.unlink(missing_ok=True)
            raise
        self._on_owner(lambda: self._voice_conds.__setitem__(name, conds))
        return name

    def stream(self, text: str, params: TTSParams) -> TTSStream:
        """Start speaking ``text`` (must be called from a running event loop). Bad input raises now:
        BadSettingError, UnknownVoiceError, EngineFullError; later failures arrive through the stream."""
        params.validate()
        segments = deque(split_for_speech(text))
        if params.voice not in self.voices():
            raise UnknownVoiceError(f"unknown voice {params.voice!r}; available: {', '.join(self.voices())}")
        inbox = _Inbox(asyncio.get_running_loop())
        seed = params.seed if params.seed is not None else secrets.randbits(62)
        job = self._submit(segments, params, inbox, seed)
        return TTSStream(self, job, inbox)

    @property
    def active_streams(self) -> int:
        """Streams started and not yet finished or cancelled."""
        with self._lock:
            return len(self._jobs)

    @property
    def busy(self) -> bool:
        """True while any stream is active, a cancelled one is not yet released, or a lane still renders
        (a chunk of a stream cancelled mid-render is rendered to its end, then dropped)."""
        with self._lock:
            return bool(self._jobs or self._dropped or any(lane.rendering for lane in self._lanes))

    @property
    def full(self) -> bool:
        """True while the engine speaks ``max_streams`` streams: a further stream would be refused."""
        return self.active_streams >= self.max_streams

    @property
    def utilization(self) -> float:
        """Active streams as a share of ``max_streams`` (1.0 = full)."""
        return self.active_streams / self.max_streams

    @property
    def device(self) -> str:
        return self._device

    def close(self) -> None:
        """Stop the owner thread and the render lanes; streams still running end with TTSError.
        Idempotent; returns when the threads have ended (unless called from one of them)."""
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=120)

    def _submit(self, segments: deque[str], params: TTSParams, inbox: Any, seed: int) -> Job:
        job = Job(segments=segments, params=params, inbox=inbox, seed=seed)
        with self._lock:
            if self._closing:
                raise TTSError("the speech engine is shut down")
            if len(self._jobs) >= self.max_streams:
                raise EngineFullError(f"the speech engine is busy with {self.max_streams} streams; try again shortly")
            self._jobs.append(job)
            self._lock.notify_all()
        return job

    # --- Consumer callbacks (event loop) ----------------------------------------------------------

    def _taken(self, job: Job) -> None:
        with self._lock:
            job.pending -= 1
            self._lock.notify_all()

    def _cancel(self, job: Job) -> None:
        with self._lock:
            if job in self._jobs:
                self._jobs.remove(job)
                job.cancelled = True
                self._dropped.append(job)
                self._lock.notify_all()

    # --- Owner thread: T3 -----------------------------------------------------------------------

    def _on_owner(self, function: Callable[[], Any]) -> Any:
        """Run ``function`` on the owner thread between two decode steps, and wait for it."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            if self._closing:
                raise TTSError("the speech engine is shut down")
            self._calls.append((function, future))
            self._lock.notify_all()
        return future.result()

    def _owner_loop(self) -> None:
        with torch.inference_mode():
            while True:
                with self._lock:
                    idle_since = None
                    while not (self._closing or self._calls or self._dropped or self._slots or self._joinable()):
                        idle_since = idle_since or time.perf_counter()
                        self._lock.wait()
                    if idle_since is not None:
                        self.stages.add("idle", time.perf_counter() - idle_since)
                    if self._closing:
                        break
                    dropped, self._dropped = self._dropped, []
                    call = self._calls.popleft() if self._calls else None
                for gone in dropped:
                    self._release(gone)
                if call is not None:
                    function, future = call
                    if future.set_running_or_notify_cancel():
                        try:
                            with self.stages.stage("call"):
                                result = function()
                            future.set_result(result)
                        except BaseException as error:  # handed to the caller, never kills this thread
                            future.set_exception(error)
                self._turn()
            self._shut_down()

    def _turn(self) -> None:
        """One turn of the owner: admit a joiner into a free slot, sample one token for every slot and
        publish it to the render lanes, then one batched forward pass. Rendering runs meanwhile, on the
        lanes."""
        decoder = self._decoder
        with self._lock:  # one prefill per turn (it stalls the others): the most urgent joiner's
            job = next_job(self._joinable())
        if job is not None:
            with self.stages.stage("prefill"):
                self._start_segment(job)
        if not self._slots:
            return
        try:
            with self.stages.stage("sample"):
                decoder.sample()
        except Exception as error:
            self._fail_decoding(error)
            return
        finished = []
        with self._lock:
            for job, segment in self._slots:
                token = segment.decoding.tokens[-1]
                if token < SPEECH_VOCAB:
                    segment.speech.append(token)
                if segment.decoding.done:
                    segment.finished, segment.finished_on_speech = True, token < SPEECH_VOCAB
                    finished.append((job, segment))
            self._lock.notify_all()  # the lanes look for chunks that are ready now
        for job, segment in finished:
            job.tokens += segment.speech
            self._leave(job)
        if self._slots:
            try:
                with self.stages.stage("forward"):
                    decoder.forward()
            except Exception as error:
                self._fail_decoding(error)

    def _joinable(self) -> list[Job]:
        """Jobs (under the lock) that wait for a slot to decode their next segment."""
        if len(self._slots) >= self._decoder.slots:
            return []
        return [job for job in self._jobs if job.segment is None and job.segments and job.runnable]

    def _start_segment(self, job: Job) -> None:
        """Prefill ``job``'s next segment into a free slot; a failure ends that job only."""
        from chatterbox.tts import punc_norm

        params = job.params
        text = job.segments.popleft()
        try:
            conds = self._conditionals(params.voice, params.exaggeration)
            tokens = self._tts.tokenizer.text_to_tokens(punc_norm(text)).to(self._device)
            tokens = torch.cat([tokens, tokens])
            hp = self._tts.t3.hp
            tokens = torch.nn.functional.pad(tokens, (1, 0), value=hp.start_text_token)
            tokens = torch.nn.functional.pad(tokens, (0, 1), value=hp.stop_text_token)
            seed = _segment_seed(job.seed, job.segment_index)
            segment = _Segment(conds=conds, seed=seed)
            segment.decoding = self._decoder.join(self._decoder.prompt(conds.t3, tokens), seed=seed,
                                                  cfg_weight=params.cfg_weight, temperature=params.temperature)
        except Exception as error:
            self._end(job, _as_tts_error(error))
            return
        self._slots.append((job, segment))
        with self._lock:
            job.segment, job.segment_index = segment, job.segment_index + 1

    def _leave(self, job: Job) -> _Segment | None:
        """Free ``job``'s decoder slot, if it holds one (owner thread)."""
        for entry in self._slots:
            if entry[0] is job:
                self._slots.remove(entry)
                segment = entry[1]
                self._decoder.leave(segment.decoding)
                segment.decoding = None
                return segment
        return None

    def _fail_decoding(self, error: Exception) -> None:
        """A batched step failed: every stream in the batch ends with the error."""
        for job, _ in list(self._slots):
            self._release(job)
            self._end(job, _as_tts_error(error))

    def _release(self, job: Job) -> None:
        """Free what a job holds (owner thread): its decoder slot, and its segment for the lanes."""
        self._leave(job)
        with self._lock:
            job.segment = None

    # --- Render lanes: S3Gen ----------------------------------------------------------------------

    def _render_loop(self, lane: _Lane) -> None:
        """A lane's thread: render the chunks that are ready for it (up to ``render_batch``) in one
        batched call, hand them over, and again. On CUDA it runs on its own CUDA stream, beside the
        owner's T3 steps."""
        # From torch's high-priority stream pool: the (normal-priority) streams that graph captures take
        # from the pool can then never be a lane's own stream, whose work would land in the capture.
        on_cuda = torch.device(self._device).type == "cuda"
        stream = torch.cuda.Stream(device=self._device, priority=-1) if on_cuda else None
        with torch.inference_mode(), (torch.cuda.stream(stream) if stream is not None else nullcontext()):
            while True:
                with self._lock:
                    idle_since = None
                    while not (self._closing or (chunks := self._ready_chunks(lane))):
                        idle_since = idle_since or time.perf_counter()
                        self._lock.wait()
                    if idle_since is not None:
                        self.stages.add("idle", time.perf_counter() - idle_since)
                    if self._closing:
                        break
                    for _, segment, _, _ in chunks:
                        segment.rendering = True
                    lane.rendering = True  # a render call runs to its end, even for a cancelled stream
                    self._lock.notify_all()  # the other lane may take what this one left (render_batch)
                try:
                    self._render(lane, chunks)
                finally:
                    with self._lock:
                        lane.rendering = False
                        self._lock.notify_all()

    def _ready_chunks(self, lane: _Lane) -> list[tuple[Job, _Segment, int, bool]]:
        """The chunks ``lane`` renders next (under the lock): first chunks on the first lane, the others
        on the steady lane. Each lane helps the other while that one is busy rendering: a steady lane
        with nothing of its own takes the first chunks left over (streams starting together then get
        their first audio from both lanes instead of queueing behind one batch); a first lane with
        nothing of its own takes the steady chunks left over as long as no listener waits for first
        audio (else it would idle while the steady lane works alone: half a CPU's rendering). At most
        ``render_batch`` chunks, the most urgent first (scheduler.urgency: first chunks oldest first,
        then earliest deadline). Which lane renders a chunk, and beside which others, never changes the
        chunk: its boundaries and size depend on the tokens alone."""
        chunks = self._chunks_ready(first=lane.first)
        if not chunks and any(other.rendering for other in self._lanes if other is not lane):
            if not lane.first:
                chunks = self._chunks_ready(first=True)
            elif not any(job.first_handover is None and not job.cancelled for job in self._jobs):
                chunks = self._chunks_ready(first=False)
        return sorted(chunks, key=lambda chunk: urgency(chunk[0]))[:self.render_batch]

    def _chunks_ready(self, first: bool) -> list[tuple[Job, _Segment, int, bool]]:
        """(job, segment, end, last) of every chunk ready to render now, of the streams whose listener
        has heard nothing yet (``first``) or of the others (under the lock).

        A chunk is ``[rendered, end)`` of the segment's speech tokens: ``tts_first_chunk_tokens`` for a
        stream whose listener has heard nothing yet, then ``chunk_size``; a segment's last chunk holds
        what remains. Chunk boundaries depend only on the tokens, never on timing, so a stream renders
        the same chunks however busy the lanes are: a full chunk is the segment's last only if T3
        ended on that very token (the 1000-token cap); after a stop token right at a chunk boundary
        the last chunk is empty (it flushes the held-back tail)."""
        chunks = []
        for job in self._jobs:
            segment = job.segment
            if segment is None or segment.rendering or not job.runnable or (job.first_handover is None) != first:
                continue
            size = job.params.chunk_size if job.first_handover is not None else \
                min(job.params.chunk_size, self._first_chunk_tokens)
            start, published = segment.rendered, len(segment.speech)
            full = published - start >= size
            if full and not (segment.finished and published - start == size and segment.finished_on_speech):
                chunks.append((job, segment, start + size, False))
            elif segment.finished:
                chunks.append((job, segment, published, True))
        return chunks

    def _render(self, lane: _Lane, chunks: list[tuple[Job, _Segment, int, bool]]) -> None:
        """Render ``chunks`` in one batch on ``lane`` and hand each to its consumer."""
        from voicechat.tts.render import RenderRequest

        requests, rendering = [], []
        for job, segment, end, last in chunks:
            if last and end == 0:  # T3 stopped at once: nothing to say in this segment
                self._rendered(job, segment, end, last, None)
                continue
            with self._lock:
                tokens = segment.speech[:end]
            requests.append(RenderRequest(
                tokens=torch.tensor(tokens, dtype=torch.long, device=self._device), start=segment.rendered,
                ref=segment.conds.gen, last=last, state=segment.render_state, seed=segment.seed))
            rendering.append((job, segment, end, last))
        if not requests:
            return
        try:
            results = lane.renderer.render(requests)
        except Exception as error:
            for job, segment, _, _ in rendering:
                self._end(job, _as_tts_error(error))
                with self._lock:
                    segment.rendering = False
                    self._dropped.append(job)  # the owner frees its decoder slot
                    self._lock.notify_all()
            return
        for (job, segment, end, last), (audio, state) in zip(rendering, results):
            segment.render_state = state
            if len(audio):
                self._hand_over(job, float32_to_int16(audio))
            self._rendered(job, segment, end, last, state)

    def _rendered(self, job: Job, segment: _Segment, end: int, last: bool, state: Any) -> None:
        """A chunk is out: the segment may render its next chunk; after its last, the job its next
        segment (or it ends)."""
        with self._lock:
            segment.rendered, segment.rendering = end, False
            if last and job.segment is segment:
                job.segment = None
                if not job.segments:
                    self._end(job, None)
            self._lock.notify_all()

    def _hand_over(self, job: Job, chunk: np.ndarray) -> None:
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
            self._lock.notify_all()
        try:
            job.inbox.post_end(error)
        except RuntimeError:
            pass

    def _shut_down(self) -> None:
        """The owner's last act (the lanes stop on their own): free every slot, end every stream."""
        with self._lock:
            jobs, self._jobs = self._jobs + self._dropped, []
            calls, self._calls = list(self._calls), deque()
        for job in jobs:
            self._release(job)
            if not job.cancelled:
                try:
                    job.inbox.post_end(TTSError("the speech engine was shut down"))
                except RuntimeError:  # that consumer's event loop is already closed
                    pass
        for _, future in calls:
            future.cancel()

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
            with self._voice_lock, torch.inference_mode():  # one preparation at a time, on any thread
                scratch.prepare_conditionals(str(path), exaggeration=0.5)
        except Exception as error:
            raise VoiceError(f"could not compute the voice {voice!r} from {path.name}: {error}") from error
        logger.info("voice %r prepared in %.2f s", voice, time.perf_counter() - started)
        return scratch.conds

    def _forget_voice(self, voice: str) -> None:
        self._voice_conds.pop(voice, None)
        for key in [key for key in self._conds_cache if key[0] == voice]:
            del self._conds_cache[key]


def _as_tts_error(error: Exception) -> TTSError:
    if isinstance(error, TTSError):
        return error
    from voicechat.tts.t3_decoder import PromptTooLongError

    if isinstance(error, PromptTooLongError):
        return BadSettingError(str(error))
    logger.error("speech generation failed", exc_info=error)
    return TTSError(f"speech generation failed: {error}")
