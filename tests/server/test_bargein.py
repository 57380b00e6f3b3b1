"""Barge-in: the policy (real interruptions stop the assistant; coughs, backchannels and echo do not) and the
session holding playback at voice onset, then stopping it on words or resuming it."""

from __future__ import annotations

import pytest
from fake_llm import FakeLLM, Script
from loop_guard import no_loop_exceptions  # noqa: F401  (autouse fixture)
from session_script import CHUNK, conversation, speech

from voicechat.bargein import BargeInPolicy, is_backchannel, is_echo

ASSISTANT = "The capital of France is Paris. It is known for the Eiffel Tower and fine food."


@pytest.mark.parametrize(
    "text",
    [
        "Mm-hmm.", "yeah", "Okay.", "uh huh", "right, right", "I see.",
        # several in a row, merged by the transcriber and embellished with words of its own
        "Mm-hmm. Okay. Uh-huh.", "And then... Okay.", "Mm-hmm, okay, uh-huh, yeah, right.", "Oh, okay, and then, mm-hmm.",
    ],
)
def test_backchannels(text: str) -> None:
    assert is_backchannel(text)


@pytest.mark.parametrize("text", ["wait, stop", "What about Germany?", "no that's wrong", "and then what", "okay, but why", "Then"])
def test_not_backchannels(text: str) -> None:
    assert not is_backchannel(text)


def test_echo_of_the_assistant_is_recognised() -> None:
    assert is_echo("known for the Eiffel tower", ASSISTANT)
    assert not is_echo("what about Berlin then", ASSISTANT)
    assert not is_echo("", ASSISTANT)


def test_policy() -> None:
    policy = BargeInPolicy()
    assert policy.should_interrupt("wait, what about Germany", 0.9, ASSISTANT, client_playing=False)
    assert not policy.should_interrupt("mm-hmm", 1.0, ASSISTANT, client_playing=False)  # backchannel
    # three backchannels 1.2 s apart, merged into one utterance and embellished: still no interruption
    assert not policy.should_interrupt("And then... Okay.", 3.5, ASSISTANT, client_playing=False)
    assert not policy.should_interrupt("Mm-hmm. Okay. Uh-huh.", 3.5, ASSISTANT, client_playing=True)
    assert not policy.should_interrupt("wait stop", 0.2, ASSISTANT, client_playing=False)  # a cough-length burst
    assert not policy.should_interrupt("the Eiffel tower and fine food", 2.0, ASSISTANT, client_playing=True)
    # While the client plays audio, two words are not enough (the echo canceller may leak).
    assert not policy.should_interrupt("stop now", 0.9, ASSISTANT, client_playing=True)
    assert policy.should_interrupt("stop, tell me about Berlin", 1.2, ASSISTANT, client_playing=True)


@pytest.mark.parametrize(
    ("heard", "speech_s"),
    [
        ("And then turn.", 0.61),  # tiny.en on espeak's "Mm-hmm." (0.61 s of voice, over the 0.5 s bar)
        ("And then them okay.", 1.15),  # on "Mm-hmm, okay." (1.15 s): long enough, one carrying word
        ("And then the...", 0.8),
    ],
)
def test_a_misheard_backchannel_does_not_interrupt(heard: str, speech_s: float) -> None:
    assert not BargeInPolicy().should_interrupt(heard, speech_s, ASSISTANT, client_playing=False)


@pytest.mark.parametrize(("heard", "speech_s"), [("Wait, stop.", 0.58), ("Stop it.", 0.6), ("okay, but why", 0.7)])
def test_short_real_interruptions_still_interrupt(heard: str, speech_s: float) -> None:
    assert BargeInPolicy().should_interrupt(heard, speech_s, ASSISTANT, client_playing=False)


def test_too_little_voice_never_interrupts_whatever_the_words() -> None:
    policy = BargeInPolicy()
    assert policy.real_words("Wait, stop.", ASSISTANT, client_playing=False)
    assert not policy.should_interrupt("Wait, stop.", 0.42, ASSISTANT, client_playing=False)


# --- the session: hold at voice onset, then stop or resume (scripted, session_script.py) -------------

REPLY = "Paris is the capital of France. It has about two million people. The Seine runs through it."


@pytest.fixture
def llm_server():
    with FakeLLM(Script(reply=REPLY)) as fake:
        yield fake


async def playing_reply(conv) -> int:  # type: ignore[no-untyped-def]
    """A reply the client has started playing; returns its turn id."""
    turn = await conv.say("Tell me about Paris")
    await conv.next("tts_end", turn_id=turn)
    conv.send({"type": "tts_start", "turn_id": turn})
    conv.send({"type": "playback", "turn_id": turn, "played_samples": 4 * CHUNK})
    return turn


def kinds_after(conv, index: int) -> list[str]:  # type: ignore[no-untyped-def]
    return [m["type"] for m in conv.ws.messages[index:] if m["type"] != "status"]


