"""The WebSocket protocol (docs/protocol.md): message models and the binary frame codec.

This module is the one source of truth for what crosses the socket, both ways: client messages are
parsed into typed models, server messages are typed models turned into JSON by :func:`encode`
(tests/server/test_protocol.py checks docs/protocol.md's tables against them). It does no I/O.
"""

from __future__ import annotations

import base64
import json
import re
import struct
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from voicechat.audio import SPEECH_SAMPLE_RATE, AudioFormatError, pcm16_bytes_to_int16

PROTOCOL_VERSION = 1
OUTPUT_SAMPLE_RATE = SPEECH_SAMPLE_RATE  # the client gets the TTS's audio as it is made, never resampled
MAX_TEXT_MESSAGE_BYTES = 64 * 1024

# The one rule for voice names, wherever a name arrives (settings, uploads, the voices directory).
DEFAULT_VOICE = "default"  # the built-in voice (or the configured reference recording)
VOICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
VOICE_NAME_RULE = "1-64 letters, digits, '-' or '_', starting with a letter or digit"

# Uplink: uint32 BE client timestamp (ms), uint32 BE flags; downlink: uint32 BE turn id, uint32 BE seq.
FRAME_HEADER = struct.Struct(">II")
FLAG_PLAYING = 1  # uplink flags bit 0: the client is playing assistant audio right now

# WebSocket close codes the server sends itself (1009, message too big, comes from the server's
# WebSocket layer).
CLOSE_POLICY = 1008
CLOSE_INTERNAL = 1011
CLOSE_SERVER_FULL = 1013

State = Literal["loading", "listening", "hearing", "thinking", "speaking", "interrupted"]


def is_voice_name(name: object) -> bool:
    return isinstance(name, str) and VOICE_NAME.fullmatch(name) is not None


class ProtocolError(Exception):
    """A client message the server cannot accept; ``code`` is one of the protocol's error codes."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --- Client -> server ---------------------------------------------------------------------------


def _no_booleans(data: Any) -> Any:
    """No client field is a boolean: ``true`` is not the number 1 (pydantic's lax mode would take it)."""
    if isinstance(data, dict) and any(isinstance(value, bool) for value in data.values()):
        raise ValueError("true and false are not numbers or text here")
    return data


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    _refuse_booleans = model_validator(mode="before")(_no_booleans)


class ResumeRequest(_Message):
    """Which conversation a reconnecting client asks back: the ``session_id`` and ``resume_token`` of its
    last server hello."""

    session_id: str = Field(min_length=1, max_length=64)
    token: str = Field(min_length=1, max_length=200)


class Hello(_Message):
    type: Literal["hello"]
    protocol: int = PROTOCOL_VERSION
    sample_rate: int = Field(16000, ge=8000, le=48000)
    client: str = Field("", max_length=200)
    resume: ResumeRequest | None = None


class TtsStart(_Message):
    type: Literal["tts_start"]
    turn_id: int = Field(ge=0)


class TtsStop(_Message):
    type: Literal["tts_stop"]
    turn_id: int = Field(ge=0)
    played_samples: int = Field(0, ge=0)


class Playback(_Message):
    type: Literal["playback"]
    turn_id: int = Field(ge=0)
    played_samples: int = Field(ge=0)


class ClearHistory(_Message):
    type: Literal["clear_history"]


class SetSpeed(_Message):
    """Turn-taking speed 0-100. The original app's client sent it as ``speed``; ``content`` is accepted too."""

    type: Literal["set_speed"]
    speed: int = Field(ge=0, le=100, validation_alias=AliasChoices("speed", "content"))


class SettingsPatch(BaseModel):
    """The per-conversation settings a client may change; ranges match voicechat.config.Settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    _refuse_booleans = model_validator(mode="before")(_no_booleans)
    speed: int | None = Field(None, ge=0, le=100)
    voice: str | None = Field(None, pattern=f"^{VOICE_NAME.pattern}$")
    exaggeration: float | None = Field(None, ge=0.25, le=2.0)
    cfg_weight: float | None = Field(None, ge=0.0, le=1.0)
    temperature: float | None = Field(None, ge=0.05, le=5.0)


class SetSettings(_Message):
    type: Literal["set_settings"]
    settings: SettingsPatch


class TextMessage(_Message):
    type: Literal["text_message"]
    content: str = Field(min_length=1, max_length=4000)

    @field_validator("content")
    @classmethod
    def _has_words(cls, content: str) -> str:
        if not content.strip():
            raise ValueError("a typed message needs some words, not only spaces")
        return content


class Interrupt(_Message):
    type: Literal["interrupt"]


ClientMessage = Annotated[
    Union[Hello, TtsStart, TtsStop, Playback, ClearHistory, SetSpeed, SetSettings, TextMessage, Interrupt],
    Field(discriminator="type"),
]
_CLIENT_MESSAGE = TypeAdapter(ClientMessage)
CLIENT_MESSAGE_TYPES = frozenset(
    model.model_fields["type"].annotation.__args__[0]  # type: ignore[union-attr]
    for model in (Hello, TtsStart, TtsStop, Playback, ClearHistory, SetSpeed, SetSettings, TextMessage, Interrupt)
)


def parse_client_message(text: str) -> ClientMessage:
    """Parse one JSON text frame from a client, or raise ProtocolError with a plain reason."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_TEXT_MESSAGE_BYTES:
        raise ProtocolError("bad_message", f"text messages are limited to {MAX_TEXT_MESSAGE_BYTES} bytes")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as error:  # ValueError: also an integer of thousands of digits
        raise ProtocolError("bad_json", f"not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise ProtocolError("bad_message", "a message must be a JSON object with a 'type'")
    kind = data.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("bad_message", "the message has no 'type' string")
    if kind not in CLIENT_MESSAGE_TYPES:
        raise ProtocolError("unknown_type", f"unknown message type {kind[:40]!r}")
    try:
        return _CLIENT_MESSAGE.validate_python(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in issue['loc'][1:]) or 'message'}: {issue['msg']}"
            for issue in error.errors(include_url=False)
        )
        code = "bad_setting" if kind in ("set_settings", "set_speed") else "bad_message"
        raise ProtocolError(code, f"invalid {kind}: {problems}") from None


