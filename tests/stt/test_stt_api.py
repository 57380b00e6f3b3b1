"""The Listener's contract at its edges: bad input, other sample rates, reset, close, the policy, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stt_helpers import RATE, feed_all, of_type, say, trimmed, wer, with_silence
from voicechat.audio import AudioFormatError, int16_to_float32, pcm16_bytes_to_int16, resample, write_wav
from voicechat.stt.listener import Listener, ListenerClosed, SpeechModels
from voicechat.stt.transcriber import Transcript, clean_text
from voicechat.stt.turn import TurnPolicy, pause_ends_turn, text_says_incomplete

TEXT = "Could you play some relaxing music in the bedroom?"


@pytest.mark.parametrize(
    "bad",
    [
        [1, 2, 3],
        b"\x00\x01",
        np.zeros(320, dtype=np.float32),
        np.zeros(320, dtype=np.int32),
        np.zeros((160, 2), dtype=np.int16),
    ],
    ids=["list", "bytes", "float32", "int32", "stereo"],
)
async def test_wrong_arrays_are_a_value_error_and_the_listener_lives_on(listener: Listener, bad: object) -> None:
    with pytest.raises(ValueError):
        await listener.feed(bad)  # type: ignore[arg-type]
    events = await feed_all(listener, with_silence(0.3, say(TEXT), 2.5))
    assert len(of_type(events, "turn_end")) == 1


def test_odd_byte_counts_are_refused_by_the_decoder() -> None:
    with pytest.raises(AudioFormatError):
        pcm16_bytes_to_int16(b"\x00\x01\x02")
    assert len(pcm16_bytes_to_int16(b"")) == 0


async def test_zero_length_and_one_sample_frames(listener: Listener) -> None:
    assert await listener.feed(np.zeros(0, dtype=np.int16)) == []
    speech = with_silence(0.3, say(TEXT), 2.5)
    events = []
    for offset in range(0, len(speech), 997):  # odd-sized chunks that never line up with VAD frames
        events += await listener.feed(speech[offset : offset + 997])
        events += await listener.feed(np.zeros(0, dtype=np.int16))
    assert len(of_type(events, "turn_end")) == 1
    assert listener.time_s == pytest.approx(len(speech) / RATE, abs=0.033)


async def test_a_multi_megabyte_frame_is_processed_in_one_call(listener: Listener) -> None:
    audio = with_silence(1.0, say(TEXT), 2.5, say("Thank you very much for your help."), 2.5)
    audio = np.concatenate([audio, np.zeros(70 * RATE, dtype=np.int16)])  # ~2.8 MB in all
    assert audio.nbytes > 2_000_000
    events = await listener.feed(audio)
    assert len(of_type(events, "turn_end")) == 2
    assert events[-1].type == "turn_end"


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
async def test_other_sample_rates_are_resampled_inside(speech_models: SpeechModels, rate: int) -> None:
    pcm = resample(with_silence(0.3, say(TEXT), 2.5), RATE, rate)
    listener = Listener(speech_models, sample_rate=rate)
    events = await feed_all(listener, pcm, chunk=rate // 50, rate=rate)
    await listener.aclose()
    ends = of_type(events, "turn_end")
    assert len(ends) == 1
    assert wer([TEXT], [ends[0].text]) < 0.3
    assert 0.3 < ends[0].end_of_speech_s < ends[0].time_s < len(pcm) / rate  # times in seconds, whatever the rate


@pytest.mark.parametrize(
    "kwargs",
    [{"sample_rate": 0}, {"sample_rate": 4000}, {"sample_rate": 16000.0}, {"speed": 101}, {"speed": -1},
     {"max_utterance_s": 0.5}, {"max_utterance_s": float("nan")}],
)
def test_bad_settings_are_a_value_error(speech_models: SpeechModels, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Listener(speech_models, **kwargs)


async def test_set_speed_checks_its_value(listener: Listener) -> None:
    listener.set_speed(0)
    listener.set_speed(100)
    for bad in (101, -5, 50.5, True):
        with pytest.raises(ValueError):
            listener.set_speed(bad)  # type: ignore[arg-type]


async def test_reset_mid_turn_forgets_it_and_the_next_turn_is_clean(listener: Listener) -> None:
    speech = with_silence(0.3, say("I was going to say something about the weather."))
    half = len(speech) // 2
    events = await feed_all(listener, speech[:half])
    assert of_type(events, "speech_started")
    listener.reset()
    events = await feed_all(listener, np.concatenate([speech[half:], np.zeros(3 * RATE, np.int16)]))
    # The rest of the sentence, still being spoken, may become a turn of its own; never a stuck state.
    assert len(of_type(events, "turn_end")) <= 1
    events = await feed_all(listener, with_silence(say(TEXT), 2.5))
    ends = of_type(events, "turn_end")
    assert len(ends) == 1 and wer([TEXT], [ends[0].text]) < 0.3


async def test_reset_while_the_final_is_awaited(listener: Listener) -> None:
    import asyncio

    audio = with_silence(0.3, say(TEXT), 2.5)
    task = asyncio.create_task(listener.feed(audio))
    await asyncio.sleep(0.05)
    listener.reset()
    await task  # finishes, whatever it returns; nothing hangs or raises
    events = await feed_all(listener, audio)
    assert len(of_type(events, "turn_end")) == 1


async def test_speech_resumed_after_probably_complete_starts_again(speech_models: SpeechModels) -> None:
    """The client pauses mid-gap; poll() hands out turn_probably_complete once the models are done; then
    the user goes on, so a new speech_started voids the speculation and one turn holds both parts."""
    import asyncio

    class JudgesEveryPauseComplete(Listener):
        # The speculation mechanism, not the judgement: espeak's finished sentences may well be judged
        # unfinished by Smart Turn (see docs/speech-input.md), and then no hint would ever come.
        def _is_complete(self, smart: float | None, transcript: Transcript) -> bool:
            return True

    listener = JudgesEveryPauseComplete(speech_models, speed=0)  # complete wait 0.6 s: the 0.45 s gap stays inside the turn
    events = await feed_all(listener, with_silence(0.3, trimmed(say("What is the capital of France?")), 0.3))
    while not of_type(events, "turn_probably_complete"):  # however long the models take on this machine
        events += await listener.poll()
        await asyncio.sleep(0.05)
    (hint,) = of_type(events, "turn_probably_complete")
    assert "france" in hint.text.lower() and hint.end_of_speech_s < hint.time_s
    assert not of_type(events, "turn_end")
    events += await feed_all(listener, with_silence(0.15, trimmed(say("And of Spain?")), 3.5))  # max wait: 3.2 s
    await listener.aclose()
    kinds = [event.type for event in events]
    assert kinds.count("turn_end") == 1 and kinds[-1] == "turn_end", kinds
    assert "speech_started" in kinds[kinds.index("turn_probably_complete") :]
    assert "spain" in events[-1].text.lower() and "france" in events[-1].text.lower()


async def test_closed_listener_refuses_audio(speech_models: SpeechModels) -> None:
    listener = Listener(speech_models)
    await listener.aclose()
    await listener.aclose()  # idempotent
    with pytest.raises(ListenerClosed):
        await listener.feed(np.zeros(320, dtype=np.int16))
    with pytest.raises(ListenerClosed):
        await listener.poll()


async def test_poll_without_audio_is_harmless(listener: Listener) -> None:
    assert await listener.poll() == []
    await feed_all(listener, with_silence(0.3, say(TEXT)[: RATE]))
    assert all(event.type == "partial" for event in await listener.poll())


def test_policy_scales_with_speed() -> None:
    policies = [TurnPolicy.for_speed(speed) for speed in (0, 25, 50, 75, 100)]
    for slower, faster in zip(policies, policies[1:]):
        assert faster.complete_wait_s < slower.complete_wait_s and faster.max_wait_s < slower.max_wait_s
    assert policies[2].complete_wait_s == pytest.approx(0.3) and policies[2].max_wait_s == pytest.approx(1.6)
    assert policies[0].max_wait_s == pytest.approx(3.2) and policies[-1].complete_wait_s == pytest.approx(0.15)
    for policy in policies:
        assert policy.probe_s <= policy.complete_wait_s < policy.max_wait_s


@pytest.mark.parametrize(
    ("text", "incomplete"),
    [
        ("I would like to order a", True),
        ("Could you recommend a?", True),  # an article never ends a sentence, question mark or not
        ("Can you translate good morning into?", True),  # Whisper's question mark does not save it
        ("Where are you from?", True),  # the rare real one just waits the longer pause
        ("Which one?", False),
        ("I want this one, which", True),
        ("so I went there and...", True),
        ("Well, I think,", True),
        ("What time is it?", False),
        ("I like dogs.", False),
        ("Yes, I do.", False),
        ("", False),
    ],
)
def test_text_cue(text: str, incomplete: bool) -> None:
    assert text_says_incomplete(text, "en") is incomplete


@pytest.mark.parametrize(
    ("smart", "text", "logprob", "last_word", "ends"),
    [
        (0.98, "I like dogs.", -0.1, 0.98, True),
        (0.98, "Please check the number and dial again.", -0.3, 0.97, True),
        (0.6, "I like dogs.", -0.2, 0.95, False),  # Smart Turn must be fairly sure
        (0.1, "I like dogs.", 0.0, 1.0, False),  # Smart Turn's "not yet" holds the turn
        (None, "I like dogs.", -0.2, 0.95, False),  # so does a Smart Turn failure: the long wait still ends it
        (0.2, "What time is it?", -0.2, 0.95, False),  # Whisper's question mark is no evidence
        (0.9, "Could you recommend a", -0.2, 0.95, False),  # the words cannot end here
        (0.9, "Please turn off my life, Simmer.", -0.7, 0.95, False),  # Whisper was guessing
        (0.9, "Followed by the panel.", -0.4, 0.3, False),  # it made up the word at the pause
        (0.0, "", 0.0, 1.0, True),  # no words: nothing to wait for
    ],
)
def test_a_pause_ends_the_turn_only_when_all_evidence_agrees(
    smart: float | None, text: str, logprob: float, last_word: float, ends: bool
) -> None:
    assert pause_ends_turn(smart, Transcript(text, logprob, last_word), "en") is ends


def test_whisper_is_sure_of_clear_speech(speech_models: SpeechModels) -> None:
    audio = int16_to_float32(say("What time does the train leave tomorrow morning?"))
    transcript = speech_models.transcriber.submit(audio, final=True).result(timeout=60)
    assert "tomorrow morning" in transcript.text.lower()
    # Clear speech: Whisper is sure of it (it retries a segment itself below -1) and of its last word.
    assert -0.5 < transcript.logprob <= 0
    assert 0.7 < transcript.last_word_probability <= 1


class _CountingWhisper:
    """faster-whisper's CTranslate2 model, counting the 30 s windows it encodes."""

    def __init__(self, model: object) -> None:
        self.model, self.encoded = model, 0

    def encode(self, *args: object, **kwargs: object) -> object:
        self.encoded += 1
        return self.model.encode(*args, **kwargs)

    def __getattr__(self, name: str) -> object:
        return getattr(self.model, name)


