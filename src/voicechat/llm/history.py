"""The conversation history of one session, as sent to the LLM.

Policy (docs/llm.md):
- The system prompt always comes first and does not count against the budget.
- Turns are trimmed oldest first until their text fits ``max_chars``; the latest user turn is always
  kept. After trimming, the history starts with a user turn, because some chat templates refuse a
  conversation that opens with the assistant. The budget holds whatever the client sends: what still
  does not fit (one huge turn, or many typed turns merged into one) loses its oldest text, marked
  with ``…``, and no stored turn ever grows past the budget.
- Assistant turns hold what the user actually heard. A turn cut short by the user (barge-in) ends
  with :data:`INTERRUPTED_MARK`, a dash, the written sign of speech broken off: the model sees where
  it was stopped, and if it imitates the mark, a dash is harmless when spoken. The default system
  prompt explains the mark. An interruption before any word was heard records no assistant turn.
- Two turns in a row from the same side (a reply that failed, a user who spoke twice) are merged into
  one, since many chat templates require user and assistant turns to alternate.
- Turns trimmed away are forgotten (a turn once trimmed would always be), so a long conversation's
  history stays within the budget in memory too.
"""

from __future__ import annotations

from dataclasses import dataclass

INTERRUPTED_MARK = " —"


@dataclass
class Turn:
    role: str  # "user" or "assistant"
    text: str  # for an interrupted assistant turn: what was heard, plus INTERRUPTED_MARK
    interrupted: bool = False


class History:
    def __init__(self, system_prompt: str, max_chars: int) -> None:
        self.system_prompt = system_prompt
        self.max_chars = max_chars
        self._turns: list[Turn] = []

    @property
    def turns(self) -> list[Turn]:
        return list(self._turns)

    def add_user(self, text: str) -> None:
        self._add(Turn("user", text.strip()))

    def add_assistant(self, text: str, *, interrupted: bool = False) -> None:
        """Record a reply; ``text`` is what was actually spoken (cut short after a barge-in)."""
        text = text.strip()
        if not text:
            return  # nothing was heard
        if interrupted:
            text = text.rstrip(" —-–") + INTERRUPTED_MARK
        self._add(Turn("assistant", text, interrupted))

    def clear(self) -> None:
        self._turns.clear()

    def messages(self) -> list[dict[str, str]]:
        kept = self._trimmed()
        return [{"role": "system", "content": self.system_prompt}] + [
            {"role": turn.role, "content": turn.text} for turn in kept
        ]

    def _add(self, turn: Turn) -> None:
        if not turn.text:
            return
        last = self._turns[-1] if self._turns else None
        if last is not None and last.role == turn.role:
            turn = Turn(turn.role, f"{last.text}\n{turn.text}", turn.interrupted)
            self._turns.pop()
        self._turns.append(_clipped(turn, self.max_chars))
        del self._turns[: self._start()]

    def messages_with_user(self, text: str) -> list[dict[str, str]]:
        """The messages of a request answering ``text`` before it is recorded: as if it were added (merged
        with an unanswered user turn, so roles still alternate after a failed reply), within the budget."""
        probe = History(self.system_prompt, self.max_chars)
        probe._turns = list(self._turns)
        probe.add_user(text)
        return probe.messages()

    def _start(self) -> int:
        """Where the turns sent start: the oldest go until the rest fit, then up to a user turn."""
        turns = self._turns
        last_user = max((i for i, turn in enumerate(turns) if turn.role == "user"), default=len(turns))
        start = 0
        total = sum(len(turn.text) for turn in turns)
        while start < last_user and total > self.max_chars:
            total -= len(turns[start].text)
            start += 1
        while start < last_user and turns[start].role != "user":
            start += 1
        return start

    def _trimmed(self) -> list[Turn]:
        kept = self._turns[self._start() :]
        excess = sum(len(turn.text) for turn in kept) - self.max_chars
        for index, turn in enumerate(kept):
            if excess <= 0:
                break
            clipped = _clipped(turn, max(1, len(turn.text) - excess))
            excess -= len(turn.text) - len(clipped.text)
            kept[index] = clipped
        return kept


def _clipped(turn: Turn, max_chars: int) -> Turn:
    """The turn's newest ``max_chars`` characters (the first one an ellipsis when text was cut)."""
    if len(turn.text) <= max_chars:
        return turn
    return Turn(turn.role, "…" + turn.text[len(turn.text) - max_chars + 1 :], turn.interrupted)
