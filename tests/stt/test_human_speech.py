"""The human speech set (Debian asterisk-core-sounds-en-wav + benchmarks/data/asterisk_cuts.tsv)."""

from __future__ import annotations

import re

import numpy as np
import pytest

import human_speech
from stt_helpers import feed_all, of_type, with_silence
from voicechat.stt.listener import Listener, SpeechModels

pytestmark = pytest.mark.skipif(
    not human_speech.available(), reason=f"needs the Debian package {human_speech.PACKAGE} (scripts/test.sh installs it)"
)


def test_the_table_has_enough_pauses_and_a_fixed_held_out_part() -> None:
    cuts = human_speech.cuts()
    tuning, held_out = human_speech.cuts("tuning"), human_speech.cuts("heldout")
    assert len(cuts) >= 200 and len(tuning) + len(held_out) == len(cuts)
    assert len(held_out) >= 100  # enough for a confidence interval of its own
    family = lambda cut: re.sub(r"(-\d+)+$", "", cut.file.removesuffix(".wav"))  # noqa: E731
    assert not {family(c) for c in tuning} & {family(c) for c in held_out}  # no prompt on both sides
    assert not {c.words.lower() for c in tuning} & {c.words.lower() for c in held_out}
    for cut in cuts:
        assert 0.2 <= cut.pause_s <= 1.2
        assert cut.start_s < cut.cut_s < cut.end_s
        assert cut.text.count("|") == 1 and cut.text.split("|")[1].strip()  # words follow the pause


def test_an_utterance_is_the_sentence_with_silence_at_the_cut() -> None:
    for cut in human_speech.cuts("tuning")[:5]:
        built = human_speech.build(cut)
        assert built.audio.dtype == np.int16
        start = round(built.pause_at_s * human_speech.RATE)
        pause = built.audio[start : start + round(cut.pause_s * human_speech.RATE)]
        assert len(pause) == round(cut.pause_s * human_speech.RATE) and not pause.any()
        after = built.audio[start + len(pause) :]
        assert np.abs(after.astype(np.int32)).max() > 3000  # the rest of the sentence follows
        assert built.end_s == pytest.approx(len(built.audio) / human_speech.RATE)
        assert abs(int(built.audio[-1])) >= human_speech.LOUD  # trimmed to where the voice ends
        again = human_speech.build(cut)  # from the cache: the same samples
        assert np.array_equal(again.audio, built.audio)


async def test_a_human_hesitation_does_not_end_the_turn(speech_models: SpeechModels) -> None:
    # "Please enter | your password, followed by the pound key." with 1.2 s of silence after "enter".
    cut = next(c for c in human_speech.cuts("tuning") if c.text.startswith("Please enter | your password"))
    built = human_speech.build(cut)
    listener = Listener(speech_models, speed=50)
    events = await feed_all(listener, with_silence(0.4, built.audio, 2.5))
    await listener.aclose()
    ends = of_type(events, "turn_end")
    assert len(ends) == 1, events
    assert ends[0].time_s > 0.4 + built.end_s
    assert "pound" in ends[0].text.lower()
