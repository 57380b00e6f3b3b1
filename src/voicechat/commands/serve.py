"""`voicechat serve`: the voice chat web server."""

from __future__ import annotations

import argparse
import logging

from voicechat.config import load_settings

# Flag -> setting; every flag can also be set as VOICECHAT_<SETTING> in the environment or `.env`.
FLAGS = {
    "--host": ("host", str, "address to bind (0.0.0.0 for every interface)"),
    "--port": ("port", int, "TCP port"),
    "--checkpoint": ("checkpoint", str, "local Chatterbox model directory (default: download from the hub)"),
    "--voice": ("voice", str, "reference WAV for the default voice"),
    "--device": ("device", str, "torch device for Chatterbox: auto, cuda, mps, cpu"),
    "--stt-model": ("stt_model", str, "faster-whisper model name or local directory"),
    "--provider": ("provider", str, "LLM provider: local (default), ollama or openai"),
    "--base-url": ("base_url", str, "LLM server URL"),
    "--model": ("model", str, "LLM model: hub id or directory (local), or the server's model name"),
    "--max-sessions": ("max_sessions", int, "most conversations at once"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for flag, (dest, kind, help_text) in FLAGS.items():
        parser.add_argument(flag, dest=dest, type=kind, default=None, help=help_text)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from voicechat.app import create_app
    from voicechat.http_deadlines import deadline_protocol

    settings = load_settings(**{dest: getattr(args, dest) for dest, _, _ in FLAGS.values()})
    level = args.log_level or settings.log_level
    logging.getLogger().setLevel(level.upper())
    logging.getLogger(__name__).info(
        "serving on http://%s:%s (LLM: %s %s)", settings.host, settings.port, settings.provider, settings.llm_model()
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=level,
        http=deadline_protocol(settings.header_timeout_s, settings.body_timeout_s),
        ws_max_size=1024 * 1024,  # larger messages are closed with 1009; frames over max_frame_bytes get an error
        ws_ping_interval=20,
        ws_ping_timeout=30,
    )
    return 0
