"""When user speech may interrupt the assistant: not a cough, not "mm-hmm", not the assistant's own echo.

Peers' users complain most about assistants that interrupt themselves on their own echo or on a
backchannel. So an interruption needs enough voiced speech *and* real words that are neither a
backchannel nor a copy of what the assistant is saying. While the client reports that it is playing
assistant audio (uplink flag bit 0), the bar is higher: the echo canceller may leak.

Only words that carry something count towards the word minimum: backchannel sounds and the glue a
transcriber adds between them do not. A backchannel that tiny.en mishears or embellishes leaves at
most one such word ("Mm-hmm." -> "And then turn.", "Mm-hmm, okay." -> "And then them okay."), while a
real interruption has two or more ("wait, stop", "stop it", "what about Berlin"). The voiced-speech
minimum (the VAD's measure, like LiveKit's minimum interruption duration) stays, but cannot tell
them apart alone: espeak's "Mm-hmm." is 0.61 s of voice, its "Wait, stop." 0.58 s. Nor can words per
voiced second: tiny.en made "Have a beautiful day." of 0.45 s of "Uh-huh, yeah." (8.9 a second), but
its partials of real human sentences reach 7.2 and 12 (docs/speech-input.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

BACKCHANNEL_WORDS = frozenset(
    """mm mmm mhm mmhmm hm hmm uh huh uhhuh um umm ah oh ooh yeah yep yes yup ok okay right sure
    cool nice alright wow really i see got it gotcha true exactly indeed totally great""".split()
)
# Words a transcriber adds when several backchannels in a row are merged into one utterance
# ("mm-hmm ... okay ... uh-huh" came back as "And then... Okay."): glue, never a request.
_GLUE_WORDS = frozenset("and then so well oh like".split())
# Backchannel words only within their phrase ("i see", "got it"); elsewhere they carry a request ("stop it").
_PHRASE_WORDS = frozenset("i see got it".split())
_WORD = re.compile(r"[a-z0-9']+")


def words(text: str) -> list[str]:
    """Lower-case words without punctuation ("Mm-hmm." -> ["mm", "hmm"])."""
    return _WORD.findall(text.lower().replace("-", " "))


def is_backchannel(text: str) -> bool:
    """True for acknowledgements ("mm-hmm", "yeah right", "okay") that should not stop a reply, also
    several in a row merged into one transcript and embellished by the transcriber ("Mm-hmm. Okay.
    Uh-huh.", "And then... Okay."): every word is a backchannel or glue, and one is a backchannel."""
    spoken = words(text)
    return (
        any(word in BACKCHANNEL_WORDS for word in spoken)
        and all(word in BACKCHANNEL_WORDS or word in _GLUE_WORDS for word in spoken)
    )


def carrying_words(text: str) -> list[str]:
    """The words that could make a request: not backchannel sounds, not the transcriber's glue."""
    return [w for w in words(text) if w in _PHRASE_WORDS or not (w in BACKCHANNEL_WORDS or w in _GLUE_WORDS)]


def is_echo(text: str, assistant_text: str, *, overlap: float = 0.6) -> bool:
    """True when most of the heard words are words the assistant is saying: its own voice coming back."""
    heard = words(text)
    if not heard:
        return False
    said = set(words(assistant_text))
    return sum(word in said for word in heard) / len(heard) >= overlap


@dataclass(frozen=True)
class BargeInPolicy:
    min_speech_s: float = 0.5  # voiced speech in the user's turn before an interruption counts
    min_words: int = 2  # carrying words (carrying_words)
    playing_min_speech_s: float = 0.8  # stricter while the client plays assistant audio (echo risk)
    playing_min_words: int = 3

    def should_interrupt(self, text: str, speech_s: float, assistant_text: str, *, client_playing: bool) -> bool:
        min_speech = self.playing_min_speech_s if client_playing else self.min_speech_s
        return speech_s >= min_speech and self.real_words(text, assistant_text, client_playing=client_playing)

    def real_words(self, text: str, assistant_text: str, *, client_playing: bool) -> bool:
        """Words that interrupt once there is enough voice: enough carrying words, neither a backchannel
        nor the assistant's own echo. A held reply does not resume at a pause after such words."""
        min_words = self.playing_min_words if client_playing else self.min_words
        return (
            len(carrying_words(text)) >= min_words
            and not is_backchannel(text)
            and not is_echo(text, assistant_text)
        )
