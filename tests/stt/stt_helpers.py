"""Helpers to feed espeak-ng speech through a Listener and score its transcripts."""

from __future__ import annotations

import asyncio
import re
import time

import jiwer
import numpy as np

from speech import espeak_wav, read_pcm16, silence
from voicechat.stt.listener import Listener, SpeechEvent

RATE = 16000


def say(text: str, *, ssml: bool = False) -> np.ndarray:
    """espeak-ng speech as int16 at 16 kHz."""
    pcm, rate = read_pcm16(espeak_wav(text, ssml=ssml))
    assert rate == RATE
    return pcm


def trimmed(pcm: np.ndarray) -> np.ndarray:
    """Without espeak's leading and trailing silence."""
    loud = np.nonzero(np.abs(pcm.astype(np.int32)) > 300)[0]
    return pcm[loud[0] : loud[-1] + 1]


def with_silence(*parts: np.ndarray | float) -> np.ndarray:
    """Concatenate audio arrays and silences (floats, in seconds)."""
    return np.concatenate([silence(part) if isinstance(part, (int, float)) else part for part in parts])


async def feed_all(
    listener: Listener, audio: np.ndarray, *, chunk: int = 320, realtime: bool = False, rate: int = RATE
) -> list[SpeechEvent]:
    """Feed ``audio`` in chunks (20 ms by default), as fast as possible or at real-time pace."""
    events: list[SpeechEvent] = []
    started = time.perf_counter()
    for offset in range(0, len(audio), chunk):
        if realtime:
            await asyncio.sleep(max(0.0, started + offset / rate - time.perf_counter()))
        events.extend(await listener.feed(audio[offset : offset + chunk]))
    return events


def of_type(events: list[SpeechEvent], kind: str) -> list[SpeechEvent]:
    return [event for event in events if event.type == kind]


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z' ]+", " ", text.lower().replace("-", " ")).split())


def wer(references: list[str], hypotheses: list[str]) -> float:
    """Word error rate over all utterances together, after lower-casing and dropping punctuation."""
    return jiwer.wer([normalise(text) for text in references], [normalise(text) for text in hypotheses])