# --- Binary frames --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AudioFrame:
    timestamp_ms: int
    flags: int
    pcm: np.ndarray  # int16 mono at the rate announced in hello

    @property
    def client_playing(self) -> bool:
        return bool(self.flags & FLAG_PLAYING)


def decode_audio_frame(data: bytes, *, max_bytes: int) -> AudioFrame:
    """Decode a client audio frame (8-byte header + int16 LE PCM), or raise ProtocolError."""
    if len(data) > max_bytes:
        raise ProtocolError("frame_too_large", f"audio frames are limited to {max_bytes} bytes, got {len(data)}")
    if len(data) < FRAME_HEADER.size:
        raise ProtocolError("bad_audio_header", f"an audio frame needs an 8-byte header, got {len(data)} bytes")
    timestamp_ms, flags = FRAME_HEADER.unpack_from(data)
    try:
        pcm = pcm16_bytes_to_int16(memoryview(data)[FRAME_HEADER.size :])
    except AudioFormatError as error:
        raise ProtocolError("bad_audio_header", str(error)) from None
    return AudioFrame(timestamp_ms, flags, pcm)


def encode_audio_frame(turn_id: int, seq: int, pcm: np.ndarray) -> bytes:
    """A downlink audio frame: 8-byte header (turn id, chunk seq) + int16 LE PCM."""
    return FRAME_HEADER.pack(turn_id & 0xFFFFFFFF, seq & 0xFFFFFFFF) + pcm.astype("<i2", copy=False).tobytes()


def decode_downlink_frame(data: bytes) -> tuple[int, int, np.ndarray]:
    """(turn_id, seq, int16 PCM) of a server audio frame: for clients written in Python (tests, benchmarks)."""
    turn_id, seq = FRAME_HEADER.unpack_from(data)
    return turn_id, seq, pcm16_bytes_to_int16(memoryview(data)[FRAME_HEADER.size :])


# --- Server -> client -----------------------------------------------------------------------------


