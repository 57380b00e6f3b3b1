"""The segmenter on realistic LLM replies, streamed in deltas split at random and token-like boundaries."""

from __future__ import annotations

import random
import re
import unicodedata

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from voicechat.tts.segmenter import CODE_NOTE, Segmenter, speakable

CHAT = (
    "Sure! The Eiffel Tower is about 330 meters tall, and it was completed in 1889 for the World's Fair. "
    "It was the tallest man-made structure in the world until 1930, when the Chrysler Building in New York "
    "overtook it. Would you like to know more about its history?"
)
LONG_FIRST_SENTENCE = (
    "Absolutely, and honestly it's one of my favorite questions to answer, because the best time to visit "
    "Japan depends a lot on whether you care more about cherry blossoms, autumn leaves or quiet streets. "
    "Spring is the most popular season. Autumn is a close second."
)
RECIPE = (
    "## Classic Pancakes\n\n"
    "Here's a simple recipe that makes about 8 pancakes:\n\n"
    "**Ingredients:**\n"
    "- 1 1/2 cups all-purpose flour\n"
    "- 3 1/2 teaspoons baking powder\n"
    "- 1 tablespoon sugar\n"
    "- 1 1/4 cups milk\n"
    "- 1 egg\n\n"
    "**Steps:**\n"
    "1. Whisk the flour, baking powder and sugar in a large bowl.\n"
    "2. Make a well in the center and pour in the milk and the egg.\n"
    "3. Heat a lightly oiled pan over medium-high heat (about 190°C).\n"
    "4. Pour roughly 1/4 cup of batter per pancake and cook until bubbles form, then flip.\n\n"
    "Enjoy them with *maple syrup* or fresh berries!"
)
CODE = (
    "Here's a quick way to reverse a string in Python:\n\n"
    "```python\n"
    "def reverse(s: str) -> str:\n"
    "    return s[::-1]\n"
    "\n"
    "print(reverse(\"hello\"))  # prints olleh\n"
    "```\n\n"
    "The **slice** `[::-1]` walks the string backwards. You can also use `reversed()` with "
    "`''.join(reversed(s))`, but slicing is usually *faster* and easier to read.\n\n"
    "~~~bash\n"
    "python3 reverse.py\n"
    "~~~\n"
    "Let me know if you want a version for lists too."
)
PRICES = (
    "The basic plan costs $4.99 per month, while the premium plan is $12.50. If you pay annually, you save "
    "about 16.7%, which works out to roughly $10,000 across 1,000 users. Version 2.1 also adds a 3.5-hour "
    "free trial, and the price drops to €3.99 after 12 months."
)
ABBREVIATIONS = (
    "Dr. Smith and Mr. Jones met at 9 a.m. on Monday. They discussed several options, e.g. moving the lab "
    "to a bigger building, or expanding the current site, i.e. the one on Main St. near the U.S. Post "
    "Office. Prof. J. K. Lee disagreed, citing costs, delays, staffing, etc. The meeting ended at 5 p.m. "
    "Everyone went home."
)
EMOJI = (
    "Congratulations on your new job! 🎉🎉 That's amazing news 😄. Here are a few tips for your first "
    "week 👇\n\n"
    "- Arrive a little early ⏰\n"
    "- Take notes 📝\n"
    "- Ask lots of questions ❓\n\n"
    "You've got this! 💪🏽🔥 ✨✨✨"
)
RUN_ON = (
    "so basically what you want to do is take the train from the central station to the airport and then "
    "once you get there you just follow the signs to terminal two where you can check in and drop off your "
    "bags and then go through security and find your gate and maybe grab a coffee while you wait because "
    "the flights from there are usually a bit delayed in the mornings especially on weekends when it gets "
    "really busy and the lines at security can take forever so give yourself plenty of time"
)
LONG_SENTENCE = (
    "The mitochondria, which are often described as the powerhouse of the cell because they produce most "
    "of the chemical energy needed to power the cell's biochemical reactions, are found in nearly all "
    "eukaryotic organisms, including plants, animals, fungi and protists, and they contain their own small "
    "circular DNA, which is inherited almost exclusively from the mother in most species, a fact that "
    "scientists have used to trace human ancestry back tens of thousands of years, through migrations "
    "across continents and oceans, to a common maternal ancestor who lived in Africa."
)
QUOTES = (
    "She looked at me and said, \"I don't think that's going to work.\" I paused... Then I replied, "
    "\"Why not?\" she shrugged. \"Well... it's complicated,\" she admitted. Honestly? I still don't "
    "know what she meant… Maybe I never will."
)
LINKS_AND_TABLE = (
    "### Useful resources\n\n"
    "For more details, check the [official documentation](https://docs.python.org/3/tutorial/index.html) "
    "or visit https://realpython.com/python-basics/. The `asyncio` module is covered in chapter 7[^1].\n\n"
    "> **Note:** Python 3.12 was released in October 2023.\n\n"
    "| Feature | Version |\n"
    "|---|---|\n"
    "| f-strings | 3.6 |\n"
    "| walrus operator | 3.8 |\n"
)
NUMBERED = (
    "There are three main steps:\n"
    "1) Measure 2.5 cups of water.\n"
    "2) Boil it for 10 minutes.\n"
    "3) Add 1/2 teaspoon of salt.\n"
    "That's it! The train leaves at 10:45 and arrives at 13:20, so the trip takes ~2.5 hours at 120 km/h."
)
SHORT = "Yes."

