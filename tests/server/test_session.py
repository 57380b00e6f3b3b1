"""The conversation core, scripted: speculation, barge-in at every moment of a reply, history trimmed to
what was heard, interrupts, typed turns, failures and disconnects, each in milliseconds (session_script.py)."""

from __future__ import annotations

import asyncio

import pytest
from fake_llm import FakeLLM, Script
from loop_guard import no_loop_exceptions  # noqa: F401  (autouse fixture)
from session_script import CHUNK, conversation, speech

from voicechat.session import ERROR_REPEAT_S

REPLY = "Paris is the capital of France. It has about two million people. The Seine runs through it."
FIRST = "Paris is the capital of France."  # the segmenter's first segment of REPLY: six words, six chunks
BARGE_IN = "Wait, tell me about Berlin instead"


@pytest.fixture
def llm_server():
    with FakeLLM(Script(reply=REPLY)) as fake:
        yield fake


async def test_a_spoken_turn_is_answered_played_and_remembered(llm_server: FakeLLM) -> None:
    async with conversation(llm_server) as conv:
        turn = await conv.say("What is the capital of France?")
        end = await conv.next("tts_end", turn_id=turn)
        final = await conv.next("final_assistant_answer", turn_id=turn)
        assert final["content"] == REPLY and final["interrupted"] is False
        assert end["samples"] == conv.sent_samples(turn) == len(REPLY.split()) * CHUNK
        metrics = await conv.next("turn_metrics", turn_id=turn)
        assert metrics["endpointing_ms"] == 400.0 and metrics["stt_ms"] == 30.0
        assert metrics["llm_first_token_ms"] is not None and metrics["tts_first_chunk_ms"] == 50.0
        assert conv.states() == ["listening", "hearing", "thinking", "speaking"]
        # The client reports nothing: it is taken to play in real time, so it is still speaking...
        conv.clock.advance(len(REPLY.split()) * 0.1)
        await conv.settled()
        assert conv.states()[-1] == "speaking"
        conv.clock.advance(0.6)  # ...until its audio had time to play, and a little slack
        await conv.state_becomes("listening")
        await conv.type("And Spain?")
        await conv.next("tts_end", turn_id=turn + 1)
        assert conv.llm_messages() == [
            ("user", "What is the capital of France?"),
            ("assistant", REPLY),
            ("user", "And Spain?"),
        ]
        assert conv.tts.params[0].voice == "default" and conv.tts.params[0].chunk_size == conv.settings.chunk_size


# --- speculation ---------------------------------------------------------------------------------


async def test_speculation_starts_in_the_pause_and_is_confirmed(llm_server: FakeLLM) -> None:
    async with conversation(llm_server) as conv:
        await conv.hear(speech("speech_started"), speech("turn_probably_complete", "What is the capital of France?"))
        record = await asyncio.to_thread(llm_server.wait_chat_ended)  # the LLM answered ahead...
        await conv.tts.changes.until(lambda: conv.tts.chunks_made >= 1)  # ...and the TTS spoke ahead
        assert record.completed
        assert not conv.of_type("partial_assistant_answer") and not conv.ws.audio  # nobody heard it
        assert not conv.of_type("final_user_request")
        await conv.hear(speech("turn_end", "what is the capital of France"))  # same words: confirmed
        final_user = await conv.next("final_user_request")
        assert final_user["turn_id"] == 1 and final_user["content"] == "what is the capital of France"
        await conv.next("final_assistant_answer", turn_id=1, content=REPLY)
        assert len(llm_server.chat_requests()) == 1
        assert conv.sent_samples(1) == len(REPLY.split()) * CHUNK
        assert conv.of_type("partial_assistant_answer")[-1]["content"] == REPLY


