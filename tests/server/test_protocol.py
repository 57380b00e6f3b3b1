"""The protocol codec: every malformed input becomes a typed ProtocolError, valid ones parse."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

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
