"""The history budget holds whatever the client sends, and roles alternate after a failed turn."""

from __future__ import annotations

import random

from voicechat.llm import History


def roles_alternate(messages: list[dict[str, str]]) -> bool:
    roles = [m["role"] for m in messages[1:]]
    return all(a != b for a, b in zip(roles, roles[1:])) and (not roles or roles[0] == "user")


def test_back_to_back_typed_turns_stay_within_the_budget() -> None:
    history = History("system", 12_000)
    for _ in range(1500):  # 6 MB of typed turns, never answered
        history.add_user("y" * 4000)
    messages = history.messages()
    assert sum(len(m["content"]) for m in messages[1:]) <= 12_000
    assert all(len(turn.text) <= 12_000 for turn in history.turns)  # memory is bounded too


def test_a_failed_turn_keeps_roles_alternating() -> None:
    history = History("system", 1000)
    history.add_user("first question")  # its reply failed: no assistant turn
    request = history.messages_with_user("second question")
    assert roles_alternate(request) and request[-1] == {"role": "user", "content": "first question\nsecond question"}
    assert [turn.role for turn in history.turns] == ["user"]  # asking is not recording


def test_any_sequence_keeps_budget_and_alternation() -> None:
    chooser = random.Random(16)  # fixed: the same sequences on every run
    for _ in range(200):
        history = History("system", chooser.choice([500, 2000]))
        for _ in range(chooser.randint(1, 30)):
            text = "z" * chooser.randint(0, 3000)
            if chooser.random() < 0.6:
                history.add_user(text)
            else:
                history.add_assistant(text, interrupted=chooser.random() < 0.3)
        request = history.messages_with_user("now")
        assert roles_alternate(request)
        assert sum(len(m["content"]) for m in request[1:]) <= history.max_chars