async def test_speculation_is_dropped_when_the_user_goes_on(llm_server: FakeLLM) -> None:
    llm_server.set_scripts(Script(reply=REPLY, token_delay=0.2), Script(reply="Madrid."))
    async with conversation(llm_server) as conv:
        await conv.hear(speech("speech_started"), speech("turn_probably_complete", "What is the capital"))
        await asyncio.to_thread(llm_server.wait_chat_requests)
        await conv.hear(speech("speech_started"))  # the user goes on talking
        record = await asyncio.to_thread(llm_server.wait_chat_ended)
        assert record.client_closed and not record.completed
        await conv.hear(speech("turn_end", "What is the capital of Spain?"))
        await conv.next("final_assistant_answer", content="Madrid.")
        assert [m["turn_id"] for m in conv.of_type("final_user_request")] == [2]
        assert set(conv.ws.audio) == {2}
        assert conv.llm_messages() == [("user", "What is the capital of Spain?")]


async def test_speculation_with_other_words_than_the_final_text_is_replaced(llm_server: FakeLLM) -> None:
    llm_server.set_scripts(Script(reply="Guess.", first_token_delay=0.2), Script(reply="Paris."))
    async with conversation(llm_server) as conv:
        await conv.hear(speech("turn_probably_complete", "What is the capital"))
        await asyncio.to_thread(llm_server.wait_chat_requests)
        await conv.hear(speech("turn_end", "What is the capital of France?"))
        await conv.next("final_assistant_answer", turn_id=2, content="Paris.")
        assert not conv.of_type("final_assistant_answer", turn_id=1)
        assert conv.llm_messages(0) == [("user", "What is the capital")]
        assert conv.llm_messages(1) == [("user", "What is the capital of France?")]
        assert llm_server.wait_chat_ended(0).client_closed


async def test_an_error_of_a_speculation_is_told_only_once_it_is_confirmed(llm_server: FakeLLM) -> None:
    llm_server.set_scripts(Script(status=500, error_message="the GPU caught fire"))
    async with conversation(llm_server) as conv:
        await conv.hear(speech("turn_probably_complete", "Hello there"))
        await asyncio.to_thread(llm_server.wait_chat_requests)
        await conv.hear(speech("turn_end", "Hello there"))
        assert (await conv.next("error"))["code"] == "llm_error"
        assert (await conv.next("final_assistant_answer", turn_id=1))["content"] == ""
        kinds = [m["type"] for m in conv.ws.messages]
        assert kinds.index("final_user_request") < kinds.index("error")


# --- barge-in --------------------------------------------------------------------------------------


async def barge_in(conv, turn: int) -> dict:  # type: ignore[no-untyped-def]
    await conv.hear(speech("speech_started"), speech("partial", BARGE_IN), playing=True)
    await conv.next("tts_interruption", turn_id=turn)
    await conv.next("stop_tts", turn_id=turn)
    return await conv.next("final_assistant_answer", turn_id=turn, interrupted=True)


async def test_barge_in_before_the_first_audio(llm_server: FakeLLM) -> None:
    async with conversation(llm_server) as conv:
        conv.tts.hold()
        turn = await conv.say("Tell me about Paris")
        await conv.next("partial_assistant_answer", turn_id=turn)
        final = await barge_in(conv, turn)
        assert final == {**final, "content": "", "interrupted": True}
        assert turn not in conv.ws.audio and conv.states()[-1] == "interrupted"
        await conv.hear(speech("turn_end", BARGE_IN))
        await conv.next("final_user_request", content=BARGE_IN)
        await asyncio.to_thread(llm_server.wait_chat_requests, 2)
        assert conv.llm_messages() == [("user", f"Tell me about Paris\n{BARGE_IN}")]  # nothing was heard


async def test_barge_in_mid_chunk_keeps_the_words_heard(llm_server: FakeLLM) -> None:
    async with conversation(llm_server) as conv:
        conv.tts.hold()
        turn = await conv.say("Tell me about Paris")
        conv.tts.release(8)  # the first sentence (six chunks), two words of the next
        await conv.samples(turn, 8 * CHUNK)
        conv.send({"type": "tts_start", "turn_id": turn})
        conv.send({"type": "playback", "turn_id": turn, "played_samples": int(2.5 * CHUNK)})
        final = await barge_in(conv, turn)
        assert final["content"] == "Paris is" and final["interrupted"]
        assert conv.tts.open_streams == 0  # TTS stopped at once
        await conv.hear(speech("turn_end", BARGE_IN))
        await conv.next("final_user_request", content=BARGE_IN)
        await asyncio.to_thread(llm_server.wait_chat_requests, 2)
        assert conv.llm_messages()[:2] == [("user", "Tell me about Paris"), ("assistant", "Paris is —")]


