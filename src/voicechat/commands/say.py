"""`voicechat say`: speak a text through the TTS engine into a WAV file, and report its speed."""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

# Flag -> setting (each can also come from VOICECHAT_<SETTING> or `.env`).
FLAGS = {
    "--checkpoint": ("checkpoint", str, "local Chatterbox model directory (default: download from the hub)"),
    "--voice": ("voice", Path, "reference WAV to speak with (voice cloning; default: the built-in voice)"),
    "--device": ("device", str, "torch device: auto, cuda, cuda:N, mps or cpu"),
    "--exaggeration": ("exaggeration", float, "emotion exaggeration, 0.25-2.0"),
    "--cfg-weight": ("cfg_weight", float, "classifier-free guidance weight, 0-1"),
    "--temperature": ("temperature", float, "sampling temperature, 0.05-5"),
    "--chunk-size": ("chunk_size", int, "speech tokens per streamed chunk (25 = 1 s of audio)"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", metavar="TEXT", help="what to say")
    parser.add_argument("--out", required=True, type=Path, metavar="FILE.wav", help="WAV file to write (24 kHz, 16-bit mono)")
    for flag, (dest, kind, help_text) in FLAGS.items():
        parser.add_argument(flag, dest=dest, type=kind, default=None, help=help_text)
    parser.add_argument("--seed", type=int, default=None, help="random seed, for a reproducible result")
    parser.add_argument("--no-warmup", action="store_true", help="skip the warm-up generation before speaking")


def _settings_error(error: Exception) -> str:
    from pydantic import ValidationError

    if isinstance(error, ValidationError):
        return "; ".join(f"{'.'.join(map(str, item['loc']))}: {item['msg']}" for item in error.errors())
    return str(error)


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from voicechat.audio import write_wav
    from voicechat.config import load_settings
    from voicechat.tts.checkpoint import read_manifest
    from voicechat.tts.engine import TTSEngine, TTSError, TTSParams, split_for_speech

    try:
        overrides = {dest: getattr(args, dest) for dest, _, _ in FLAGS.values()}
        settings = load_settings(**overrides, tts_warmup=False if args.no_warmup else None)
        params = TTSParams.from_settings(settings, seed=args.seed)
        params.validate()
        split_for_speech(args.text)
    except (ValidationError, TTSError) as error:
        print(f"error: {_settings_error(error)}")
        return 2
    if not args.out.parent.is_dir():
        print(f"error: the folder {args.out.parent} does not exist")
        return 2
    if settings.checkpoint and (Path(settings.checkpoint) / "manifest.json").exists():
        manifest = read_manifest(Path(settings.checkpoint))
        print(f"note: {settings.checkpoint} is a random-weight {manifest['variant']} checkpoint: expect noise, not speech")

    try:
        engine = TTSEngine.load(settings)
    except TTSError as error:
        print(f"error: {error}")
        return 1
    try:
        chunks, first_s, total_s = asyncio.run(_speak(engine, args.text, params))
    except TTSError as error:
        print(f"error: {error}")
        return 1
    finally:
        engine.close()

    import numpy as np

    audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
    try:
        write_wav(args.out, audio, engine.sample_rate)
    except OSError as error:
        print(f"error: could not write {args.out}: {error}")
        return 1
    seconds = len(audio) / engine.sample_rate
    rtf = total_s / seconds if seconds else float("nan")
    print(f"wrote {args.out}: {seconds:.2f} s of audio in {len(chunks)} chunks")
    print(f"time to first audio: {first_s:.3f} s")
    print(f"real-time factor: {rtf:.3f} (generation time / audio duration; below 1 is faster than real time)")
    return 0


async def _speak(engine, text: str, params) -> tuple[list, float, float]:
    started = time.perf_counter()
    stream = engine.stream(text, params)
    chunks = [chunk async for chunk in stream]
    return chunks, stream.first_chunk_s or 0.0, time.perf_counter() - started
