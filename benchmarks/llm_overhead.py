"""LLM stream overhead: what LLMStream (thinking filter, deadline, queue, background task) adds on top
of the bare client libraries, against the loopback fake server of the tests; and the local provider
alone and with several conversations at once.

Servers: for each provider, N replies of T tokens with a fixed first-token delay are read twice in the
same run: by the bare official client (baseline) and through voicechat.llm. Reported: median time to
first token and median whole-reply time, and the ratio voicechat / bare (1.00 = no overhead).

Local: the tiny test checkpoint (`voicechat make-checkpoint --llm`) on CPU, or --local-model on
--device. N rounds of 1, 2 and 4 conversations asking at the same moment; reported: median time to
first token, each conversation's tokens/s after its first token, and the total tokens/s, with ratios
against one conversation measured in the same run.

Usage: python benchmarks/llm_overhead.py [--replies 30] [--tokens 200] [--first-token-delay 0.05]
                                         [--providers ollama,openai,local] [--local-model DIR] [--device cpu]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import ollama
import openai

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fake_llm import FakeLLM, Script  # noqa: E402

from conftest_paths import CACHE_DIR  # noqa: E402
from voicechat.config import Settings  # noqa: E402
from voicechat.llm import create_llm  # noqa: E402
from voicechat.llm.local import LocalLLM  # noqa: E402
from voicechat.llm.tiny_checkpoint import ensure_tiny_llm  # noqa: E402

MESSAGES = [{"role": "user", "content": "Hi"}]
MODEL = "llama3.2:3b"
TOPICS = ("sea", "moon", "weather", "music", "food", "dog")


async def bare_ollama(url: str) -> tuple[float, float]:
    client = ollama.AsyncClient(host=url)
    started = time.perf_counter()
    first = None
    async for part in await client.chat(MODEL, messages=MESSAGES, stream=True):
        if first is None and part.message.content:
            first = time.perf_counter() - started
    total = time.perf_counter() - started
    await client.close()
    return first or total, total


async def bare_openai(url: str) -> tuple[float, float]:
    client = openai.AsyncOpenAI(base_url=url, api_key="no-key", max_retries=0)
    started = time.perf_counter()
    first = None
    async for chunk in await client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True):  # type: ignore[arg-type]
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - started
    total = time.perf_counter() - started
    await client.close()
    return first or total, total


async def ours(provider: str, url: str) -> tuple[float, float]:
    llm = create_llm(Settings(_env_file=None, provider=provider, base_url=url, model=MODEL))  # type: ignore[arg-type]
    started = time.perf_counter()
    async with llm.stream(MESSAGES) as stream:
        async for _ in stream:
            pass
    total = time.perf_counter() - started
    await llm.aclose()
    return stream.first_token_s or total, total


async def local_round(llm: LocalLLM, conversations: int) -> list[tuple[float, float, int]]:
    """``conversations`` replies started at once: (first token s, whole reply s, tokens) of each."""
    tokenizer = llm._scheduler.loaded.tokenizer  # type: ignore[union-attr]

    async def one(topic: str) -> tuple[float, float, int]:
        started = time.perf_counter()
        async with llm.stream([{"role": "user", "content": f"Tell me about the {topic}"}]) as stream:
            text = "".join([delta async for delta in stream])
        total = time.perf_counter() - started
        return stream.first_token_s or total, total, len(tokenizer.encode(text, add_special_tokens=False))

    return await asyncio.gather(*(one(TOPICS[i % len(TOPICS)]) for i in range(conversations)))


async def bench_local(args: argparse.Namespace) -> None:
    model = args.local_model or str(ensure_tiny_llm(CACHE_DIR / "tiny-llm"))
    llm = LocalLLM(Settings(_env_file=None, provider="local", model=model, device=args.device))
    await asyncio.to_thread(llm.load)
    await local_round(llm, 1)  # warm-up
    print(f"\nlocal {model} on {args.device}: {args.replies} rounds per row")
    print(f"{'at once':>7} {'first token ms':>15} {'tok/s each':>11} {'tok/s total':>12} {'ratio first':>12} {'ratio each':>11} {'ratio total':>12}")
    base = None
    for conversations in (1, 2, 4):
        firsts, each, totals = [], [], []
        for _ in range(args.replies):
            started = time.perf_counter()
            results = await local_round(llm, conversations)
            wall = time.perf_counter() - started
            firsts += [first for first, _, _ in results]
            each += [(tokens - 1) / (total - first) for first, total, tokens in results if total > first and tokens > 1]
            totals.append(sum(tokens for _, _, tokens in results) / wall)
        row = (statistics.median(firsts), statistics.median(each), statistics.median(totals))
        base = base or row
        print(
            f"{conversations:7d} {row[0] * 1000:15.1f} {row[1]:11.1f} {row[2]:12.1f} "
            f"{row[0] / base[0]:12.2f} {row[1] / base[1]:11.2f} {row[2] / base[2]:12.2f}"
        )
    await llm.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replies", type=int, default=30)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--first-token-delay", type=float, default=0.05)
    parser.add_argument("--providers", default="ollama,openai,local", help="comma-separated: ollama, openai, local")
    parser.add_argument("--local-model", default=None, help="local: hub id or directory (default: the tiny checkpoint)")
    parser.add_argument("--device", default="cpu", help="local: torch device")
    args = parser.parse_args()
    providers = args.providers.split(",")
    servers = [name for name in ("ollama", "openai") if name in providers]
    if servers:
        await bench_servers(args, servers)
    if "local" in providers:
        await bench_local(args)


async def bench_servers(args: argparse.Namespace, servers: list[str]) -> None:
    script = Script(tokens=[f" w{i}" for i in range(args.tokens)], first_token_delay=args.first_token_delay)
    print(f"{args.replies} replies of {args.tokens} tokens, first-token delay {args.first_token_delay * 1000:.0f} ms")
    print(f"{'provider':8} {'path':10} {'first token ms':>15} {'whole reply ms':>15}")
    with FakeLLM(script) as fake:
        for provider, url, bare in (("ollama", fake.url, bare_ollama), ("openai", fake.openai_url, bare_openai)):
            if provider not in servers:
                continue
            results = {}
            for name, run in (("bare", lambda: bare(url)), ("voicechat", lambda: ours(provider, url))):
                runs = [await run() for _ in range(args.replies)]
                results[name] = (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))
                print(f"{provider:8} {name:10} {results[name][0] * 1000:15.1f} {results[name][1] * 1000:15.1f}")
            ratio_first = results["voicechat"][0] / results["bare"][0]
            ratio_total = results["voicechat"][1] / results["bare"][1]
            print(f"{provider:8} {'ratio':10} {ratio_first:15.2f} {ratio_total:15.2f}")


if __name__ == "__main__":
    asyncio.run(main())