REPLIES = {
    "chat": CHAT,
    "long_first_sentence": LONG_FIRST_SENTENCE,
    "recipe": RECIPE,
    "code": CODE,
    "prices": PRICES,
    "abbreviations": ABBREVIATIONS,
    "emoji": EMOJI,
    "run_on": RUN_ON,
    "long_sentence": LONG_SENTENCE,
    "quotes": QUOTES,
    "links_and_table": LINKS_AND_TABLE,
    "numbered": NUMBERED,
    "short": SHORT,
}

MARKUP = set("*_#`[]{}<>|~^")


def segment(deltas: list[str], **kwargs: int) -> list[str]:
    seg = Segmenter(**kwargs)
    out: list[str] = []
    for delta in deltas:
        out += seg.push(delta)
    return out + seg.flush()


def random_deltas(text: str, seed: int, low: int = 1, high: int = 6) -> list[str]:
    rng = random.Random(seed)
    deltas, i = [], 0
    while i < len(text):
        n = rng.randint(low, high)
        deltas.append(text[i : i + n])
        i += n
    return deltas


def token_deltas(text: str) -> list[str]:
    """Roughly how a BPE tokenizer streams: a leading space, a few letters, digits or one symbol."""
    deltas = re.findall(r" ?[A-Za-z]{1,5}| ?\d{1,3}| ?[^\sA-Za-z\d]|\s+", text)
    assert "".join(deltas) == text
    return deltas


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


@pytest.mark.parametrize("name", sorted(REPLIES))
def test_same_segments_whatever_the_delta_boundaries(name: str) -> None:
    text = REPLIES[name]
    whole = segment([text])
    assert whole, "every reply has something to say"
    assert segment(list(text)) == whole
    assert segment(token_deltas(text)) == whole
    for seed in range(5):
        assert segment(random_deltas(text, seed)) == whole
    assert segment(random_deltas(text, 99, 20, 80)) == whole


@pytest.mark.parametrize("name", sorted(REPLIES))
def test_no_words_lost_nothing_unspeakable(name: str) -> None:
    text = REPLIES[name]
    segments = segment(token_deltas(text))
    assert words(" ".join(segments)) == words(speakable(text))
    for s in segments:
        assert s and s == s.strip()
        assert any(ch.isalnum() for ch in s)
        assert not MARKUP & set(s), s
        assert "http" not in s and "```" not in s
        assert not any(unicodedata.category(ch) in ("So", "Sk", "Cf") for ch in s), s
        assert "\n" not in s


@pytest.mark.parametrize("name", sorted(REPLIES))
@pytest.mark.parametrize("max_chars", [300, 120, 60])
def test_no_segment_over_max_chars(name: str, max_chars: int) -> None:
    segments = segment(random_deltas(REPLIES[name], 7), max_chars=max_chars)
    assert all(len(s) <= max_chars for s in segments), [s for s in segments if len(s) > max_chars]
    assert words(" ".join(segments)) == words(speakable(REPLIES[name]))


