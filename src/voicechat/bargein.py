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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from voicechat import protocol as p

if TYPE_CHECKING:
    from voicechat.echo import EchoReference
    from voicechat.playback import ClientPlayback
    from voicechat.stt.listener import SpeechEvent

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


class BargeIn:
    """The client's hold on the assistant's voice while the user may be interrupting it.

    At voice onset over an audible reply (the echo gate let it through, so it is not the assistant's own
    voice) the client pauses playback at once (``tts_pause``), keeping the audio; words then decide: enough
    of them interrupt (the policy above), a pause without real words or a turn that is a cough or a
    backchannel resumes it (``tts_resume``). Kept apart from Session so that the turn logic asks one
    question per speech event: interrupt now, or carry on."""

    def __init__(
        self,
        echo: EchoReference,
        playback: ClientPlayback,
        send: Callable[[p.ServerMessage], Awaitable[None]],
        policy: BargeInPolicy | None = None,
    ) -> None:
        self.policy = policy or BargeInPolicy()
        self._echo = echo
        self._playback = playback
        self._send = send
        self._held: int | None = None  # the turn whose playback the client holds (tts_pause) until told
        self._held_words = False  # real words were heard during the hold: a pause does not resume it

    def holds(self, turn_id: int) -> bool:
        return self._held == turn_id

    def forget(self, turn_id: int) -> None:
        """The turn was stopped: a held turn is stopped, not resumed."""
        if self._held == turn_id:
            self._held = None

    async def interrupts(self, event: SpeechEvent, turn_id: int, assistant_text: str) -> bool:
        """The user's speech over the audible reply ``turn_id``: True when it interrupts it (the event is
        then handled as ordinary speech), False when the assistant keeps talking (held or not)."""
        client_playing = self._playback.uplink_playing
        if event.type == "speech_started":
            await self.hold(turn_id)  # at voice onset: the user may be interrupting
            return False
        if event.type == "partial" and self.policy.real_words(event.text, assistant_text, client_playing=client_playing):
            self._held_words = True  # they may interrupt once there is voice enough: hold on
        if event.type == "speech_paused":
            if not self._held_words:  # the voice stopped without real words (LiveKit's false interruption)
                await self.release(turn_id)
            return False
        if event.type not in ("partial", "turn_end") or not self.policy.should_interrupt(
            event.text, event.speech_s, assistant_text, client_playing=client_playing
        ):
            if event.type == "turn_end":
                await self.release(turn_id)  # a cough or a backchannel: play on
            return False
        return True

    async def hold(self, turn_id: int) -> None:
        if self._held != turn_id:
            self._held = turn_id
            self._held_words = False
            self._echo.hold()
            await self._send(p.TtsPause(turn_id=turn_id))

    async def release(self, turn_id: int) -> None:
        if self._held == turn_id:
            self._held = None
            self._echo.resume()
            await self._send(p.TtsResume(turn_id=turn_id))
