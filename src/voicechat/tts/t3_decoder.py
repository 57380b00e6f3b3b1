"""A lean, batched T3 decode loop around chatterbox-streaming's own T3 modules.

``generate_stream`` decodes one stream at a time through Hugging Face's LlamaModel with
``output_attentions=True`` (which forces eager attention), an alignment hook on layer 9 and a tuple KV
cache that is re-copied every step. Here the same weights run a loop of our own:

- the Llama layers are driven directly: SDPA attention, no attention outputs, no hooks;
- every stream owns a *slot*: two rows (the CFG conditional and unconditional rows) of one preallocated
  KV cache; active streams occupy slots ``0..n-1`` (a leaving stream's slot is refilled by moving the
  last one into it), so a decode step is one forward pass over the cache's first ``2n`` rows, each row
  at its own position (ragged lengths: per-row RoPE positions and key masks);
- a prompt starts with the voice's conditioning (speaker embedding, reference speech, emotion: ~34
  positions, the same in both CFG rows and in every segment spoken in that voice): its keys and values
  are computed once and kept for the ``PREFIXES`` most recent conditionings, so a prefill runs only the
  text (about a third less prefill compute on a CPU for a one-sentence segment);
- the CFG unconditional row's text is zeroed (only its learned positions remain), so after the prefix
  that row depends on the text's length alone: its keys and values are kept with the prefix too, grown
  in blocks of ``UNCOND_BLOCK`` positions as longer texts come, and a prefill runs the conditional row's
  text plus the unconditional row's last two positions (about half the prefill compute again);
- a prefill runs both rows' new positions as one stacked matrix through each layer's projections and
  MLP (one read of the weights), attention per row over its own earlier keys;
- sampling is ``inference_stream``'s, per stream: CFG mix ``cond + w * (cond - uncond)``, temperature,
  repetition penalty 2.0 over the stream's own history (a "seen" mask: bit-identical to HF's gather /
  scatter processor), top-p 0.8 (HF's own warper), then ``torch.multinomial`` drawing from the stream's
  own ``torch.Generator``. A stream alone, seeded like the global generator, samples exactly the tokens
  ``inference_stream`` samples; in a batch it is independent of its neighbours except for float rounding
  in the batched matrix products (bounded in tests/tts/test_t3_decoder.py).

On CUDA (optional): the transformer runs in bf16 (a copy of the layers, so the fp32 modules stay intact
for anything else using them), and decode steps are captured as CUDA graphs at fixed batch-size buckets
(attention then spans the whole cache with a key mask: fixed shapes). A failed capture falls back to
eager with one logged line. The CPU path never touches any of this.
"""

from __future__ import annotations

import copy
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from chatterbox.models.t3.modules.cond_enc import T3Cond
    from chatterbox.models.t3.t3 import T3

logger = logging.getLogger(__name__)

MAX_NEW_TOKENS = 1000  # generate_stream's hard-coded cap per segment
REPETITION_PENALTY = 2.0
TOP_P = 0.8
SPEECH_VOCAB = 6561  # ids below are speech tokens S3Gen can render
GRAPH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
PREFIXES = 16  # conditioning prefixes kept (voice x exaggeration): ~4 MB each at full size in bf16
# The unconditional row's text keys grow by this many positions at a time; computed in fixed blocks, they
# are the same numbers whatever order texts of different lengths come in. ~0.25 MB per position at full
# size in fp32 (half in bf16), up to the longest text spoken in that conditioning.
UNCOND_BLOCK = 32


class PromptTooLongError(ValueError):
    """A segment's prompt leaves no room for 1000 speech tokens in a slot."""


