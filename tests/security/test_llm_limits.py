"""The server's own cap on a reply's length, whatever the LLM streams, for both providers."""

from __future__ import annotations

import pytest
from fake_llm import FakeLLM, Script

from voicechat.config import Settings
from voicechat.llm import create_llm

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("provider", ["ollama", "openai"])
async def test_an_endless_reply_is_cut_at_the_cap_and_its_stream_closed(provider: str) -> None:
    endless = Script(reply="and on " * 20000, token_delay=0.0)  # ignores any max_tokens
    with FakeLLM(endless) as fake:
        url = fake.url if provider == "ollama" else fake.openai_url
        llm = create_llm(
            Settings(_env_file=None, provider=provider, base_url=url, model="llama3.2:3b", llm_max_reply_chars=500)
        )
        try:
            async with llm.stream([{"role": "user", "content": "talk"}]) as stream:
                text = "".join([delta async for delta in stream])
            assert stream.cut and len(text) == 500
        finally:
            await llm.aclose()
        record = fake.chats[-1]
        assert record.ended.wait(10) and record.client_closed  # the HTTP stream was closed, not drained
