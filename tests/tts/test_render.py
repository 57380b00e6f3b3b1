"""The batched S3Gen renderer (tts/render.py) on the tiny random-weight checkpoint: it matches S3Gen's own
flow, a batch equals one-by-one rendering, streams are reproducible, and chunk boundaries are seamless."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from voicechat.audio import read_audio
from voicechat.tts.render import FRAME_SAMPLES, LOOKAHEAD_TOKENS, TOKEN_FRAMES, RenderRequest, Renderer

SAMPLES_PER_TOKEN = TOKEN_FRAMES * FRAME_SAMPLES


def speech_tokens(count: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 6561, (count,), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def renderer(chatterbox) -> Renderer:
    return Renderer(chatterbox)


@pytest.fixture(scope="module")
def refs(chatterbox, bob_wav) -> list[dict]:
    """The built-in voice and an espeak voice (its reference prompt has another length: padding)."""
    samples, rate = read_audio(bob_wav)
    with torch.inference_mode():
        bob = chatterbox.s3gen.embed_ref(torch.from_numpy(samples).float(), rate)
    assert bob["prompt_token"].shape[1] != chatterbox.conds.gen["prompt_token"].shape[1]
    return [chatterbox.conds.gen, bob]


def speak(renderer: Renderer, tokens: torch.Tensor, ref: dict, chunk: int, seed: int = 7) -> list[np.ndarray]:
    """One segment rendered chunk by chunk, alone."""
    chunks, state, start = [], None, 0
    while start < len(tokens):
        end = min(len(tokens), start + chunk)
        [(audio, state)] = renderer.render([RenderRequest(tokens[:end], start, ref, end == len(tokens), state, seed)])
        chunks.append(audio)
        start = end
    return chunks


def speak_together(renderer: Renderer, streams: list[tuple[torch.Tensor, dict, int]], chunk: int) -> list[np.ndarray]:
    """Several segments rendered in lockstep: each call renders the next chunk of every unfinished one."""
    states: list = [None] * len(streams)
    starts = [0] * len(streams)
    audio: list[list[np.ndarray]] = [[] for _ in streams]
    while any(start < len(tokens) for start, (tokens, _, _) in zip(starts, streams)):
        rows, requests = [], []
        for row, (tokens, ref, seed) in enumerate(streams):
            if starts[row] < len(tokens):
                end = min(len(tokens), starts[row] + chunk)
                requests.append(RenderRequest(tokens[:end], starts[row], ref, end == len(tokens), states[row], seed))
                rows.append((row, end))
        for (row, end), (samples, state) in zip(rows, renderer.render(requests)):
            audio[row].append(samples)
            states[row], starts[row] = state, end
    return [np.concatenate(chunks) for chunks in audio]


def test_flow_equals_s3gens_own(renderer: Renderer, chatterbox) -> None:
    """The batched flow path reproduces S3Gen's flow_inference (alone, both finalize modes)."""
    tokens = speech_tokens(40, seed=1)
    ref = chatterbox.conds.gen
    for last in (True, False):
        job = renderer._plan(RenderRequest(tokens, 0, ref, last))
        with torch.inference_mode():
            renderer._flow([job])
            expected = chatterbox.s3gen.flow_inference(tokens, ref_dict=ref, finalize=last)[0]
        assert job.mel.shape == expected.shape == (80, TOKEN_FRAMES * (40 if last else 40 - LOOKAHEAD_TOKENS))
        assert torch.allclose(job.mel, expected, atol=1e-4), (job.mel - expected).abs().max()


def test_a_batch_equals_one_by_one_rendering(renderer: Renderer, refs: list[dict]) -> None:
    streams = [(speech_tokens(70, seed=2), refs[0], 11), (speech_tokens(53, seed=3), refs[1], 12),
               (speech_tokens(31, seed=4), refs[0], 13)]
    together = speak_together(renderer, streams, chunk=25)
    for (tokens, ref, seed), batched in zip(streams, together):
        alone = np.concatenate(speak(renderer, tokens, ref, chunk=25, seed=seed))
        assert len(alone) == len(batched) == len(tokens) * SAMPLES_PER_TOKEN
        assert np.all(np.isfinite(batched)) and np.abs(alone).max() > 1e-3
        np.testing.assert_allclose(batched, alone, rtol=0, atol=1e-5)


