"""The web client in a real Chromium against a real server: audio both ways, every control, resilience."""

from __future__ import annotations

import json
import re

import pytest
from browser_env import DESKTOP, LONG_REPLY, PHONE, SHORT_REPLY
from fake_llm import Script

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

FRAME_BYTES = 8 + 512 * 2  # header + 32 ms of 16 kHz int16


def bubbles(page, role: str) -> list[str]:
    return page.eval_on_selector_all(f"#transcript .msg.{role} .heard", "items => items.map(i => i.textContent)")


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
    # Screen readers hear the finished reply (one polite live region).
    page.wait_for_function(f"document.getElementById('announcer').textContent === {('Assistant: ' + SHORT_REPLY)!r}")
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


def reply_parts(page, turn: int) -> tuple[str, str]:
    """(heard, not spoken) of an assistant bubble."""
    return tuple(
        page.eval_on_selector(
            f"#transcript .msg.assistant[data-turn='{turn}']",
            "m => [m.querySelector('.heard').textContent, m.querySelector('.unheard').dataset.rest]",
        )
    )


def test_a_reply_arriving_while_the_audio_worklet_loads_is_played_whole(open_page):
    """The first key press creates the AudioContext; its worklet modules load asynchronously (slowly in
    some engines). Audio that arrives meanwhile is kept for the worklet, not dropped."""
    page = open_page()
    # Hold the worklet modules back until the whole reply has arrived.
    page.evaluate(
        """() => {
          const load = AudioWorklet.prototype.addModule;
          const gate = new Promise((open) => (window.openWorkletGate = open));
          AudioWorklet.prototype.addModule = function (...args) { return gate.then(() => load.apply(this, args)); };
        }"""
    )
    page.fill("#text", "Hello, how are you?")
    page.press("#text", "Enter")
    end = page.wait_received("tts_end", timeout_s=40)
    assert page.stats().get("samplesReceived") is None  # no worklet yet
    page.evaluate("window.openWorkletGate()")
    stats = page.wait_stats("s.turnsCompleted >= 1", timeout_s=40)
    assert stats["samplesReceived"] == stats["samplesPlayed"] == end["samples"] > 0
    assert page.console_errors == []


def test_stop_keeps_the_heard_words_and_dims_the_rest(open_page, fake_llm):
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
    final = page.wait_received("final_assistant_answer")
    assert final["interrupted"] is True
    turn = final["turn_id"]
    page.wait_for_selector(f"#transcript .msg.assistant.interrupted[data-turn='{turn}'] .tag-interrupted")
    heard, rest = reply_parts(page, turn)
    if rest:
        assert "not spoken" in page.text_content(f"#transcript .msg.assistant[data-turn='{turn}'] .meta")
    assert heard == final["content"]  # what the server keeps as heard
    assert f"{heard} {rest}".strip() == LONG_REPLY  # the rest stays on screen, dimmed
    # Copy gives what is on screen.
    expected = f"Assistant: {heard}{' ' if heard else ''}[not spoken: {rest}] [interrupted]"
    assert page.evaluate("window.voicechat.transcript()").endswith(expected)
    # The microphone was never involved; Stop reply is the only thing that stopped the reply.
    assert page.get_attribute("#mic", "aria-pressed") == "false"
    played = page.stats()["samplesPlayed"]
    page.wait_for_timeout(600)
    assert page.stats()["samplesPlayed"] == played
    page.screenshot_as("desktop-stopped")
    assert page.console_errors == []


