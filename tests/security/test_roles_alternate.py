"""Roles alternate in every LLM request, whatever failed before it: strict chat templates (vLLM with many
models) refuse two user turns in a row, and then every later turn of the conversation would fail.

Scripted in-process (tests/server/session_script.py): the fake LLM records each request's messages.
"""

from __future__ import annotations

import pytest
from fake_llm import FakeLLM, Script
from loop_guard import no_loop_exceptions  # noqa: F401  (autouse fixture)
from server.session_script import conversation, speech

REPLY = "Paris is the capital of France."
FAILURES = {
    "http error": Script(status=500),
    "error before the first word": Script(reply=REPLY, stream_error_after=0),
    "cut before the first word": Script(reply=REPLY, cut_after=0),
    "error after a few words": Script(reply=REPLY, stream_error_after=3),
}


def alternate(messages: list[dict[str, str]]) -> bool:
    """System first, then user and assistant by turns, starting and ending with the user."""
    roles = [m["role"] for m in messages]
    turns = roles[1:]
    return (
        roles[0] == "system"
        and len(turns) % 2 == 1
        and all(role == ("user" if i % 2 == 0 else "assistant") for i, role in enumerate(turns))
    )


def requests(fake: FakeLLM) -> list[list[dict[str, str]]]:
    return [record.body["messages"] for record in fake.chat_requests()]


@pytest.mark.parametrize("failure", list(FAILURES))
async def test_after_a_failed_turn_the_next_request_still_alternates(failure: str) -> None:
    with FakeLLM(Script(reply=REPLY)) as fake:
        fake.set_scripts(Script(reply=REPLY), FAILURES[failure], Script(reply=REPLY), Script(reply=REPLY))
        async with conversation(fake) as conv:
            for text in ("Hello there", "Tell me about Paris", "Are you there?", "And Berlin?"):
                turn = await conv.type(text)
                await conv.next("final_assistant_answer", turn_id=turn)
                conv.send({"type": "tts_stop", "turn_id": turn, "played_samples": 10**7})  # all heard
                await conv.state_becomes("listening")
            assert conv.of_type("error")  # the second turn did fail
        sent = requests(fake)
        assert len(sent) == 4 and all(alternate(messages) for messages in sent), sent
        if failure != "error after a few words":  # nothing heard: the unanswered words go with the next ones
            assert sent[2][-1] == {"role": "user", "content": "Tell me about Paris\nAre you there?"}


async def test_a_turn_interrupted_before_any_word_and_an_empty_turn_keep_roles_alternating() -> None:
    with FakeLLM(Script(reply=REPLY, first_token_delay=0.5)) as fake:
        async with conversation(fake) as conv:
            turn = await conv.type("First question")
            conv.send({"type": "interrupt"})  # before any word was heard: no assistant turn is recorded
            await conv.next("final_assistant_answer", turn_id=turn, interrupted=True)
            await conv.hear(speech("speech_started"), speech("turn_end", ""))  # a turn with no words
            fake.set_scripts(Script(reply=REPLY))
            turn = await conv.say("Second question")
            await conv.next("final_assistant_answer", turn_id=turn, interrupted=False)
        sent = requests(fake)
        assert all(alternate(messages) for messages in sent), sent
        assert sent[-1][1:] == [{"role": "user", "content": "First question\nSecond question"}]


async def test_clear_history_after_a_failure_starts_clean() -> None:
    with FakeLLM(Script(status=500)) as fake:
        async with conversation(fake) as conv:
            turn = await conv.type("This one fails")
            await conv.next("final_assistant_answer", turn_id=turn)
            conv.send({"type": "clear_history"})
            await conv.next("history_cleared")
            fake.set_scripts(Script(reply=REPLY))
            turn = await conv.type("A fresh start")
            await conv.next("final_assistant_answer", turn_id=turn, content=REPLY)
        assert requests(fake)[-1][1:] == [{"role": "user", "content": "A fresh start"}]