def first_segment_offset(text: str) -> tuple[str, int]:
    """Feed ``text`` one character at a time; return the first segment and how many characters had
    arrived when it came out."""
    seg = Segmenter()
    for i, ch in enumerate(text):
        out = seg.push(ch)
        if out:
            return out[0], i + 1
    return seg.flush()[0], len(text)


@pytest.mark.parametrize(
    "text, expected",
    [
        (CHAT, "Sure!"),
        (LONG_FIRST_SENTENCE, "Absolutely, and honestly it's one of my favorite questions to answer,"),
        (LONG_SENTENCE, "The mitochondria, which are often described as the powerhouse of the cell"),
        (RUN_ON, "so basically what you want to do is take the train from"),
        (RECIPE, "Classic Pancakes."),
        (SHORT, "Yes."),
    ],
    ids=["chat", "clause", "long_sentence", "run_on", "header", "short"],
)
def test_first_segment_is_short_and_early(text: str, expected: str) -> None:
    first, arrived = first_segment_offset(text)
    assert first == expected
    assert len(first.split()) <= 12
    # Out as soon as the next word starts, long before the first sentence is complete.
    end = text.index(expected.rstrip(",!.")) + len(expected.rstrip(",!."))
    end = re.compile(r"[,!.]?\s*").match(text, end).end()
    assert arrived <= end + 1
    sentence_end = re.search(r"[.!?](\s|$)", text)
    first_sentence_length = sentence_end.start() if sentence_end else len(text)
    if first_sentence_length > 100:
        assert arrived < first_sentence_length / 2


def test_first_segment_settings() -> None:
    text = "One, two three four, five six seven eight nine ten eleven twelve thirteen fourteen fifteen."
    assert segment([text])[0] == "One, two three four,"
    assert segment([text], first_segment_min_words=1)[0] == "One,"
    assert segment([text], first_segment_min_words=5, first_segment_max_words=6)[0] == (
        "One, two three four, five six"
    )


def test_later_segments_are_whole_sentences() -> None:
    segments = segment(token_deltas(CHAT))
    assert segments == [
        "Sure!",
        "The Eiffel Tower is about 330 meters tall, and it was completed in 1889 for the World's Fair.",
        "It was the tallest man-made structure in the world until 1930, when the Chrysler Building in New "
        "York overtook it.",
        "Would you like to know more about its history?",
    ]


def test_short_sentences_are_merged() -> None:
    segments = segment(["Sure! First sentence is here. Ok. Fine. Then a longer one follows here. End."])
    assert segments == [
        "Sure!", "First sentence is here.", "Ok. Fine. Then a longer one follows here.", "End."
    ]


def test_abbreviations_and_numbers_are_never_split() -> None:
    segments = segment(random_deltas(ABBREVIATIONS, 3))
    assert segments == [
        "Dr. Smith and Mr. Jones met at 9 a.m. on Monday.",
        "They discussed several options, e.g. moving the lab to a bigger building, or expanding the current "
        "site, i.e. the one on Main St. near the U.S. Post Office.",
        "Prof. J. K. Lee disagreed, citing costs, delays, staffing, etc.",
        "The meeting ended at 5 p.m.",
        "Everyone went home.",
    ]
    prices = " ".join(segment(token_deltas(PRICES)))
    for number in ("$4.99", "$12.50", "16.7 percent", "$10,000", "1,000", "2.1", "3.5-hour", "€3.99"):
        assert number in prices


def test_quotes_and_ellipses() -> None:
    assert segment(random_deltas(QUOTES, 5)) == [
        "She looked at me and said,",
        "\"I don't think that's going to work.\"",
        "I paused... Then I replied, \"Why not?\" she shrugged.",
        "\"Well... it's complicated,\" she admitted.",
        "Honestly? I still don't know what she meant…",
        "Maybe I never will.",
    ]


