"""Constants and helpers of the browser tests (imported by conftest.py and the tests)."""

from __future__ import annotations

import hashlib
import os
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from conftest_paths import CACHE_DIR
from speech import espeak_wav, read_pcm16, silence

CHROMIUM = Path("/usr/bin/chromium")
MODEL = "test-model"  # the model name running_server passes to `voicechat serve`
# Not fake_llm's SHORT_REPLY / LONG_REPLY (the server tests'): these answer the question the browser tests
# type ("Tell me about the weather."), and open with a whole one-word sentence, so a reply the fake LLM
# fails after a few tokens (stream_error_after) has a sentence to have spoken.
SHORT_REPLY = "Sure. It is sunny and warm."
LONG_REPLY = (
    "Sure. The sky is clear and the air is warm. A light breeze comes from the west, and it should stay "
    "dry until the evening. Tomorrow brings a few clouds in the morning."
)
SCREENSHOTS = Path(os.environ.get("VOICECHAT_TEST_ARTIFACTS", CACHE_DIR / "screenshots"))
AXE = Path(__file__).parent / "node_modules" / "axe-core" / "axe.min.js"  # npm, via scripts/test.sh
# axe-core's audit of the page as it is (after AXE is loaded): its violations, each with a few nodes.
AXE_RUN = """axe.run(document, {resultTypes: ["violations"]}).then((r) => r.violations.map((v) =>
    ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 4).map((n) => n.target.join(" "))})))"""


def serious(violations: list[dict]) -> list[dict]:
    """The violations the page must not have: serious and critical ones."""
    return [v for v in violations if v["impact"] in ("serious", "critical")]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def padded_speech(name: str, text: str, *, lead_s: float, tail_s: float, rate: int = 48000) -> Path:
    """espeak-ng speech with silence before and after, as a mono 16-bit WAV (cached)."""
    key = hashlib.sha1(f"{text}|{lead_s}|{tail_s}".encode()).hexdigest()[:8]
    out = CACHE_DIR / "speech" / f"browser-{name}-{rate}-{key}.wav"
    if out.exists():
        return out
    pcm, _ = read_pcm16(espeak_wav(text, rate=rate))
    samples = np.concatenate([silence(lead_s, rate), pcm, silence(tail_s, rate)])
    with wave.open(str(out), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples.tobytes())
    return out


@dataclass
class Page:
    """A Playwright page plus everything it logged, for assertions."""

    page: object
    console_errors: list[str]

    def __getattr__(self, name: str) -> object:
        return getattr(self.page, name)

    def stats(self) -> dict:
        return self.page.evaluate("window.voicechat.stats()")

    def sent(self, kind: str | None = None) -> list[dict]:
        messages = self.page.evaluate("window.voicechat.sent()")
        return [m for m in messages if kind is None or m["type"] == kind]

    def received(self, kind: str | None = None) -> list[dict]:
        messages = self.page.evaluate("window.voicechat.received()")
        return [m for m in messages if kind is None or m["type"] == kind]

    def wait_stats(self, condition: str, timeout_s: float = 30) -> dict:
        """Wait until the JS expression `condition` over `s` (the stats object) holds."""
        self.page.wait_for_function(
            f"(() => {{ const s = window.voicechat.stats(); return {condition}; }})()",
            timeout=timeout_s * 1000,
            polling=100,
        )
        return self.stats()

    def wait_received(self, kind: str, timeout_s: float = 30) -> dict:
        self.page.wait_for_function(
            f"window.voicechat.received().some((m) => m.type === {kind!r})", timeout=timeout_s * 1000, polling=100
        )
        return self.received(kind)[-1]

    def axe_problems(self) -> list[dict]:
        """axe-core's serious and critical violations (WCAG 2.1 A/AA and best practice) on the page now."""
        if not self.page.evaluate("Boolean(window.axe)"):
            self.page.add_script_tag(path=str(AXE))
        return serious(self.page.evaluate(AXE_RUN))

    def screenshot_as(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path))
        return path