async def test_barge_in_during_the_last_sentence(llm_server: FakeLLM) -> None:
    async with conversation(llm_server) as conv:
        conv.tts.hold()
        turn = await conv.say("Tell me about Paris")
        words = len(REPLY.split())
        conv.tts.release(words - 1)
        await conv.samples(turn, (words - 1) * CHUNK)
        conv.send({"type": "playback", "turn_id": turn, "played_samples": (words - 3) * CHUNK})
        final = await barge_in(conv, turn)
        assert final["content"] == REPLY.rsplit(" ", 3)[0] and final["interrupted"]
        assert not conv.of_type("tts_end", turn_id=turn)


async def test_barge_in_after_the_reply_is_generated_but_still_playing(llm_server: FakeLLM) -> None:
    async with conversation(llm_server) as conv:
        turn = await conv.say("Tell me about Paris")
        await conv.next("final_assistant_answer", turn_id=turn, interrupted=False)  # all generated and sent
        conv.send({"type": "playback", "turn_id": turn, "played_samples": 8 * CHUNK})
        final = await barge_in(conv, turn)
        assert final["content"] == "Paris is the capital of France. It has" and final["interrupted"]
        await conv.type("Go on")
        await conv.next("tts_end", turn_id=turn + 1)
        assert conv.llm_messages()[1] == ("assistant", "Paris is the capital of France. It has —")


async def test_echo_and_backchannels_do_not_interrupt(llm_server: FakeLLM) -> None:
    async with conversation(llm_server) as conv:
        turn = await conv.say("Tell me about Paris")
        await conv.next("tts_end", turn_id=turn)
        await conv.hear(speech("partial", "the capital of France", speech_s=1.0), playing=True)  # its own echo
        await conv.hear(speech("turn_end", "mm-hmm", speech_s=0.6), playing=True)  # a backchannel
        await conv.hear(speech("partial", "Wait a", speech_s=0.3), playing=True)  # too short yet
        await conv.settled()
        assert not conv.of_type("tts_interruption") and not conv.of_type("stop_tts")
        assert [m["turn_id"] for m in conv.of_type("final_user_request")] == [turn]


async def test_the_client_stopping_playback_early_trims_the_history(llm_server: FakeLLM) -> None:
    async with conversation(llm_server) as conv:
        turn = await conv.say("Tell me about Paris")
        await conv.next("tts_end", turn_id=turn)
        conv.send({"type": "tts_start", "turn_id": turn})
        conv.send({"type": "tts_stop", "turn_id": turn, "played_samples": 6 * CHUNK})
        await conv.state_becomes("listening")
        await conv.type("Thanks")
        await conv.next("tts_end", turn_id=turn + 1)
        assert conv.llm_messages()[1] == ("assistant", f"{FIRST} —")


async def test_reports_about_other_turns_are_ignored(llm_server: FakeLLM) -> None:
    async with conversation(llm_server) as conv:
        turn = await conv.say("Tell me about Paris")
        await conv.next("tts_end", turn_id=turn)
        for other in (0, turn + 1, 10**9):
            conv.send({"type": "tts_stop", "turn_id": other, "played_samples": 1})
        conv.send({"type": "tts_stop", "turn_id": turn, "played_samples": 10**9})  # more than was sent
        await conv.state_becomes("listening")
        await conv.type("Thanks")
        await conv.next("tts_end", turn_id=turn + 1)
        assert conv.llm_messages()[1] == ("assistant", REPLY)


# --- the client's commands mid-turn --------------------------------------------------------------------


