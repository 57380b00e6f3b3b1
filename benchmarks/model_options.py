"""The options the TTS benchmarks share (which Chatterbox checkpoint, on which device, in which chunks,
on how many threads) and the checkpoint they name. Each benchmark adds its own options beside these."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_model_options(parser: argparse.ArgumentParser, *, variant: str) -> None:
    """--variant (default ``variant``), --seed, --checkpoint, --cache-dir, --device, --chunk-size, --threads."""
    parser.add_argument("--variant", choices=["tiny", "full"], default=variant,
                        help="size of the random-weight checkpoint to build")
    parser.add_argument("--seed", type=int, default=0, help="checkpoint seed")
    parser.add_argument("--checkpoint", type=Path, default=None, help="use this directory instead of building one")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "voicechat-bench")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--chunk-size", type=int, default=25)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")


def checkpoint_of(args: argparse.Namespace) -> Path:
    """--checkpoint, or the random-weight checkpoint of --variant and --seed (built once under --cache-dir)."""
    if args.checkpoint is not None:
        return args.checkpoint
    from voicechat.tts.checkpoint import ensure_checkpoint

    started = time.perf_counter()
    checkpoint = ensure_checkpoint(args.cache_dir / "checkpoints" / f"{args.variant}-seed{args.seed}",
                                   variant=args.variant, seed=args.seed)
    print(f"checkpoint {checkpoint} ready in {time.perf_counter() - started:.1f} s", flush=True)
    return checkpoint
