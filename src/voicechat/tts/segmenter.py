"""Turn a stream of LLM text deltas into speakable segments for Chatterbox.

The first segment is short, so the first audio starts early: it ends at the first sentence end, at the
first clause break (comma, semicolon, colon, dash) after ``first_segment_min_words`` words, or after
``first_segment_max_words`` words when no punctuation comes. After it, segments are whole sentences;
sentences shorter than ``_MIN_CHARS`` are merged with the next one (Chatterbox speaks one or two words
badly), and nothing is longer than ``max_chars`` (one Chatterbox call stops at 1000 speech tokens, about
40 s): an over-long stretch is cut at its last sentence end, else at a clause break, else between words.

Cuts are decided on the raw text, which keeps markdown structure visible: fenced code blocks are one
unit, spoken as ``CODE_NOTE``; inline code and links are never cut; a list marker or a title
abbreviation ("Dr.") stays with its next word; periods in abbreviations, initials, decimals and URLs do
not end sentences. Each segment is then cleaned by the same rules as :func:`speakable`.

Every decision depends only on the text, never on where the deltas were split: a decision that needs
text not yet received waits for it. So the segments are the same however the reply was chunked.

What was heard: ``Segmenter.spans[k]`` is the ``(start, end)`` range of the raw reply (the concatenated
deltas) that segment ``k`` was made from; the ranges are contiguous from 0, and text that held nothing
speakable belongs to the range of the next segment spoken. So ``raw[:spans[k][1]]`` is the reply up to
the end of segment ``k``, and ``" ".join(segments)`` holds the same words as ``speakable(raw)``.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import urlsplit

# Spoken in place of a fenced code block: code is never read aloud.
CODE_NOTE = "The code is on screen."

_MIN_CHARS = 20  # after the first segment, shorter sentences wait to be merged with the next one
# A segment's raw text (markup, URLs, emoji included) is cut past this many times max_chars even when
# its cleaned text is short: it bounds the work of re-cleaning a segment as it grows.
_RAW_FACTOR = 8

# Kinds of cut point, in order of preference when an over-long stretch must be cut.
_WORD, _CLAUSE, _SENTENCE = 1, 2, 3

_FENCES = ("```", "~~~")
_CLOSERS = "\"'”’)]*_`"  # may follow the punctuation that ends a sentence or clause
_OPENERS = "\"'“‘([*_`"
_TERMINAL = (".", "!", "?", "…")
# Abbreviations bound to the next word: their period never ends a sentence nor allows a cut.
_TITLES = frozenset(
    "mr mrs ms dr prof st sr jr rev gen col capt lt sgt gov sen rep hon mt ft vs cf approx fig vol pp "
    "ca dept".split()
)
_INITIAL = re.compile(r"[A-Z]")
# Dotted abbreviations (e.g, i.e, U.S, Ph.D): not a sentence end, except a.m./p.m. before a capital.
_DOTTED = re.compile(r"(?:[a-z]{1,2}\.)+[a-z]{1,2}")
_DOTTED_MAY_END = frozenset({"a.m", "p.m"})
# Line-start tokens that are markdown structure (header, quote, bullet, number), not words.
_MARKER_TOKEN = re.compile(r"#{1,6}|>+|[-*+•]|\d{1,3}[.)]")

_HEAD = 8  # longer than any marker token
_LINE_BREAK = re.compile(r"[^\S\n]*\n")
_ENDS_IN_LINE_BREAK = re.compile(r"\n[^\S\n]*\Z")
_SPACE_RUN = re.compile(r"\s+")
_TOKEN = re.compile(r"\S*")
_BACKTICKS = re.compile(r"`+")
_SPECIAL = re.compile(r"[\s`\[]")


class Segmenter:
    """Feed LLM deltas with :meth:`push`, end with :meth:`flush`; both return segments ready to speak.

    One instance serves one reply. ``spans`` gives, per emitted segment, its range of the raw reply.
    """

    def __init__(
        self, *, first_segment_min_words: int = 3, first_segment_max_words: int = 12, max_chars: int = 300
    ) -> None:
        if first_segment_min_words < 1:
            raise ValueError(f"first_segment_min_words must be >= 1, got {first_segment_min_words}")
        if first_segment_max_words < first_segment_min_words:
            raise ValueError(
                f"first_segment_max_words ({first_segment_max_words}) must be >= "
                f"first_segment_min_words ({first_segment_min_words})"
            )
        if max_chars < 40:
            raise ValueError(f"max_chars must be >= 40, got {max_chars}")
        self._min_words = first_segment_min_words
        self._max_words = first_segment_max_words
        self._max_chars = max_chars

        self._buf = ""  # raw text not yet compacted away; _buf[0] is at _offset in the whole reply
        self._offset = 0
        self._buf_line_start = True  # _buf[0] begins a line (only whitespace before it since a newline)
        self._seg = 0  # start of the current segment in _buf
        self._pos = 0  # scan position in _buf: everything before it is decided
        self._cands: list[tuple[int, int]] = []  # (position, kind) cut points inside the current segment
        self._line_start = True  # the scanner has seen only whitespace since the last newline
        self._no_cut = False  # the next whitespace follows a list marker: not a cut point
        self._final = False
        self._out: list[str] = []
        self._spans: list[tuple[int, int]] = []
        self._span_start = 0

    @property
    def spans(self) -> list[tuple[int, int]]:
        """``(start, end)`` offsets in the raw reply of every segment emitted so far, in order."""
        return list(self._spans)

    def push(self, delta: str) -> list[str]:
        """Add an LLM delta; return the segments that are now complete, in order (often none)."""
        if not isinstance(delta, str):
            raise TypeError(f"delta must be str, got {type(delta).__name__}")
        if self._final:
            raise RuntimeError("Segmenter.push() after flush(): use a new Segmenter for a new reply")
        if delta:
            self._buf += delta
            self._scan()
            self._compact()
        return self._take()

    def flush(self) -> list[str]:
        """The LLM stream ended: return the remaining segments. Calling it again returns []."""
        if self._final:
            return []
        self._final = True
        self._scan()
        self._fit(len(self._buf))
        self._cut(len(self._buf))
        self._compact()
        return self._take()

    # --- scanning ------------------------------------------------------------------------------
    # Each step handles the element at _pos and returns False when deciding it needs more text.

    def _scan(self) -> None:
        while self._pos < len(self._buf):
            i = self._pos
            c = self._buf[i]
            if c.isspace():
                done = self._whitespace(i)
            elif self._line_start:
                done = self._line_head(i)
            elif c == "`":
                done = self._inline_code(i)
            elif c == "[":
                done = self._link(i)
            else:
                m = _SPECIAL.search(self._buf, i + 1)
                self._pos = m.start() if m else len(self._buf)
                done = True
            if not done:
                return

    def _whitespace(self, i: int) -> bool:
        end = _SPACE_RUN.match(self._buf, i).end()
        if end == len(self._buf) and not self._final:
            return False  # the next character decides what kind of break this is
        newline = "\n" in self._buf[i:end]
        if newline:
            kind: int | None = _SENTENCE
        elif self._no_cut:
            kind = None
        else:
            kind = self._kind_before(i, self._buf[end : end + 1])
        self._no_cut = False
        self._pos = end
        self._line_start = self._line_start or newline
        self._boundary(i, kind)
        return True

    def _kind_before(self, i: int, next_char: str) -> int | None:
        """What kind of cut point the whitespace at ``i`` is, given the character after it."""
        start = i
        while start > self._seg and not self._buf[start - 1].isspace():
            start -= 1
        token = self._buf[start:i]
        core = token.rstrip(_CLOSERS)
        if core in ("-", "--", "–", "—") or core.endswith("—"):
            return _CLAUSE
        if core.endswith((",", ";", ":")):
            return _CLAUSE
        if not core.endswith(_TERMINAL):
            return _WORD
        if next_char.islower():
            return _WORD  # '"Why?" she asked', 'Well... maybe'
        if core.endswith(".") and not core.endswith(".."):
            word = core[:-1].lstrip(_OPENERS)
            if word.lower() in _TITLES or _INITIAL.fullmatch(word):
                return None  # "Dr. Patel", "J. K. Rowling"
            if _DOTTED.fullmatch(word.lower()) and word.lower() not in _DOTTED_MAY_END:
                return _WORD  # "e.g. Paris", "the U.S. Army"
        return _SENTENCE

    def _line_head(self, i: int) -> bool:
        """The first token of a line: a code fence, a list/header/quote marker, or a word."""
        # Markers and fences are short: the first few characters of the token decide.
        head = self._buf[i : i + _HEAD]
        end = i + _TOKEN.match(head).end()
        if len(head) < _HEAD and end == len(self._buf) and not self._final:
            return False
        token = self._buf[i:end]
        if token.startswith(_FENCES):
            block_end = self._fence_end(i, token[:3])
            if block_end is None:
                return False
            self._fit(i)
            self._cut(i)  # the text before the block is spoken as it is
            self._cut(block_end)  # the block itself becomes CODE_NOTE
            self._pos = block_end
        elif _MARKER_TOKEN.fullmatch(token):
            self._pos = end
            self._no_cut = True
        self._line_start = False
        return True

    def _fence_end(self, i: int, fence: str) -> int | None:
        """End of the code block opened at ``i``: the end of its closing fence line (or of the text)."""
        buf = self._buf
        line_end = buf.find("\n", i)  # end of the opening line
        while line_end != -1:
            start = line_end + 1
            line_end = buf.find("\n", start)
            if line_end == -1 and not self._final:
                return None  # this line is still arriving: it may be the closing fence
            if buf[start : line_end if line_end != -1 else None].strip().startswith(fence):
                return line_end if line_end != -1 else len(buf)
        return len(buf) if self._final else None

    def _inline_code(self, i: int) -> bool:
        run_end = _BACKTICKS.match(self._buf, i).end()
        if run_end == len(self._buf) and not self._final:
            return False
        ticks = self._buf[i:run_end]
        close = self._find_on_line(run_end, ticks)
        if close is None:
            return False
        self._pos = close + len(ticks) if close >= 0 else run_end
        return True

    def _link(self, i: int) -> bool:
        """``[text](url)`` is never cut; anything else starting with "[" is plain text."""
        close = self._find_on_line(i + 1, "]")
        if close is None:
            return False
        if close >= 0 and close + 1 == len(self._buf) and not self._final:
            return False
        if close < 0 or self._buf[close + 1 : close + 2] != "(":
            self._pos = i + 1
            return True
        paren = self._find_on_line(close + 2, ")")
        if paren is None:
            return False
        self._pos = paren + 1 if paren >= 0 else i + 1
        return True

    def _find_on_line(self, start: int, needle: str) -> int | None:
        """Index of ``needle`` before the next newline and within max_chars; -1 if it is not there;
        None if the text so far cannot tell."""
        limit = start + self._max_chars
        found = self._buf.find(needle, start, limit)
        newline = self._buf.find("\n", start, limit)
        if found != -1 and (newline == -1 or found < newline):
            return found
        if newline != -1 or len(self._buf) >= limit or self._final:
            return -1
        return None

    # --- cutting -------------------------------------------------------------------------------

    def _boundary(self, i: int, kind: int | None) -> None:
        """Whitespace at ``i`` ends a word: cut the segment there, or remember ``i`` as a cut point."""
        self._fit(i)
        if kind is None:
            return
        text = self._text(self._seg, i)
        if not text:
            self._cut(i)  # nothing speakable so far: start the segment afresh here
            return
        if not self._spans:
            words = sum(1 for w in text.split() if any(ch.isalnum() for ch in w))
            cut = (
                kind == _SENTENCE
                or (kind == _CLAUSE and words >= self._min_words)
                or words >= self._max_words
            )
        else:
            cut = kind == _SENTENCE and len(text) >= _MIN_CHARS
        if cut:
            self._cut(i)
        else:
            self._cands.append((i, kind))

    def _fit(self, i: int) -> None:
        """Cut the current segment until the part before ``i`` fits in max_chars."""
        while not self._fits(i):
            cut = self._best_cut()
            self._cut(cut if cut is not None else self._hard_cut(i))

    def _fits(self, end: int) -> bool:
        if end - self._seg > _RAW_FACTOR * self._max_chars:
            return False
        return len(self._text(self._seg, end)) <= self._max_chars

    def _best_cut(self) -> int | None:
        """The last sentence end, else the last clause break past a third of max_chars, else the last
        word break."""
        for pos, kind in reversed(self._cands):
            if kind == _SENTENCE:
                return pos
        for pos, kind in reversed(self._cands):
            if kind == _CLAUSE and len(self._text(self._seg, pos)) >= self._max_chars // 3:
                return pos
        return self._cands[-1][0] if self._cands else None

    def _hard_cut(self, i: int) -> int:
        """No break to cut at (one huge token): the longest prefix that fits, but never inside a unit
        that is cleaned as a whole (a URL is said as its host; cut, its path would be read out)."""
        lo, hi = self._seg + 1, i  # invariant: the prefix ending at lo fits
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self._fits(mid):
                lo = mid
            else:
                hi = mid - 1
        for unit in _UNIT.finditer(self._buf, self._seg, i):
            if unit.start() < lo < unit.end():
                if unit.start() > self._seg:
                    return unit.start()  # the unit begins the next segment
                if len(self._text(self._seg, unit.end())) <= self._max_chars:
                    return unit.end()  # its spoken form fits, however long its raw text
                break  # a unit too long to say in one segment: cut it where it must be
        return lo

    def _cut(self, end: int) -> None:
        """End the current segment at ``end``; emit it if it holds anything speakable."""
        text = self._text(self._seg, end)
        if text:
            at_line_end = _LINE_BREAK.match(self._buf, end) or _ENDS_IN_LINE_BREAK.search(
                self._buf, self._seg, end
            )
            if at_line_end and not text.rstrip(_QUOTES).endswith(_LINE_ENDS):
                text += "."  # as between lines inside a segment: a line break ends a phrase
            self._out.append(text)
            self._spans.append((self._span_start, self._offset + end))
            self._span_start = self._offset + end
        self._seg = end
        self._cands = [(p, k) for p, k in self._cands if p > end]

    def _text(self, start: int, end: int) -> str:
        return _clean(self._buf[start:end], self._is_line_start(start))

    def _is_line_start(self, p: int) -> bool:
        newline = self._buf.rfind("\n", 0, p)
        before = self._buf[newline + 1 : p]
        return not before.strip() and (newline >= 0 or self._buf_line_start)

    def _compact(self) -> None:
        """Drop text before the current segment, which no decision looks at again."""
        if self._seg == 0:
            return
        self._buf_line_start = self._is_line_start(self._seg)
        shift = self._seg
        self._buf = self._buf[shift:]
        self._offset += shift
        self._pos -= shift
        self._cands = [(p - shift, k) for p, k in self._cands]
        self._seg = 0

    def _take(self) -> list[str]:
        out, self._out = self._out, []
        return out


# --- cleaning ------------------------------------------------------------------------------------

_LINE_MARKER = re.compile(r"^\s*(?:>\s*)*(?:#{1,6}\s+|[-*+•]\s+|(\d{1,3})[.)]\s+)?")
_INLINE_CODE = re.compile(r"(`+)(.+?)\1")
_CODEY = re.compile(r"[=;{}<>|&$\\()\[\]]")
_IMAGE = re.compile(r"!\[[^\]\n]*\]\([^)\n]*\)")
_LINK = re.compile(r"\[([^\]\n]*)\]\([^)\n]*\)")
_CITATION = re.compile(r"\[\^?\d+\]")
_URL = re.compile(r"https?://[^\s<>()\[\]]+")
_HTML_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*\s*/?>")
_OUTER_PIPES = re.compile(r"^\s*\||\|\s*$")
_TILDE_NUMBER = re.compile(r"~(?=\d)")
_HASH_NUMBER = re.compile(r"#(?=\d)")
# What the cleaning rules above read as one piece: a hard cut inside one would change what is said.
_UNIT = re.compile(
    "|".join(
        rule.pattern for rule in (_INLINE_CODE, _IMAGE, _LINK, _CITATION, _URL, _HTML_TAG)
    )
    + r"|[~#]\d"
)
_SYMBOL_WORDS = (
    ("&", " and "),
    ("%", " percent "),
    ("@", " at "),
    ("°", " degrees "),
    ("+", " plus "),
    ("=", " equals "),
    ("×", " times "),
    ("--", " — "),
)
_SPEAKABLE_PUNCT = frozenset(".,!?;:'\"-()$€£¥/…—–’‘“”")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,;:!?…])")
_REPEATED_PUNCT = re.compile(r"([,;:.!?])(?:\s*[,;:])+")
_LEADING_PUNCT = re.compile(r"^(?:[\s.,;:!?…—–)]|-(?!\d))+")
_EMPTY_PARENS = re.compile(r"\(\s*\)")
_LINE_ENDS = (".", "!", "?", ",", ";", ":", "…", "—")
_QUOTES = "\"')”’"


def speakable(text: str) -> str:
    """What Chatterbox should say for ``text``: markdown, code, URLs, emoji and symbols cleaned up.

    Returns "" when nothing in ``text`` can be spoken.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    return _clean(text, line_start=True)