async def test_interrupt_mid_turn(llm_server: FakeLLM) -> None:
    async with conversation(llm_server) as conv:
        conv.tts.hold()
        turn = await conv.say("Tell me about Paris")
        conv.tts.release(3)
        await conv.samples(turn, 3 * CHUNK)
        conv.send({"type": "interrupt"})
        await conv.next("stop_tts", turn_id=turn)
        final = await conv.next("final_assistant_answer", turn_id=turn)
        assert final["interrupted"] and final["content"] == ""  # the clock never moved: nothing was heard yet
        assert not conv.of_type("tts_interruption")  # that is for barge-in only
        await conv.state_becomes("listening")


async def test_clear_history_mid_turn(llm_server: FakeLLM) -> None:
    async with conversation(llm_server) as conv:
        await conv.type("Remember the word banana")
        await conv.next("tts_end", turn_id=1)
        conv.send({"type": "tts_stop", "turn_id": 1, "played_samples": 10**6})
        conv.tts.hold()
        turn = await conv.type("Tell me about Paris")
        await conv.next("partial_assistant_answer", turn_id=turn)
        conv.send({"type": "clear_history"})
        await conv.next("history_cleared")
        await conv.next("stop_tts", turn_id=turn)
        await conv.state_becomes("listening")
        assert conv.listener.resets == 1
        conv.tts.release()
        await conv.type("Fresh start")
        await conv.next("tts_end", turn_id=turn + 1)
        assert conv.llm_messages() == [("user", "Fresh start")]


async def test_a_typed_message_during_a_spoken_turn(llm_server: FakeLLM) -> None:
    llm_server.set_scripts(Script(reply=REPLY), Script(reply="Sure."))
    async with conversation(llm_server) as conv:
        conv.tts.hold()
        turn = await conv.say("Tell me about Paris")
        conv.tts.release(7)
        await conv.samples(turn, 7 * CHUNK)
        conv.send({"type": "playback", "turn_id": turn, "played_samples": 2 * CHUNK})
        conv.send({"type": "text_message", "content": "Actually, say hi"})
        await conv.next("stop_tts", turn_id=turn)
        assert (await conv.next("final_assistant_answer", turn_id=turn))["content"] == "Paris is"
        assert (await conv.next("partial_user_request", content="Actually, say hi"))
        conv.tts.release()
        await conv.next("final_assistant_answer", turn_id=turn + 1, content="Sure.")
        assert conv.llm_messages() == [
            ("user", "Tell me about Paris"),
            ("assistant", "Paris is —"),
            ("user", "Actually, say hi"),
        ]


async def test_settings_change_the_next_reply_and_the_listener(llm_server: FakeLLM) -> None:
    async with conversation(llm_server) as conv:
        conv.send({"type": "set_settings", "settings": {"voice": "alice", "exaggeration": 0.8, "speed": 70}})
        settings = (await conv.next("settings"))["settings"]
        assert settings["voice"] == "alice" and settings["exaggeration"] == 0.8 and conv.listener.speed == 70
        conv.send({"type": "set_settings", "settings": {"voice": "nobody"}})
        assert (await conv.next("error"))["code"] == "unknown_voice"
        await conv.type("Hi")
        await conv.next("tts_end", turn_id=1)
        assert conv.tts.params[0].voice == "alice" and conv.tts.params[0].exaggeration == 0.8


# --- failures --------------------------------------------------------------------------------------


async def test_llm_failure_mid_reply(llm_server: FakeLLM) -> None:
    llm_server.set_scripts(Script(reply=REPLY, stream_error_after=8, error_message="GPU fell over"))
    async with conversation(llm_server) as conv:
        turn = await conv.type("Tell me about Paris")
        error = await conv.next("error")
        assert error["code"].startswith("llm") and "GPU fell over" in error["message"]
        final = await conv.next("final_assistant_answer", turn_id=turn)
        assert REPLY.startswith(final["content"]) and FIRST in final["content"] and not final["interrupted"]
        assert conv.sent_samples(turn) > 0
        llm_server.set_scripts(Script(reply="Back again."))
        conv.send({"type": "tts_stop", "turn_id": turn, "played_samples": 10**6})
        await conv.type("Still there?")
        await conv.next("final_assistant_answer", turn_id=turn + 1, content="Back again.")


