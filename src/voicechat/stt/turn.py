"""End of turn: the Smart Turn v3.2 audio model plus a silence policy scaled by the `speed` setting.

Smart Turn reads up to 8 s of the user's audio (a Whisper-tiny encoder with a classifier on top) and
says how likely the speaker has finished; we give it the last `LISTEN_S`. Its ONNX file ships inside the pipecat-ai wheel; we run it
with onnxruntime on one owner thread and compute its log-mel input with faster-whisper's feature
extractor (the same Whisper front end the model was trained with).
"""

from __future__ import annotations

import math
import re
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime
from faster_whisper.feature_extractor import FeatureExtractor

from voicechat.stt.transcriber import Transcript
from voicechat.stt.vad import pipecat_package_dir

SAMPLE_RATE = 16000
_WINDOW_S = 8  # the model's fixed input length
# Smart Turn hears only the last LISTEN_S seconds of the turn (padded with silence in front, as its
# training clips were). Fitted on the human tuning set (benchmarks/turn_taking.py): the last 2 s
# separate real ends from mid-sentence pauses better than the whole turn (AUC 0.84 vs 0.80), since the
# cue is the intonation of the last words, and earlier sentences of a long turn only blur it.
LISTEN_S = 2.0

# A pause ends the turn when the evidence, weighed in log-odds, says "finished" with probability
# END_PROBABILITY or more: Smart Turn's probability, Whisper's probability of the last word (a word
# made up at the pause, "followed by the panel" for "the | pound key", scores 0.1-0.5) and its
# average token log-probability (a guessing Whisper writes "my life, Simmer" for a drawn-out "the ...").
# A logistic regression fitted on the human tuning set only; the threshold swept there too: 0.81 is the
# lowest that keeps the utterances cut off under 3% (2.5%; 63% of real ends judged at once), where 0.85
# gave 1.6% and 57% but only 46% at once on the held-out part (so a median wait of max_wait_s) and
# 0.8 gives 3.2% and 65%. See docs/speech-input.md.
END_WEIGHTS = {"smart_turn": 0.45, "last_word": 0.44, "logprob": 3.25}  # per log-odds / per nat
END_BIAS = -0.06
END_PROBABILITY = 0.81


def packaged_model_path() -> Path:
    return pipecat_package_dir() / "audio" / "turn" / "smart_turn" / "data" / "smart-turn-v3.2-cpu.onnx"


class SmartTurn:
    """The shared Smart Turn model with its own owner thread (one decision takes ~30-100 ms on a CPU)."""

    def __init__(self, model_path: Path | None = None, *, threads: int = 2) -> None:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(
            str(model_path or packaged_model_path()), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._features = FeatureExtractor(feature_size=80, chunk_length=_WINDOW_S)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="smart-turn")

    def probability(self, audio: np.ndarray) -> float:
        """Probability (0-1) that the turn in ``audio`` (float32, 16 kHz, ending now) is complete. Blocking."""
        window = SAMPLE_RATE * _WINDOW_S
        audio = np.asarray(audio, dtype=np.float32)[-round(SAMPLE_RATE * LISTEN_S) :]
        # As in training: short clips are padded with silence in front, then the waveform is normalised.
        audio = np.pad(audio, (window - len(audio), 0))
        audio = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)
        features = self._features(audio, padding=0)[np.newaxis].astype(np.float32)
        (logits,) = self._session.run(None, {"input_features": features})
        return float(logits[0, 0])  # the exported model already applies the sigmoid

    def submit(self, audio: np.ndarray) -> Future[float]:
        return self._thread.submit(self.probability, audio)

    def close(self) -> None:
        self._thread.shutdown(wait=True, cancel_futures=True)


@dataclass(frozen=True)
class TurnPolicy:
    """How long to wait in a pause before ending the user's turn, all in seconds of silence.

    At speed 50 the turn ends after ``complete_wait_s`` when the models judge it complete, otherwise
    after ``max_wait_s``. Each step of 50 on the speed scale halves or doubles every wait, so speed 0 is
    four times as patient as speed 100 (the original app's slider spanned a similar range).
    """

    probe_s: float  # silence before Smart Turn and the candidate final transcription run
    complete_wait_s: float  # silence before a turn judged complete ends
    max_wait_s: float  # silence before any turn ends, whatever the judgement

    @classmethod
    def for_speed(cls, speed: int) -> TurnPolicy:
        if not 0 <= speed <= 100:
            raise ValueError(f"speed must be between 0 and 100, got {speed}")
        scale = 2.0 ** ((50 - speed) / 50)
        complete_wait = 0.30 * scale
        return cls(probe_s=min(0.2, complete_wait), complete_wait_s=complete_wait, max_wait_s=1.6 * scale)


# Words after which an English sentence does not end. Articles, conjunctions, possessives and
# prepositions practically never do, even when Whisper, hearing a rising voice, writes a question mark
# ("Can you translate this into?"): the rare real one ("Where are you from?") only waits the longer
# pause, which costs far less than cutting the speaker off. Words in the second list can close a
# question or exclamation, so they count only without "?" or "!". A transcript ending in one of these
# means the speaker is mid-sentence whatever the prosody says (espeak and tired humans both fall in
# pitch there).
_NEVER_LAST = frozenset(
    """a an the and or but because if than whose my your his her our their its every nor
    of to for with from into onto at by about like as in on through towards toward between without
    um uh er""".split()
)
_RARELY_LAST = frozenset("which who whom when while although though very really just".split())
_LAST_WORD = re.compile(r"([A-Za-z']+)\W*$")


def text_says_incomplete(text: str, language: str) -> bool:
    """True when the transcript visibly stops mid-sentence (a trailing comma, dash or ellipsis, or a
    word a sentence does not end on). Only English has word lists; other languages rely on punctuation."""
    stripped = text.strip()
    if stripped.endswith((",", "-", "...", "…", ";", ":")):
        return True
    match = _LAST_WORD.search(stripped)
    if not match or not language.startswith("en"):
        return False
    word = match.group(1).lower()
    return word in _NEVER_LAST or (word in _RARELY_LAST and not stripped.endswith(("?", "!")))


def _log_odds(probability: float) -> float:
    probability = min(max(probability, 0.01), 0.99)  # no single piece of evidence is ever certain
    return math.log(probability / (1 - probability))


def end_probability(smart: float, transcript: Transcript) -> float:
    """How likely the pause is the end of the turn, from Smart Turn and Whisper's confidence."""
    score = (
        END_BIAS
        + END_WEIGHTS["smart_turn"] * _log_odds(smart)
        + END_WEIGHTS["last_word"] * _log_odds(transcript.last_word_probability)
        + END_WEIGHTS["logprob"] * transcript.logprob
    )
    return 1 / (1 + math.exp(-score))


def pause_ends_turn(smart: float | None, transcript: Transcript, language: str) -> bool:
    """Whether a pause ends the turn after the short wait, from Smart Turn's probability (None if it
    failed) and the candidate transcript with Whisper's confidence in it. A transcript that stops
    mid-sentence holds the turn open whatever else says; otherwise Smart Turn and Whisper's confidence
    are weighed together (`end_probability`): a confident "finished" from Smart Turn makes up for a
    somewhat unsure Whisper, and a made-up last word outweighs a falling voice."""
    text = transcript.text
    if not text:
        return True  # no words (noise, a cough): nothing to wait for
    if text_says_incomplete(text, language) or smart is None:
        return False
    # Whisper's question mark is no evidence of an end: it writes one on any cut-off question
    # ("Could you recommend a good?"), while Smart Turn hears the intonation itself.
    return end_probability(smart, transcript) >= END_PROBABILITY
