"""Reference voices over HTTP: list, upload (checked before it is decoded), replace and delete.

An upload is refused as early as possible: its declared size before the body is read, its declared
format and length (the audio file's header) before it is decoded, and its decoding is capped at the
longest allowed recording, so a small file that declares an hour of audio costs nothing. A voice is
stored as 16-bit mono WAV at the rate Chatterbox prepares voices at (24 kHz: ``prepare_conditionals``
loads references at S3GEN_SR), not at the upload's own rate. Every limit is one setting, and
``GET /api/voices`` returns them as ``limits`` so the page can show the same numbers.
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from voicechat.audio import SPEECH_SAMPLE_RATE, float32_to_int16, resample
from voicechat.config import Settings
from voicechat.protocol import DEFAULT_VOICE, VOICE_NAME_RULE, is_voice_name
from voicechat.tts.engine import TTSError

STORED_RATE = SPEECH_SAMPLE_RATE  # what prepare_conditionals resamples every reference to
FORMATS = {"WAV": "WAV", "WAVEX": "WAV", "FLAC": "FLAC", "OGG": "OGG"}  # soundfile major format -> name
MIN_RATE, MAX_RATE = 8_000, 192_000
MAX_CHANNELS = 8
SILENT_RMS = 1e-3

router = APIRouter()


class UploadError(Exception):
    """A refused upload: HTTP status, protocol-style error code and a plain reason."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.code, "message": self.message}, self.status)


@dataclass(frozen=True)
class VoiceLimits:
    """The upload limits, as the settings give them; sent to the page as ``limits``."""

    max_bytes: int
    min_seconds: float
    max_seconds: float
    max_voices: int
    max_total_bytes: int
    formats: tuple[str, ...] = ("WAV", "FLAC", "OGG")

    @classmethod
    def from_settings(cls, settings: Settings) -> VoiceLimits:
        return cls(
            max_bytes=settings.voice_max_bytes,
            min_seconds=settings.voice_min_s,
            max_seconds=settings.voice_max_s,
            max_voices=settings.voices_max_count,
            max_total_bytes=settings.voices_max_total_bytes,
        )

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "formats": list(self.formats)}


def _megabytes(count: int) -> str:
    return f"{count / (1024 * 1024):g} MB"


def prepare_voice(data: bytes, limits: VoiceLimits) -> bytes:
    """Check a recording from its header, decode at most ``max_seconds`` of it, and return it as
    24 kHz mono 16-bit WAV bytes; UploadError says in plain words why it cannot be a voice."""
    try:
        sound = soundfile.SoundFile(io.BytesIO(data))
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError):
        raise UploadError(400, "bad_voice", "the file is not a readable audio file: use WAV, FLAC or OGG") from None
    with sound:
        kind = FORMATS.get(sound.format)
        if kind is None:
            raise UploadError(400, "bad_voice", f"{sound.format} files are not accepted: use WAV, FLAC or OGG")
        if not MIN_RATE <= sound.samplerate <= MAX_RATE:
            raise UploadError(400, "bad_voice", f"a sample rate of {sound.samplerate} Hz is not supported")
        if not 1 <= sound.channels <= MAX_CHANNELS:
            raise UploadError(400, "bad_voice", f"a recording with {sound.channels} channels is not supported")
        known = 0 < sound.frames < 2**62  # a FLAC may leave its length out; libsndfile then says "huge"
        declared_s = sound.frames / sound.samplerate if known else 0.0
        if declared_s > limits.max_seconds:
            raise UploadError(
                400, "bad_voice",
                f"the recording is too long: its header says {declared_s:.0f} s, at most {limits.max_seconds:g} s",
            )  # fmt: skip
        cap = int(limits.max_seconds * sound.samplerate) + 1  # one frame more than allowed reveals a liar
        try:
            samples = sound.read(frames=cap, dtype="float32", always_2d=True)
        except (soundfile.LibsndfileError, RuntimeError, ValueError):
            raise UploadError(400, "bad_voice", f"the {kind} file is damaged and cannot be decoded") from None
        rate = sound.samplerate
    seconds = len(samples) / rate
    if len(samples) >= cap:
        raise UploadError(400, "bad_voice", f"the recording is longer than {limits.max_seconds:g} s")
    if seconds < limits.min_seconds:
        raise UploadError(
            400, "bad_voice", f"the recording is too short: {seconds:.1f} s, at least {limits.min_seconds:g} s needed"
        )
    mono = samples.mean(axis=1)
    if not np.all(np.isfinite(mono)):
        raise UploadError(400, "bad_voice", "the recording contains invalid samples (NaN or infinity)")
    if float(np.sqrt(np.mean(mono.astype(np.float64) ** 2))) < SILENT_RMS:
        raise UploadError(400, "bad_voice", "the recording is silent: record a few seconds of clear speech")
    stored = float32_to_int16(resample(np.ascontiguousarray(mono), rate, STORED_RATE))
    out = io.BytesIO()
    soundfile.write(out, stored, STORED_RATE, format="WAV", subtype="PCM_16")
    return out.getvalue()


