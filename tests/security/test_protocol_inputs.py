"""Small inputs that used to slip through or crash, each refused with its typed error."""

from __future__ import annotations

import pytest

from voicechat import protocol as p


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ('{"type": "set_speed", "speed": ' + "9" * 5000 + "}", "bad_json"),  # int parsing limit: not a crash
        ('{"type": "set_speed", "speed": true}', "bad_setting"),  # true is not 1
        ('{"type": "set_settings", "settings": {"exaggeration": false}}', "bad_setting"),
        ('{"type": "tts_stop", "turn_id": true}', "bad_message"),
        ('{"type": "text_message", "content": " \\n\\t "}', "bad_message"),  # no words, no LLM request
    ],
)
def test_refused_with_a_typed_error(text: str, code: str) -> None:
    with pytest.raises(p.ProtocolError) as refused:
        p.parse_client_message(text)
    assert refused.value.code == code


def test_numbers_still_parse() -> None:
    assert p.parse_client_message('{"type": "set_speed", "speed": 55}').speed == 55
    patch = p.parse_client_message('{"type": "set_settings", "settings": {"exaggeration": 1}}').settings
    assert patch.exaggeration == 1.0
