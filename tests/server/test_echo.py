"""The echo detector: the assistant's own voice coming back is echo; a user talking, also over it, is not.
Through a session with the real Listener: the echo gate keeps that voice from holding, stopping or
answering the reply, while a user speaking over it holds playback at onset and stops it with words."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from fake_llm import FakeLLM, Script
from session_script import FakeSocket

from speech import espeak_wav, read_pcm16
from voicechat import protocol as p
from voicechat.audio import int16_to_float32, resample
from voicechat.config import Settings, load_settings
from voicechat.echo import ECHO_SHARE, EchoReference
from voicechat.llm import create_llm
from voicechat.metrics import Metrics
from voicechat.session import Services, Session
from voicechat.stt.listener import SpeechModels

LLM: FakeLLM

RATE = 16000
ASSISTANT = "The capital of France is Paris. It is known for the Eiffel Tower, its fine food and its long history."
USER = "Wait, stop, tell me about Berlin instead please."


def speech(text: str, voice: str) -> np.ndarray:
    pcm, rate = read_pcm16(espeak_wav(text, voice=voice))
    assert rate == RATE
    return int16_to_float32(pcm)


def loudspeaker_and_room(audio: np.ndarray, delay_ms: int, gain: float) -> np.ndarray:
    """What a microphone hears of played audio: later, quieter, band-limited by a small speaker (a
    short FIR low-pass), over a noise floor."""
    taps = np.hanning(9) / np.hanning(9).sum()
    filtered = np.convolve(audio, taps, mode="same")
    return np.concatenate([np.zeros(delay_ms * RATE // 1000, np.float32), gain * filtered])


@pytest.fixture(scope="module")
def voices() -> tuple[np.ndarray, np.ndarray]:
    return speech(ASSISTANT, "en-us"), speech(USER, "en-gb")


@pytest.mark.parametrize("delay_ms", [50, 120, 300])
@pytest.mark.parametrize("gain", [0.5, 0.1])
def test_the_assistants_own_audio_is_echo_and_a_user_over_it_is_not(voices, delay_ms: int, gain: float) -> None:
    assistant, user = voices
    reference = EchoReference()
    reference.sent(assistant[: RATE * 2])
    reference.sent(assistant[RATE * 2 :])  # sent in pieces, as the reply streams
    played = RATE * 3
    reference.played(played)
    noise = np.random.default_rng(delay_ms).normal(0, 0.002, played).astype(np.float32)
    mic = (loudspeaker_and_room(assistant, delay_ms, gain)[:played] + noise)[-RATE:]
    assert reference.share_explained(mic) > ECHO_SHARE and reference.is_echo(mic)
    # The user speaks as loud as the echo reaches the microphone: the reference explains only the echo.
    over = mic + gain * user[RATE // 4 : RATE // 4 + RATE]
    assert reference.share_explained(over) < ECHO_SHARE and not reference.is_echo(over)


def test_a_user_alone_is_not_echo_and_nothing_played_is_never_echo(voices) -> None:
    assistant, user = voices
    reference = EchoReference()
    reference.sent(assistant)
    window = user[RATE // 4 : RATE // 4 + RATE]
    assert not reference.is_echo(window)  # no playback report yet: nothing has reached the room
    reference.played(RATE * 3)
    assert reference.share_explained(window) < 0.3
    assert not reference.is_echo(np.zeros(100, np.float32))  # too short to judge


# --- through a session: real Listener (Silero, Smart Turn, tiny.en), real pace, a simulated page ------

STEP = 320  # 20 ms microphone frames at 16 kHz
MAX_S = 60  # a run that has not reached its outcome by then hangs
SENTINEL = "What time is it?"
REPORT_EVERY = 12  # frames between playback reports (240 ms; the page reports about every 250 ms)


class SpokenStream:
    """A TTS stream that speaks ``audio`` (int16, 24 kHz) in 0.2 s chunks, as fast as it is read."""

    first_chunk_s = 0.05

    def __init__(self, audio: np.ndarray) -> None:
        self._audio, self._at = audio, 0

    def __aiter__(self) -> SpokenStream:
        return self

    async def __anext__(self) -> np.ndarray:
        if self._at >= len(self._audio):
            raise StopAsyncIteration
        self._at += 4800
        return self._audio[self._at - 4800 : self._at]

    async def aclose(self) -> None:
        pass


class SpeakingTTS:
    """TTSEngine's face, speaking each segment with espeak-ng (a voice other than the user's)."""

    def voices(self) -> list[str]:
        return ["default"]

    def stream(self, text: str, params: object) -> SpokenStream:
        pcm, _ = read_pcm16(espeak_wav(text, rate=24000, voice="en-us"))
        return SpokenStream(pcm)


@dataclass
class Heard:
    """What one run gave: the server's messages, each with the microphone time (s) it was seen at."""

    messages: list[tuple[float, dict]]
    user_onset_s: float | None
    gated_s: float

    def first(self, kind: str) -> float | None:
        return next((at for at, message in self.messages if message["type"] == kind), None)

    def kinds(self) -> list[str]:
        return [message["type"] for _, message in self.messages]