async def test_tts_failure_mid_reply_skips_to_the_next_sentence(llm_server: FakeLLM) -> None:
    async with conversation(llm_server) as conv:
        conv.tts.fail_on = "million"
        turn = await conv.type("Tell me about Paris")
        error = await conv.next("error")
        assert error["code"] == "tts_error" and "million" in error["message"]
        end = await conv.next("tts_end", turn_id=turn)
        spoken_words = len(REPLY.split()) - 2  # "It has about two" made it; "million people." did not
        assert end["samples"] == conv.sent_samples(turn) == spoken_words * CHUNK
        assert (await conv.next("final_assistant_answer", turn_id=turn))["content"] == REPLY


async def test_the_same_error_is_told_once_every_few_seconds(llm_server: FakeLLM) -> None:
    async with conversation(llm_server) as conv:
        for _ in range(3):
            conv.send("not json")
        conv.send({"type": "unknown"})
        await conv.settled()
        assert [e["code"] for e in conv.of_type("error")] == ["bad_json", "unknown_type"]
        conv.clock.advance(ERROR_REPEAT_S)
        conv.send("not json")
        await conv.settled()
        assert [e["code"] for e in conv.of_type("error")] == ["bad_json", "unknown_type", "bad_json"]


# --- disconnects: every state ends clean (checked by conversation() on the way out) ---------------------


@pytest.mark.parametrize("moment", ["listening", "hearing", "speculating", "thinking", "speaking", "playing"])
async def test_disconnect_at_each_state(llm_server: FakeLLM, moment: str) -> None:
    llm_server.set_scripts(Script(reply=REPLY, token_delay=0.05 if moment in ("thinking", "speculating") else 0.0))
    async with conversation(llm_server) as conv:
        if moment == "hearing":
            await conv.hear(speech("speech_started"), speech("partial", "Tell me"))
        elif moment == "speculating":
            await conv.hear(speech("turn_probably_complete", "Tell me about Paris"))
            await asyncio.to_thread(llm_server.wait_chat_requests)
        elif moment == "thinking":
            conv.tts.hold()
            await conv.say("Tell me about Paris")
            await conv.next("partial_assistant_answer")
        elif moment == "speaking":
            conv.tts.hold()
            turn = await conv.say("Tell me about Paris")
            conv.tts.release(2)
            await conv.samples(turn, 2 * CHUNK)
        elif moment == "playing":
            turn = await conv.say("Tell me about Paris")
            await conv.next("tts_end", turn_id=turn)
        state = conv.states()[-1]
    assert state == {"speculating": "listening", "playing": "speaking"}.get(moment, moment)
    if moment in ("speculating", "thinking"):
        assert llm_server.wait_chat_ended().client_closed


async def test_the_heard_text_is_a_prefix_of_the_reply_as_shown(llm_server: FakeLLM) -> None:
    shown = "**Paris** is the capital of France.\n\nIt has about two million people, and *many* bridges."
    llm_server.set_scripts(Script(reply=shown))
    async with conversation(llm_server) as conv:
        conv.tts.hold()
        turn = await conv.type("Tell me about Paris")
        conv.tts.release(15)  # both sentences, six chunks and nine
        await conv.samples(turn, 15 * CHUNK)
        conv.send({"type": "playback", "turn_id": turn, "played_samples": 8 * CHUNK})
        final = await barge_in(conv, turn)
        assert final["content"] == "**Paris** is the capital of France.\n\nIt has"  # the page dims the rest
        assert shown.startswith(final["content"])


async def test_a_send_that_finds_the_client_gone_ends_the_reply_quietly(llm_server: FakeLLM, caplog) -> None:  # type: ignore[no-untyped-def]
    async with conversation(llm_server) as conv:
        conv.tts.hold()
        turn = await conv.type("Tell me about Paris")
        conv.tts.release(2)
        await conv.samples(turn, 2 * CHUNK)
        conv.ws.gone = True  # the next audio frame's send fails, as a stopped reader's would
        conv.tts.release()
        await conv.tts.changes.until(lambda: conv.tts.open_streams == 0)
    assert not [r for r in caplog.records if r.levelname == "ERROR"]  # no traceback; conversation() checks the gauges
