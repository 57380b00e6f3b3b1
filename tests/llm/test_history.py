from __future__ import annotations

from voicechat.llm import INTERRUPTED_MARK, History


def test_system_prompt_first_then_turns_in_order() -> None:
    history = History("Be brief.", 1000)
    history.add_user("Hi")
    history.add_assistant("Hello!")
    history.add_user("How are you?")
    assert history.messages() == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "How are you?"},
    ]


def test_oldest_turns_trimmed_first_by_the_char_budget() -> None:
    history = History("S" * 5000, 26)  # the system prompt does not count against the budget
    for i in range(5):
        history.add_user(f"question {i}")  # 10 chars
        history.add_assistant(f"answer {i}")  # 8 chars
    history.add_user("last one")  # 8 chars
    contents = [m["content"] for m in history.messages()[1:]]
    assert contents == ["question 4", "answer 4", "last one"]
    assert sum(map(len, contents)) <= 26
    assert len(history.turns) == 3  # turns trimmed away are forgotten: memory holds the budget too


def test_trimmed_history_starts_with_a_user_turn() -> None:
    history = History("S", 30)
    history.add_user("a" * 20)
    history.add_assistant("b" * 5)
    history.add_user("c" * 20)
    # Dropping the first user turn alone would leave the assistant turn first: it goes too.
    assert [m["role"] for m in history.messages()] == ["system", "user"]
    assert history.messages()[1]["content"] == "c" * 20


def test_latest_user_turn_always_kept_and_clipped_to_the_budget() -> None:
    history = History("S", 10)
    history.add_user("short")
    history.add_assistant("reply")
    history.add_user("x" * 100)
    assert history.messages() == [{"role": "system", "content": "S"}, {"role": "user", "content": "…" + "x" * 9}]


def test_interrupted_reply_recorded_as_heard_and_marked() -> None:
    history = History("S", 1000)
    history.add_user("Tell me a story")
    history.add_assistant("Once upon a time, there", interrupted=True)
    turn = history.turns[-1]
    assert turn.interrupted and turn.text == "Once upon a time, there" + INTERRUPTED_MARK
    assert history.messages()[-1] == {"role": "assistant", "content": "Once upon a time, there —"}
    history.add_assistant("Stop -", interrupted=True)  # same side again: merged, one mark only
    assert history.messages()[-1]["content"] == "Once upon a time, there —\nStop —"


def test_interruption_before_any_word_records_nothing_and_user_turns_merge() -> None:
    history = History("S", 1000)
    history.add_user("Hello?")
    history.add_assistant("", interrupted=True)
    history.add_user("Are you there?")
    assert history.messages() == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Hello?\nAre you there?"},
    ]


def test_clear_keeps_the_system_prompt() -> None:
    history = History("S", 1000)
    history.add_user("Hi")
    history.clear()
    assert history.turns == [] and history.messages() == [{"role": "system", "content": "S"}]
