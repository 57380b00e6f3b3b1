"""LLM stream overhead: what LLMStream (thinking filter, deadline, queue, background task) adds on top
of the bare client libraries, against the loopback fake server of the tests.

For each provider, N replies of T tokens with a fixed first-token delay are read twice in the same run:
by the bare official client (baseline) and through voicechat.llm. Reported: median time to first token
and median whole-reply time, and the ratio voicechat / bare (1.00 = no overhead).

Usage: python benchmarks/llm_overhead.py [--replies 30] [--tokens 200] [--first-token-delay 0.05]
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

from voicechat.config import Settings  # noqa: E402
from voicechat.llm import create_llm  # noqa: E402

MESSAGES = [{"role": "user", "content": "Hi"}]
MODEL = "llama3.2:3b"


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


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replies", type=int, default=30)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--first-token-delay", type=float, default=0.05)
    args = parser.parse_args()
    script = Script(tokens=[f" w{i}" for i in range(args.tokens)], first_token_delay=args.first_token_delay)
    print(f"{args.replies} replies of {args.tokens} tokens, first-token delay {args.first_token_delay * 1000:.0f} ms")
    print(f"{'provider':8} {'path':10} {'first token ms':>15} {'whole reply ms':>15}")
    with FakeLLM(script) as fake:
        for provider, url, bare in (("ollama", fake.url, bare_ollama), ("openai", fake.openai_url, bare_openai)):
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
