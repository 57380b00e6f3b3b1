"""Removes the "thinking" of reasoning models (``<think>…</think>``) from a stream of text deltas.

Tags may be split across deltas (``"<thi"`` + ``"nk>"``), so text that could be the start of a tag is
held back until the next delta decides it. An unterminated thinking block at the end is dropped.
"""

from __future__ import annotations

# Opening tag -> closing tag. DeepSeek-R1, Qwen3, QwQ and most distills use <think>.
TAGS = {"<think>": "</think>", "<thinking>": "</thinking>", "<reasoning>": "</reasoning>"}


def _held_back(text: str, tags: list[str]) -> int:
    """Length of the longest end of ``text`` that is the beginning of one of ``tags``."""
    longest = 0
    for tag in tags:
        for size in range(min(len(tag) - 1, len(text)), longest, -1):
            if text.endswith(tag[:size]):
                longest = size
                break
    return longest


class ThinkingFilter:
    def __init__(self) -> None:
        self._buffer = ""
        self._closing: str | None = None  # the closing tag we wait for while inside a thinking block

    def feed(self, delta: str) -> str:
        """The visible text that ``delta`` completes (may be empty)."""
        self._buffer += delta
        visible: list[str] = []
        while self._buffer:
            if self._closing is not None:
                end = self._buffer.find(self._closing)
                if end < 0:
                    keep = _held_back(self._buffer, [self._closing])
                    self._buffer = self._buffer[len(self._buffer) - keep :]
                    break
                self._buffer = self._buffer[end + len(self._closing) :]
                self._closing = None
                continue
            found = [(self._buffer.find(tag), tag) for tag in TAGS if tag in self._buffer]
            if found:
                start, tag = min(found)
                visible.append(self._buffer[:start])
                self._buffer = self._buffer[start + len(tag) :]
                self._closing = TAGS[tag]
                continue
            keep = _held_back(self._buffer, list(TAGS))
            visible.append(self._buffer[: len(self._buffer) - keep])
            self._buffer = self._buffer[len(self._buffer) - keep :]
            break
        return "".join(visible)

    def flush(self) -> str:
        """Visible text still held back at the end of the stream."""
        rest = "" if self._closing is not None else self._buffer
        self._buffer = ""
        return rest