def test_a_reply_superseded_before_it_spoke_leaves_no_bubble(open_page, fake_llm):
    # The first reply's language model is slow: a second typed message replaces it before any audio.
    fake_llm.set_scripts(Script(reply=LONG_REPLY, first_token_delay=30), Script(reply=SHORT_REPLY, token_delay=0.01))
    page = open_page()
    page.fill("#text", "First question.")
    page.press("#text", "Enter")
    page.wait_received("final_user_request")
    page.fill("#text", "Second question.")
    page.press("#text", "Enter")
    page.wait_for_function(
        f"[...document.querySelectorAll('#transcript .msg.assistant .heard')].some(t => t.textContent === {SHORT_REPLY!r})",
        timeout=30_000,
    )
    assert bubbles(page, "user") == ["First question.", "Second question."]
    assert bubbles(page, "assistant") == [SHORT_REPLY]  # no empty "interrupted" bubble for the first
    assert page.evaluate("window.voicechat.transcript()") == (
        f"You: First question.\n\nYou: Second question.\n\nAssistant: {SHORT_REPLY}"
    )


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
    # The voice's onset held playback first (tts_pause), before any words were known; the words stopped it.
    # (If the pause after "Wait," comes before the transcriber has heard a word, the hold is resumed there
    # and the words stop the reply a moment later: which one happens depends on the CPU's speed.)
    kinds = [m["type"] for m in page.received() if m.get("turn_id") == turn]
    assert kinds.index("tts_pause") < kinds.index("tts_interruption")
    stop = [m for m in page.sent("tts_stop") if m["turn_id"] == turn][-1]
    assert stop["played_samples"] < stats["samplesReceived"]
    page.wait_for_selector(f"#transcript .msg.assistant.interrupted[data-turn='{turn}']")
    # The frames sent while the reply played carried the "assistant is playing" flag; the server's
    # barge-in decision used it (stricter thresholds) and still let the user through.
    assert page.console_errors == []


def test_voice_upload_checks_the_file_and_asks_before_replacing(open_page, voice_wav):
    page = open_page()
    requests = []
    page.on("request", lambda r: requests.append(r.url) if r.method == "POST" else None)
    page.click(".upload summary")
    # The hint says the server's own limits.
    limits = page.evaluate("fetch('api/voices').then((r) => r.json()).then((b) => b.limits)")
    page.wait_for_function(
        f"document.getElementById('upload-hint').textContent.includes('{limits['min_seconds']:g} to {limits['max_seconds']:g} seconds')"
    )
    page.set_input_files("#voice-file", str(voice_wav))
    assert page.input_value("#voice-name") == voice_wav.stem  # suggested from the file name
    page.fill("#voice-name", "tester")
    page.click("#upload-button")
    page.wait_for_function("document.getElementById('upload-status').textContent.includes('added')", timeout=60_000)
    assert page.input_value("#voice") == "tester"
    page.wait_for_function("window.voicechat.settings().voice === 'tester'", timeout=5000)

    # Not a recording at all: refused in plain words, before anything is sent.
    page.set_input_files("#voice-file", files=[{"name": "notes.wav", "mimeType": "audio/wav", "buffer": b"not a wav at all"}])
    page.fill("#voice-name", "broken")
    page.click("#upload-button")
    page.wait_for_selector("#upload-status.error")
    assert "is not a WAV" in page.text_content("#upload-status")
    # A WAV header over garbage: the server refuses it, and the page says so without internals.
    page.set_input_files(
        "#voice-file", files=[{"name": "bad.wav", "mimeType": "audio/wav", "buffer": b"RIFF\x10\x00\x00\x00WAVEjunkjunk"}]
    )
    page.fill("#voice-name", "broken")
    page.click("#upload-button")
    page.wait_for_function("document.getElementById('upload-status').textContent && !document.getElementById('upload-status').textContent.startsWith('Uploading')")
    problem = page.text_content("#upload-status")
    assert "<" not in problem and "BytesIO" not in problem and "VOICECHAT_" not in problem, problem
    assert page.input_value("#voice") == "tester"

    # The same name again: the page asks; Cancel changes nothing, Replace sends replace=1.
    page.set_input_files("#voice-file", str(voice_wav))
    page.fill("#voice-name", "tester")
    page.click("#upload-button")
    page.wait_for_selector("#confirm-dialog[open]")
    page.screenshot_as("desktop-replace-voice")
    page.click("#confirm-cancel")
    page.wait_for_selector("#upload-status.error")
    assert "Nothing was changed" in page.text_content("#upload-status")
    assert not any("replace=1" in url for url in requests)
    page.click("#upload-button")
    page.click("#confirm-ok")
    page.wait_for_function("document.getElementById('upload-status').textContent.includes('replaced')", timeout=60_000)
    assert any(url.endswith("name=tester&replace=1") for url in requests)


