"""TTS latency: raw Chatterbox ``generate_stream`` against our engine, on one checkpoint, in one run.

Both sides speak the same sentences with the same seeds (the engine splits text into sentences; the raw
side is given the same sentences, one generate_stream call each), so they do the same computation and
the ratio ours/raw is the engine's own cost: owner thread, scheduling, hand-over to asyncio, PCM
conversion. Repetitions alternate raw and ours so that background load hits both alike.

    python benchmarks/tts_latency.py                      # tiny random-weight checkpoint (noise)
    python benchmarks/tts_latency.py --variant full       # real sizes: real compute, still noise
    python benchmarks/tts_latency.py --checkpoint DIR     # any Chatterbox directory (e.g. the real model)

Random-weight checkpoints produce noise, not speech; their utterance lengths do not follow the text.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import time

import numpy as np
from model_options import add_model_options, checkpoint_of

TEXTS = {
    "short": "Hello! How can I help you today?",
    "medium": "The weather is lovely this afternoon. I would suggest a walk in the park, "
    "and maybe a coffee on the way back home.",
    "long": "Let me explain how the system works. First, your voice is captured by the browser and sent to "
    "the server. Then a speech recognizer turns it into text, while a voice activity detector decides when "
    "you have finished speaking. The text goes to a language model, which streams its answer word by word. "
    "Finally, the answer is spoken sentence by sentence, and the audio is streamed back to your browser as "
    "soon as each piece is ready.",
}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def run_raw(tts, sentences: list[str], params, seed: int) -> tuple[float, float, float]:
    """(time to first audio, total time, audio seconds) of plain generate_stream calls."""
    import torch

    torch.manual_seed(seed)
    started = time.perf_counter()
    first = None
    samples = 0
    with torch.inference_mode():
        for sentence in sentences:
            for audio, _ in tts.generate_stream(sentence, exaggeration=params.exaggeration,
                                                cfg_weight=params.cfg_weight, temperature=params.temperature,
                                                chunk_size=params.chunk_size, print_metrics=False):
                chunk = audio.squeeze(0).numpy()  # the raw caller still needs the samples on the CPU
                if first is None:
                    first = time.perf_counter() - started
                samples += len(chunk)
    return first or float("nan"), time.perf_counter() - started, samples / 24000


_marks: dict[str, float] = {}


def mark_chatterbox_calls(chatterbox_class) -> None:
    """Record when the first generate_stream call starts and first yields, so the engine's own share
    of the latency (before Chatterbox starts, after it yields) can be told apart from Chatterbox's."""
    original = chatterbox_class.generate_stream

    def generate_stream(self, *args, **kwargs):
        _marks.setdefault("call", time.perf_counter())
        for item in original(self, *args, **kwargs):
            _marks.setdefault("yield", time.perf_counter())
            yield item

    chatterbox_class.generate_stream = generate_stream