@dataclass(eq=False)
class _Prefix:
    """A conditioning prefix's embeddings and keys and values in every layer (the CFG rows share them),
    followed by the unconditional row's text positions computed so far (``uncond``, a multiple of
    UNCOND_BLOCK): ``keys[layer][:, :, :P]`` serve both rows, ``[:, :, P:P + uncond]`` the unconditional
    row's text."""

    embeds: torch.Tensor  # (P, dim), as prompt() built them
    keys: list[torch.Tensor]  # per layer (1, heads, P + uncond, head_dim)
    values: list[torch.Tensor]
    uncond: int = 0

    def kept(self, layer: int, end: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The kept keys and values of ``layer`` at positions ``:end`` (all of them by default)."""
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def keep(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        self.keys[layer], self.values[layer] = keys, values


@dataclass(eq=False)
class _Row:
    """New positions of one sequence for ``T3Decoder._run``: their embeddings and positions, the keys and
    values of the positions before them (per layer, or None), and where their keys and values go."""

    embeds: torch.Tensor  # (n, dim)
    start: int  # position of embeds[0]; positions start.. start+n-1
    earlier: Callable[[int], tuple[torch.Tensor, torch.Tensor]] | None  # layer -> (1, heads, start, hd) x2
    store: Callable[[int, torch.Tensor, torch.Tensor], None]  # (layer, keys, values), all start+n positions


@dataclass(eq=False)
class Decoding:
    """One stream's decode state (owner thread only)."""

    cfg_weight: float
    temperature: float
    generator: torch.Generator
    seen: torch.Tensor  # (vocab,) bool: tokens in this stream's history (start token included)
    length: int = 0  # positions filled in this stream's KV rows
    tokens: list[int] = field(default_factory=list)  # sampled so far (the stop token included)
    logits: torch.Tensor | None = None  # (2, vocab) float32: the next token's cond / uncond logits
    slot: int = -1
    done: bool = False

    @property
    def speech(self) -> list[int]:
        """The sampled tokens S3Gen can render (start / stop / out-of-range ids dropped)."""
        return [token for token in self.tokens if token < SPEECH_VOCAB]


class T3Decoder:
    """Decodes up to ``slots`` streams at once on one T3 model. Not thread-safe: owner thread only."""

    def __init__(self, t3: T3, *, slots: int, max_context: int = 1500, bf16: bool = False,
                 cuda_graphs: bool = False):
        self.t3 = t3
        self.device = t3.device
        self.slots = slots
        self.max_context = max_context
        on_cuda = self.device.type == "cuda"
        self.dtype = torch.bfloat16 if (bf16 and on_cuda) else torch.float32
        tfmr = t3.tfmr
        if self.dtype != torch.float32:
            tfmr = copy.deepcopy(tfmr).to(self.dtype)
            self._head = copy.deepcopy(t3.speech_head).to(self.dtype)
        else:
            self._head = t3.speech_head
        self._layers = list(tfmr.layers)
        self._norm = tfmr.norm
        self._rotary = t3.tfmr.rotary_emb  # the fp32 original: RoPE angles in fp32, cast to x's dtype
        attn = self._layers[0].self_attn
        self._heads, self._kv_heads, self._head_dim = attn.num_heads, attn.num_key_value_heads, attn.head_dim
        if self._heads != self._kv_heads:
            raise ValueError("T3Decoder expects as many key/value heads as query heads (as Chatterbox's T3 has)")
        self._k = self._v = torch.zeros(0)
        # Text positions the unconditional row's kept keys may reach (the learned position table's size).
        self._text_positions = t3.text_pos_emb.emb.num_embeddings if t3.hp.input_pos_emb == "learned" else max_context
        self._graphs = _StepGraphs(self) if (cuda_graphs and on_cuda) else None
        # A graph holds the cache's address: then the whole cache up front. Otherwise it grows (doubling)
        # with the streams and their lengths, so memory follows use (a full-size fp32 slot is ~0.7 GB).
        self._reserve(slots if self._graphs else 1, max_context if self._graphs else 256)
        self.active: list[Decoding] = []  # active[i].slot == i
        self._prefixes: deque[_Prefix] = deque(maxlen=PREFIXES)  # most recently used last
        self.vocab = t3.hp.speech_tokens_dict_size
        self.stop_token = t3.hp.stop_speech_token
        self.start_token = t3.hp.start_speech_token

    def _reserve(self, slots: int, positions: int) -> None:
        """Make the KV cache hold at least ``slots`` slots of ``positions`` positions (grows by doubling)."""
        allocated = self._k.dim() == 5
        have_rows, have_positions = (self._k.shape[1], self._k.shape[3]) if allocated else (0, 0)
        if 2 * slots <= have_rows and positions <= have_positions:
            return
        rows = min(2 * self.slots, max(2 * slots, 2 * have_rows))
        positions = min(self.max_context, max(positions, 2 * have_positions))
        shape = (len(self._layers), rows, self._kv_heads, positions, self._head_dim)
        for name in ("_k", "_v"):
            # Zeros, not empty: masked keys still multiply their values by 0, and 0 * NaN would be NaN.
            cache = torch.zeros(shape, dtype=self.dtype, device=self.device)
            old = getattr(self, name)
            if allocated:
                cache[:, :old.shape[1], :, :old.shape[3]] = old
            setattr(self, name, cache)

    def warm_graphs(self) -> None:
        """Capture the decode step's CUDA graphs for every batch-size bucket now (no-op without graphs)."""
        if self._graphs is not None:
            self._graphs.capture_all()

    # --- joining and leaving ------------------------------------------------------------------

    def prompt(self, t3_cond: T3Cond, text_tokens: torch.Tensor) -> torch.Tensor:
        """(2, S, dim) prefill embeddings for one segment, built exactly as inference_stream builds
        them: conditioning + text (zeroed in the CFG row) + start token, then a second start token."""
        t3 = self.t3
        text_tokens = torch.atleast_2d(text_tokens).to(dtype=torch.long, device=self.device)
        start = t3.hp.start_speech_token * torch.ones_like(text_tokens[:, :1])
        embeds, conditioning = t3.prepare_input_embeds(t3_cond=t3_cond, text_tokens=text_tokens, speech_tokens=start)
        bos = torch.tensor([[t3.hp.start_speech_token]], dtype=torch.long, device=self.device)
        bos_embed = t3.speech_emb(bos) + t3.speech_pos_emb.get_fixed_embedding(0)
        if self._prefix_of(embeds) is None:
            self._prefixes.append(self._compute_prefix(embeds[0, :conditioning]))
        return torch.cat([embeds, torch.cat([bos_embed, bos_embed])], dim=1)

    def keep_prefix(self, t3_cond: T3Cond, text_positions: int) -> None:
        """Compute ``t3_cond``'s conditioning prefix and its unconditional row's text keys for texts of up
        to ``text_positions`` positions now (the engine's warm-up does it for the default voice), so that
        a first segment of usual length already prefills only its own positions."""
        hp = self.t3.hp
        tokens = torch.tensor([[hp.start_text_token, hp.stop_text_token]] * 2, device=self.device)
        prefix = self._prefix_of(self.prompt(t3_cond, tokens))
        if prefix is not None:
            self._grow_uncond(prefix, min(text_positions, self._text_positions - UNCOND_BLOCK))

    @property
    def cached_prefixes(self) -> int:
        """Conditioning prefixes whose keys and values are kept."""
        return len(self._prefixes)

    def _prefix_of(self, embeds: torch.Tensor) -> _Prefix | None:
        """The kept prefix both rows of ``embeds`` start with (marked most recently used), or None."""
        for prefix in reversed(self._prefixes):
            size = prefix.embeds.shape[0]
            if size < embeds.shape[1] and all(torch.equal(prefix.embeds, row[:size]) for row in embeds):
                self._prefixes.remove(prefix)
                self._prefixes.append(prefix)
                return prefix
        return None

    def _compute_prefix(self, embeds: torch.Tensor) -> _Prefix:
        """Run the conditioning positions (causal) once and keep their keys and values per layer."""
        prefix = _Prefix(embeds=embeds.clone(), keys=[None] * len(self._layers), values=[None] * len(self._layers))
        self._run([_Row(embeds.to(self.dtype), 0, None, prefix.keep)])
        return prefix

    def _uncond_text(self, start: int, end: int) -> torch.Tensor:
        """(end - start, dim): the unconditional row's text embeddings at text positions start..end-1, as
        prepare_input_embeds builds them: the text zeroed, plus its learned positions."""
        t3 = self.t3
        embeds = torch.zeros(end - start, self._head.in_features, device=self.device)
        if t3.hp.input_pos_emb == "learned":
            embeds = embeds + t3.text_pos_emb.emb(torch.arange(start, end, device=self.device))
        return embeds

    def _grow_uncond(self, prefix: _Prefix, length: int) -> None:
        """Compute the unconditional row's text keys and values up to at least ``length`` text positions,
        block by block (each block attends to the prefix and the blocks before it)."""
        size = prefix.embeds.shape[0]
        while prefix.uncond < length:
            block = self._uncond_text(prefix.uncond, prefix.uncond + UNCOND_BLOCK).to(self.dtype)
            self._run([_Row(block, size + prefix.uncond, prefix.kept, prefix.keep)])
            prefix.uncond += UNCOND_BLOCK

    def join(self, embeds: torch.Tensor, *, seed: int, cfg_weight: float, temperature: float) -> Decoding:
        """Take a free slot and prefill it with ``embeds`` (from :meth:`prompt`)."""
        if len(self.active) >= self.slots:
            raise RuntimeError("no free decode slot")
        if embeds.shape[1] + MAX_NEW_TOKENS > self.max_context:
            raise PromptTooLongError(
                f"the text is too long for one segment: {embeds.shape[1]} prompt positions, at most "
                f"{self.max_context - MAX_NEW_TOKENS}")
        generator = torch.Generator(device=self.device).manual_seed(seed)
        seen = torch.zeros(self.vocab, dtype=torch.bool, device=self.device)
        seen[self.start_token] = True  # inference_stream's history starts with the start token
        stream = Decoding(cfg_weight=cfg_weight, temperature=temperature, generator=generator, seen=seen)
        stream.slot = len(self.active)
        self._reserve(stream.slot + 1, embeds.shape[1] + 1)
        stream.logits = self._prefill(stream.slot, embeds, self._prefix_of(embeds))
        stream.length = embeds.shape[1]
        self.active.append(stream)
        return stream

    def leave(self, stream: Decoding) -> None:
        """Free a stream's slot; the last active stream moves into it (its cache rows are copied)."""
        if stream not in self.active:
            return
        slot, last = stream.slot, self.active[-1]
        if last is not stream:
            rows, source = slice(2 * slot, 2 * slot + 2), slice(2 * last.slot, 2 * last.slot + 2)
            self._k[:, rows, :, :last.length] = self._k[:, source, :, :last.length]
            self._v[:, rows, :, :last.length] = self._v[:, source, :, :last.length]
            self.active[slot], last.slot = last, slot
        self.active.pop()
        stream.slot, stream.logits = -1, None

    # --- one token step for every active stream -------------------------------------------------

    def sample(self) -> list[int]:
        """Sample every active stream's next token from its pending logits (in slot order)."""
        streams = self.active
        logits = torch.stack([stream.logits for stream in streams])  # (n, 2, vocab)
        cond, uncond = logits[:, 0], logits[:, 1]
        weights = torch.tensor([[s.cfg_weight] for s in streams], dtype=logits.dtype, device=logits.device)
        mixed = cond + weights * (cond - uncond)
        temperatures = torch.tensor([[s.temperature] for s in streams], dtype=logits.dtype, device=logits.device)
        mixed = mixed / temperatures  # (inference_stream skips a temperature of 1: x / 1 == x exactly)
        seen = torch.stack([stream.seen for stream in streams])
        penalised = torch.where(mixed < 0, mixed * REPETITION_PENALTY, mixed / REPETITION_PENALTY)
        mixed = torch.where(seen, penalised, mixed)
        probs = torch.softmax(_top_p(mixed, TOP_P), dim=-1)
        picks = [torch.multinomial(probs[row:row + 1], 1, generator=stream.generator)
                 for row, stream in enumerate(streams)]
        tokens = torch.cat(picks).view(-1)
        chosen = tokens.tolist()  # the step's one host sync
        for stream, token in zip(streams, chosen):
            stream.tokens.append(token)
            stream.seen[token] = True
            stream.logits = None
            if token == self.stop_token or len(stream.tokens) >= MAX_NEW_TOKENS:
                stream.done = True
        return chosen

    def forward(self) -> None:
        """Feed every active, unfinished stream its last sampled token: one batched forward pass.
        Finished streams must have left (``leave``) before this is called."""
        streams = self.active
        if not streams:
            return
        assert not any(stream.done for stream in streams), "finished streams leave before the next step"
        t3, n = self.t3, len(streams)
        tokens = torch.tensor([stream.tokens[-1] for stream in streams], device=self.device).view(n, 1)
        speech_positions = torch.tensor([len(stream.tokens) for stream in streams], device=self.device).view(n, 1)
        embeds = t3.speech_emb(tokens) + t3.speech_pos_emb.emb(speech_positions)  # (n, 1, dim)
        embeds = embeds.repeat_interleave(2, dim=0)  # the CFG rows see the same speech token
        positions = torch.tensor([stream.length for stream in streams for _ in (0, 1)], device=self.device)
        self._reserve(n, max(stream.length for stream in streams) + 1)
        if self._graphs is not None:
            logits = self._graphs.step(embeds, positions, n)
        else:
            logits = self._step(embeds.to(self.dtype), positions, max(s.length for s in streams) + 1)
        logits = logits.float().view(n, 2, -1)
        for row, stream in enumerate(streams):
            stream.logits = logits[row]
            stream.length += 1

    # --- the transformer ------------------------------------------------------------------------

    def _prefill(self, slot: int, embeds: torch.Tensor, prefix: _Prefix | None) -> torch.Tensor:
        """Run a stream's prompt (causal), store its keys/values in its slot; (2, vocab) last logits.
        With a kept ``prefix``, only the positions after it run, attending to its keys and values; and
        when the unconditional row's text is the usual zeroed one, only that row's last two positions."""
        length = embeds.shape[1]
        size = 0 if prefix is None else prefix.embeds.shape[0]
        text = length - size - 2  # the text positions (the start token and its repeat follow)
        shared = prefix is not None and text <= self._text_positions - UNCOND_BLOCK and \
            torch.equal(embeds[1, size:size + text], self._uncond_text(0, text))
        if shared:
            self._grow_uncond(prefix, text)
        rows = []
        for row, start in ((0, size), (1, size + text if shared else size)):
            def earlier(index: int, start: int = start) -> tuple[torch.Tensor, torch.Tensor]:
                return prefix.kept(index, start)

            def store(index: int, k: torch.Tensor, v: torch.Tensor, row: int = row) -> None:
                self._k[index, 2 * slot + row, :, :length] = k[0]
                self._v[index, 2 * slot + row, :, :length] = v[0]

            rows.append(_Row(embeds[row, start:].to(self.dtype), start, earlier if start else None, store))
        x = self._run(rows)
        last = torch.stack([x[rows[0].embeds.shape[0] - 1], x[-1]])  # each row's last position
        return self._head(self._norm(last)).float()

    def _run(self, rows: list[_Row]) -> torch.Tensor:
        """Run the new positions of several sequences through every layer in one pass: their projections
        and MLPs as one stacked matrix (one read of the weights), attention per sequence, causal, over its
        earlier keys and its own. Returns the last layer's hidden states (all new positions, stacked)."""
        x = torch.cat([row.embeds for row in rows]).unsqueeze(0)  # (1, Q, dim)
        positions = torch.cat([torch.arange(row.start, row.start + row.embeds.shape[0], device=self.device)
                               for row in rows])
        cos, sin = self._rotary(x, positions.unsqueeze(0))
        bounds, masks, offset = [], [], 0
        for row in rows:
            first, end = offset, offset + row.embeds.shape[0]
            bounds.append((first, end))
            # Causal over the whole sequence: position p sees keys 0..p (the earlier ones and its own).
            masks.append(None if row.earlier is None else
                         torch.arange(row.start + end - first, device=self.device) <= positions[first:end].unsqueeze(1))
            offset = end
        for index, layer in enumerate(self._layers):
            q, k, v = self._qkv(layer, x, cos, sin)
            outs = []
            for row, (first, end), mask in zip(rows, bounds, masks):
                keys, values = k[:, :, first:end], v[:, :, first:end]
                if row.earlier is not None:
                    before_k, before_v = row.earlier(index)
                    keys, values = torch.cat([before_k, keys], dim=2), torch.cat([before_v, values], dim=2)
                row.store(index, keys, values)
                outs.append(F.scaled_dot_product_attention(q[:, :, first:end], keys, values, attn_mask=mask,
                                                           is_causal=mask is None))
            x = self._finish_layer(layer, x, torch.cat(outs, dim=2))
        return x[0]

    def _step(self, x: torch.Tensor, positions: torch.Tensor, keys: int) -> torch.Tensor:
        """One token for the cache's first ``len(positions)`` rows, each at its own position.
        x: (rows, 1, dim); attention reads the first ``keys`` cache positions, masked per row."""
        count = x.shape[0]
        cos, sin = self._rotary(x, positions.unsqueeze(1))
        mask = (torch.arange(keys, device=x.device).unsqueeze(0) <= positions.unsqueeze(1)).view(count, 1, 1, keys)
        rows = torch.arange(count, device=x.device)
        for index, layer in enumerate(self._layers):
            q, k, v = self._qkv(layer, x, cos, sin)
            cache_k, cache_v = self._k[index], self._v[index]
            cache_k[rows, :, positions] = k[:, :, 0]
            cache_v[rows, :, positions] = v[:, :, 0]
            out = F.scaled_dot_product_attention(q, cache_k[:count, :, :keys], cache_v[:count, :, :keys],
                                                 attn_mask=mask)
            x = self._finish_layer(layer, x, out)
        return self._head(self._norm(x[:, -1]))

    def _qkv(self, layer, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        attn, (batch, length, _) = layer.self_attn, x.shape
        hidden = layer.input_layernorm(x)
        q = attn.q_proj(hidden).view(batch, length, self._heads, self._head_dim).transpose(1, 2)
        k = attn.k_proj(hidden).view(batch, length, self._kv_heads, self._head_dim).transpose(1, 2)
        v = attn.v_proj(hidden).view(batch, length, self._kv_heads, self._head_dim).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        return q, k, v

    def _finish_layer(self, layer, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        batch, length = x.shape[:2]
        x = x + layer.self_attn.o_proj(attended.transpose(1, 2).reshape(batch, length, -1))
        return x + layer.mlp(layer.post_attention_layernorm(x))


def _top_p(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """Hugging Face's TopPLogitsWarper (min_tokens_to_keep=1): it works row by row, so one call serves
    the whole batch."""
    from transformers.generation.logits_process import TopPLogitsWarper

    return TopPLogitsWarper(top_p=top_p)(None, scores)


class _StepGraphs:
    """CUDA graphs of the decode step, one per batch-size bucket, captured on first use. Attention
    spans the whole cache (fixed shape) with a per-row key mask; rows past the active streams are
    padding (position 0 of free slots, results ignored)."""

    def __init__(self, decoder: T3Decoder):
        self.decoder = decoder
        self.graphs: dict[int, tuple] = {}
        self.broken = False

    def capture_all(self) -> None:
        for bucket in GRAPH_BUCKETS:
            if bucket <= self.decoder.slots:
                self._ensure(bucket)

    def _ensure(self, bucket: int) -> bool:
        """Capture ``bucket``'s graph if not yet done; False if graphs are unusable."""
        if self.broken:
            return False
        if bucket not in self.graphs:
            try:
                self.graphs[bucket] = self._capture(bucket)
            except Exception as error:  # any capture failure: eager from now on, said once
                self.broken = True
                logger.warning("CUDA graph capture of the T3 decode step failed (%s): decoding eagerly", error)
                return False
        return True

    def step(self, embeds: torch.Tensor, positions: torch.Tensor, streams: int) -> torch.Tensor:
        decoder = self.decoder
        bucket = next((b for b in GRAPH_BUCKETS if streams <= b <= decoder.slots), None)
        if bucket is None or not self._ensure(bucket):
            return decoder._step(embeds.to(decoder.dtype), positions, max(positions.tolist()) + 1)
        graph, x_in, pos_in, out = self.graphs[bucket]
        rows = 2 * streams
        x_in[:rows].copy_(embeds)
        x_in[rows:].zero_()
        pos_in[:rows].copy_(positions)
        pos_in[rows:].zero_()
        graph.replay()
        return out[:rows].clone()

    def _capture(self, bucket: int) -> tuple:
        decoder = self.decoder
        rows = 2 * bucket
        x_in = torch.zeros(rows, 1, decoder._head.in_features, dtype=decoder.dtype, device=decoder.device)
        pos_in = torch.zeros(rows, dtype=torch.long, device=decoder.device)
        # Capture writes position 0 of rows that may belong to live streams: keep their keys/values.
        saved = [(cache[:, :rows, :, 0].clone()) for cache in (decoder._k, decoder._v)]
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):  # warm-up outside the graph (allocations, kernel selection)
                    decoder._step(x_in, pos_in, decoder.max_context)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            # thread_local: the render lanes keep using the GPU (and syncing) on their threads meanwhile;
            # a capture stream of its own (torch's default one is shared by every capture in the process)
            with torch.cuda.graph(graph, stream=torch.cuda.Stream(), capture_error_mode="thread_local"):
                out = decoder._step(x_in, pos_in, decoder.max_context)
        finally:
            for cache, kept in zip((decoder._k, decoder._v), saved):
                cache[:, :rows, :, 0] = kept
        logger.info("T3 decode step captured as a CUDA graph for %d streams", bucket)
        return graph, x_in, pos_in, out