def test_lists_headers_and_emphasis() -> None:
    segments = segment(token_deltas(RECIPE))
    assert segments[0] == "Classic Pancakes."
    assert "Here's a simple recipe that makes about 8 pancakes:" in segments
    spoken = " ".join(segments)
    assert "1, Whisk the flour, baking powder and sugar in a large bowl." in spoken
    assert "about 190 degrees C" in spoken
    assert "Enjoy them with maple syrup or fresh berries!" in spoken
    # List items without punctuation end in a period, so they are not read as one run-on phrase.
    assert "1 1/2 cups all-purpose flour. 3 1/2 teaspoons baking powder." in spoken


def test_code_blocks_are_never_read() -> None:
    segments = segment(random_deltas(CODE, 11))
    assert segments.count(CODE_NOTE) == 2
    assert segments[0] == "Here's a quick way to reverse a string in Python:"
    assert segments[1] == CODE_NOTE
    spoken = " ".join(segments)
    for code_word in ("def", "return", "print", "olleh", "python3", "join"):
        assert code_word not in spoken.split()
    assert "The slice that code walks the string backwards." in spoken
    assert "You can also use reversed with that code, but slicing is usually faster" in spoken
    assert segments[-1] == "Let me know if you want a version for lists too."


def test_unclosed_code_block_at_end() -> None:
    assert segment(["Try this:\n```js\nconsole.log(1)\n"]) == ["Try this:", CODE_NOTE]
    assert segment(["Look\n  ```\nx\n  ```\nDone"]) == ["Look.", CODE_NOTE, "Done"]
    assert segment(["Try this:\n``", "`js\nconsole.log(1)"]) == ["Try this:", CODE_NOTE]


def test_links_urls_and_tables() -> None:
    segments = segment(token_deltas(LINKS_AND_TABLE))
    spoken = " ".join(segments)
    assert "check the official documentation or visit realpython.com." in spoken
    assert "The asyncio module is covered in chapter 7." in spoken
    assert "Note: Python 3.12 was released in October 2023." in spoken
    assert "Feature, Version. f-strings, 3.6. walrus operator, 3.8." in spoken


def test_emoji_are_dropped() -> None:
    segments = segment(random_deltas(EMOJI, 2))
    assert segments[0] == "Congratulations on your new job!"
    assert segments[-1] == "You've got this!"
    assert "Arrive a little early. Take notes. Ask lots of questions." in " ".join(segments)


def test_run_on_text_splits_between_words() -> None:
    segments = segment(random_deltas(RUN_ON, 4), max_chars=120)
    assert len(segments) >= 4
    assert all(len(s) <= 120 for s in segments)
    assert words(" ".join(segments)) == words(RUN_ON)


def test_long_sentence_splits_at_clauses() -> None:
    segments = segment(token_deltas(LONG_SENTENCE), max_chars=150)
    assert all(len(s) <= 150 for s in segments)
    # Every cut after the quick first segment falls at a comma, none between two plain words.
    assert all(s.endswith(",") for s in segments[1:-1])
    assert segments[-1].endswith("Africa.")


def test_huge_token_is_cut_hard() -> None:
    blob = "x" * 1000
    segments = segment(random_deltas(f"Here it is: {blob} done.", 1), max_chars=100)
    assert all(len(s) <= 100 for s in segments)
    assert "".join(segments).count("x") == 1000


@pytest.mark.parametrize(
    "text", ["", "   \n\n ", "🎉🎉 👍🏽", "...", "**\n---\n", "```\ncode only\n```", "#"]
)
def test_nothing_speakable_gives_nothing(text: str) -> None:
    segments = segment(list(text))
    if "code only" in text:
        assert segments == [CODE_NOTE]
    else:
        assert segments == []


def test_spans_reconstruct_what_was_heard() -> None:
    for text in REPLIES.values():
        seg = Segmenter()
        segments: list[str] = []
        for delta in token_deltas(text):
            segments += seg.push(delta)
        segments += seg.flush()
        spans = seg.spans
        assert len(spans) == len(segments)
        assert spans[0][0] == 0 and spans[-1][1] <= len(text)
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
        for (start, end), spoken in zip(spans, segments):
            assert words(speakable(text[start:end])) == words(spoken)
        assert not speakable(text[spans[-1][1] :])  # nothing speakable after the last segment


