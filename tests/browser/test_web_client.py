"""The web client in a real Chromium against a real server: audio both ways, every control, resilience."""

from __future__ import annotations

import pytest
from browser_env import DESKTOP, LONG_REPLY, PHONE, SHORT_REPLY
from fake_llm import Script

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

FRAME_BYTES = 8 + 512 * 2  # header + 32 ms of 16 kHz int16


def bubbles(page, role: str) -> list[str]:
    return page.eval_on_selector_all(f"#transcript .msg.{role} .text", "items => items.map(i => i.textContent)")


def test_page_loads_without_console_errors(open_page):
    for name, viewport, dark in [("desktop", DESKTOP, False), ("phone", PHONE, True)]:
        page = open_page(viewport=viewport, dark=dark)
        assert page.title() == "Voice Chat"
        assert page.text_content("#status-text") == "Mic off"
        assert page.is_visible("#empty")
        assert page.eval_on_selector("#voice", "s => [...s.options].map(o => o.value)") == ["default"]
        hello = page.stats()
        assert hello["connected"] and hello["sessionId"]
        page.screenshot_as(f"{name}-empty")
        if viewport is PHONE:  # settings are a sheet on phones: opened by a button, closed by Escape
            assert page.is_hidden("#settings")
            page.click("#settings-toggle")
            page.wait_for_timeout(300)
            assert page.is_visible("#voice") and page.get_attribute("#settings-toggle", "aria-expanded") == "true"
            page.screenshot_as("phone-settings")
            page.keyboard.press("Escape")
            page.wait_for_function("getComputedStyle(document.getElementById('settings')).visibility === 'hidden'")
        assert page.console_errors == []


def test_denied_microphone_explains_and_typing_still_works(open_page):
    page = open_page(mic=False)
    page.click("#mic")
    page.wait_for_selector("#banner:not([hidden])")
    assert "Microphone access is blocked" in page.text_content("#banner-text")
    assert page.get_attribute("#mic", "aria-pressed") == "false"
    assert page.evaluate("document.activeElement.id") == "text"  # straight to the text box
    page.keyboard.type("Can you hear me?")
    page.keyboard.press("Enter")
    page.wait_for_function(
        f"[...document.querySelectorAll('#transcript .msg.assistant .text')].some(t => t.textContent === {SHORT_REPLY!r})",
        timeout=30_000,
    )
    page.screenshot_as("desktop-mic-denied")


def test_spoken_turn_is_transcribed_answered_and_played(open_page, turn_wav):
    page = open_page(wav=turn_wav)
    page.click("#mic")
    page.wait_for_selector("#mic[aria-pressed='true']")
    page.wait_for_selector("#transcript .msg.user:not(.partial)", timeout=30_000)
    heard = bubbles(page, "user")[-1].lower()
    assert "weather" in heard or "today" in heard, heard

    page.wait_for_function(
        f"[...document.querySelectorAll('#transcript .msg.assistant .text')].some(t => t.textContent === {SHORT_REPLY!r})",
        timeout=30_000,
    )
    stats = page.wait_stats("s.turnsCompleted >= 1", timeout_s=40)
    # The indicator follows the server: back to listening once the reply has been played.
    page.wait_for_function("document.getElementById('status').dataset.state === 'listening'", timeout=10_000)
    assert page.text_content("#status-text") == "Listening"
    states = [m["state"] for m in page.received("status")]
    assert {"hearing", "thinking", "speaking"} <= set(states) and states[-1] == "listening", states
    # Uplink: 16 kHz frames of 32 ms with the 8-byte header, in real time.
    assert stats["framesSent"] > 50
    assert stats["bytesSent"] == stats["framesSent"] * FRAME_BYTES
    # Downlink: every received sample was played, and the server was told so.
    end = page.received("tts_end")[-1]
    assert stats["chunksReceived"] >= 1 and stats["samplesReceived"] == end["samples"]
    assert stats["samplesPlayed"] == stats["samplesReceived"]
    assert stats["turnsStarted"] == 1 and stats["turnsDropped"] == 0
    turn = end["turn_id"]
    assert page.sent("tts_start") == [{"type": "tts_start", "turn_id": turn}]
    assert page.sent("tts_stop") == [{"type": "tts_stop", "turn_id": turn, "played_samples": end["samples"]}]
    progress = [m["played_samples"] for m in page.sent("playback")]
    assert progress == sorted(progress) and all(0 < p <= end["samples"] for p in progress)
    # The latency timeline of the turn.
    page.wait_for_selector(f"#transcript .msg.assistant[data-turn='{turn}'] .timeline summary")
    assert "to first audio" in page.text_content(".timeline summary")
    page.screenshot_as("desktop-conversation")
    page.set_viewport_size(PHONE)
    page.wait_for_timeout(300)
    page.screenshot_as("phone-conversation")

    page.click("#mic")  # stop: the microphone closes and frames stop
    assert page.get_attribute("#mic", "aria-pressed") == "false"
    frames = page.stats()["captureFrames"]
    page.wait_for_timeout(500)
    assert page.stats()["captureFrames"] == frames and not page.stats()["micOn"]
    assert page.console_errors == []