def _clean(text: str, line_start: bool) -> str:
    """``speakable`` for a piece of a reply; ``line_start`` tells whether its first line begins a line
    of the reply (only then is a leading "1." or "-" a list marker)."""
    spoken: list[str] = []
    fence = ""
    for n, line in enumerate(text.split("\n")):
        stripped = line.strip()
        if fence:
            if stripped.startswith(fence):
                fence = ""
            continue
        at_start = line_start or n > 0
        if at_start and stripped.startswith(_FENCES):
            fence = stripped[:3]
            spoken.append(CODE_NOTE)
            continue
        words = _clean_line(line, at_start)
        if words:
            spoken.append(words)
    # A line break ends a phrase: give lines without closing punctuation a period between them.
    for k in range(len(spoken) - 1):
        if not spoken[k].rstrip(_QUOTES).endswith(_LINE_ENDS):
            spoken[k] += "."
    return " ".join(spoken)


def _clean_line(line: str, line_start: bool) -> str:
    s = line
    if line_start:
        s = _LINE_MARKER.sub(lambda m: f"{m.group(1)}, " if m.group(1) else "", s, count=1)
    s = _INLINE_CODE.sub(lambda m: _spoken_code(m.group(2)), s)
    s = _IMAGE.sub(" ", s)
    s = _LINK.sub(r"\1", s)
    s = _CITATION.sub("", s)
    s = _URL.sub(_spoken_url, s)
    s = _HTML_TAG.sub(" ", s)
    if "|" in s:  # a table row
        s = _OUTER_PIPES.sub("", s).replace("|", ", ")
    s = _TILDE_NUMBER.sub("about ", s)
    s = _HASH_NUMBER.sub("number ", s)
    for symbol, words in _SYMBOL_WORDS:
        s = s.replace(symbol, words)
    s = "".join(ch if _is_speakable_char(ch) else " " for ch in s)
    s = " ".join(s.split())
    s = _SPACE_BEFORE_PUNCT.sub(r"\1", s)
    s = _REPEATED_PUNCT.sub(r"\1", s)
    s = _EMPTY_PARENS.sub("", s)
    s = _LEADING_PUNCT.sub("", s).strip()
    return s if any(ch.isalnum() for ch in s) else ""


def _spoken_code(code: str) -> str:
    """Inline code: a short name or command is said as written; anything code-like is not read."""
    code = code.strip()
    if len(code) <= 40 and not _CODEY.search(code.removesuffix("()")):
        return code
    return "that code"


def _spoken_url(match: re.Match[str]) -> str:
    """A URL is said as its host name ("docs.python.org"), keeping punctuation that follows it."""
    url = match.group(0)
    bare = url.rstrip(".,;:!?'\"")
    try:
        host = urlsplit(bare).hostname or ""
    except ValueError:
        host = ""
    return host.removeprefix("www.") + url[len(bare) :]


def _is_speakable_char(ch: str) -> bool:
    if ch in _SPEAKABLE_PUNCT or ch.isspace():
        return True
    category = unicodedata.category(ch)
    if category[0] in "LN":
        return True
    # Combining accents stay; emoji variation selectors go.
    return category == "Mn" and not 0xFE00 <= ord(ch) <= 0xFE0F
