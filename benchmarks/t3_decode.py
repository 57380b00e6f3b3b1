"""T3 decoding speed: chatterbox-streaming's own loop against our lean, batched loop, in one run.

Two measures, each a ratio of two timings taken in this run (alternating, so background load hits both):

1. one stream, time per token: raw ``inference_stream`` (what ``generate_stream`` runs for T3: eager
   attention with attention outputs, the alignment hook, the tuple KV cache) vs ``T3Decoder`` with one
   stream. Both sample the same tokens (tests/tts/test_t3_decoder.py); the prefill is timed apart.
2. N streams (default 8), tokens per second: all N in one batch (one forward pass per step) vs the same
   N streams decoded one after another with the lean loop (and with the raw loop, for reference).

    python benchmarks/t3_decode.py                       # tiny random-weight checkpoint
    python benchmarks/t3_decode.py --variant full        # real sizes (~7 GB RSS: flock /tmp/heavy.lock ...)

Streams stop at the stop token or after --tokens tokens, whichever comes first; tokens/s counts the
tokens actually decoded. Random weights: the timings are real, the speech is noise.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

TEXTS = [
    "Hello there, this is a short test of the decoder.",
    "The weather is lovely this afternoon.",
    "I would suggest a walk in the park, and maybe a coffee.",
    "Let me explain how the system works, step by step.",
    "Your voice is captured by the browser and sent to the server.",
    "A speech recognizer turns it into text.",
    "The answer is spoken sentence by sentence.",
    "And the audio is streamed back as soon as each piece is ready.",
]


def cfg_text_tokens(tts, text: str):
    import torch
    import torch.nn.functional as F
    from chatterbox.tts import punc_norm

    tokens = tts.tokenizer.text_to_tokens(punc_norm(text)).to(tts.device)
    tokens = torch.cat([tokens, tokens])
    tokens = F.pad(tokens, (1, 0), value=tts.t3.hp.start_text_token)
    return F.pad(tokens, (0, 1), value=tts.t3.hp.stop_text_token)


def raw_stream(tts, text: str, seed: int, limit: int) -> tuple[float, float, int]:
    """(prefill + first token s, seconds per later token, tokens) of raw inference_stream."""
    import torch

    torch.manual_seed(seed)
    started = time.perf_counter()
    first_at, count = None, 0
    with torch.inference_mode():
        for _ in tts.inference_stream(t3_cond=tts.conds.t3, text_tokens=cfg_text_tokens(tts, text), chunk_size=1):
            count += 1
            if first_at is None:
                first_at = time.perf_counter()
            if count >= limit:
                break
    per_token = (time.perf_counter() - first_at) / max(1, count - 1)
    return first_at - started, per_token, count


def lean_streams(tts, texts: list[str], seeds: list[int], limit: int, slots: int) -> tuple[float, float, int]:
    """All ``texts`` decoded together: (prefill + first token s, decode seconds, tokens after the first)."""
    import torch

    from voicechat.tts.t3_decoder import T3Decoder

    decoder = T3Decoder(tts.t3, slots=slots)
    with torch.inference_mode():
        started = time.perf_counter()
        streams = [decoder.join(decoder.prompt(tts.conds.t3, cfg_text_tokens(tts, text)), seed=seed,
                                cfg_weight=0.5, temperature=0.8) for text, seed in zip(texts, seeds)]
        decoder.sample()
        first = time.perf_counter() - started
        count, decode_started = 0, time.perf_counter()
        while True:
            for stream in list(decoder.active):
                if stream.done or len(stream.tokens) >= limit:
                    decoder.leave(stream)
            if not decoder.active:
                break
            decoder.forward()
            decoder.sample()
            count += len(decoder.active)
        return first, time.perf_counter() - decode_started, count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--checkpoint", type=Path, help="a Chatterbox directory instead of a random checkpoint")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "voicechat-bench")
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=None, help="tokens per stream (default: 60 tiny, 25 full)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-raw-batch", action="store_true", help="skip raw one-by-one for N streams (slow)")
    args = parser.parse_args(argv)

    import torch

    from voicechat.tts.checkpoint import ensure_checkpoint, load_chatterbox

    torch.set_num_threads(args.threads)
    limit = args.tokens or (60 if args.variant == "tiny" else 25)
    checkpoint = args.checkpoint or ensure_checkpoint(args.cache_dir / "checkpoints" / f"{args.variant}-seed0",
                                                      variant=args.variant, seed=0)
    tts = load_chatterbox(checkpoint, args.device)
    print(f"checkpoint {checkpoint} on {args.device}, {args.threads} threads, up to {limit} tokens per stream")

    # Warm both paths once (lazy initialisation, allocator).
    raw_stream(tts, TEXTS[0], 0, 5)
    lean_streams(tts, TEXTS[:1], [0], 5, 1)

    raw_first, raw_tok, lean_first, lean_tok = [], [], [], []
    for repeat in range(args.repeats):
        first, per_token, _ = raw_stream(tts, TEXTS[0], repeat, limit)
        raw_first.append(first)
        raw_tok.append(per_token)
        first, seconds, count = lean_streams(tts, TEXTS[:1], [repeat], limit, 1)
        lean_first.append(first)
        lean_tok.append(seconds / max(1, count))
    med = statistics.median
    print("\n1 stream (median of %d)           raw        lean     lean/raw" % args.repeats)
    print(f"  prefill + first token (ms) {1e3 * med(raw_first):9.1f} {1e3 * med(lean_first):9.1f} "
          f"{med(lean_first) / med(raw_first):10.2f}")
    print(f"  per token (ms)             {1e3 * med(raw_tok):9.1f} {1e3 * med(lean_tok):9.1f} "
          f"{med(lean_tok) / med(raw_tok):10.2f}")

    n = args.streams
    texts = [TEXTS[i % len(TEXTS)] for i in range(n)]
    seeds = list(range(100, 100 + n))
    batched, one_by_one, raw_rates = [], [], []
    for _ in range(args.repeats):
        _, seconds, count = lean_streams(tts, texts, seeds, limit, n)
        batched.append(count / seconds)
        total_s = total = 0
        for text, seed in zip(texts, seeds):
            _, seconds, count = lean_streams(tts, [text], [seed], limit, 1)
            total_s, total = total_s + seconds, total + count
        one_by_one.append(total / total_s)
        if not args.no_raw_batch:
            total_s = total = 0
            for text, seed in zip(texts, seeds):
                _, per_token, count = raw_stream(tts, text, seed, limit)
                total_s, total = total_s + per_token * (count - 1), total + count - 1
            raw_rates.append(total / total_s)
    print(f"\n{n} streams, decode tokens/s (median of {args.repeats}; prefill excluded)")
    print(f"  lean, one batch      {med(batched):8.1f}")
    print(f"  lean, one by one     {med(one_by_one):8.1f}   batched / one by one = {med(batched) / med(one_by_one):.2f}x")
    if raw_rates:
        print(f"  raw, one by one      {med(raw_rates):8.1f}   batched / raw one by one = {med(batched) / med(raw_rates):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