async def play_with_echo(
    models: SpeechModels,
    *,
    delay_ms: int,
    gain: float,
    user: np.ndarray,
    user_at_s: float,
    until: Callable[[list[dict]], bool],
    stop_at_s: float | None = None,
    burst: int = 1,
) -> Heard:
    """A page that plays the reply in real time while its microphone hears that playback (delayed,
    quieter, low-passed, over a noise floor) and, from ``user_at_s``, the user. It obeys tts_pause,
    tts_resume and stop_tts, reports its playback as the page does, presses Stop at ``stop_at_s``,
    sends ``burst`` frames at a time (a stalled network or server: they arrive together), and goes on (silence after the user) until ``until(messages)``: however slow the machine, every
    decision is waited for, never cut off by the clock (MAX_S only guards against a hang)."""
    settings = Settings(_env_file=None, provider="ollama", base_url=LLM.url, model="llama3.2:3b", api_key=None, llm_retries=0)
    services = Services(settings=settings, tts=SpeakingTTS(), speech=models, llm=create_llm(settings), metrics=Metrics())  # type: ignore[arg-type]
    ws = FakeSocket()
    session = Session(ws, services)
    task = asyncio.create_task(session.run())
    heard: list[tuple[float, dict]] = []
    try:
        ws.client_sends({"type": "hello", "protocol": 1, "sample_rate": RATE})
        ws.client_sends({"type": "text_message", "content": "Tell me about Paris"})
        tts_end = await ws.changes.until(lambda: next((m for m in ws.messages if m["type"] == "tts_end"), None))
        turn = tts_end["turn_id"]
        reply = resample(np.concatenate(ws.audio[turn]), 24000, RATE).astype(np.float32) / 32768
        total = MAX_S * RATE
        speaker = np.zeros(total + RATE, np.float32)  # what the loudspeaker played, per mic sample
        user_track = np.zeros_like(speaker)
        start = round(user_at_s * RATE)
        user_track[start : start + len(user)] = user
        delay = delay_ms * RATE // 1000
        taps = np.hanning(9) / np.hanning(9).sum()
        noise = np.random.default_rng(delay_ms).normal(0, 0.002, len(speaker)).astype(np.float32)
        played = 0  # 16 kHz samples of the reply played
        held = stopped = False
        seen = len(ws.messages)
        ws.client_sends({"type": "tts_start", "turn_id": turn})
        started = time.perf_counter()
        for frame in range(total // STEP):
            at = frame * STEP
            for message in ws.messages[seen:]:
                heard.append((at / RATE, message))
                if message.get("turn_id") == turn:
                    held = {"tts_pause": True, "tts_resume": False}.get(message["type"], held)
                    if message["type"] == "stop_tts" and not stopped:
                        stopped = True
                        ws.client_sends({"type": "tts_stop", "turn_id": turn, "played_samples": played * 3 // 2})
            seen = len(ws.messages)
            if until([message for _, message in heard]):
                break
            if stop_at_s is not None and at == round(stop_at_s * RATE / STEP) * STEP:
                ws.client_sends({"type": "interrupt"})  # the page's Stop button
            playing = not (held or stopped) and played < len(reply)
            if playing:
                take = min(STEP, len(reply) - played)
                speaker[at : at + take] = reply[played : played + take]
                played += take
                if frame % REPORT_EVERY == 0:
                    ws.client_sends({"type": "playback", "turn_id": turn, "played_samples": played * 3 // 2})
            echo = np.zeros(STEP, np.float32)
            if at >= delay + 8:
                echo = gain * np.convolve(speaker[at - delay - 8 : at - delay + STEP + 8], taps, mode="valid")[:STEP]
            mic = echo + user_track[at : at + STEP] + noise[at : at + STEP]
            pcm = np.clip(mic * 32768, -32768, 32767).astype("<i2")
            ws.client_sends(p.FRAME_HEADER.pack(at // 16, p.FLAG_PLAYING if playing else 0) + pcm.tobytes())
            if (frame + 1) % burst == 0:  # real pace, ``burst`` frames at a time
                await asyncio.sleep(max(0.0, started + (frame + 1) * STEP / RATE - time.perf_counter()))
        else:
            raise AssertionError(f"no outcome after {MAX_S} s: {[m['type'] for _, m in heard]}")
        loud = np.nonzero(np.abs(user_track) > 0.01)[0]
        gate = session.listener.echo_gate if session.listener is not None else None
        return Heard(heard, float(loud[0]) / RATE, gate.gated_s if gate is not None else 0.0)
    finally:
        ws.client_leaves()
        await asyncio.wait_for(task, 10)
        await services.llm.aclose()


def user_voice(text: str, level: float) -> np.ndarray:
    pcm, _ = read_pcm16(espeak_wav(text, voice="en-gb"))
    return int16_to_float32(pcm) * level


def a_user_turn(messages: list[dict]) -> bool:
    """Until the user's turn comes back finished (the typed one came before the run)."""
    return any(m["type"] == "final_user_request" for m in messages)


@pytest.fixture(scope="module")
def speech_models(whisper_tiny_dir) -> SpeechModels:  # type: ignore[no-untyped-def]
    models = SpeechModels.load(load_settings(stt_model=str(whisper_tiny_dir), stt_device="cpu"))
    yield models
    models.close()


@pytest.fixture(scope="module", autouse=True)
def fake_llm():  # type: ignore[no-untyped-def]
    global LLM
    with FakeLLM(Script(reply=ASSISTANT)) as LLM:
        yield LLM


@pytest.mark.parametrize(("delay_ms", "gain", "burst"), [(50, 0.5, 1), (300, 0.15, 15)])
async def test_the_assistants_own_voice_in_the_microphone_never_holds_stops_or_answers(
    speech_models: SpeechModels, delay_ms: int, gain: float, burst: int
) -> None:
    # 4 s of the reply heard back, then the page's Stop; then the user asks something, so the run ends
    # only once everything before it has been heard and decided.
    heard = await play_with_echo(
        speech_models, delay_ms=delay_ms, gain=gain, user=user_voice(SENTINEL, 0.3), user_at_s=4.5,
        until=a_user_turn, stop_at_s=4.0, burst=burst,  # 15 frames: 300 ms stalls
    )
    before = [message["type"] for at, message in heard.messages if at < heard.user_onset_s]  # the question's onset
    assert "tts_pause" not in heard.kinds() and "tts_interruption" not in heard.kinds()
    assert "partial_user_request" not in before and "final_user_request" not in before
    assert len([m for _, m in heard.messages if m["type"] == "final_user_request"]) == 1  # the question only
    assert heard.gated_s > 1.0  # the echo was loud enough to be heard, and silenced


async def test_a_user_over_the_echo_holds_playback_at_onset_then_stops_it(speech_models: SpeechModels) -> None:
    heard = await play_with_echo(
        speech_models, delay_ms=120, gain=0.3, user=user_voice(USER, 0.6), user_at_s=1.5, until=a_user_turn
    )
    kinds = heard.kinds()
    assert kinds.index("tts_pause") < kinds.index("tts_interruption") < kinds.index("stop_tts")
    assert "tts_resume" not in kinds
    paused, stopped = heard.first("tts_pause"), heard.first("stop_tts")
    assert paused is not None and stopped is not None and heard.user_onset_s < paused <= stopped
    # Timings are measured here, not asserted (they depend on the machine): -s prints them.
    print(f"\nonset -> tts_pause {1000 * (paused - heard.user_onset_s):.0f} ms, "
          f"onset -> stop_tts {1000 * (stopped - heard.user_onset_s):.0f} ms (microphone time, real pace)")
