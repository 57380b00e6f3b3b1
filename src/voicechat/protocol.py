"""The WebSocket protocol (docs/protocol.md): message models and the binary frame codec.

This module is the one source of truth for what crosses the socket. It does no I/O.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from voicechat.audio import AudioFormatError, pcm16_bytes_to_int16

PROTOCOL_VERSION = 1
OUTPUT_SAMPLE_RATE = 24000
MAX_TEXT_MESSAGE_BYTES = 64 * 1024

# Uplink: uint32 BE client timestamp (ms), uint32 BE flags; downlink: uint32 BE turn id, uint32 BE seq.
FRAME_HEADER = struct.Struct(">II")
FLAG_PLAYING = 1  # uplink flags bit 0: the client is playing assistant audio right now

# WebSocket close codes we use.
CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_SERVER_FULL = 1013

STATES = ("loading", "listening", "hearing", "thinking", "speaking", "interrupted")


class ProtocolError(Exception):
    """A client message the server cannot accept; ``code`` is one of the protocol's error codes."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --- Client -> server ---------------------------------------------------------------------------


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Hello(_Message):
    type: Literal["hello"]
    protocol: int = PROTOCOL_VERSION
    sample_rate: int = Field(16000, ge=8000, le=48000)
    client: str = Field("", max_length=200)


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
    speed: int | None = Field(None, ge=0, le=100)
    voice: str | None = Field(None, min_length=1, max_length=64)
    exaggeration: float | None = Field(None, ge=0.25, le=2.0)
    cfg_weight: float | None = Field(None, ge=0.0, le=1.0)
    temperature: float | None = Field(None, ge=0.05, le=5.0)


class SetSettings(_Message):
    type: Literal["set_settings"]
    settings: SettingsPatch


class TextMessage(_Message):
    type: Literal["text_message"]
    content: str = Field(min_length=1, max_length=4000)


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
    except (json.JSONDecodeError, RecursionError) as error:
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


def server_message(kind: str, **fields: Any) -> str:
    """One JSON server message; field names are those of docs/protocol.md."""
    return json.dumps({"type": kind, **fields}, ensure_ascii=False)


def error_message(code: str, message: str, *, fatal: bool = False) -> str:
    return server_message("error", code=code, message=message, fatal=fatal)


def loading_message(models: list[dict[str, Any]]) -> str:
    """Model loading progress, sent before hello while the server loads: each model's name, stage
    (waiting, downloading, loading, ready, failed), bytes_done and bytes_total (None when unknown)."""
    return server_message("loading", models=models)
