"""`voicechat make-checkpoint`: build a random-weight Chatterbox checkpoint (noise, not speech), or with
``--llm DIR`` the tiny hand-set language model of the tests (a few fixed sentences)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

HELP = (
    "Write a Chatterbox checkpoint with RANDOM weights to OUT_DIR. It has the real architecture and "
    "loads through the real ChatterboxTTS.from_local, but it produces NOISE, NOT SPEECH: it exists for "
    "tests and benchmarks (the 'full' variant costs exactly as much compute as the real model). "
    "For real speech, leave VOICECHAT_CHECKPOINT unset and the real model is downloaded."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = HELP
    parser.add_argument(
        "--variant",
        choices=["tiny", "full"],
        default="tiny",
        help="tiny: shrunk T3 and S3Gen, fast on a CPU (default); full: the real sizes (3.2 GB, ~7 GB RAM to load)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same weights")
    parser.add_argument(
        "--llm",
        metavar="DIR",
        type=Path,
        default=None,
        help="instead, write the tiny test language model (Qwen2 architecture, real tokenizer and chat template, "
        "hand-set weights that answer with a few fixed sentences) to DIR; use it with VOICECHAT_MODEL=DIR",
    )
    parser.add_argument(
        "out_dir", metavar="OUT_DIR", type=Path, nargs="?", help="directory to create (must not exist yet)"
    )


def run(args: argparse.Namespace) -> int:
    if (args.llm is None) == (args.out_dir is None):
        print("error: give either OUT_DIR (a Chatterbox checkpoint) or --llm DIR (the tiny language model)")
        return 2
    if args.llm is not None:
        return _make_llm(args.llm)
    from voicechat.tts.checkpoint import CheckpointError, ensure_checkpoint

    if args.out_dir.exists():
        print(f"error: {args.out_dir} already exists; choose a new directory")
        return 2
    if args.seed < 0:
        print("error: --seed must be a non-negative whole number")
        return 2
    started = time.perf_counter()
    try:
        ensure_checkpoint(args.out_dir, variant=args.variant, seed=args.seed)
    except (CheckpointError, OSError) as error:
        print(f"error: {error}")
        return 1
    print(
        f"wrote a {args.variant} random-weight checkpoint (seed {args.seed}) to {args.out_dir} "
        f"in {time.perf_counter() - started:.1f} s. It produces noise, not speech."
    )
    return 0


def _make_llm(out_dir: Path) -> int:
    from voicechat.llm.tiny_checkpoint import TinyCheckpointError, ensure_tiny_llm

    if out_dir.exists():
        print(f"error: {out_dir} already exists; choose a new directory")
        return 2
    started = time.perf_counter()
    try:
        ensure_tiny_llm(out_dir)
    except (TinyCheckpointError, OSError) as error:
        print(f"error: {error}")
        return 1
    print(
        f"wrote the tiny test language model to {out_dir} in {time.perf_counter() - started:.1f} s. "
        f"It answers with a few fixed sentences; try it with VOICECHAT_MODEL={out_dir}."
    )
    return 0