async def run_ours(engine, text: str, params) -> tuple[float, float, float, float]:
    """(time to first audio, total time, audio seconds, engine's own share of the time to first audio)."""
    _marks.clear()
    started = time.perf_counter()
    stream = engine.stream(text, params)
    samples = 0
    received = float("nan")
    async for chunk in stream:
        if not samples:
            received = time.perf_counter()
        samples += len(chunk)
    # The batched engine no longer calls generate_stream: its own share cannot be told apart (nan).
    own = (_marks["call"] - started) + (received - _marks["yield"]) if _marks else float("nan")
    return stream.first_chunk_s or float("nan"), time.perf_counter() - started, samples / 24000, own


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_options(parser, variant="tiny")
    parser.add_argument("--reps", type=int, default=5, help="repetitions per text and side")
    args = parser.parse_args()

    import torch
    from chatterbox.tts import ChatterboxTTS

    from voicechat.config import load_settings
    from voicechat.tts.checkpoint import load_chatterbox
    from voicechat.tts.engine import TTSEngine, TTSParams, detect_device, split_for_speech

    if args.threads:
        torch.set_num_threads(args.threads)
    mark_chatterbox_calls(ChatterboxTTS)
    checkpoint = checkpoint_of(args)
    device = detect_device(args.device)
    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") else None
    print(f"device: {device}{f' ({gpu})' if gpu else ''}, torch threads: {torch.get_num_threads()}")

    started = time.perf_counter()
    tts = load_chatterbox(checkpoint, device)
    load_s = time.perf_counter() - started
    rss_after_load = peak_rss_mb()

    settings = load_settings(checkpoint=str(checkpoint), device=device, chunk_size=args.chunk_size, voice=None,
                             tts_warmup=True)
    started = time.perf_counter()
    engine = TTSEngine(tts, settings)
    engine.warm_up(TTSParams.from_settings(settings))
    engine_start_s = time.perf_counter() - started
    base = TTSParams.from_settings(settings)
    run_raw(tts, ["Warming up the raw side too."], base, 0)

    rows = []
    loop = asyncio.new_event_loop()
    try:
        for name, text in TEXTS.items():
            sentences = split_for_speech(text)
            raw, ours = [], []
            for rep in range(args.reps):
                params = TTSParams.from_settings(settings, seed=1000 + rep)
                sides = [("raw", lambda: run_raw(tts, sentences, params, params.seed)),
                         ("ours", lambda: loop.run_until_complete(run_ours(engine, text, params)))]
                for side, call in sides if rep % 2 == 0 else sides[::-1]:
                    (raw if side == "raw" else ours).append(call())
            rows.append((name, len(sentences), raw, ours))
            print(f"  {name}: done", file=sys.stderr)
    finally:
        engine.close()
        loop.close()

    print()
    print(f"checkpoint: {checkpoint}  chunk size: {args.chunk_size}  repetitions: {args.reps}")
    print(f"model load: {load_s:.2f} s   engine start (default voice + warm-up): {engine_start_s:.2f} s")
    print(f"peak RSS: {rss_after_load:.0f} MB after load, {peak_rss_mb():.0f} MB at the end")
    header = (f"{'text':<7} {'sent':>4} | {'raw TTFA p50':>12} {'p95':>6} | {'ours TTFA p50':>13} {'p95':>6} | "
              f"{'ratio p50':>9} {'p95':>5} | {'raw RTF':>7} {'ours RTF':>8} | {'engine ms':>9} | {'audio s':>7}")
    print(header)
    print("-" * len(header))
    ratios = []
    for name, count, raw, ours in rows:
        raw_ttfa, ours_ttfa = [r[0] for r in raw], [o[0] for o in ours]
        raw_rtf = statistics.mean(r[1] / r[2] for r in raw)
        ours_rtf = statistics.mean(o[1] / o[2] for o in ours)
        p50 = percentile(ours_ttfa, 50) / percentile(raw_ttfa, 50)
        p95 = percentile(ours_ttfa, 95) / percentile(raw_ttfa, 95)
        ratios.append(p50)
        audio = statistics.mean(o[2] for o in ours)
        own_ms = percentile([o[3] for o in ours], 50) * 1000
        print(f"{name:<7} {count:>4} | {percentile(raw_ttfa, 50):>11.3f}s {percentile(raw_ttfa, 95):>5.3f}s | "
              f"{percentile(ours_ttfa, 50):>12.3f}s {percentile(ours_ttfa, 95):>5.3f}s | {p50:>9.3f} {p95:>5.3f} | "
              f"{raw_rtf:>7.3f} {ours_rtf:>8.3f} | {own_ms:>9.2f} | {audio:>7.2f}")
    print(f"\nours/raw time to first audio, p50 over all texts: {statistics.median(ratios):.3f} (target <= 1.05)")
    print("engine ms: the engine's own part of its time to first audio (p50): dispatch to the owner thread before")
    print("Chatterbox starts plus hand-over to the consumer after it yields; the rest is Chatterbox itself.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