def test_a_final_decodes_one_window_only(speech_models: SpeechModels, monkeypatch: pytest.MonkeyPatch) -> None:
    # With word probabilities faster-whisper would decode the trailing silence again as a second
    # window (~0.6 s on a CPU, and it writes "Thank you." there): a final stops after the first.
    whisper = speech_models.transcriber._model
    counting = _CountingWhisper(whisper.model)
    monkeypatch.setattr(whisper, "model", counting)
    audio = int16_to_float32(with_silence(say("Please enter your password."), 3.0))
    transcript = speech_models.transcriber.submit(audio, final=True).result(timeout=60)
    assert "password" in transcript.text.lower() and "thank" not in transcript.text.lower()
    assert transcript.last_word_probability < 1.0  # the words' probabilities were computed
    assert counting.encoded == 1


def test_hallucinations_on_near_silence_are_dropped() -> None:
    assert clean_text("Thank you.", speech_s=0.2) == ""
    assert clean_text(" [BLANK_AUDIO] ", speech_s=3.0) == ""
    assert clean_text("(music) ♪", speech_s=3.0) == ""
    assert clean_text("Thank you.", speech_s=0.8) == "Thank you."  # a real, spoken thank-you
    assert clean_text("Hello there [laughs] friend", speech_s=1.0) == "Hello there friend"


def test_listen_command_prints_json_lines(whisper_tiny_dir: Path, tmp_path: Path) -> None:
    wav = tmp_path / "speech-44k.wav"
    pcm = resample(with_silence(0.3, say(TEXT), 0.5), RATE, 44100)
    write_wav(wav, pcm, 44100)
    result = subprocess.run(
        [sys.executable, "-m", "voicechat.cli", "--log-level", "warning", "listen", str(wav),
         "--stt-model", str(whisper_tiny_dir), "--speed", "70"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["type"] for e in events][0] == "speech_started" and events[-1]["type"] == "turn_end"
    assert all("text" in e for e in events if e["type"] != "speech_started")
    assert wer([TEXT], [events[-1]["text"]]) < 0.3


def test_listen_command_reports_bad_files(whisper_tiny_dir: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF not really a wav")
    for path, flags in ((junk, []), (tmp_path / "missing.wav", []), (junk, ["--speed", "300"])):
        result = subprocess.run(
            [sys.executable, "-m", "voicechat.cli", "listen", str(path), "--stt-model", str(whisper_tiny_dir), *flags],
            capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 2 and "error" in result.stderr and "Traceback" not in result.stderr
