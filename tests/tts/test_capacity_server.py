"""A real server whose speech engine is at capacity: /readyz says full, the next conversation gets 1013."""

from __future__ import annotations

import asyncio

import httpx
from fake_llm import FakeLLM, Script
from server_process import running_server

from voicechat.client import VoiceChatClient

TTS_MAX_STREAMS = 2


async def test_conversations_beyond_the_speech_engines_capacity_are_refused(tiny_checkpoint, whisper_tiny_dir) -> None:
    with FakeLLM(Script(reply="Hello.", token_delay=0.01)) as fake, running_server(
        checkpoint=tiny_checkpoint, stt_model=whisper_tiny_dir, llm_url=fake.url,
        env={"VOICECHAT_MAX_SESSIONS": "8", "VOICECHAT_TTS_MAX_STREAMS": str(TTS_MAX_STREAMS)},
    ) as server:
        ready = httpx.get(f"{server.url}/readyz").json()
        assert ready["ready"] and not ready["full"]
        assert ready["max_sessions"] == TTS_MAX_STREAMS and ready["tts_max_streams"] == TTS_MAX_STREAMS
        assert server.metric("voicechat_tts_load") == 0
        clients = [await VoiceChatClient(server.ws_url).connect() for _ in range(TTS_MAX_STREAMS)]
        try:
            assert httpx.get(f"{server.url}/readyz").json()["full"] is True
            extra = await VoiceChatClient(server.ws_url).connect(send_hello=False)
            error = await extra.wait_for("error")
            assert error["code"] == "server_full" and error["fatal"]
            assert f"busy with {TTS_MAX_STREAMS} conversations" in error["message"]
            await extra.wait_until(lambda: extra.closed_code is not None)
            assert extra.closed_code == 1013
        finally:
            await asyncio.gather(*(client.close() for client in clients))