def test_typing_settings_copy_and_reset(open_page):
    page = open_page()
    # Typing: Space and Shift+Enter stay in the box, Enter sends; text is shown as text, not HTML.
    page.click("#text")
    page.keyboard.type("Hi <b>there</b>")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("two lines")
    assert page.input_value("#text") == "Hi <b>there</b>\ntwo lines"
    page.keyboard.press("Enter")
    assert page.input_value("#text") == ""
    page.wait_for_function(
        f"[...document.querySelectorAll('#transcript .msg.assistant .text')].some(t => t.textContent === {SHORT_REPLY!r})",
        timeout=30_000,
    )
    assert bubbles(page, "user") == ["Hi <b>there</b>\ntwo lines"]
    assert page.query_selector("#transcript b") is None
    assert page.sent("text_message") == [{"type": "text_message", "content": "Hi <b>there</b>\ntwo lines"}]
    page.wait_stats("s.turnsCompleted >= 1", timeout_s=40)

    # Turn-speed slider, with the keyboard.
    page.focus("#speed")
    for _ in range(5):
        page.keyboard.press("ArrowRight")
    page.wait_for_function("window.voicechat.settings().speed === 55", timeout=5000)
    assert page.sent("set_speed")[-1] == {"type": "set_speed", "content": 55}
    assert page.text_content("#speed-value") == "55"
    # A speech-style slider.
    page.fill("#exaggeration", "0.8")
    page.wait_for_function("Math.abs(window.voicechat.settings().exaggeration - 0.8) < 1e-6", timeout=5000)

    # Copy: the clipboard gets the conversation as plain text.
    page.click("#copy")
    page.wait_for_selector("#toast:not([hidden])")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == f"You: Hi <b>there</b>\ntwo lines\n\nAssistant: {SHORT_REPLY}"

    # Reset asks first: Escape (or Cancel) keeps everything; Clear clears the screen and the server's history.
    page.click("#reset")
    page.wait_for_selector("#confirm-dialog[open]")
    page.keyboard.press("Escape")
    page.wait_for_function("!document.getElementById('confirm-dialog').open")
    assert len(bubbles(page, "user")) == 1 and page.sent("clear_history") == []
    assert page.evaluate("document.activeElement.id") == "reset"
    page.click("#reset")
    page.click("#confirm-ok")
    page.wait_received("history_cleared")
    assert bubbles(page, "user") == [] and page.is_visible("#empty")
    assert page.console_errors == []


def test_stop_button_drops_the_playing_reply(open_page, fake_llm):
    fake_llm.set_scripts(Script(reply=LONG_REPLY, token_delay=0.01))
    page = open_page()
    page.fill("#text", "Tell me about the weather.")
    page.press("#text", "Enter")
    page.wait_stats("s.playing === true", timeout_s=40)
    page.wait_for_selector("#interrupt:not([hidden])")
    page.click("#interrupt")
    stats = page.wait_stats("s.turnsDropped === 1 && s.playing === false", timeout_s=2)
    assert page.sent("interrupt") == [{"type": "interrupt"}]
    stop = page.sent("tts_stop")[-1]
    assert 0 < stop["played_samples"] < stats["samplesReceived"]
    # The server confirms, and nothing of the stopped turn plays afterwards.
    page.wait_received("stop_tts")
    played = page.stats()["samplesPlayed"]
    page.wait_for_timeout(600)
    assert page.stats()["samplesPlayed"] == played
    assert page.console_errors == []