class ConversationSettings(BaseModel):
    """A conversation's settings, as ``hello`` and ``settings`` send them (SettingsPatch changes them)."""

    model_config = ConfigDict(extra="forbid")
    speed: int
    voice: str = DEFAULT_VOICE
    exaggeration: float
    cfg_weight: float
    temperature: float


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerHello(_Out):
    type: Literal["hello"] = "hello"
    protocol: int = PROTOCOL_VERSION
    session_id: str
    input_sample_rate: int
    output_sample_rate: int = OUTPUT_SAMPLE_RATE
    settings: ConversationSettings
    voices: list[str]
    resume_token: str | None = None  # the secret that resumes this conversation after a drop (None: never)
    resumed: bool = False  # the hello's resume was granted: history, settings and voice are as they were


class Status(_Out):
    type: Literal["status"] = "status"
    state: State


class Loading(_Out):
    """Model loading progress: each model's name, stage (waiting, downloading, loading, ready, failed),
    bytes_done and bytes_total (None when unknown)."""

    type: Literal["loading"] = "loading"
    models: list[dict[str, Any]]


class _TurnOut(_Out):
    """A message about one assistant turn (and the user's words it answers)."""

    turn_id: int


class PartialUserRequest(_Out):
    type: Literal["partial_user_request"] = "partial_user_request"
    content: str


class FinalUserRequest(_TurnOut):
    type: Literal["final_user_request"] = "final_user_request"
    content: str


class PartialAssistantAnswer(_TurnOut):
    type: Literal["partial_assistant_answer"] = "partial_assistant_answer"
    content: str


class FinalAssistantAnswer(_TurnOut):
    type: Literal["final_assistant_answer"] = "final_assistant_answer"
    content: str
    interrupted: bool


class TtsEnd(_TurnOut):
    type: Literal["tts_end"] = "tts_end"
    samples: int


class StopTts(_TurnOut):
    type: Literal["stop_tts"] = "stop_tts"


class TtsInterruption(_TurnOut):
    type: Literal["tts_interruption"] = "tts_interruption"


class TtsPause(_TurnOut):
    """The user may be talking over the assistant: hold that turn's playback where it is (keep its audio)."""

    type: Literal["tts_pause"] = "tts_pause"


class TtsResume(_TurnOut):
    """It was not an interruption (a cough, a backchannel): play that turn on from where it was held."""

    type: Literal["tts_resume"] = "tts_resume"


class TurnMetrics(_TurnOut):
    type: Literal["turn_metrics"] = "turn_metrics"
    endpointing_ms: float | None
    stt_ms: float | None
    llm_first_token_ms: float | None
    tts_first_chunk_ms: float | None
    first_audio_ms: float | None


class SettingsChanged(_Out):
    type: Literal["settings"] = "settings"
    settings: ConversationSettings


class HistoryCleared(_Out):
    type: Literal["history_cleared"] = "history_cleared"


class Error(_Out):
    type: Literal["error"] = "error"
    code: str
    message: str
    fatal: bool = False


ServerMessage = Union[
    ServerHello, Status, Loading, PartialUserRequest, FinalUserRequest, PartialAssistantAnswer,
    FinalAssistantAnswer, TtsEnd, StopTts, TtsInterruption, TtsPause, TtsResume, TurnMetrics, SettingsChanged,
    HistoryCleared, Error,
]
SERVER_MESSAGES: tuple[type[_Out], ...] = ServerMessage.__args__  # type: ignore[attr-defined]


def encode(message: ServerMessage) -> str:
    """One server message as the JSON text frame it is sent as."""
    return message.model_dump_json()


def error_message(code: str, message: str, *, fatal: bool = False) -> str:
    return encode(Error(code=code, message=message, fatal=fatal))


_SERVER_MESSAGE = TypeAdapter(Annotated[ServerMessage, Field(discriminator="type")])


def decode_server_message(text: str) -> ServerMessage:
    """A server message from its JSON text frame (the inverse of :func:`encode`): for the legacy edge,
    which translates what the session sends, and for clients written in Python."""
    return _SERVER_MESSAGE.validate_json(text)