def test_a_failed_reply_is_labelled_with_a_retry_and_no_internals(open_page, fake_llm):
    # Mid-reply failure: the words so far stay, marked as failed.
    fake_llm.set_scripts(Script(reply=LONG_REPLY, token_delay=0.01, stream_error_after=6), Script(reply=SHORT_REPLY))
    page = open_page()
    page.fill("#text", "Hello?")
    page.press("#text", "Enter")
    page.wait_for_selector("#transcript .msg.assistant.failed .retry", timeout=30_000)
    failed = page.text_content("#transcript .msg.assistant.failed .meta")
    assert "failed" in failed and "interrupted" not in failed
    assert page.text_content("#transcript .msg.assistant.failed .heard").strip()
    page.screenshot_as("desktop-failed")
    # Retry sends the same words again, and the answer comes.
    page.click("#transcript .retry")
    page.wait_for_function(
        f"[...document.querySelectorAll('#transcript .msg.assistant .heard')].some(t => t.textContent === {SHORT_REPLY!r})",
        timeout=30_000,
    )
    assert [m["content"] for m in page.sent("text_message")] == ["Hello?", "Hello?"]

    # A failure before any word: a note with a Retry, never an empty bubble; no address or setting name.
    fake_llm.set_scripts(Script(status=500, error_message="the model crashed"))
    page.fill("#text", "Again?")
    page.press("#text", "Enter")
    page.wait_for_selector("#transcript .note-error .retry", timeout=30_000)
    text = page.text_content("#transcript .note-error")
    assert "http" not in text and "127.0.0.1" not in text and "VOICECHAT_" not in text, text
    assert page.query_selector("#transcript .msg.assistant.waiting") is None
    assert all(b.strip() for b in bubbles(page, "assistant"))
    assert page.evaluate("window.voicechat.transcript()").endswith(f"[{text.replace('Retry', '').strip()}]")


def test_unreachable_llm_error_names_no_internals(open_page, web_server, fake_llm):
    fake_llm.set_scripts(Script(status=404, error_message="model 'test-model' not found"))
    page = open_page()
    page.fill("#text", "Hello?")
    page.press("#text", "Enter")
    page.wait_for_selector("#transcript .note-error", timeout=30_000)
    shown = page.text_content("#transcript .note-error")
    server_said = page.received("error")[-1]["message"]
    assert shown and server_said not in shown
    for internal in (web_server.process.url, "127.0.0.1", "VOICECHAT_", "base_url", "http"):
        assert internal not in shown, (internal, shown)


def test_settings_are_kept_across_a_reload(open_page):
    page = open_page()
    page.focus("#speed")
    page.keyboard.press("ArrowRight")
    page.uncheck("#speak-replies")
    page.fill("#exaggeration", "0.8")
    page.wait_for_function("Math.abs(window.voicechat.settings().exaggeration - 0.8) < 1e-6", timeout=5000)
    page.reload()
    page.wait_for_function("window.voicechat && window.voicechat.stats().connected", timeout=30_000)
    # The new session gets the settings again, and the controls show them.
    page.wait_for_function("window.voicechat.settings().speed === 51", timeout=5000)
    page.wait_for_function("Math.abs(window.voicechat.settings().exaggeration - 0.8) < 1e-6", timeout=5000)
    assert page.input_value("#speed") == "51" and page.text_content("#exaggeration-value") == "0.80"
    assert not page.is_checked("#speak-replies")


def test_keyboard_focus_and_the_phone_settings_sheet_is_modal(open_page):
    page = open_page(viewport=PHONE)
    # Enter on the microphone button keeps the focus there.
    page.focus("#mic")
    page.keyboard.press("Enter")
    page.wait_for_selector("#mic[aria-pressed='true']")
    assert page.evaluate("document.activeElement.id") == "mic"
    page.keyboard.press("Enter")
    page.wait_for_selector("#mic[aria-pressed='false']")
    assert page.evaluate("document.activeElement.id") == "mic"

    page.click("#settings-toggle")
    page.wait_for_selector("#settings[role='dialog'][aria-modal='true']")
    assert page.evaluate("document.activeElement.id") == "settings-close"
    # Tab never leaves the sheet.
    for _ in range(30):
        page.keyboard.press("Tab")
        assert page.evaluate("document.getElementById('settings').contains(document.activeElement)")
    # Its close button stays in view when the sheet is scrolled to the end.
    page.eval_on_selector("#settings", "p => p.scrollTo(0, p.scrollHeight)")
    box = page.eval_on_selector("#settings-close", "b => { const r = b.getBoundingClientRect(); return [r.top, r.bottom]; }")
    assert 0 <= box[0] and box[1] <= PHONE["height"]
    page.screenshot_as("phone-settings-scrolled")
    # The backdrop closes it; so does Escape; the focus goes back to the Settings button.
    page.mouse.click(PHONE["width"] / 2, 40)
    page.wait_for_function("!document.body.classList.contains('panel-open')")
    assert page.evaluate("document.activeElement.id") == "settings-toggle"
    page.click("#settings-toggle")
    page.wait_for_selector("#settings[role='dialog']")
    page.keyboard.press("Escape")
    page.wait_for_function("!document.body.classList.contains('panel-open')")
    assert page.get_attribute("#settings-toggle", "aria-expanded") == "false"
    assert not page.evaluate("document.getElementById('chat-col').inert")


