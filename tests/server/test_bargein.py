"""Barge-in policy: real interruptions stop the assistant; coughs, backchannels and echo do not."""

from __future__ import annotations

import pytest

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