# --- The original RealtimeVoiceChat protocol (legacy clients), translated at the edge ----------------
# A client written for the original app never sends hello: its first message is a binary audio frame.
# It sends int16 audio at its AudioContext's rate (never said: measured here), expects its replies in the
# original {"type", "content"} shapes and TTS as base64 int16 mono at 48 kHz in tts_chunk messages.

LEGACY_OUTPUT_RATE = 48_000
LEGACY_INPUT_RATES = (16_000, 22_050, 24_000, 32_000, 44_100, 48_000)
LEGACY_MEASURE_MS = 1_000  # header time a rate is measured over before it replaces the 48 kHz guess
LEGACY_CLIENT = "original RealtimeVoiceChat protocol"  # the client name of a legacy conversation's hello
_LEGACY_CONTENT = (PartialUserRequest, FinalUserRequest, PartialAssistantAnswer, FinalAssistantAnswer)


class LegacyRateMeter:
    """A legacy client's input rate: samples per millisecond of its frames' header timestamps, snapped to
    the nearest common rate; 48 kHz (what the original server assumed) until enough frames arrived."""

    def __init__(self) -> None:
        self.rate = 48_000
        self.measured = False  # the rate comes from LEGACY_MEASURE_MS of timestamps, not the guess
        self._first_ms: int | None = None
        self._samples_since_first = 0  # samples of the frames after the first one

    def add(self, frame: AudioFrame) -> int:
        if self._first_ms is None:
            self._first_ms = frame.timestamp_ms
            return self.rate
        self._samples_since_first += len(frame.pcm)
        elapsed_ms = (frame.timestamp_ms - self._first_ms) & 0xFFFFFFFF  # the client's clock wraps at 2**32
        if elapsed_ms >= LEGACY_MEASURE_MS:
            measured = self._samples_since_first * 1000 / elapsed_ms
            self.rate = min(LEGACY_INPUT_RATES, key=lambda rate: abs(rate - measured))
            self.measured = True
        return self.rate


def legacy_hello(sample_rate: int) -> Hello:
    """The hello a legacy client never sends, spoken for it once its input rate is known."""
    return Hello(type="hello", sample_rate=sample_rate, client=LEGACY_CLIENT)


def encode_legacy(message: ServerMessage) -> str | None:
    """A server message in the original app's shape, or None for one it has no counterpart of."""
    if isinstance(message, _LEGACY_CONTENT):
        return json.dumps({"type": message.type, "content": message.content}, ensure_ascii=False)
    if isinstance(message, (StopTts, TtsInterruption)):
        return json.dumps({"type": message.type, "content": ""})
    return None


def encode_legacy_audio(pcm: np.ndarray) -> str:
    """TTS audio already at LEGACY_OUTPUT_RATE as the original tts_chunk: base64 int16 LE mono. (The
    edge resamples a turn's chunks as one stream, voicechat.legacy, so no joint clicks.)"""
    content = base64.b64encode(pcm.astype("<i2", copy=False).tobytes()).decode("ascii")
    return json.dumps({"type": "tts_chunk", "content": content})


class LegacyQueue(BaseModel):  # built by the server from a legacy message, so not a _Message (no booleans)
    """A legacy client's tts_start / tts_stop: its playback queue started or ran dry. It carries no turn
    id and comes several times per reply whenever the queue empties between chunks: not a turn's end."""

    model_config = ConfigDict(frozen=True)
    type: Literal["legacy_queue"] = "legacy_queue"
    playing: bool


LegacyClientMessage = Union[ClearHistory, SetSpeed, LegacyQueue]


def parse_legacy_client_message(text: str) -> LegacyClientMessage:
    """One JSON text frame from a legacy client, as a typed message, or ProtocolError."""
    try:
        data = json.loads(text) if len(text) <= MAX_TEXT_MESSAGE_BYTES else None
    except (json.JSONDecodeError, RecursionError):
        raise ProtocolError("bad_json", "not valid JSON") from None
    kind = data.get("type") if isinstance(data, dict) else None
    if kind in ("tts_start", "tts_stop"):
        return LegacyQueue(playing=kind == "tts_start")
    if kind in ("clear_history", "set_speed"):
        return parse_client_message(text)  # type: ignore[return-value]
    raise ProtocolError("unknown_type", f"unknown message type {str(kind)[:40]!r}")