def test_barge_in_clears_playback(open_page, fake_llm, bargein_wav):
    fake_llm.set_scripts(Script(reply=LONG_REPLY, token_delay=0.01))
    page = open_page(wav=bargein_wav)
    page.fill("#text", "Tell me about the weather.")
    page.press("#text", "Enter")
    page.wait_stats("s.playing === true", timeout_s=40)
    page.click("#mic")  # the fake microphone starts talking over the assistant
    interruption = page.wait_received("tts_interruption", timeout_s=30)
    stats = page.wait_stats("s.turnsDropped >= 1 && s.playing === false", timeout_s=2)
    turn = interruption["turn_id"]
    stop = [m for m in page.sent("tts_stop") if m["turn_id"] == turn][-1]
    assert stop["played_samples"] < stats["samplesReceived"]
    page.wait_for_selector(f"#transcript .msg.assistant.interrupted[data-turn='{turn}']")
    # The frames sent while the reply played carried the "assistant is playing" flag; the server's
    # barge-in decision used it (stricter thresholds) and still let the user through.
    assert page.console_errors == []


def test_voice_upload_adds_and_selects_the_voice(open_page, voice_wav):
    page = open_page()
    page.click(".upload summary")
    page.set_input_files("#voice-file", str(voice_wav))
    assert page.input_value("#voice-name") == voice_wav.stem  # suggested from the file name
    page.fill("#voice-name", "tester")
    page.click("#upload-button")
    page.wait_for_function(
        "document.getElementById('upload-status').textContent.includes('added')", timeout=60_000
    )
    assert page.input_value("#voice") == "tester"
    page.wait_for_function("window.voicechat.settings().voice === 'tester'", timeout=5000)
    # A file that is not a WAV gets a plain-words refusal.
    page.set_input_files(
        "#voice-file", files=[{"name": "notes.wav", "mimeType": "audio/wav", "buffer": b"not a wav at all"}]
    )
    page.fill("#voice-name", "broken")
    page.click("#upload-button")
    page.wait_for_selector("#upload-status.error")
    assert "added" not in page.text_content("#upload-status")
    assert page.input_value("#voice") == "tester"


def test_llm_errors_are_shown_in_plain_words(open_page, fake_llm):
    fake_llm.set_scripts(Script(status=500, error_message="the model crashed"))
    page = open_page()
    page.fill("#text", "Hello?")
    page.press("#text", "Enter")
    page.wait_for_selector("#transcript .note-error", timeout=30_000)
    assert page.text_content("#transcript .note-error").strip()
    assert page.query_selector("#transcript .msg.assistant.waiting") is None


def test_page_reconnects_after_server_restart(open_page, web_server):
    page = open_page()
    page.fill("#text", "Remember this line.")
    page.press("#text", "Enter")
    page.wait_for_selector("#transcript .msg.assistant:not(.waiting)", timeout=30_000)
    page.focus("#speed")
    page.keyboard.press("ArrowLeft")
    page.wait_for_function("window.voicechat.settings().speed === 49", timeout=5000)
    first_session = page.stats()["sessionId"]

    web_server.stop()
    page.wait_for_function("document.getElementById('status').dataset.state === 'reconnecting'", timeout=10_000)
    assert page.is_visible("#banner")
    page.screenshot_as("desktop-reconnecting")
    web_server.start()
    page.wait_stats("s.connected && s.reconnects >= 1", timeout_s=60)

    stats = page.stats()
    assert stats["sessionId"] != first_session
    assert bubbles(page, "user") == ["Remember this line."]  # the conversation stays on screen
    # Settings chosen on the page are sent again to the new session.
    page.wait_for_function("window.voicechat.settings().speed === 49", timeout=5000)
    assert page.sent("set_speed")[-1] == {"type": "set_speed", "content": 49}
    assert page.is_hidden("#banner")
    # It works again.
    page.fill("#text", "Are you back?")
    page.press("#text", "Enter")
    page.wait_for_function("document.querySelectorAll('#transcript .msg.assistant').length >= 2", timeout=30_000)
    unexpected = [e for e in page.console_errors if "WebSocket" not in e and "ERR_CONNECTION_REFUSED" not in e]
    assert unexpected == []
