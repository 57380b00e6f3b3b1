"""Every setting of the app, in one typed place.

Values come, in rising priority, from the defaults below, a `.env` file in the working directory,
environment variables (prefix ``VOICECHAT_``, e.g. ``VOICECHAT_PORT=9000``) and command-line flags
(passed to :func:`load_settings` as overrides). ``docs/configuration.md`` documents each one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SYSTEM_PROMPT = (
    "You are a friendly, helpful voice assistant in a live spoken conversation. "
    "Answer in a natural, spoken style: short sentences, usually one to three of them. "
    "Never use markdown, lists, headings, code blocks, emoji or special symbols, because everything "
    "you write is read aloud. Spell out numbers and abbreviations the way you would say them. "
    "If you did not understand the user, ask them briefly to repeat. "
    "If one of your earlier replies ends with a dash, the user interrupted you there and did not hear the rest."
)

# Default models when VOICECHAT_MODEL is unset (docs/llm.md says why these).
LOCAL_MODEL_GPU = "Qwen/Qwen2.5-1.5B-Instruct"
LOCAL_MODEL_CPU = "Qwen/Qwen2.5-0.5B-Instruct"
SERVER_MODEL = "llama3.2:3b"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="VOICECHAT_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    # --- Server -------------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address the web server binds to (0.0.0.0 for all).")
    port: int = Field(8000, ge=1, le=65535, description="TCP port of the web server.")
    max_sessions: int = Field(
        4, ge=1, description="Most conversations served at once; more are refused (server_full, close 1013)."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log verbosity.")
    max_frame_bytes: int = Field(
        64_000, ge=1024, description="Largest binary audio frame accepted from a client, in bytes."
    )

    # --- Network safety -----------------------------------------------------------------------
    access_token: str | None = Field(
        None,
        description="Token every API request and conversation must carry (Bearer header, or ?token= on /ws). "
        "Unset: none on a loopback address; on any other address a random one is made at start and its URL "
        "printed.",
    )
    allowed_origins: str = Field(
        "",
        description="Comma-separated extra origins (https://example.com) whose pages may open conversations "
        "and change things; the server's own origin is always allowed.",
    )
    allowed_hosts: str = Field(
        "",
        description="Comma-separated host names the server answers to. Empty: localhost, 127.0.0.1 and ::1 "
        "when bound to loopback (against DNS rebinding), any name otherwise.",
    )
    max_sessions_per_ip: int = Field(
        2, ge=1, description="Most conversations open at once from one client address; more are refused (close 1013)."
    )
    hello_timeout_s: float = Field(10.0, gt=0, description="Seconds a new conversation may take to send its hello.")
    idle_timeout_s: float = Field(
        600.0, gt=0, description="Seconds without audio or messages after which a conversation is closed."
    )
    max_session_s: float = Field(7200.0, gt=0, description="Longest conversation on one connection, in seconds.")
    llm_requests_per_minute: int = Field(
        20, ge=1, description="Most LLM requests (turns, typed or spoken) one conversation may start per minute."
    )
    send_timeout_s: float = Field(
        15.0, gt=0, description="Seconds a client may stop reading before its conversation is closed."
    )
    resume_grace_s: float = Field(
        60.0, ge=0, description="Seconds a dropped conversation is kept for its page to resume it (0: never)."
    )
    api_docs: bool = Field(False, description="Serve the API documentation at /docs and /openapi.json.")
    header_timeout_s: float = Field(
        10.0, gt=0, description="Seconds a client may take to send a request's headers before it is dropped."
    )
    body_timeout_s: float = Field(
        60.0, gt=0, description="Seconds a client may take to send a request's body (a voice upload) in full."
    )
    voice_max_bytes: int = Field(10 * 1024 * 1024, ge=1024, description="Largest voice upload, in bytes.")
    voice_min_s: float = Field(3.0, ge=0.5, description="Shortest voice recording accepted, in seconds.")
    voice_max_s: float = Field(30.0, ge=1.0, le=600.0, description="Longest voice recording accepted, in seconds.")
    voices_max_count: int = Field(50, ge=1, description="Most uploaded voices kept in the voices directory.")
    voices_max_total_bytes: int = Field(
        200 * 1024 * 1024, ge=1024 * 1024, description="Most bytes of voices kept in the voices directory."
    )

    # --- Text to speech (Chatterbox) -----------------------------------------------------------
    checkpoint: str | None = Field(
        None,
        description="Local Chatterbox model directory. Unset: download ResembleAI/chatterbox from the hub.",
    )
    device: str = Field("auto", description="Torch device for Chatterbox: auto, cuda, cuda:N, mps or cpu.")
    voice: Path | None = Field(
        None, description="Reference WAV for the default voice (voice cloning). Unset: the built-in voice."
    )
    voices_dir: Path = Field(
        Path("voices"), description="Directory of extra reference voices (*.wav), and where uploads go."
    )
    exaggeration: float = Field(
        0.5, ge=0.25, le=2.0, description="Chatterbox emotion exaggeration: 0.5 is neutral, higher more dramatic."
    )
    cfg_weight: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Chatterbox classifier-free guidance weight: lower (~0.3) calms a fast reference voice.",
    )
    temperature: float = Field(
        0.8, ge=0.05, le=5.0, description="Chatterbox sampling temperature: higher varies more, lower is steadier."
    )
    chunk_size: int = Field(
        25,
        ge=1,
        le=200,
        description="Speech tokens per streamed chunk (25 tokens = 1 s of audio): smaller gives the first audio "
        "sooner, larger costs less GPU per second of speech.",
    )
    tts_first_chunk_ref_s: float | None = Field(
        None,
        ge=0.2,
        le=10.0,
        description="Seconds of the voice's reference prompt that S3Gen uses for a segment's first chunk (its "
        "cost grows with the prompt); later chunks use all of it. Unset: all of it for every chunk.",
    )
    tts_first_chunk_tokens: int = Field(
        10,
        ge=1,
        le=200,
        description="Speech tokens in a stream's first chunk (then chunk_size each): fewer gives the first audio "
        "sooner.",
    )
    tts_max_streams: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Speech streams the engine serves at once (decoded in one batch); more are refused (server "
        "busy). Unset: 4 on CUDA (measured real time on an H200, docs/tts.md), 4 on MPS, 16 on CPU (a memory bound, "
        "not a real-time promise).",
    )
    tts_render_batch: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Most chunks one S3Gen render call takes (a render lane takes the most urgent first). Unset: 1 "
        "on CPU (batching S3Gen gains nothing there, 0.98-1.05x measured, and every stream in a batch waits for the "
        "whole batch); no cap (tts_max_streams) on CUDA and MPS, where batching is cheap (kernel launches, not "
        "arithmetic, bound S3Gen on a GPU). On CUDA, flow graphs are captured for batch sizes up to this cap.",
    )
    tts_bf16: bool = Field(True, description="On CUDA, run Chatterbox's T3 decoder in bfloat16 (CPU stays float32).")
    tts_cuda_graphs: bool = Field(
        True,
        description="On CUDA, replay T3 decode steps and S3Gen's flow solve as CUDA graphs (falls back to eager if "
        "capture fails).",
    )
    tts_warmup: bool = Field(True, description="Run one short generation at start so the first reply is fast.")

    # --- Speech to text ------------------------------------------------------------------------
    stt_model: str = Field(
        "large-v3-turbo",
        description="faster-whisper model name (downloaded from the hub) or a local CTranslate2 model directory.",
    )
    stt_device: str = Field("auto", description="Device for faster-whisper: auto, cuda or cpu.")
    stt_compute_type: str = Field(
        "default", description="CTranslate2 compute type (default, int8, float16, int8_float16 ...)."
    )
    stt_language: str = Field(
        "en", description="Language code users speak (en, de, fr ...); English-only .en Whisper models need en."
    )
    speed: int = Field(
        50, ge=0, le=100, description="Turn-taking speed 0-100: higher answers sooner after the user pauses."
    )
    max_utterance_s: float = Field(
        30.0, gt=1.0, description="Longest single user turn, in seconds; longer speech forces a turn end."
    )

    # --- Language model ------------------------------------------------------------------------
    provider: Literal["local", "ollama", "openai"] = Field(
        "local",
        description="LLM provider: local (a model run in this process on the app's device), ollama, or openai "
        "(any OpenAI-compatible server).",
    )
    base_url: str | None = Field(
        None,
        description="LLM server URL. Unset: http://localhost:11434 (ollama) or the OpenAI API (openai).",
    )
    model: str | None = Field(
        None,
        description="LLM model: for local, a Hugging Face hub id or a local model directory; for a server, its "
        f"model name. Unset: local uses {LOCAL_MODEL_GPU} on a GPU, {LOCAL_MODEL_CPU} on CPU; servers "
        f"{SERVER_MODEL}.",
    )
    api_key: str | None = Field(
        None, description="API key for OpenAI-compatible servers (OPENAI_API_KEY is used when unset)."
    )
    api_key_file: Path | None = Field(
        None, description="File whose first line is the API key (for Docker secrets); replaces api_key."
    )
    llm_temperature: float = Field(0.7, ge=0.0, le=2.0, description="LLM sampling temperature.")
    llm_max_tokens: int = Field(400, ge=1, description="Most tokens in one assistant reply.")
    llm_max_reply_chars: int = Field(
        4000,
        ge=100,
        description="Most characters of one assistant reply: the server ends a longer one itself, even when the "
        "LLM ignores its token limit.",
    )
    llm_first_token_timeout_s: float = Field(
        30.0, gt=0, description="Seconds to wait for the first token before giving up."
    )
    llm_retries: int = Field(
        2, ge=0, le=5, description="Retries of a failed LLM request before its first token (connection, 429, 5xx)."
    )
    llm_auto_pull: bool = Field(False, description="Pull a missing Ollama model at start.")
    system_prompt: str = Field(DEFAULT_SYSTEM_PROMPT, description="System prompt for the assistant.")
    system_prompt_file: Path | None = Field(
        None, description="UTF-8 text file whose content replaces system_prompt."
    )
    history_max_chars: int = Field(
        12_000, ge=500, description="Budget of the conversation history sent to the LLM, in characters."
    )

    @field_validator("voice", "system_prompt_file", "checkpoint", "access_token", "api_key_file", "model", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    def effective_api_key(self) -> str | None:
        """The LLM API key: from api_key_file when set (kept off the command line), else api_key."""
        if self.api_key_file is not None:
            lines = self.api_key_file.read_text(encoding="utf-8").strip().splitlines()
            return lines[0].strip() if lines else None
        return self.api_key

    @field_validator("api_key_file")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value} is not a file")
        return value

    def llm_model(self) -> str:
        """The model setting, or the provider's default when it is unset: the one place this rule lives.
        A server's model name is never given to the local provider, nor a hub id to a server."""
        if self.model is not None:
            return self.model
        if self.provider != "local":
            return SERVER_MODEL
        from voicechat.tts.engine import detect_device  # imports torch: only the local provider pays

        return LOCAL_MODEL_CPU if detect_device(self.device) == "cpu" else LOCAL_MODEL_GPU

    def effective_system_prompt(self) -> str:
        if self.system_prompt_file is not None:
            return self.system_prompt_file.read_text(encoding="utf-8").strip()
        return self.system_prompt


def load_settings(**overrides: object) -> Settings:
    """Settings from defaults, `.env` and the environment, with non-None ``overrides`` (CLI flags) on top."""
    return Settings(**{key: value for key, value in overrides.items() if value is not None})