async def test_voice_over_the_assistant_holds_its_playback_at_once_and_words_stop_it(llm_server) -> None:
    async with conversation(llm_server) as conv:
        turn = await playing_reply(conv)
        before = len(conv.ws.messages)
        await conv.hear(speech("speech_started"), playing=True)
        # The first thing the client hears of the onset is the hold, before any words are known.
        assert kinds_after(conv, before) == ["tts_pause"] and conv.of_type("tts_pause") == [{"type": "tts_pause", "turn_id": turn}]
        await conv.hear(speech("partial", "Wait, tell me about Berlin instead", speech_s=1.0))
        await conv.next("stop_tts", turn_id=turn)
        assert kinds_after(conv, before)[:4] == ["tts_pause", "tts_interruption", "stop_tts", "final_assistant_answer"]
        assert not conv.of_type("tts_resume")


@pytest.mark.parametrize("heard", ["", "Mm-hmm. Okay. Uh-huh.", "And then... Okay."])
async def test_a_cough_or_backchannels_resume_the_held_reply_and_it_plays_to_its_end(llm_server, heard: str) -> None:
    async with conversation(llm_server) as conv:
        turn = await playing_reply(conv)
        await conv.hear(speech("speech_started"), playing=True)
        await conv.next("tts_pause", turn_id=turn)
        await conv.hear(speech("partial", heard, speech_s=0.8) if heard else speech("speech_started"))
        await conv.hear(speech("turn_end", heard, speech_s=0.8 if heard else 0.2))
        await conv.next("tts_resume", turn_id=turn)
        conv.send({"type": "tts_stop", "turn_id": turn, "played_samples": conv.sent_samples(turn)})
        await conv.state_becomes("listening")
        assert not conv.of_type("stop_tts") and not conv.of_type("tts_interruption")
        assert [m["turn_id"] for m in conv.of_type("final_user_request")] == [turn]  # no new user turn
        await conv.type("Thanks")
        await conv.next("tts_end", turn_id=turn + 1)
        assert conv.llm_messages()[1] == ("assistant", REPLY)  # all of it was heard


@pytest.mark.parametrize("heard", ["", "Mm-hmm.", "And then turn."])
async def test_a_held_reply_resumes_when_the_voice_pauses_without_real_words(llm_server, heard: str) -> None:
    """The hold ends at the listener's speech_paused (PAUSED_AFTER_S of silence), not at the turn's end."""
    async with conversation(llm_server) as conv:
        turn = await playing_reply(conv)
        await conv.hear(speech("speech_started"), playing=True)
        await conv.next("tts_pause", turn_id=turn)
        if heard:
            await conv.hear(speech("partial", heard, speech_s=0.61))
        before = len(conv.ws.messages)
        await conv.hear(speech("speech_paused", speech_s=0.61))
        await conv.next("tts_resume", turn_id=turn)
        assert kinds_after(conv, before) == ["tts_resume"]
        await conv.hear(speech("turn_end", heard, speech_s=0.61))  # the turn ends later: nothing more to do
        await conv.settled()
        assert len(conv.of_type("tts_resume")) == 1 and not conv.of_type("stop_tts")
        conv.send({"type": "tts_stop", "turn_id": turn, "played_samples": conv.sent_samples(turn)})
        await conv.state_becomes("listening")
        assert [m["turn_id"] for m in conv.of_type("final_user_request")] == [turn]  # no new user turn


async def test_real_words_keep_the_hold_through_a_pause_and_the_turn_end_stops_it(llm_server) -> None:
    """ "Wait, stop." heard at 0.42 s of voice (under the 0.5 s bar): no resume at the pause; the final stops it."""
    async with conversation(llm_server) as conv:
        turn = await playing_reply(conv)
        await conv.hear(speech("speech_started"), playing=True)
        await conv.next("tts_pause", turn_id=turn)
        await conv.hear(speech("partial", "wait stop", speech_s=0.42), speech("speech_paused", speech_s=0.58))
        await conv.settled()
        assert not conv.of_type("tts_resume") and not conv.of_type("stop_tts")
        await conv.hear(speech("turn_end", "Wait, stop.", speech_s=0.58))
        await conv.next("stop_tts", turn_id=turn)
        assert not conv.of_type("tts_resume")


async def test_voice_while_nothing_is_audible_holds_nothing(llm_server) -> None:
    async with conversation(llm_server) as conv:
        turn = await conv.say("Tell me about Paris")
        await conv.next("tts_end", turn_id=turn)
        conv.send({"type": "tts_stop", "turn_id": turn, "played_samples": conv.sent_samples(turn)})
        await conv.state_becomes("listening")
        await conv.hear(speech("speech_started"))
        await conv.settled()
        assert not conv.of_type("tts_pause")
