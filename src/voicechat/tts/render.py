"""Speech tokens -> audio chunks: batched S3Gen (flow matching + vocoder), seamless chunk boundaries,
the watermark.

``Renderer.render`` takes the ready chunks of any number of streams and renders them together: one
padded, masked batch through S3Gen's encoder and its flow-matching estimator (10 Euler steps, the CFG
rows in the batch), then the vocoder (rows of equal length in one call), then Perth's watermark per
chunk. It drives chatterbox-streaming's own modules (``flow.encoder``'s parts, ``flow.encoder_proj``,
``flow.decoder.estimator``'s parts, the HiFT vocoder's f0 predictor and ``decode``) because the shipped
entry points assert batch size 1; it also avoids their host syncs (``make_pad_mask`` and
``add_optional_chunk_mask`` call ``.item()``): the masks are built from lengths known on the host.

Padding is exact by construction: the estimator's convolutions are causal and its attention masks
padded keys; the encoder's only look-ahead (a 3-token convolution) sees zeros past a row's end, as it
does alone, because padded positions are zeroed before it. A stream's batched audio equals its solo
audio within float rounding (tests/tts/test_render.py).

Chunk boundaries (no clicks, no notches). ``generate_stream`` renders every chunk as if it were the
last (the encoder's look-ahead sees zeros at the chunk's end), vocodes it on its own (the vocoder's
edges and its random sine phases start afresh) and fades each chunk in over 20 ms: an audible seam
every second. Here a stream's ``state`` carries what the next chunk needs, so the joined chunks are one
continuous signal:
- mel frames are produced once, in order: a chunk that is not the segment's last holds back its last
  ``LOOKAHEAD_TOKENS`` (3) tokens, whose frames depend on tokens not decoded yet; the next chunk renders
  them with their look-ahead (up to ``context_tokens`` earlier tokens are re-encoded as context, as
  generate_stream does);
- the vocoder's last ``overlap_frames`` mel frames (and its audio for them) are held back too: the next
  chunk vocodes them again, now with right context, reusing the same excitation signal, and the two
  renderings are crossfaded with complementary raised-cosine weights (their sum is exactly 1);
- the excitation's sine phases run on across chunks (carried in ``state``), and its noise comes from the
  stream's own generator (seeded by ``RenderRequest.seed``), so a stream is reproducible alone and in
  any batch;
- only a segment's first chunk gets S3Gen's 40 ms ``trim_fade`` (it hides spill-over from the
  reference prompt) and only its last chunk a 10 ms fade-out (a segment's end meets the next one's
  silent start without a step).
So the engine must NOT fade chunks itself (engine.py's ``FADE_OUT`` goes once this renderer is used),
and on CUDA it should pass ``cuda_graphs=settings.tts_cuda_graphs`` (see below).
A non-last chunk therefore yields ``(new tokens - 3) * 40 ms - overlap_frames * 20 ms`` less than its
tokens' duration the first time; the held audio comes with the next chunk (or the last).

On CUDA, ``cuda_graphs=True`` captures the whole 10-step flow solve as one CUDA graph per (batch size,
frame bucket) shape: the estimator is ~1,000 small kernels per step, so launch overhead, not arithmetic,
bounds it there. Batches are padded to a multiple of ``GRAPH_FRAME_BUCKET`` frames (exact: padding is
masked) and to 1, 2, 4, 8... rows (copies of the first row, dropped after the solve). A failed capture falls back to eager with one logged line.

First chunk: ``first_chunk_ref_s`` renders a segment's first chunk with only the last seconds of the
voice's reference prompt (S3Gen's cost grows with prompt frames); later chunks use the whole prompt.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from voicechat.audio import SPEECH_SAMPLE_RATE as SAMPLE_RATE
from voicechat.tts.stages import StageClock

if TYPE_CHECKING:
    from chatterbox.tts import ChatterboxTTS

logger = logging.getLogger(__name__)

TOKEN_FRAMES = 2  # mel frames per speech token (25 tokens/s, 50 frames/s)
FRAME_SAMPLES = 480  # vocoder samples per mel frame
LOOKAHEAD_TOKENS = 3  # the encoder's pre-lookahead convolution reads 3 tokens ahead
CONTEXT_TOKENS = 50  # earlier tokens re-encoded as context, as generate_stream does
OVERLAP_FRAMES = 4  # mel frames vocoded twice and crossfaded at each boundary (80 ms)
FLOW_STEPS = 10  # S3Gen's Euler steps (hard-coded there too)
GRAPH_FRAME_BUCKET = 32  # with CUDA graphs, flow batches are padded to a multiple of this many frames
END_FADE_S = 0.01


@dataclass
class RenderRequest:
    """One chunk of one stream's current segment to render."""

    tokens: torch.Tensor  # 1-D LongTensor: all valid speech tokens (< 6561) of this segment so far
    start: int  # tokens[start:] are new in this chunk; tokens[:start] were rendered before
    ref: dict  # the voice's S3Gen reference dict (conds.gen)
    last: bool  # the segment ends with this chunk
    state: Any = None  # what render() returned for this segment's previous chunk; None for the first
    seed: int = 0  # seeds the vocoder's excitation noise and phases for this segment (first chunk only)


