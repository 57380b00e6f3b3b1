"""`voicechat listen FILE.wav`: feed a recording through speech input and print its events as JSON lines.

A tool for tuning turn detection (try --speed) and for checking a Whisper model. Each line has the
event's ``type`` and ``time_s`` (seconds into the file), and ``text`` for transcripts. After the file
the command feeds silence, as a live microphone would, so the last turn can end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from voicechat.config import Settings

CHUNK_S = 0.02  # 20 ms chunks, as the browser sends them


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, metavar="FILE.wav", help="audio file (WAV, FLAC or OGG; any rate, mono or stereo)")
    parser.add_argument("--realtime", action="store_true", help="feed at real-time pace, as a microphone would")
    parser.add_argument("--stt-model", default=None, metavar="NAME_OR_DIR", help="faster-whisper model name or directory")
    parser.add_argument("--speed", type=int, default=None, metavar="N", help="turn-taking speed 0-100 (higher answers sooner)")
    parser.add_argument("--max-utterance-s", type=float, default=None, metavar="S", help="longest user turn in seconds")


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from voicechat.audio import AudioFormatError, float32_to_int16, read_audio
    from voicechat.config import load_settings

    try:
        settings = load_settings(stt_model=args.stt_model, speed=args.speed, max_utterance_s=args.max_utterance_s)
    except ValidationError as error:
        print("error: " + "; ".join(f"{item['loc'][0]}: {item['msg']}" for item in error.errors()), file=sys.stderr)
        return 2
    if not args.file.is_file():
        print(f"error: no such file: {args.file}", file=sys.stderr)
        return 2
    try:
        samples, rate = read_audio(args.file)
    except AudioFormatError as error:
        print(f"error: {args.file}: {error}", file=sys.stderr)
        return 2
    if not 8000 <= rate <= 192000:
        print(f"error: {args.file}: sample rate {rate} Hz is outside 8000-192000 Hz", file=sys.stderr)
        return 2
    return asyncio.run(_listen(settings, float32_to_int16(samples), rate, args.realtime))


async def _listen(settings: Settings, pcm: np.ndarray, rate: int, realtime: bool) -> int:
    import numpy as np

    from voicechat.stt.listener import Listener, SpeechModels
    from voicechat.stt.turn import TurnPolicy

    models = await asyncio.to_thread(SpeechModels.load, settings)
    listener = Listener(models, speed=settings.speed, max_utterance_s=settings.max_utterance_s, sample_rate=rate)
    # Silence after the file: enough for the most patient wait to run out.
    tail = np.zeros(int((TurnPolicy.for_speed(settings.speed).max_wait_s + 0.5) * rate), dtype=np.int16)
    audio = np.concatenate([pcm, tail])
    chunk = max(1, int(CHUNK_S * rate))
    started = time.perf_counter()
    try:
        for offset in range(0, len(audio), chunk):
            if realtime:
                await asyncio.sleep(max(0.0, started + offset / rate - time.perf_counter()))
            for event in await listener.feed(audio[offset : offset + chunk]):
                line = {"type": event.type, "time_s": round(event.time_s, 3)}
                if event.type != "speech_started":
                    line["text"] = event.text
                line["speech_s"] = round(event.speech_s, 3)
                if event.end_of_speech_s is not None:
                    line["end_of_speech_s"] = round(event.end_of_speech_s, 3)
                if event.stt_ms is not None:
                    line["stt_ms"] = round(event.stt_ms, 1)
                if event.forced:
                    line["forced"] = True
                print(json.dumps(line), flush=True)
    finally:
        await listener.aclose()
        models.close()
    return 0
