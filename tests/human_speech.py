"""Human speech for tests and benchmarks: Debian's asterisk-core-sounds-en-wav, cut where sentences go on.

The package (installed by scripts/test.sh) holds the phone-system prompts of one professional
speaker (Allison Smith, CC-BY-SA-3.0), 8 kHz 16-bit WAV. benchmarks/data/asterisk_cuts.tsv names,
for each test utterance, one sentence's span in a prompt file, a word boundary where the sentence
cannot end, the pause to insert there and the split (tuning / heldout: the held-out part is never used
to fit anything). The cut points were found once, at development time
(benchmarks/find_asterisk_cuts.py); rebuilding needs only the package, soundfile and soxr.
No audio is committed; built utterances are cached in the test cache.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr

from conftest_paths import CACHE_DIR

PACKAGE = "asterisk-core-sounds-en-wav"
PACKAGE_DIR = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
CUTS_TABLE = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "asterisk_cuts.tsv"
PAUSES_S = (0.2, 0.35, 0.5, 0.7, 0.9, 1.2)  # inserted hesitations, cycled over the table's rows
RATE = 16000
FADE_S = 0.015  # a 15 ms fade on both sides of the inserted pause: no click at the cut
LOUD = 200  # int16 level (~-44 dBFS) above the recordings' floor: where the speech starts and ends
_STRAY_S, _STRAY_GAP_S = 0.12, 0.2  # a burst this short, this far from the sentence: the next prompt's onset
_VERSION = 2  # part of the cache key: bump when the building changes


@dataclass(frozen=True)
class Cut:
    file: str
    start_s: float
    end_s: float
    cut_s: float
    pause_s: float
    split: str  # "tuning" or "heldout"
    text: str  # the sentence, "|" where the pause goes

    @property
    def words(self) -> str:
        return " ".join(self.text.replace("|", " ").split())


@dataclass(frozen=True)
class HumanUtterance:
    cut: Cut
    audio: np.ndarray  # int16, 16 kHz: the sentence with the pause inserted, no lead or trail
    pause_at_s: float  # where the inserted pause starts in ``audio``
    end_s: float  # where the last word ends in ``audio``


def available() -> bool:
    return PACKAGE_DIR.is_dir()


def cuts(split: str | None = None) -> list[Cut]:
    """The table's rows, in order (all of them, or one split)."""
    with CUTS_TABLE.open(newline="") as table:
        rows = [
            Cut(r["file"], float(r["start_s"]), float(r["end_s"]), float(r["cut_s"]), float(r["pause_s"]), r["split"], r["text"])
            for r in csv.DictReader(table, delimiter="\t", quoting=csv.QUOTE_NONE)
        ]
    return [row for row in rows if split is None or row.split == split]


def _without_stray_tail(audio: np.ndarray) -> np.ndarray:
    """``audio`` without a short burst after a gap at its end: a span's end taken from Whisper's
    approximate timestamps may hold the first sound of the next sentence, which is no part of this one."""
    hop = RATE // 100
    frames = np.array([np.sqrt(np.mean(audio[i : i + hop] ** 2)) * 32768 for i in range(0, len(audio) - hop + 1, hop)])
    loud = np.nonzero(frames > 300)[0]
    if len(loud) < 2:
        return audio
    gaps = np.nonzero(np.diff(loud) > 1)[0]
    if not len(gaps):
        return audio
    last_run_start = loud[gaps[-1] + 1]
    gap = last_run_start - loud[gaps[-1]] - 1
    if (loud[-1] - last_run_start + 1) * hop < _STRAY_S * RATE and gap * hop >= _STRAY_GAP_S * RATE:
        return audio[: (loud[gaps[-1]] + 1) * hop]
    return audio


def _to_int16(audio: np.ndarray) -> np.ndarray:
    return np.clip(np.round(audio * 32768), -32768, 32767).astype(np.int16)


def build(cut: Cut) -> HumanUtterance:
    """The sentence of ``cut`` at 16 kHz with ``cut.pause_s`` of silence at the cut (cached)."""
    if not available():
        raise FileNotFoundError(f"{PACKAGE_DIR} is missing: install the Debian package {PACKAGE} (scripts/test.sh does)")
    key = hashlib.sha1(f"{cut!r}|{_VERSION}".encode()).hexdigest()[:16]
    cached = CACHE_DIR / "human" / f"{key}.npz"
    if cached.exists():
        data = np.load(cached)
        return HumanUtterance(cut, data["audio"], float(data["pause_at"]), float(data["end"]))
    source, rate = soundfile.read(PACKAGE_DIR / cut.file, dtype="float32")
    audio = soxr.resample(source, rate, RATE).astype(np.float32)
    start, cut_at, end = (round(t * RATE) for t in (cut.start_s, cut.cut_s, cut.end_s))
    head, tail = audio[start:cut_at].copy(), audio[cut_at:end].copy()
    fade = round(FADE_S * RATE)
    head[-fade:] *= np.linspace(1, 0, fade, dtype=np.float32)
    tail[:fade] *= np.linspace(0, 1, fade, dtype=np.float32)
    # Trim the span to its speech: the turn starts and ends where the voice does.
    head = _without_stray_tail(head[::-1])[::-1].copy()
    tail = _without_stray_tail(tail)
    loud_head = np.nonzero(np.abs(head) * 32768 > LOUD)[0]
    loud_tail = np.nonzero(np.abs(tail) * 32768 > LOUD)[0]
    head = head[max(0, loud_head[0] - round(0.02 * RATE)) :]
    tail = tail[: loud_tail[-1] + 1]
    pause = np.zeros(round(cut.pause_s * RATE), np.float32)
    pcm = _to_int16(np.concatenate([head, pause, tail]))
    result = HumanUtterance(cut, pcm, len(head) / RATE, len(pcm) / RATE)
    cached.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cached, audio=pcm, pause_at=result.pause_at_s, end=result.end_s)
    return result