def test_padding_to_a_frame_bucket_is_exact(renderer: Renderer, chatterbox, refs: list[dict]) -> None:
    """CUDA graphs pad flow batches to frame buckets; the padding is masked, so the audio is the same."""
    bucketed = Renderer(chatterbox, frame_bucket=32)
    tokens = speech_tokens(45, seed=10)
    plain = np.concatenate(speak(renderer, tokens, refs[1], chunk=20))
    padded = np.concatenate(speak(bucketed, tokens, refs[1], chunk=20))
    np.testing.assert_allclose(padded, plain, rtol=0, atol=1e-5)


class _EagerGraph:
    """A stand-in for a captured CUDA graph on CPU: replay runs the solve on the static buffers."""

    def __init__(self, renderer: Renderer, static: list[torch.Tensor], output: torch.Tensor):
        self.renderer, self.static, self.output = renderer, static, output

    def replay(self) -> None:
        self.output.copy_(self.renderer._solve(*self.static))


def test_graph_path_pads_batches_and_warms_its_shapes(chatterbox, refs: list[dict], renderer: Renderer,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The graph path's logic on CPU (capture replaced by an eager stand-in): batches are padded to 1, 2,
    4, 8... rows and the padding rows are dropped (3 streams = one by one); warm_graphs captures the
    shapes of a segment's chunks at each batch size."""
    from voicechat.tts import render

    def capture(self, inputs):
        static = [tensor.clone() for tensor in inputs]
        output = self._renderer._solve(*static)
        return _EagerGraph(self._renderer, static, output), static, output

    monkeypatch.setattr(render._SolveGraphs, "_capture", capture)
    graphed = Renderer(chatterbox, frame_bucket=32)
    graphed._graphs = render._SolveGraphs(graphed)
    graphed.warm_graphs(refs[0], [10, 25], batches=[1, 2, 4])
    shapes = set(graphed._graphs._graphs)
    assert {key[0][0] for key in shapes} == {1, 2, 4}, "one set of shapes per batch size"
    streams = [(speech_tokens(35, seed=2), refs[0], 11), (speech_tokens(35, seed=3), refs[0], 12),
               (speech_tokens(35, seed=4), refs[0], 13)]
    together = speak_together(graphed, streams, chunk=10)  # 3 rows, padded to 4
    for (tokens, ref, seed), batched in zip(streams, together):
        alone = np.concatenate(speak(renderer, tokens, ref, chunk=10, seed=seed))
        np.testing.assert_allclose(batched, alone, rtol=0, atol=1e-5)
    assert {key[0][0] for key in graphed._graphs._graphs} <= {1, 2, 4}


def test_seed_makes_a_stream_reproducible(renderer: Renderer, refs: list[dict]) -> None:
    tokens = speech_tokens(60, seed=5)
    first = np.concatenate(speak(renderer, tokens, refs[0], chunk=25, seed=3))
    again = np.concatenate(speak(renderer, tokens, refs[0], chunk=25, seed=3))
    other = np.concatenate(speak(renderer, tokens, refs[0], chunk=25, seed=4))
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-4  # the vocoder's excitation noise and phases differ


def test_every_token_is_heard_once_whatever_the_chunking(renderer: Renderer, refs: list[dict]) -> None:
    tokens = speech_tokens(57, seed=6)
    for chunk in (1, 2, 10, 25, 57):
        chunks = speak(renderer, tokens, refs[1], chunk)
        assert sum(len(c) for c in chunks) == len(tokens) * SAMPLES_PER_TOKEN, chunk
        assert all(c.dtype == np.float32 and c.ndim == 1 for c in chunks)


def test_a_chunk_with_nothing_new_yields_nothing_and_keeps_its_state(renderer: Renderer, refs: list[dict]) -> None:
    tokens = speech_tokens(30, seed=7)
    [(first, state)] = renderer.render([RenderRequest(tokens[:25], 0, refs[0], False)])
    assert len(first) > 0
    [(nothing, same)] = renderer.render([RenderRequest(tokens[:25], 25, refs[0], False, state)])
    assert len(nothing) == 0 and same is state
    [(rest, _)] = renderer.render([RenderRequest(tokens[:25], 25, refs[0], True, state)])
    assert len(first) + len(rest) == 25 * SAMPLES_PER_TOKEN  # the held-back audio comes with the last chunk


def _boundary_measures(chunks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Envelope and jump at chunk boundaries and at points inside chunks, each relative to the RMS of
    the 100 ms around it: works for the noise that random weights produce as well as for speech.
    envelope: RMS of the 10 ms around the point / RMS of the 100 ms around it (a notch -> near 0);
    jump: |x[p] - x[p-1]| / that RMS (a click -> large)."""
    signal = np.concatenate(chunks)
    bounds = np.cumsum([len(c) for c in chunks])[:-1]
    bounds = bounds[(bounds > 1200) & (bounds < len(signal) - 1200)]
    inside = np.array([p for p in range(1200, len(signal) - 1200, 331) if np.min(np.abs(bounds - p)) > 1200])

    def envelope(p: int) -> float:
        return np.sqrt(np.mean(signal[p - 120:p + 120] ** 2)) / np.sqrt(np.mean(signal[p - 1200:p + 1200] ** 2))

    def jump(p: int) -> float:
        return abs(signal[p] - signal[p - 1]) / np.sqrt(np.mean(signal[p - 1200:p + 1200] ** 2))

    return (np.array([envelope(p) for p in bounds]), np.array([envelope(p) for p in inside]),
            np.array([jump(p) for p in bounds]), np.array([jump(p) for p in inside]))


def _generate_stream_style(chatterbox, tokens: torch.Tensor, ref: dict, chunk: int) -> list[np.ndarray]:
    """What today's engine hands out: generate_stream's per-chunk rendering (context re-rendered and
    cropped, 20 ms fade-in) plus the engine's 10 ms fade-out."""
    fade_in = np.linspace(0, 1, 480, dtype=np.float32)
    fade_out = ((1 + np.cos(np.linspace(0, np.pi, 240))) / 2).astype(np.float32)
    chunks = []
    for start in range(0, len(tokens), chunk):
        window = tokens[max(0, start - 50):start + chunk]
        with torch.inference_mode():
            wav = chatterbox.s3gen.inference(speech_tokens=window, ref_dict=ref)[0][0].numpy()
        audio = wav[int((len(window) - len(tokens[start:start + chunk])) * len(wav) / len(window)):].copy()
        audio[:480] *= fade_in
        audio[-240:] *= fade_out
        chunks.append(audio)
    return chunks


def test_chunk_boundaries_have_no_notch_and_no_click(renderer: Renderer, chatterbox, refs: list[dict]) -> None:
    tokens = speech_tokens(150, seed=8)
    envelope_at, envelope_inside, jump_at, jump_inside = _boundary_measures(speak(renderer, tokens, refs[0], 25))
    assert len(envelope_at) == 5
    # At each boundary the envelope is as full as somewhere inside a chunk, and no sample step is
    # larger than the largest inside one.
    assert envelope_at.min() >= envelope_inside.min() * 0.9, (envelope_at, envelope_inside.min())
    assert jump_at.max() <= jump_inside.max(), (jump_at, jump_inside.max())

    # The measure does see the old seam: fade-out + fade-in dips the envelope far below anything inside.
    old_at, old_inside, _, _ = _boundary_measures(_generate_stream_style(chatterbox, tokens, refs[0], 25))
    assert old_at.max() < 0.5 * old_inside.min(), (old_at, old_inside.min())


def test_first_chunk_with_a_shorter_reference_prompt(chatterbox, refs: list[dict]) -> None:
    """first_chunk_ref_s renders the first chunk over fewer prompt frames; later chunks use all of it."""
    short = Renderer(chatterbox, first_chunk_ref_s=1.0)
    frames: list[int] = []
    solve = short._solve

    def spy(x, *args):
        frames.append(x.shape[-1])
        return solve(x, *args)

    short._solve = spy
    tokens = speech_tokens(50, seed=9)
    chunks = speak(short, tokens, refs[0], chunk=25)
    prompt = refs[0]["prompt_token"].shape[1]
    assert frames == [TOKEN_FRAMES * (25 + 25 - LOOKAHEAD_TOKENS), TOKEN_FRAMES * (prompt + 50)]
    assert sum(len(c) for c in chunks) == 50 * SAMPLES_PER_TOKEN
    assert all(np.all(np.isfinite(c)) for c in chunks)


def test_bad_request_is_refused(renderer: Renderer, refs: list[dict]) -> None:
    with pytest.raises(ValueError, match="1-D"):
        renderer.render([RenderRequest(speech_tokens(10, 0).unsqueeze(0), 0, refs[0], True)])