def loading_server(route) -> None:  # noqa: ANN001 - Playwright's WebSocketRoute
    """A stand-in server that is still loading its models (the page's side of `loading`)."""

    def on_message(message: str) -> None:
        if json.loads(message).get("type") != "hello":
            return
        route.send(json.dumps({"type": "status", "state": "loading"}))
        route.send(
            json.dumps(
                {
                    "type": "loading",
                    "models": [
                        {"name": "Chatterbox voice", "stage": "downloading", "bytes_done": 1_240_000_000, "bytes_total": 3_100_000_000},
                        {"name": "Whisper speech recognition", "stage": "loading", "bytes_done": None, "bytes_total": None},
                    ],
                }
            )
        )

    route.on_message(on_message)


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_start_up_shows_the_download_and_the_mic_waits(open_page, viewport):
    page = open_page(viewport=viewport, fake_socket=loading_server)
    page.wait_for_selector("#startup:not([hidden])")
    page.wait_for_function("document.getElementById('startup-models').children.length === 2")
    text = page.text_content("#startup-models")
    assert "Chatterbox voice: downloading: 1.24 GB of 3.10 GB" in text and "Whisper speech recognition: loading" in text
    assert page.text_content("#status-text") == "Starting up…"
    assert page.eval_on_selector("#startup-models progress", "p => p.value") == pytest.approx(0.4, abs=0.01)
    # The microphone cannot start yet, and says why.
    page.click("#mic", force=True)  # aria-disabled: a click explains instead of starting
    assert page.get_attribute("#mic", "aria-pressed") == "false"
    assert "loaded its speech models" in page.text_content("#mic-reason")
    assert page.evaluate("document.activeElement.id") == "mic"
    name = "desktop" if viewport is DESKTOP else "phone"
    page.screenshot_as(f"{name}-loading")
    assert page.axe_problems() == []


