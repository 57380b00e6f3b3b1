"""A long conversation's bookkeeping stays bounded, whatever turn ids the client invents; a client that
leaves while its speech is being answered is an ordinary end, logged at INFO without a traceback.

Scripted in-process (tests/server/session_script.py).
"""

from __future__ import annotations

import asyncio
import logging

from fake_llm import FakeLLM, Script
from loop_guard import no_loop_exceptions  # noqa: F401  (autouse fixture)
from server.session_script import conversation, speech
from starlette.websockets import WebSocketDisconnect

REPLY = "Paris is the capital of France."
TURNS = 120
BUDGET = 1500  # history characters


async def test_many_turns_and_invented_turn_ids_keep_the_bookkeeping_bounded() -> None:
    with FakeLLM(Script(reply=REPLY)) as fake:
        async with conversation(fake, history_max_chars=BUDGET) as conv:
            session = conv.session
            sizes: list[tuple[int, ...]] = []
            for n in range(TURNS):
                turn = await conv.type(f"Question number {n}: tell me about Paris")
                await conv.next("final_assistant_answer", turn_id=turn)
                for invented in (turn + 1000, 10**9 + n, n):  # reports about turns that are not playing
                    conv.send({"type": "tts_start", "turn_id": invented})
                    conv.send({"type": "playback", "turn_id": invented, "played_samples": 10})
                    conv.send({"type": "tts_stop", "turn_id": invented, "played_samples": 10})
                if n % 10 == 0:  # a client mistake (50 of them close the conversation)
                    conv.send({"type": "no_such_type", "n": n})
                conv.send({"type": "tts_stop", "turn_id": turn, "played_samples": 10**7})
                await conv.state_becomes("listening")
                conv.clock.advance(3.0)
                sizes.append(
                    (
                        len(session.playback._turns),
                        len(session._last_error_at),
                        len(asyncio.all_tasks()),
                        len(fake.chat_requests()[-1].body["messages"]),
                    )
                )
            history_chars = sum(len(turn.text) for turn in session.history.turns)
            assert history_chars <= BUDGET  # the history holds its budget
            assert max(size[0] for size in sizes) <= 1  # live turns only, never the invented ones
            assert max(size[1] for size in sizes) <= 2  # one entry per error code, not per message
            assert sizes[-1][2] == sizes[9][2]  # no task left behind by a turn
            assert sizes[-1][3] <= sizes[len(sizes) // 2][3] + 2  # the LLM request stopped growing
            assert session._bad_messages == TURNS // 10  # the unknown types; nothing else counted against it


async def test_a_client_that_leaves_while_its_speech_is_answered_ends_at_info(caplog) -> None:  # type: ignore[no-untyped-def]
    with FakeLLM(Script(reply=REPLY)) as fake:
        async with conversation(fake) as conv:
            async def gone(text: str) -> None:
                raise WebSocketDisconnect(1006)

            caplog.set_level(logging.INFO, logger="voicechat.session")
            conv.ws.send_text = gone  # type: ignore[method-assign]
            conv.listener.cue([speech("speech_started"), speech("partial", "Tell me")])
            conv.send(b"\x00" * 8 + b"\x00\x00" * 160)
            (speech_task,) = [t for t in asyncio.all_tasks() if t.get_name() == f"speech-{conv.session.id}"]
            async with asyncio.timeout(10):
                await speech_task  # it ends quietly: the receive loop ends the session
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert any("the client left" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)
