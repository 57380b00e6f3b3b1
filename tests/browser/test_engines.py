"""The page's main flows in three engines (Chromium, Firefox ESR, WebKitGTK) against one real server:
load, connect, a typed turn played to its last sample, a spoken turn from a microphone, stop the reply,
settings. Each engine saves a screenshot of every state."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser_env import LONG_REPLY, SCREENSHOTS, SHORT_REPLY
from engines import Driver, FirefoxDriver, PlaywrightDriver, WebKitDriver, missing, pulse_microphone, speak, xvfb_display
from fake_llm import Script

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def pulse() -> Iterator[dict[str, str]]:
    reason = missing("firefox") and missing("webkit")
    if reason:
        pytest.skip(reason)
    with pulse_microphone() as env:
        yield env


@contextlib.contextmanager
def engine(name: str, open_page, pulse_env: dict[str, str] | None, wav: Path) -> Iterator[Driver]:  # noqa: ANN001
    if name == "chromium":
        yield PlaywrightDriver(open_page(wav=wav))
        return
    reason = missing(name)
    if reason:
        pytest.skip(reason)
    if name == "firefox":
        driver = FirefoxDriver(pulse_env)
        try:
            yield driver
        finally:
            driver.close()
        return
    with xvfb_display() as display:
        driver = WebKitDriver(display, pulse_env)
        try:
            yield driver
        finally:
            driver.close()


def assistant_texts(driver: Driver) -> list[str]:
    return driver.evaluate(
        "[...document.querySelectorAll('#transcript .msg.assistant .heard')].map((t) => t.textContent)"
    )


def stats(driver: Driver) -> dict:
    return driver.evaluate("window.voicechat.stats()")


def messages(driver: Driver, direction: str, kind: str) -> list[dict]:
    found = driver.evaluate(f"JSON.stringify(window.voicechat.{direction}().filter((m) => m.type === {kind!r}))")
    return json.loads(found)


@pytest.mark.parametrize("name", ["chromium", "firefox", "webkit"])
def test_main_flows(name, request, web_server, fake_llm, turn_wav):  # noqa: ANN001
    pulse_env = request.getfixturevalue("pulse") if name != "chromium" else None
    open_page = request.getfixturevalue("open_page") if name == "chromium" else None
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with engine(name, open_page, pulse_env, turn_wav) as driver:
        shot = lambda state: driver.screenshot(SCREENSHOTS / f"{name}-{state}.png")  # noqa: E731

        # Load and connect.
        if name != "chromium":
            driver.goto(web_server.url)
        driver.wait("window.voicechat && window.voicechat.stats().connected")
        assert driver.evaluate("document.getElementById('status-text').textContent") == "Mic off"
        shot("connected")

        # A typed turn, played to its last sample, and the server told so.
        driver.type("#text", "Hello, how are you?")
        driver.press("#text", "Enter")
        driver.wait(
            f"[...document.querySelectorAll('#transcript .msg.assistant .heard')].some(t => t.textContent === {SHORT_REPLY!r})"
        )
        driver.wait("window.voicechat.stats().turnsCompleted >= 1", timeout_s=60)
        end = messages(driver, "received", "tts_end")[-1]
        driver.wait(f"window.voicechat.stats().samplesPlayed >= {end['samples']}", timeout_s=5)
        played = stats(driver)
        assert played["samplesReceived"] == end["samples"] == played["samplesPlayed"]
        assert messages(driver, "sent", "tts_stop")[-1]["played_samples"] == end["samples"]
        shot("typed-turn")

        # A spoken turn from the microphone.
        driver.click("#mic")
        driver.wait("document.getElementById('mic').getAttribute('aria-pressed') === 'true'")
        if pulse_env is not None:
            driver.wait("window.voicechat.stats().captureFrames > 10")
            speaker = speak(pulse_env, turn_wav)
        try:
            driver.wait(
                "[...document.querySelectorAll('#transcript .msg.user:not(.partial) .heard')]"
                ".some(t => /weather|today/i.test(t.textContent))",
                timeout_s=60,
            )
            driver.wait("window.voicechat.stats().turnsCompleted >= 2", timeout_s=60)
        finally:
            if pulse_env is not None:
                speaker.wait(timeout=30)
        shot("spoken-turn")
        driver.click("#mic")  # mute: the microphone closes, and nothing else changes
        driver.wait("!window.voicechat.stats().micOn")
        assert driver.evaluate("document.getElementById('mic').getAttribute('aria-pressed')") == "false"

        # Stop the reply: the words heard stay, the rest is dimmed, the bubble is marked.
        fake_llm.set_scripts(Script(reply=LONG_REPLY, token_delay=0.01))
        driver.type("#text", "Tell me about the weather.")
        driver.press("#text", "Enter")
        driver.wait("window.voicechat.stats().playing === true", timeout_s=60)
        driver.click("#interrupt")
        driver.wait("window.voicechat.stats().turnsDropped >= 1 && !window.voicechat.stats().playing", timeout_s=10)
        driver.wait("document.querySelector('#transcript .msg.assistant.interrupted')")
        stopped = driver.evaluate(
            "(() => { const m = document.querySelector('#transcript .msg.assistant.interrupted');"
            " return [m.querySelector('.heard').textContent, m.querySelector('.unheard').dataset.rest]; })()"
        )
        assert "".join(stopped).strip(), "an interrupted reply must not be an empty bubble"
        shot("stopped")

        # Settings: text-only mode and a slider, kept in the browser.
        driver.click("#speak-replies")
        driver.wait("JSON.parse(localStorage.getItem('voicechat-prefs')).speak === false")
        driver.press("#speed", "ArrowRight")
        driver.wait("window.voicechat.settings().speed === 51")
        driver.wait("JSON.parse(localStorage.getItem('voicechat-prefs')).chosen.speed === 51")
        shot("settings")
        driver.click("#speak-replies")
        # The accessibility audit, in this engine too.
        assert driver.axe_problems() == []
        assert driver.console_errors() == []