def test_no_serious_accessibility_problems_and_screenshots_of_each_state(open_page, fake_llm):
    fake_llm.set_scripts(
        Script(reply=SHORT_REPLY, token_delay=0.01),
        Script(reply=LONG_REPLY, token_delay=0.01, stream_error_after=8),
    )
    page = open_page()
    page.emulate_media(reduced_motion="reduce")  # no fade-ins under the audit
    for name in ("desktop", "phone"):
        for dark in (False, True):
            viewport = DESKTOP if name == "desktop" else PHONE
            page.set_viewport_size(viewport)
            page.emulate_media(color_scheme="dark" if dark else "light")
            page.screenshot_as(f"{name}-{'dark' if dark else 'light'}-empty")
            assert page.axe_problems() == [], (name, dark, "empty")
    page.set_viewport_size(DESKTOP)
    page.emulate_media(color_scheme="light")
    page.fill("#text", "What is the weather?")
    page.press("#text", "Enter")
    page.wait_stats("s.turnsCompleted >= 1", timeout_s=40)
    page.fill("#text", "And tomorrow?")
    page.press("#text", "Enter")
    page.wait_for_selector("#transcript .msg.assistant.failed", timeout=30_000)
    page.click(".timeline summary")
    for name in ("desktop", "phone"):
        for dark in (False, True):
            viewport = DESKTOP if name == "desktop" else PHONE
            scheme = "dark" if dark else "light"
            page.set_viewport_size(viewport)
            page.emulate_media(color_scheme=scheme)
            page.screenshot_as(f"{name}-{scheme}-conversation")
            assert page.axe_problems() == [], (name, scheme, "conversation")
            if name == "phone":
                page.click("#settings-toggle")
                page.wait_for_selector("#settings[role='dialog']")
                page.screenshot_as(f"{name}-{scheme}-settings")
                assert page.axe_problems() == [], (name, scheme, "settings")
                page.keyboard.press("Escape")
            page.click("#reset")
            page.wait_for_selector("#confirm-dialog[open]")
            page.screenshot_as(f"{name}-{scheme}-confirm-reset")
            assert page.axe_problems() == [], (name, scheme, "confirm")
            page.keyboard.press("Escape")
    assert page.console_errors == []


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
    # The banner counts down: wait for a wait of 2 s or more, then see it tick.
    page.wait_for_function(
        "(/in (\\d+) s/.exec(document.getElementById('banner-text').textContent) || [0, 0])[1] >= 2", timeout=30_000
    )
    seconds = int(re.search(r"in (\d+) s", page.text_content("#banner-text")).group(1))
    page.wait_for_function(f"document.getElementById('banner-text').textContent.includes('in {seconds - 1} s')", timeout=5000)
    # The microphone waits for the connection, and says why.
    page.click("#mic", force=True)
    assert page.get_attribute("#mic", "aria-pressed") == "false"
    assert "connection is back" in page.text_content("#mic-reason")
    # A message typed now is kept, marked, and sent once the server is back.
    page.fill("#text", "Are you back?")
    page.press("#text", "Enter")
    page.wait_for_selector("#transcript .msg.user.queued .tag-queued")
    assert "unsent message" in page.text_content("#banner-text")
    page.screenshot_as("desktop-reconnecting")
    web_server.start()
    page.wait_stats("s.connected && s.reconnects >= 1", timeout_s=60)

    stats = page.stats()
    assert stats["sessionId"] != first_session
    # Settings chosen on the page are sent again to the new session.
    page.wait_for_function("window.voicechat.settings().speed === 49", timeout=5000)
    assert page.sent("set_speed")[-1] == {"type": "set_speed", "content": 49}
    assert page.is_hidden("#banner") and page.is_hidden("#mic-reason")
    # The queued message went out, and is answered.
    assert page.sent("text_message")[-1] == {"type": "text_message", "content": "Are you back?"}
    page.wait_for_function("document.querySelectorAll('#transcript .msg.assistant').length >= 2", timeout=30_000)
    assert bubbles(page, "user") == ["Remember this line.", "Are you back?"]
    assert page.query_selector("#transcript .msg.user.queued") is None
    unexpected = [e for e in page.console_errors if "WebSocket" not in e and "ERR_CONNECTION_REFUSED" not in e]
    assert unexpected == []


def test_a_dropped_connection_resumes_the_conversation(open_page, fake_llm):
    """The socket drops (not the server): the page reconnects with its resume token and the server
    hands back the same conversation, so the next request still holds the earlier turn."""
    page = open_page()
    page.fill("#text", "Remember this line.")
    page.press("#text", "Enter")
    page.wait_stats("s.turnsCompleted >= 1", timeout_s=40)
    first_session = page.stats()["sessionId"]
    # Take hold of the page's open socket at its next send (a settings change), then drop it.
    page.evaluate(
        """() => {
          const send = WebSocket.prototype.send;
          WebSocket.prototype.send = function (data) { window.droppedSocket = this; return send.call(this, data); };
        }"""
    )
    page.focus("#speed")
    page.keyboard.press("ArrowLeft")
    page.wait_for_function("window.droppedSocket !== undefined", timeout=5000)
    page.evaluate("window.droppedSocket.close()")
    page.wait_stats("s.connected && s.reconnects >= 1", timeout_s=30)
    page.wait_for_selector("#transcript :text('The conversation goes on')", timeout=5000)
    assert page.stats()["sessionId"] == first_session  # the same conversation, not a fresh one
    page.fill("#text", "What did I ask you to remember?")
    page.press("#text", "Enter")
    page.wait_for_function("document.querySelectorAll('#transcript .msg.assistant').length >= 2", timeout=30_000)
    asked = [m["content"] for m in fake_llm.chat_requests()[-1].body["messages"] if m["role"] == "user"]
    assert asked == ["Remember this line.", "What did I ask you to remember?"]
    assert bubbles(page, "user") == ["Remember this line.", "What did I ask you to remember?"]
    assert page.console_errors == []
