"""`voicechat chat "PROMPT"`: stream one reply to the terminal, the quickest check of an LLM set-up.

The reply goes to stdout as it streams; the time to first token and any error go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time

from voicechat.config import Settings, load_settings
from voicechat.llm import History, LLMError, create_llm
from voicechat.llm.local import LocalLLM


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", help="what to say to the model")
    parser.add_argument("--provider", choices=["local", "ollama", "openai"], default=None, help="LLM provider")
    parser.add_argument("--base-url", default=None, help="LLM server URL")
    parser.add_argument("--model", default=None, help="model: hub id or directory (local), or the server's model name")


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(provider=args.provider, base_url=args.base_url, model=args.model)
        system_prompt = settings.effective_system_prompt()
    except (ValueError, OSError) as exc:  # pydantic's ValidationError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name in ("httpx", "httpx2"):  # one INFO line per HTTP request would drown the reply
        logging.getLogger(name).setLevel(logging.WARNING)
    return asyncio.run(_chat(settings, system_prompt, args.prompt))


async def _chat(settings: Settings, system_prompt: str, prompt: str) -> int:
    llm = create_llm(settings)
    wrote = False
    try:
        if isinstance(llm, LocalLLM):
            await asyncio.to_thread(llm.load)
        await llm.check_ready()
        history = History(system_prompt, settings.history_max_chars)
        history.add_user(prompt)
        started = time.perf_counter()
        async with llm.stream(history.messages()) as stream:
            async for delta in stream:
                sys.stdout.write(delta)
                sys.stdout.flush()
                wrote = True
        total_s = time.perf_counter() - started
    except LLMError as exc:
        if wrote:
            sys.stdout.write("\n")
        print(f"error ({exc.code}): {exc}", file=sys.stderr)
        return 1
    finally:
        await llm.aclose()
    sys.stdout.write("\n")
    first = f"{stream.first_token_s:.2f} s" if stream.first_token_s is not None else "never (empty reply)"
    print(f"[{llm.name}: first token {first}, whole reply {total_s:.2f} s]", file=sys.stderr)
    return 0
