"""The protocol codec: every malformed input becomes a typed ProtocolError, valid ones parse."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import get_args

import numpy as np
import pytest
from pydantic import AliasChoices, BaseModel, ValidationError

from voicechat import protocol as p


def test_hello_parses_with_defaults() -> None:
    hello = p.parse_client_message('{"type": "hello", "protocol": 1, "sample_rate": 44100}')
    assert isinstance(hello, p.Hello)
    assert hello.sample_rate == 44100


def test_every_client_message_type_parses() -> None:
    examples = [
        {"type": "hello"},
        {"type": "tts_start", "turn_id": 3},
        {"type": "tts_stop", "turn_id": 3, "played_samples": 24000},
        {"type": "playback", "turn_id": 3, "played_samples": 100},
        {"type": "clear_history"},
        {"type": "set_speed", "speed": 80},
        {"type": "set_settings", "settings": {"voice": "alice", "exaggeration": 0.7}},
        {"type": "text_message", "content": "hello there"},
        {"type": "interrupt"},
    ]
    parsed = [p.parse_client_message(json.dumps(example)) for example in examples]
    assert [message.type for message in parsed] == [example["type"] for example in examples]
    assert {message.type for message in parsed} == p.CLIENT_MESSAGE_TYPES


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("not json", "bad_json"),
        ("[1, 2]", "bad_message"),
        ('{"no_type": 1}', "bad_message"),
        ('{"type": 5}', "bad_message"),
        ('{"type": "launch_rockets"}', "unknown_type"),
        ('{"type": "tts_stop", "played_samples": 1}', "bad_message"),
        ('{"type": "hello", "sample_rate": 1000}', "bad_message"),
        ('{"type": "set_speed", "content": 101}', "bad_setting"),
        ('{"type": "set_settings", "settings": {"temperature": 99}}', "bad_setting"),
        ('{"type": "set_settings", "settings": {"volume": 1}}', "bad_setting"),
        ('{"type": "text_message", "content": ""}', "bad_message"),
        ('{"type": "text_message", "content": "' + "x" * 70000 + '"}', "bad_message"),
        ("[" * 60000, "bad_json"),
    ],
    ids=lambda value: value[:30] if isinstance(value, str) else value,
)
def test_malformed_messages_give_typed_errors(text: str, code: str) -> None:
    with pytest.raises(p.ProtocolError) as caught:
        p.parse_client_message(text)
    assert caught.value.code == code
    assert caught.value.message


def test_audio_frame_round_trip() -> None:
    pcm = (np.arange(320) - 160).astype(np.int16)
    data = struct.pack(">II", 123456, p.FLAG_PLAYING) + pcm.astype("<i2").tobytes()
    frame = p.decode_audio_frame(data, max_bytes=64000)
    assert frame.timestamp_ms == 123456
    assert frame.client_playing
    np.testing.assert_array_equal(frame.pcm, pcm)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "bad_audio_header"),
        (b"\x00" * 5, "bad_audio_header"),
        (b"\x00" * 8 + b"\x01", "bad_audio_header"),
        (b"\x00" * 70000, "frame_too_large"),
    ],
)
def test_bad_audio_frames(data: bytes, code: str) -> None:
    with pytest.raises(p.ProtocolError) as caught:
        p.decode_audio_frame(data, max_bytes=64000)
    assert caught.value.code == code


def test_header_only_frame_is_empty_audio() -> None:
    assert len(p.decode_audio_frame(b"\x00" * 8, max_bytes=64000).pcm) == 0


def test_downlink_frame_round_trip() -> None:
    pcm = np.array([1, -1, 32767, -32768], dtype=np.int16)
    turn_id, seq, decoded = p.decode_downlink_frame(p.encode_audio_frame(7, 2, pcm))
    assert (turn_id, seq) == (7, 2)
    np.testing.assert_array_equal(decoded, pcm)


def test_server_messages_are_json_with_type() -> None:
    message = json.loads(p.error_message("bad_json", "oops", fatal=True))
    assert message == {"type": "error", "code": "bad_json", "message": "oops", "fatal": True}


# --- docs/protocol.md is checked against the message models, as docs/configuration.md is against Settings ---

PROTOCOL_DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
_NAME = re.compile(r"`([a-z_]+)`")


def doc_table(heading: str) -> dict[str, tuple[set[str], str]]:
    """The table under ``heading``: message type -> (names in its fields column, its meaning column)."""
    section = PROTOCOL_DOC.read_text().split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, tuple[set[str], str]] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and (kind := _NAME.fullmatch(cells[0])):
            rows[kind.group(1)] = (set(_NAME.findall(cells[1])), cells[2])
    return rows


def fields_of(model: type[BaseModel]) -> set[str]:
    return set(model.model_fields) - {"type"}


def test_the_docs_list_every_server_message_with_its_fields() -> None:
    documented = doc_table("Server → client (JSON)")
    models = {model.model_fields["type"].default: model for model in p.SERVER_MESSAGES}
    assert set(documented) == set(models)
    for kind, model in models.items():
        assert documented[kind][0] == fields_of(model), kind
    states = set(_NAME.findall(documented["status"][1]))
    assert set(get_args(p.State)) <= states


def test_the_docs_list_every_client_message_with_its_fields() -> None:
    documented = doc_table("Client → server (JSON)")
    assert set(documented) == p.CLIENT_MESSAGE_TYPES
    for model in get_args(get_args(p.ClientMessage)[0]):
        names, _ = documented[model.model_fields["type"].annotation.__args__[0]]
        aliases = {
            alias
            for field in model.model_fields.values()
            if isinstance(field.validation_alias, AliasChoices)
            for alias in field.validation_alias.choices
        }
        assert fields_of(model) <= names <= fields_of(model) | aliases, model.__name__


def test_every_server_message_encodes_to_its_documented_json() -> None:
    settings = p.ConversationSettings(speed=50, exaggeration=0.5, cfg_weight=0.5, temperature=0.8)
    hello = json.loads(p.encode(p.ServerHello(session_id="abc", input_sample_rate=16000, settings=settings, voices=["default"])))
    assert hello == {
        "type": "hello", "protocol": 1, "session_id": "abc", "input_sample_rate": 16000, "output_sample_rate": 24000,
        "settings": {"speed": 50, "voice": "default", "exaggeration": 0.5, "cfg_weight": 0.5, "temperature": 0.8},
        "voices": ["default"], "resume_token": None, "resumed": False,
    }
    assert json.loads(p.encode(p.FinalAssistantAnswer(content="Hé", turn_id=3, interrupted=True))) == {
        "type": "final_assistant_answer", "content": "Hé", "turn_id": 3, "interrupted": True,
    }
    with pytest.raises(ValidationError):
        p.Status(state="dancing")  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "ok"), [("alice", True), ("A-b_9", True), ("x" * 64, True), ("x" * 65, False),
                                          ("-x", False), ("a b", False), ("../etc", False), ("", False)])
def test_one_voice_name_rule(name: str, ok: bool) -> None:
    assert p.is_voice_name(name) is ok
    if ok:
        assert p.SettingsPatch(voice=name).voice == name
    else:
        with pytest.raises(ValidationError):
            p.SettingsPatch(voice=name)