def test_speakable() -> None:
    assert speakable("**Bold** and _italic_ and ~~gone~~ text") == "Bold and italic and gone text"
    assert speakable("# Title\n\nSome *text* here") == "Title. Some text here"
    assert speakable("See [the guide](https://example.com/guide) now.") == "See the guide now."
    assert speakable("Visit https://www.example.org/a?b=c, then rest.") == "Visit example.org, then rest."
    assert speakable("Use `git status` or `x = f(y)[0]`.") == "Use git status or that code."
    assert speakable("I ❤️ this 👍🏽!") == "I this!"
    assert speakable("50% of R&D, ~3 km at 20°C, #1 pick") == (
        "50 percent of R and D, about 3 km at 20 degrees C, number 1 pick"
    )
    assert speakable("before\n```\nx = 1\n```\nafter") == f"before. {CODE_NOTE} after"
    assert speakable("🎉✨") == ""
    assert speakable("  ...  ") == ""
    with pytest.raises(TypeError):
        speakable(None)  # type: ignore[arg-type]


def test_bad_use_gives_clear_errors() -> None:
    with pytest.raises(ValueError, match="first_segment_min_words"):
        Segmenter(first_segment_min_words=0)
    with pytest.raises(ValueError, match="first_segment_max_words"):
        Segmenter(first_segment_min_words=5, first_segment_max_words=4)
    with pytest.raises(ValueError, match="max_chars"):
        Segmenter(max_chars=10)
    seg = Segmenter()
    with pytest.raises(TypeError, match="delta must be str"):
        seg.push(b"bytes")  # type: ignore[arg-type]
    assert seg.push("Hello there. ") == []
    assert seg.flush() == ["Hello there."]
    assert seg.flush() == []
    with pytest.raises(RuntimeError, match="after flush"):
        seg.push("more")


# --- properties ---------------------------------------------------------------------------------

FRAGMENTS = [
    "Hello", "world", "the", "cat", "Dr.", "Mr.", "e.g.", "U.S.", "J.", "etc.", "3.14", "$4.99",
    "10,000", ",", ".", "!", "?", "...", "…", ":", ";", " ", " ", " ", " ", "\n", "\n\n", "- ", "1. ",
    "**", "*", "_", "`x`", "`", "[link](http://a.b/c)", "[", "]", "(", ")", "https://ex.com/p.", "🎉",
    "👍🏽", "#", "## ", "```\nprint(1)\n```\n", "```", "'", "\"", "—", " - ", "> ", "|", "A", "b",
]


def alnum(text: str) -> str:
    return re.sub(r"[^0-9a-z]", "", text.lower())


def split_at(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    return [text[a:b] for a, b in zip(points, points[1:])]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(REPLIES)), cuts=st.lists(st.integers(min_value=0), max_size=60))
def test_property_replies_any_delta_boundaries(name: str, cuts: list[int]) -> None:
    text = REPLIES[name]
    assert segment(split_at(text, cuts)) == segment([text])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pieces=st.lists(st.sampled_from(FRAGMENTS), max_size=80),
    cuts=st.lists(st.integers(min_value=0), max_size=40),
    max_chars=st.sampled_from([40, 80, 300]),
)
# A hard cut at max_chars fell inside the URL: its path was read out ("...hello ex.co m/p.").
@example(pieces=["Hello"] * 7 + ["https://ex.com/p."], cuts=[], max_chars=40)
@example(pieces=["Hello"] * 8 + ["[link](http://a.b/c)"], cuts=[3, 30], max_chars=40)
@example(pieces=["Hello"] * 7 + ["#", "3.14"], cuts=[], max_chars=40)
def test_property_random_markdown_any_delta_boundaries(
    pieces: list[str], cuts: list[int], max_chars: int
) -> None:
    text = "".join(pieces)
    whole = segment([text], max_chars=max_chars)
    assert segment(split_at(text, cuts), max_chars=max_chars) == whole
    for s in whole:
        assert 0 < len(s) <= max_chars
        assert any(ch.isalnum() for ch in s)
        assert not MARKUP & set(s)
    assert alnum(" ".join(whole)) == alnum(speakable(text))