@dataclass(eq=False)
class RenderState:
    """What one segment's next chunk needs from the previous ones."""

    done: int  # tokens whose mel frames exist (vocoded, some held back in the tail)
    generator: torch.Generator
    phase: torch.Tensor  # (harmonics,) sine phases, in cycles, at the end of the vocoded audio
    mel_tail: torch.Tensor | None = None  # (80, overlap) mel frames vocoded but not yet emitted
    source_tail: torch.Tensor | None = None  # their excitation samples
    speech_tail: np.ndarray | None = None  # their audio, to crossfade with the next rendering
    emitted: bool = False  # audio of this segment handed out already (the first gets trim_fade)


@dataclass(eq=False)
class _Job:
    request: RenderRequest
    state: RenderState
    context: int = 0  # index of the first token encoded (context start)
    end: int = 0  # tokens whose mel is produced by this chunk: [state.done, end)
    prompt_token: torch.Tensor | None = None
    prompt_feat: torch.Tensor | None = None
    mel: torch.Tensor | None = None  # (80, frames) to vocode: tail + new
    audio: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))


class Renderer:
    """Renders chunks of speech tokens of many streams to watermarked 24 kHz float32 audio, in batches.

    Not thread-safe: one thread per Renderer (the engine gives each render lane its own). Renderers on
    different threads may share one model: they only read its weights."""

    def __init__(self, tts: ChatterboxTTS, *, context_tokens: int = CONTEXT_TOKENS,
                 overlap_frames: int = OVERLAP_FRAMES, first_chunk_ref_s: float | None = None,
                 flow_steps: int = FLOW_STEPS, cuda_graphs: bool = False, frame_bucket: int | None = None,
                 clock: StageClock | None = None):
        if overlap_frames < 1 or context_tokens < 0 or flow_steps < 1:
            raise ValueError("overlap_frames and flow_steps must be >= 1, context_tokens >= 0")
        self._tts = tts
        self._s3gen = tts.s3gen
        self._device = torch.device(tts.device)
        self._context = context_tokens
        self._overlap = overlap_frames
        self._first_ref_tokens = None if first_chunk_ref_s is None else max(1, round(first_chunk_ref_s * 25))
        self._steps = flow_steps
        self._clock = clock or StageClock()  # counts flow / vocode / watermark (the engine's clock)
        self._graphs = _SolveGraphs(self) if (cuda_graphs and self._device.type == "cuda") else None
        # Padding batches to a frame bucket keeps graph shapes few; it is exact, so it may also be tested
        # without graphs (frame_bucket).
        self._bucket = frame_bucket or (GRAPH_FRAME_BUCKET if self._graphs is not None else 1)
        decoder = self._s3gen.flow.decoder
        self._noise = decoder.rand_noise.to(self._device)  # S3Gen's fixed flow noise
        self._cfg_rate = float(decoder.inference_cfg_rate)
        sine = self._s3gen.mel2wav.m_source.l_sin_gen
        self._harmonics = sine.harmonic_num + 1
        self._trim_fade = self._s3gen.trim_fade.detach().cpu().numpy()
        self._fade_in = _rising(overlap_frames * FRAME_SAMPLES)  # 1 - fade_in fades the old rendering out
        end = int(END_FADE_S * SAMPLE_RATE)
        self._end_fade = ((1 + np.cos(np.linspace(0, np.pi, end))) / 2).astype(np.float32)

    # --- public ---------------------------------------------------------------------------------

    def render(self, requests: list[RenderRequest]) -> list[tuple[np.ndarray, Any]]:
        """float32 24 kHz mono audio (1-D numpy, watermarked) and the state to carry, per request, in
        order. All requests' flow matching runs as one batch; their vocoding in batches of equal length."""
        with torch.inference_mode():
            with self._clock.stage("flow"):
                jobs = [self._plan(request) for request in requests]
                flowing = [job for job in jobs if job.end > job.state.done]
                if flowing:
                    self._flow(flowing)
            vocoding = [job for job in jobs if job.mel is not None]
            if vocoding:
                with self._clock.stage("vocode"):
                    self._vocode(vocoding)
            with self._clock.stage("watermark"):
                for job in jobs:
                    self._finish(job)
        return [(job.audio, job.state) for job in jobs]

    def warm_graphs(self, ref: dict, sizes: list[int], batches: list[int]) -> None:
        """Capture the flow solve's CUDA graphs for the shapes of a segment's chunks of ``sizes`` tokens
        (in order) with voice ``ref``, rendered ``batch`` at a time for each of ``batches`` (a no-op without
        graphs). Otherwise a shape is captured when it first appears, inside somebody's chunk."""
        if self._graphs is None:
            return
        tokens = torch.randint(0, 6561, (sum(sizes),), generator=torch.Generator().manual_seed(0)).to(self._device)
        for batch in batches:
            states: list[Any] = [None] * batch
            done = 0
            for size in sizes:
                requests = [RenderRequest(tokens[:done + size], done, ref, False, state, row)
                            for row, state in enumerate(states)]
                states = [state for _, state in self.render(requests)]
                done += size

    # --- planning -------------------------------------------------------------------------------

    def _plan(self, request: RenderRequest) -> _Job:
        tokens = request.tokens
        if tokens.dim() != 1:
            raise ValueError("RenderRequest.tokens must be a 1-D tensor of speech tokens")
        state = request.state
        if state is None:
            generator = torch.Generator(device=self._device).manual_seed(int(request.seed))
            # Random initial phases for the overtones (the fundamental starts at 0), as HiFT draws them.
            phase = torch.rand(self._harmonics, generator=generator, device=self._device)
            phase[0] = 0
            state = RenderState(done=max(0, min(request.start, len(tokens))), generator=generator, phase=phase)
        job = _Job(request=request, state=state)
        job.end = len(tokens) if request.last else max(state.done, len(tokens) - LOOKAHEAD_TOKENS)
        job.context = max(0, state.done - self._context)
        prompt_token = request.ref["prompt_token"]
        prompt_feat = request.ref["prompt_feat"][:, :TOKEN_FRAMES * prompt_token.shape[1]]
        if not state.emitted and state.mel_tail is None and self._first_ref_tokens is not None:
            keep = min(prompt_token.shape[1], self._first_ref_tokens)
            prompt_token = prompt_token[:, prompt_token.shape[1] - keep:]
            prompt_feat = prompt_feat[:, prompt_feat.shape[1] - TOKEN_FRAMES * keep:]
        job.prompt_token = prompt_token.to(self._device)
        job.prompt_feat = prompt_feat.to(self._device)
        return job

    # --- flow matching (batched) ----------------------------------------------------------------

    def _flow(self, jobs: list[_Job]) -> None:
        flow = self._s3gen.flow
        device, batch = self._device, len(jobs)
        token_lens = [job.prompt_token.shape[1] + len(job.request.tokens) - job.context for job in jobs]
        longest = max(token_lens)
        tokens = torch.zeros(batch, longest, dtype=torch.long, device=device)
        for row, job in enumerate(jobs):
            window = job.request.tokens[job.context:].to(device)
            tokens[row, :token_lens[row]] = torch.cat([job.prompt_token[0], window])
        token_mask = _lengths_mask(token_lens, longest, device)  # (B, T) bool
        embedded = flow.input_embedding(tokens.clamp(min=0)) * token_mask.unsqueeze(-1)
        hidden = self._encode(embedded, token_mask, token_lens)  # (B, 2T, 512)

        # The decoder sees the prompt's frames and the frames up to ``end`` (look-ahead tokens dropped).
        prompt_frames = [job.prompt_feat.shape[1] for job in jobs]
        frame_lens = [TOKEN_FRAMES * (job.prompt_token.shape[1] + job.end - job.context) for job in jobs]
        frames = -(-max(frame_lens) // self._bucket) * self._bucket
        mask = _lengths_mask(frame_lens, frames, device).unsqueeze(1).to(hidden.dtype)  # (B, 1, F)
        mu = flow.encoder_proj(hidden[:, :frames]).transpose(1, 2)
        mu = F.pad(mu, (0, frames - mu.shape[2])) * mask  # (B, 80, F)
        cond = torch.zeros(batch, mu.shape[1], frames, device=device, dtype=mu.dtype)
        noise = torch.zeros_like(cond)
        embeddings = torch.cat([job.request.ref["embedding"].to(device) for job in jobs])
        spks = flow.spk_embed_affine_layer(F.normalize(embeddings, dim=1))
        for row, job in enumerate(jobs):
            cond[row, :, :prompt_frames[row]] = job.prompt_feat[0].transpose(0, 1)
            noise[row, :, :frame_lens[row]] = self._noise[0, :, :frame_lens[row]]
        solve = self._graphs.solve if self._graphs is not None else self._solve
        mel = solve(noise, mask, mu, spks, cond)
        for row, job in enumerate(jobs):
            start = prompt_frames[row] + TOKEN_FRAMES * (job.state.done - job.context)
            new = mel[row, :, start:frame_lens[row]]
            tail = job.state.mel_tail
            job.mel = new if tail is None else torch.cat([tail, new], dim=1)

    def _encode(self, xs: torch.Tensor, token_mask: torch.Tensor, token_lens: list[int]) -> torch.Tensor:
        """flow.encoder's forward for a padded batch, without host syncs, with the padded positions
        zeroed before the look-ahead convolution so that every row sees what it sees alone."""
        encoder = self._s3gen.flow.encoder
        masks = token_mask.unsqueeze(1)  # (B, 1, T)
        xs, pos_emb, masks = encoder.embed(xs, masks)
        xs = xs * masks.transpose(1, 2).to(xs.dtype)
        xs = encoder.pre_lookahead_layer(xs)
        xs = encoder.forward_layers(xs, masks, pos_emb, masks)
        lengths = torch.tensor(token_lens, device=xs.device)
        xs, lengths = encoder.up_layer(xs.transpose(1, 2).contiguous(), lengths)
        xs = xs.transpose(1, 2).contiguous()
        up_lens = [encoder.up_layer.stride * n for n in token_lens]
        masks = _lengths_mask(up_lens, xs.shape[1], xs.device).unsqueeze(1)
        xs, pos_emb, masks = encoder.up_embed(xs, masks)
        xs = encoder.forward_up_layers(xs, masks, pos_emb, masks)
        if encoder.normalize_before:
            xs = encoder.after_norm(xs)
        return xs

    def _solve(self, x, mask, mu, spks, cond) -> torch.Tensor:
        """S3Gen's fixed Euler solver (cosine schedule, CFG) for a batch: the conditional and the
        unconditional rows of every stream go through the estimator in one call per step."""
        batch = x.shape[0]
        t_span = torch.linspace(0, 1, self._steps + 1, device=x.device, dtype=x.dtype)
        t_span = 1 - torch.cos(t_span * 0.5 * torch.pi)
        mask_in = torch.cat([mask, mask])
        mu_in = torch.cat([mu, torch.zeros_like(mu)])
        spks_in = torch.cat([spks, torch.zeros_like(spks)])
        cond_in = torch.cat([cond, torch.zeros_like(cond)])
        bias = (1.0 - mask_in) * -1.0e10  # attention bias over keys, as mask_to_bias builds it
        t, dt = t_span[0:1], t_span[1] - t_span[0]
        rate = self._cfg_rate
        for step in range(1, len(t_span)):
            velocity = self._estimate(torch.cat([x, x]), mask_in, mu_in, t.expand(2 * batch), spks_in, cond_in, bias)
            conditional, unconditional = velocity[:batch], velocity[batch:]
            x = x + dt * ((1.0 + rate) * conditional - rate * unconditional)
            t = t + dt
            if step < len(t_span) - 1:
                dt = t_span[step + 1] - t
        return x.float()

    def _estimate(self, x, mask, mu, t, spks, cond, bias) -> torch.Tensor:
        """ConditionalDecoder.forward with the attention bias computed once (no .item() per block)."""
        est = self._s3gen.flow.decoder.estimator
        t = est.time_mlp(est.time_embeddings(t).to(t.dtype))
        x = torch.cat([x, mu, spks.unsqueeze(-1).expand(-1, -1, x.shape[-1]), cond], dim=1)
        hiddens, masks, biases = [], [mask], [bias]
        for resnet, transformer_blocks, downsample in est.down_blocks:
            mask_down = masks[-1]
            x = resnet(x, mask_down, t)
            x = _attend(x, transformer_blocks, biases[-1], t)
            hiddens.append(x)
            x = downsample(x * mask_down)
            masks.append(mask_down[:, :, ::2])
            biases.append(biases[-1][:, :, ::2])
        masks, biases = masks[:-1], biases[:-1]
        mask_mid, bias_mid = masks[-1], biases[-1]
        for resnet, transformer_blocks in est.mid_blocks:
            x = resnet(x, mask_mid, t)
            x = _attend(x, transformer_blocks, bias_mid, t)
        for resnet, transformer_blocks, upsample in est.up_blocks:
            mask_up, bias_up = masks.pop(), biases.pop()
            skip = hiddens.pop()
            x = torch.cat([x[:, :, :skip.shape[-1]], skip], dim=1)
            x = resnet(x, mask_up, t)
            x = _attend(x, transformer_blocks, bias_up, t)
            x = upsample(x * mask_up)
        x = est.final_block(x, mask_up)
        return est.final_proj(x * mask_up) * mask

    # --- vocoder --------------------------------------------------------------------------------

    def _vocode(self, jobs: list[_Job]) -> None:
        hift = self._s3gen.mel2wav
        groups: dict[int, list[_Job]] = defaultdict(list)
        for job in jobs:
            groups[job.mel.shape[1]].append(job)
        for frames, group in groups.items():
            mels = torch.stack([job.mel for job in group])  # (B, 80, frames)
            f0 = hift.f0_predictor(mels)  # (B, frames)
            sources = torch.stack([self._source(job, f0[row], frames) for row, job in enumerate(group)])
            speech = hift.decode(x=mels, s=sources.unsqueeze(1))  # (B, frames * 480)
            speech = speech.float().cpu().numpy()
            for row, job in enumerate(group):
                self._join(job, speech[row], sources[row])

    def _source(self, job: _Job, f0: torch.Tensor, frames: int) -> torch.Tensor:
        """HiFT's harmonic-plus-noise excitation for a stream's window (SineGen + the merge layer),
        continuing the stream's sine phases and drawing noise from its own generator. The frames held
        over from the previous chunk keep the excitation they had."""
        state, m_source = job.state, self._s3gen.mel2wav.m_source
        sine = m_source.l_sin_gen
        held = 0 if state.source_tail is None else state.source_tail.shape[0]
        f0 = f0.repeat_interleave(FRAME_SAMPLES)[held:]  # nearest upsampling to samples, as f0_upsamp does
        overtones = torch.arange(1, self._harmonics + 1, device=f0.device, dtype=f0.dtype)
        cycles = torch.cumsum(f0.unsqueeze(0) * overtones.unsqueeze(1) / sine.sampling_rate, dim=1)
        cycles = cycles + state.phase.unsqueeze(1)
        state.phase = cycles[:, -1] % 1
        waves = sine.sine_amp * torch.sin(2 * math.pi * (cycles % 1))
        voiced = (f0 > sine.voiced_threshold).to(waves.dtype)
        noise_amp = voiced * sine.noise_std + (1 - voiced) * sine.sine_amp / 3
        noise = torch.randn(waves.shape, generator=state.generator, device=waves.device, dtype=waves.dtype)
        waves = waves * voiced + noise_amp * noise
        merged = m_source.l_tanh(m_source.l_linear(waves.transpose(0, 1))).squeeze(-1)
        return merged if held == 0 else torch.cat([state.source_tail, merged])

    def _join(self, job: _Job, speech: np.ndarray, source: torch.Tensor) -> None:
        """Crossfade the new rendering into the held tail; hold back this one's tail unless last."""
        state = job.state
        speech = speech.copy()
        if state.speech_tail is not None:
            held = len(state.speech_tail)
            fade_in = self._fade_in if held == len(self._fade_in) else _rising(held)
            speech[:held] = speech[:held] * fade_in + state.speech_tail * (1 - fade_in)
        elif not state.emitted:
            fade = self._trim_fade[:len(speech)]
            speech[:len(fade)] *= fade  # S3Gen's start of an utterance: hides reference spill-over
        keep = self._overlap * FRAME_SAMPLES
        if job.request.last or len(speech) <= keep:
            if job.request.last:
                state.mel_tail = state.source_tail = state.speech_tail = None
            else:  # too short to hold back a full overlap: hold all of it
                state.mel_tail, state.source_tail, state.speech_tail = job.mel, source, speech
                speech = speech[:0]
        else:
            state.mel_tail = job.mel[:, -self._overlap:]
            state.source_tail = source[-keep:]
            state.speech_tail = speech[-keep:]
            speech = speech[:-keep]
        state.done = job.end
        job.audio = speech

    # --- output ---------------------------------------------------------------------------------

    def _finish(self, job: _Job) -> None:
        state, audio = job.state, job.audio
        if job.request.last and job.mel is None and state.speech_tail is not None:
            audio, state.speech_tail = state.speech_tail, None  # nothing new: flush the held tail
            state.mel_tail = state.source_tail = None
        if job.request.last and len(audio):
            fade = self._end_fade[-len(audio):]
            audio = audio.copy()
            audio[-len(fade):] *= fade
        if len(audio):
            state.emitted = True
            audio = self._tts.watermarker.apply_watermark(audio, sample_rate=SAMPLE_RATE)
        job.audio = np.ascontiguousarray(audio, dtype=np.float32)


class _SolveGraphs:
    """The flow solve captured as one CUDA graph per input shape (inputs copied into static buffers)."""

    def __init__(self, renderer: Renderer):
        self._renderer = renderer
        self._graphs: dict[tuple, tuple] = {}
        self._failed = False

    def solve(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self._failed:
            return self._renderer._solve(*inputs)
        batch = inputs[0].shape[0]
        rows = 1 << (batch - 1).bit_length()  # batches padded to 1, 2, 4, 8...: few shapes to capture
        if rows > batch:  # padding rows repeat the first (rows are independent: their results are dropped)
            inputs = tuple(torch.cat([tensor, tensor[:1].expand(rows - batch, *tensor.shape[1:])]) for tensor in inputs)
        return self._solve(inputs)[:batch]

    def _solve(self, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        key = tuple(tuple(tensor.shape) for tensor in inputs)
        entry = self._graphs.get(key)
        if entry is None:
            try:
                entry = self._graphs[key] = self._capture(inputs)
            except Exception:  # a capture that fails costs speed, never the speech
                logger.exception("capturing the S3Gen flow as a CUDA graph failed; running it eagerly")
                self._failed = True
                return self._renderer._solve(*inputs)
        graph, static, output = entry
        for buffer, tensor in zip(static, inputs):
            buffer.copy_(tensor)
        graph.replay()
        return output.clone()

    def _capture(self, inputs: tuple[torch.Tensor, ...]) -> tuple:
        static = [tensor.clone() for tensor in inputs]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self._renderer._solve(*static)  # warm-up outside the graph (lazy initialisation)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: the decode loop keeps using the GPU (and syncing) on its own thread meanwhile.
        # A capture stream of its own: torch's default one is shared by every capture in the process.
        with torch.cuda.graph(graph, stream=torch.cuda.Stream(), capture_error_mode="thread_local"):
            output = self._renderer._solve(*static)
        return graph, static, output


def _attend(x: torch.Tensor, blocks, bias: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    x = x.transpose(1, 2).contiguous()
    for block in blocks:
        x = block(hidden_states=x, attention_mask=bias, timestep=t)
    return x.transpose(1, 2).contiguous()


def _rising(n: int) -> np.ndarray:
    """A raised-cosine fade-in of n samples; with its complement it crossfades at constant gain."""
    return (np.sin(0.5 * np.pi * (np.arange(n) + 0.5) / n) ** 2).astype(np.float32)


def _lengths_mask(lengths: list[int], size: int, device: torch.device) -> torch.Tensor:
    """(B, size) bool, True inside each row's length: built from host-side lengths, no device sync."""
    return torch.arange(size, device=device).unsqueeze(0) < torch.tensor(lengths, device=device).unsqueeze(1)
