"""The original RealtimeVoiceChat protocol, translated at the edge (protocol.py): its input rate
measured from frame timestamps, its message shapes, its base64 48 kHz tts_chunk audio."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from voicechat import protocol as p

FRAME = 2048  # the original page's samples per frame


def frames(rate: int, seconds: float, start_ms: int = 5_000) -> list[p.AudioFrame]:
    count = int(seconds * rate / FRAME)
    return [p.AudioFrame((start_ms + round(i * FRAME * 1000 / rate)) & 0xFFFFFFFF, 0, np.zeros(FRAME, np.int16)) for i in range(count)]


@pytest.mark.parametrize("rate", [16_000, 22_050, 24_000, 32_000, 44_100, 48_000])
def test_the_input_rate_is_measured_from_the_timestamps(rate: int) -> None:
    meter = p.LegacyRateMeter()
    estimates = [meter.add(frame) for frame in frames(rate, 2.0)]
    assert estimates[0] == 48_000  # what the original server assumed, until enough audio arrived
    assert estimates[-1] == rate


def test_the_rate_survives_the_client_clock_wrapping_and_jitter() -> None:
    rng = np.random.default_rng(0)
    meter = p.LegacyRateMeter()
    for frame in frames(44_100, 2.0, start_ms=2**32 - 500):
        jittered = (frame.timestamp_ms + int(rng.integers(-8, 9))) & 0xFFFFFFFF
        meter.add(p.AudioFrame(jittered, 0, frame.pcm))
    assert meter.rate == 44_100


def test_replies_take_the_original_shapes() -> None:
    assert json.loads(p.encode_legacy(p.FinalUserRequest(content="Hi", turn_id=3))) == {  # type: ignore[arg-type]
        "type": "final_user_request", "content": "Hi",
    }
    assert json.loads(p.encode_legacy(p.PartialAssistantAnswer(content="Hé", turn_id=3))) == {  # type: ignore[arg-type]
        "type": "partial_assistant_answer", "content": "Hé",
    }
    assert json.loads(p.encode_legacy(p.StopTts(turn_id=3))) == {"type": "stop_tts", "content": ""}  # type: ignore[arg-type]
    assert p.encode_legacy(p.Status(state="thinking")) is None
    assert p.encode_legacy(p.TtsEnd(turn_id=3, samples=10)) is None


def test_tts_audio_is_base64_int16_little_endian() -> None:
    tone = (np.sin(np.arange(4800) * 2 * np.pi * 440 / 48_000) * 12_000).astype(np.int16)  # 0.1 s at 48 kHz
    message = json.loads(p.encode_legacy_audio(tone))
    assert set(message) == {"type", "content"} and message["type"] == "tts_chunk"
    assert np.array_equal(np.frombuffer(base64.b64decode(message["content"]), dtype="<i2"), tone)


def test_legacy_client_messages_are_typed() -> None:
    assert p.parse_legacy_client_message('{"type": "tts_start"}') == p.LegacyQueue(playing=True)
    assert p.parse_legacy_client_message('{"type": "tts_stop"}') == p.LegacyQueue(playing=False)
    assert isinstance(p.parse_legacy_client_message('{"type": "clear_history"}'), p.ClearHistory)
    assert p.parse_legacy_client_message('{"type": "set_speed", "speed": 30}') == p.SetSpeed(type="set_speed", speed=30)
    for bad, code in (("nope", "bad_json"), ('{"type": "hello"}', "unknown_type"), ('{"type": "set_speed", "speed": 300}', "bad_setting")):
        with pytest.raises(p.ProtocolError) as caught:
            p.parse_legacy_client_message(bad)
        assert caught.value.code == code
