"""Speech tokens -> audio chunks: S3Gen (flow matching + vocoder) and the watermark, per chunk.

First version: renders each request on its own, exactly as ``generate_stream`` renders a chunk
(reference prompt + up to 50 context tokens + new tokens, context cropped, 20 ms fade-in, watermark).
The batched, click-free version replaces the body of :meth:`Renderer.render`; the interface stays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from chatterbox.tts import ChatterboxTTS

SAMPLE_RATE = 24_000
CONTEXT_TOKENS = 50  # generate_stream's context_window
FADE_IN_S = 0.02


@dataclass
class RenderRequest:
    """One chunk of one stream's current segment to render."""

    tokens: torch.Tensor  # 1-D LongTensor: all valid speech tokens (< 6561) of this segment so far
    start: int  # tokens[start:] are new in this chunk; tokens[:start] were rendered before
    ref: dict  # the voice's S3Gen reference dict (conds.gen)
    last: bool  # the segment ends with this chunk
    state: Any = None  # what render() returned for this segment's previous chunk; None for the first


class Renderer:
    """Renders chunks of speech tokens to watermarked 24 kHz float32 audio."""

    def __init__(self, tts: ChatterboxTTS):
        self._tts = tts

    def render(self, requests: list[RenderRequest]) -> list[tuple[np.ndarray, Any]]:
        """float32 24 kHz mono audio (1-D numpy, watermarked) and the state to carry, per request, in order."""
        return [self._render_one(request) for request in requests]

    def _render_one(self, request: RenderRequest) -> tuple[np.ndarray, Any]:
        tts = self._tts
        context = request.tokens[max(0, request.start - CONTEXT_TOKENS):request.start]
        tokens = request.tokens[max(0, request.start - CONTEXT_TOKENS):]
        if len(tokens) == len(context):
            return np.zeros(0, dtype=np.float32), request.state
        with torch.inference_mode():
            wav, _ = tts.s3gen.inference(speech_tokens=tokens, ref_dict=request.ref)
        wav = wav.squeeze(0).detach().cpu().numpy()
        skip = int(len(context) * (len(wav) / len(tokens)))
        audio = wav[skip:].astype(np.float32, copy=True)
        fade = min(int(FADE_IN_S * SAMPLE_RATE), len(audio))
        audio[:fade] *= np.linspace(0.0, 1.0, fade, dtype=np.float32)
        audio = tts.watermarker.apply_watermark(audio, sample_rate=tts.sr)
        return np.asarray(audio, dtype=np.float32), request.state
