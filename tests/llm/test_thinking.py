from __future__ import annotations

import pytest

from voicechat.llm.thinking import ThinkingFilter


def run(deltas: list[str]) -> str:
    thinking = ThinkingFilter()
    return "".join(thinking.feed(delta) for delta in deltas) + thinking.flush()


def test_plain_text_passes_unchanged() -> None:
    assert run(["Hello", " there", ". 3 < 4 and <b> stays."]) == "Hello there. 3 < 4 and <b> stays."


def test_think_block_removed() -> None:
    assert run(["<think>The user greets me.</think>Hi!"]) == "Hi!"


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7])
def test_tags_split_across_deltas_at_every_point(size: int) -> None:
    text = "Sure. <think>hidden <thinking> plan</think> Here it is.<reasoning>more</reasoning> Done."
    deltas = [text[i : i + size] for i in range(0, len(text), size)]
    assert run(deltas) == "Sure.  Here it is. Done."


def test_text_that_looks_like_a_tag_start_is_held_back_only_until_decided() -> None:
    thinking = ThinkingFilter()
    assert thinking.feed("Hello <th") == "Hello "
    assert thinking.feed("ere") == "<there"
    assert thinking.flush() == ""


def test_unterminated_thinking_is_dropped_and_a_dangling_tag_start_is_kept() -> None:
    assert run(["<think>never ends"]) == ""
    assert run(["Ends with <"]) == "Ends with <"