def check_quota(voices_dir: Path, name: str, new_bytes: int, limits: VoiceLimits) -> None:
    """Refuse a voice that would take the voices directory over its count or byte quota."""
    others = [path for path in voices_dir.glob("*.wav") if path.stem != name] if voices_dir.is_dir() else []
    if len(others) + 1 > limits.max_voices:
        raise UploadError(507, "voice_quota", f"the server keeps at most {limits.max_voices} voices: delete one first")
    used = sum(path.stat().st_size for path in others)
    if used + new_bytes > limits.max_total_bytes:
        raise UploadError(
            507, "voice_quota",
            f"the voices would take more than {_megabytes(limits.max_total_bytes)}: delete one first",
        )  # fmt: skip


def _too_big(limits: VoiceLimits) -> UploadError:
    return UploadError(413, "bad_voice", f"a voice recording may be {_megabytes(limits.max_bytes)} at most")


def check_declared_length(request: Request, limits: VoiceLimits) -> None:
    """Refuse a body by its declared length, before reading any of it."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limits.max_bytes):
        raise _too_big(limits)


async def read_body(request: Request, limits: VoiceLimits, timeout_s: float) -> bytes:
    """The request body, refused as soon as it grows too large or takes too long."""
    too_big = _too_big(limits)
    body = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            async for piece in request.stream():
                body += piece
                if len(body) > limits.max_bytes:
                    raise too_big
    except TimeoutError:
        raise UploadError(
            408, "upload_timeout", f"the upload did not arrive within {timeout_s:g} s (VOICECHAT_BODY_TIMEOUT_S)"
        ) from None
    return bytes(body)


def _check_name(name: str | None) -> str:
    if not name:
        raise UploadError(400, "bad_voice", "say the voice's name: ?name=NAME")
    if not is_voice_name(name) or name == DEFAULT_VOICE:
        raise UploadError(400, "bad_voice", f"voice names are {VOICE_NAME_RULE} (and not {DEFAULT_VOICE!r})")
    return name


def _app_state(request: Request):  # noqa: ANN202 - voicechat.app.AppState (imported lazily: no cycle)
    return request.app.state.voicechat


@router.get("/api/voices")
async def list_voices(request: Request) -> JSONResponse:
    state = _app_state(request)
    limits = VoiceLimits.from_settings(state.settings).as_dict()
    if state.services is None:
        return JSONResponse({"error": "not_ready", "message": state.stage, "limits": limits}, 503)
    return JSONResponse({"voices": state.services.tts.voices(), "limits": limits})


@router.post("/api/voices")
async def add_voice(request: Request, name: str | None = None, replace: bool = False) -> JSONResponse:
    state = _app_state(request)
    settings: Settings = state.settings
    limits = VoiceLimits.from_settings(settings)
    try:
        name = _check_name(name)
        check_declared_length(request, limits)
        if state.services is None:
            raise UploadError(503, "not_ready", state.stage)
        body = await read_body(request, limits, settings.body_timeout_s)
        voices_dir = Path(settings.voices_dir)
        async with state.voice_lock:  # one change at a time: the 409 check and the write go together
            if not replace and name in state.services.tts.voices():
                raise UploadError(409, "voice_exists", f"a voice named {name!r} exists: add ?replace=1 to replace it")
            wav = await asyncio.to_thread(prepare_voice, body, limits)
            check_quota(voices_dir, name, len(wav), limits)
            try:
                await asyncio.to_thread(state.services.tts.add_voice, name, wav)
            except TTSError as error:
                raise UploadError(400, error.code, str(error)) from None
    except UploadError as error:
        return error.response()
    return JSONResponse({"voice": name})


@router.delete("/api/voices/{name}")
async def delete_voice(request: Request, name: str) -> JSONResponse:
    state = _app_state(request)
    try:
        name = _check_name(name)
        path = Path(state.settings.voices_dir) / f"{name}.wav"
        async with state.voice_lock:
            if not path.is_file():
                raise UploadError(404, "unknown_voice", f"there is no voice named {name!r}")
            path.unlink()
    except UploadError as error:
        return error.response()
    return JSONResponse({"deleted": name})
