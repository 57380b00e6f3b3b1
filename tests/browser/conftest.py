"""Browser tests: Debian's Chromium, driven by Playwright, against a real `voicechat serve` process.

The server runs the tiny random-weight Chatterbox checkpoint, Whisper tiny.en and the loopback fake LLM.
Chromium's fake microphone plays an espeak-ng WAV from the moment the page opens the microphone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from browser_env import CHROMIUM, DESKTOP, MODEL, SHORT_REPLY, Page, padded_speech
from fake_llm import FakeLLM, Script
from server_process import ServerProcess, free_port, running_server

if not CHROMIUM.exists():  # pragma: no cover - the test script installs it
    pytest.skip("Debian's chromium is not installed", allow_module_level=True)


@pytest.fixture(scope="session")
def turn_wav(cache_dir: Path) -> Path:
    return padded_speech("turn", "Hello there. What is the weather like today?", lead_s=0.5, tail_s=8.0)


@pytest.fixture(scope="session")
def bargein_wav(cache_dir: Path) -> Path:
    return padded_speech(
        "bargein", "Wait, stop please. I want to ask something different.", lead_s=0.3, tail_s=8.0
    )


@pytest.fixture(scope="session")
def voice_wav(cache_dir: Path) -> Path:
    return padded_speech(
        "voice",
        "This is my reference voice for cloning. I speak clearly and calmly, in a quiet room.",
        lead_s=0.2,
        tail_s=0.3,
        rate=24000,
    )


@pytest.fixture(scope="session")
def fake_llm() -> Iterator[FakeLLM]:
    with FakeLLM(Script(reply=SHORT_REPLY, token_delay=0.01), models=[MODEL]) as fake:
        yield fake


@dataclass
class WebServer:
    """`voicechat serve` on a fixed port, which the reconnect test stops and starts again."""

    start_server: Callable[[], contextlib.AbstractContextManager[ServerProcess]]
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    process: ServerProcess | None = None

    def start(self) -> None:
        self.process = self.stack.enter_context(self.start_server())

    def stop(self) -> None:
        self.stack.close()
        self.process = None

    @property
    def url(self) -> str:
        assert self.process is not None, "server not running"
        return self.process.url + "/"


@pytest.fixture(scope="module")
def web_server(tiny_checkpoint: Path, whisper_tiny_dir: Path, fake_llm: FakeLLM) -> Iterator[WebServer]:
    port = free_port()
    server = WebServer(
        lambda: running_server(
            checkpoint=tiny_checkpoint,
            stt_model=whisper_tiny_dir,
            llm_url=fake_llm.url,
            provider="ollama",
            model=MODEL,
            port=port,
            ready_timeout=120,
        )
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def short_reply(fake_llm: FakeLLM) -> None:
    fake_llm.set_scripts(Script(reply=SHORT_REPLY, token_delay=0.01))


@pytest.fixture(scope="module")
def playwright_driver() -> Iterator[object]:
    # Module scope, not session: Playwright's sync API keeps an asyncio loop running on this thread
    # while it lives, and the asyncio tests that follow the browser tests need the thread free.
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        yield driver


@pytest.fixture
def open_page(playwright_driver: object, web_server: WebServer) -> Iterator[Callable[..., Page]]:
    """open_page(wav=None, viewport=DESKTOP, dark=False, mic=True, fake_socket=None) -> a loaded page,
    connected to the server unless `fake_socket` (a Playwright WebSocketRoute handler) plays the server."""
    browsers = []

    def open_(
        wav: Path | None = None,
        viewport: dict = DESKTOP,
        dark: bool = False,
        mic: bool = True,
        fake_socket: Callable | None = None,
    ) -> Page:
        args = [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--use-fake-device-for-media-stream",
            "--autoplay-policy=no-user-gesture-required",
        ]
        if mic:  # otherwise the permission prompt is refused, as when a user says no
            args.append("--use-fake-ui-for-media-stream")
        if wav is not None:
            args.append(f"--use-file-for-fake-audio-capture={wav}%noloop")
        browser = playwright_driver.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        browsers.append(browser)
        phone = viewport["width"] < 600
        context = browser.new_context(
            viewport=viewport,
            color_scheme="dark" if dark else "light",
            is_mobile=phone,
            has_touch=phone,
            permissions=["clipboard-read", "clipboard-write"] + (["microphone"] if mic else []),
        )
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
        if fake_socket is not None:
            page.route_web_socket("**/ws", fake_socket)
        page.goto(web_server.url)
        if fake_socket is None:
            page.wait_for_function("window.voicechat && window.voicechat.stats().connected", timeout=30_000)
        return Page(page, errors)

    try:
        yield open_
    finally:
        for browser in browsers:
            browser.close()
