"""Echo: the project's echo gate (src/voicechat/echo.py) against WebRTC's echo canceller, before the VAD.

The assistant's reply (espeak-ng) is played; the microphone hears it delayed, quieter and low-passed
over a noise floor, and in a second run also a user (another espeak voice) speaking over it from 1 s.
Each method processes the microphone stream in real-time order, then Silero VAD (the Listener's VAD)
hears the result:

  none          the microphone as it is
  echo gate     EchoGate: silences what the played audio explains (the reference is the audio sent,
                the playback position exact, as the page's reports give it)
  webrtc aec    WebRTC's audio processing module (AEC3, with its high-pass filter), through the
                `livekit` wheel's AudioProcessingModule, fed the played audio as its reverse stream
                in 10 ms frames and told the true delay; "delay not told" leaves its estimator to find it

Reported per method, over the delay x gain grid: voiced VAD frames and turn starts (3 voiced frames in a
row, as the Listener needs) in the echo-only run (each one a false barge-in), the share of the user's
own voiced frames the VAD still hears over the echo, the delay from the user's first voiced frame to
the first turn start, and the processing time per second of audio.

Usage: python benchmarks/echo_cancel.py [--seconds 4]
`livekit` is not a dependency of the project; to include its row install it beside the venv:
  .venv/bin/pip install --target /tmp/lk --no-deps livekit && PYTHONPATH=/tmp/lk python benchmarks/echo_cancel.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from speech import espeak_wav, read_pcm16  # noqa: E402  (test helper: cached espeak-ng rendering)

from voicechat.echo import EchoGate, EchoReference  # noqa: E402
from voicechat.stt.vad import SileroVad  # noqa: E402

RATE = 16000
ASSISTANT = (
    "The capital of France is Paris. It is known for the Eiffel Tower, its fine food and its long history. "
    "Millions of visitors come every year to see its museums and walk along the river."
)
USER = "Wait, stop, tell me about Berlin instead please."
GRID = [(50, 0.5), (50, 0.1), (120, 0.3), (300, 0.5), (300, 0.1)]  # (delay ms, gain)
USER_AT_S = 1.0
START_FRAMES = 3  # voiced frames in a row that start a turn (the Listener's START_FRAMES)

Process = Callable[[np.ndarray, np.ndarray, int], np.ndarray]  # (mic, played, delay ms) -> processed mic


def voice(text: str, name: str) -> np.ndarray:
    pcm, rate = read_pcm16(espeak_wav(text, voice=name))
    assert rate == RATE
    return pcm.astype(np.float32) / 32768


def room(played: np.ndarray, delay_ms: int, gain: float, seed: int) -> np.ndarray:
    """What the microphone hears of ``played``: later, quieter, low-passed, over a noise floor."""
    taps = np.hanning(9) / np.hanning(9).sum()
    echo = gain * np.convolve(played, taps, mode="same")
    echo = np.concatenate([np.zeros(delay_ms * RATE // 1000, np.float32), echo])[: len(played)]
    return (echo + np.random.default_rng(seed).normal(0, 0.002, len(played))).astype(np.float32)


def no_processing(mic: np.ndarray, played: np.ndarray, delay_ms: int) -> np.ndarray:
    return mic


def echo_gate(mic: np.ndarray, played: np.ndarray, delay_ms: int) -> np.ndarray:
    """In 20 ms pieces, as the page sends them; playback reported every 240 ms, as the page does."""
    clock = [0.0]
    reference = EchoReference(clock=lambda: clock[0])
    reference.sent(played, 1)
    gate = EchoGate(reference)
    out = []
    for at in range(0, len(mic), 320):
        clock[0] = at / RATE
        if at % 3840 == 0:
            reference.played(at, 1)
        out.append(gate.process(mic[at : at + 320]))
    return np.concatenate(out)


def webrtc(tell_delay: bool) -> Process:
    from livekit import rtc

    def process(mic: np.ndarray, played: np.ndarray, delay_ms: int) -> np.ndarray:
        apm = rtc.AudioProcessingModule(echo_cancellation=True, high_pass_filter=True)
        out = []
        for at in range(0, len(mic) - 159, 160):
            far = np.clip(played[at : at + 160] * 32768, -32768, 32767).astype(np.int16)
            near = np.clip(mic[at : at + 160] * 32768, -32768, 32767).astype(np.int16)
            reverse = rtc.AudioFrame(far.tobytes(), RATE, 1, 160)
            apm.process_reverse_stream(reverse)
            if tell_delay:
                apm.set_stream_delay_ms(delay_ms)
            frame = rtc.AudioFrame(near.tobytes(), RATE, 1, 160)
            apm.process_stream(frame)
            out.append(np.frombuffer(bytes(frame.data), dtype=np.int16).astype(np.float32) / 32768)
        return np.concatenate(out)

    return process


def turn_starts(voiced: np.ndarray) -> list[int]:
    """Frame indices where START_FRAMES voiced frames in a row begin a turn (then a new run is needed)."""
    starts, run = [], 0
    for index, is_voiced in enumerate(voiced):
        run = run + 1 if is_voiced else 0
        if run == START_FRAMES:
            starts.append(index)
    return starts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each run")
    args = parser.parse_args()
    reply, user = voice(ASSISTANT, "en-us"), voice(USER, "en-gb")
    length = round(args.seconds * RATE)
    played = np.zeros(length, np.float32)
    played[: min(length, len(reply))] = reply[:length]
    user_track = np.zeros(length, np.float32)
    start = round(USER_AT_S * RATE)
    user_track[start : start + len(user)] = user[: length - start]
    vad = SileroVad()

    def voiced(audio: np.ndarray) -> np.ndarray:
        _, probabilities = vad.stream().process(audio.astype(np.float32))
        return np.asarray(probabilities) >= 0.5

    methods: dict[str, Process] = {"none": no_processing, "echo gate": echo_gate}
    try:
        methods["webrtc aec (told the delay)"] = webrtc(True)
        methods["webrtc aec (delay not told)"] = webrtc(False)
    except ImportError:
        print("livekit is not installed: the WebRTC rows are left out (see --help)")

    print(f"{args.seconds:g} s runs, grid (delay ms, gain) {GRID}; user over the echo from {USER_AT_S:g} s")
    print("| method | echo alone: voiced frames | echo alone: turn starts | user's voiced frames kept | "
          "user onset -> turn start | processing per s of audio |")
    print("|---|---|---|---|---|---|")
    for name, process in methods.items():
        echo_frames, echo_starts, kept, onsets, cost = [], [], [], [], []
        for delay_ms, gain in GRID:
            mic = room(played, delay_ms, gain, seed=delay_ms)
            started = time.perf_counter()
            alone = process(mic, played, delay_ms)
            cost.append((time.perf_counter() - started) / args.seconds * 1000)
            heard = voiced(alone)
            echo_frames.append(int(heard.sum()))
            echo_starts.append(len(turn_starts(heard)))
            over = process(mic + 0.3 * user_track, played, delay_ms)  # the user as loud as a x0.3 echo
            # The user's own voiced frames (the VAD on the user alone), and how many are heard over the echo.
            own = voiced(user_track)
            with_user = voiced(over)
            n = min(len(own), len(with_user))
            kept.append(float((with_user[:n] & own[:n]).sum() / max(1, own[:n].sum())))
            first_own = int(np.argmax(own))
            starts = [s for s in turn_starts(with_user) if s >= first_own - START_FRAMES]
            if starts:
                onsets.append((starts[0] - first_own) * 32.0)
        onset = f"{statistics.median(onsets):.0f} ms (median of {len(onsets)})" if onsets else "never"
        print(f"| {name} | {sum(echo_frames)} | {sum(echo_starts)} | {100 * statistics.mean(kept):.0f}% | {onset} | "
              f"{statistics.mean(cost):.1f} ms |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
