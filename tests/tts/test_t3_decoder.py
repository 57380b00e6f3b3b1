"""The lean, batched T3 decode loop against chatterbox-streaming's own inference_stream."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from voicechat.tts.t3_decoder import MAX_NEW_TOKENS, PromptTooLongError, T3Decoder

TEXTS = ["Hello there, this is a short test.", "She sells sea shells.", "One, two, three, four, five, six."]


def text_tokens(tts, text: str) -> torch.Tensor:
    """The (2, T) CFG text tokens, exactly as generate_stream builds them."""
    from chatterbox.tts import punc_norm

    tokens = tts.tokenizer.text_to_tokens(punc_norm(text)).to(tts.device)
    tokens = torch.cat([tokens, tokens])
    tokens = F.pad(tokens, (1, 0), value=tts.t3.hp.start_text_token)
    return F.pad(tokens, (0, 1), value=tts.t3.hp.stop_text_token)


def raw_tokens(tts, text: str, seed: int, cfg_weight: float, temperature: float,
               limit: int = MAX_NEW_TOKENS) -> list[int]:
    """The tokens generate_stream's T3 part (inference_stream, which generate_stream iterates) samples,
    the global generator seeded; the first ``limit`` or more (whole 25-token chunks).

    generate_stream itself renders each chunk between T3 steps, and S3Gen's vocoder draws from the same
    global generator, so its later chunks' tokens depend on S3Gen; inference_stream is its T3 part alone."""
    torch.manual_seed(seed)
    tokens: list[int] = []
    with torch.inference_mode():
        for chunk in tts.inference_stream(t3_cond=tts.conds.t3, text_tokens=text_tokens(tts, text),
                                          cfg_weight=cfg_weight, temperature=temperature, chunk_size=25):
            tokens += chunk[0].tolist()
            if len(tokens) >= limit:
                break
    return tokens


def decode(tts, jobs: list[dict], slots: int = 4) -> tuple[dict[int, list[int]], dict[int, list[torch.Tensor]]]:
    """Run the decoder on ``jobs`` (text, seed, cfg_weight, temperature, joins_at: the step it joins at,
    stop_after: tokens after which it leaves early). Returns each job's tokens and per-step logits."""
    decoder = T3Decoder(tts.t3, slots=slots)
    tokens: dict[int, list[int]] = {}
    logits: dict[int, list[torch.Tensor]] = {index: [] for index in range(len(jobs))}
    running: dict[int, object] = {}
    step = 0
    with torch.inference_mode():
        while len(tokens) < len(jobs):
            for index, job in enumerate(jobs):
                if job.get("joins_at", 0) == step and index not in running:
                    prompt = decoder.prompt(tts.conds.t3, text_tokens(tts, job["text"]))
                    running[index] = decoder.join(prompt, seed=job["seed"], cfg_weight=job.get("cfg_weight", 0.5),
                                                  temperature=job.get("temperature", 0.8))
                    logits[index].append(running[index].logits.clone())
            if running:
                decoder.sample()
                for index, stream in list(running.items()):
                    if stream.done or len(stream.tokens) >= jobs[index].get("stop_after", MAX_NEW_TOKENS):
                        decoder.leave(stream)
                        tokens[index] = stream.tokens
                        del running[index]
                decoder.forward()
                for index, stream in running.items():
                    logits[index].append(stream.logits.clone())
            step += 1
    return tokens, logits


@pytest.mark.parametrize(("seed", "cfg_weight", "temperature"), [(1, 0.5, 0.8), (7, 0.3, 1.0), (3, 0.0, 0.5)])
def test_one_stream_samples_exactly_what_generate_stream_samples(chatterbox, seed, cfg_weight, temperature) -> None:
    expected = raw_tokens(chatterbox, TEXTS[0], seed, cfg_weight, temperature)
    tokens, _ = decode(chatterbox, [dict(text=TEXTS[0], seed=seed, cfg_weight=cfg_weight, temperature=temperature)])
    assert expected[-1] == chatterbox.t3.hp.stop_speech_token, "the checkpoint stops by itself"
    assert tokens[0] == expected


def test_teacher_forced_logits_match_hugging_faces_llama(chatterbox) -> None:
    """The lean loop's per-step logits against one plain LlamaModel pass over the same sequence."""
    tts = chatterbox
    tokens, logits = decode(tts, [dict(text=TEXTS[0], seed=1)])
    with torch.inference_mode():
        decoder = T3Decoder(tts.t3, slots=1)
        prompt = decoder.prompt(tts.conds.t3, text_tokens(tts, TEXTS[0]))
        fed = torch.tensor(tokens[0][:-1]).view(1, -1)
        positions = torch.arange(1, fed.shape[1] + 1).view(1, -1)
        speech = tts.t3.speech_emb(fed) + tts.t3.speech_pos_emb.emb(positions)
        sequence = torch.cat([prompt, speech.expand(2, -1, -1)], dim=1)
        hidden = tts.t3.tfmr(inputs_embeds=sequence, use_cache=False).last_hidden_state
        reference = tts.t3.speech_head(hidden[:, prompt.shape[1] - 1:]).transpose(0, 1)  # (steps, 2, vocab)
    ours = torch.stack(logits[0])
    assert ours.shape == reference.shape
    error = (ours - reference).abs().max().item()
    assert error < 1e-4 * reference.abs().max().item(), error


def test_batched_streams_sample_their_solo_tokens_with_ragged_joins_and_leaves(chatterbox) -> None:
    """Three streams of different prompt lengths join at different steps (ragged positions), one leaves
    early (its slot is refilled by moving the last stream): each samples exactly its solo tokens, from
    logits equal to its solo logits within float rounding of the batched matrix products."""
    jobs = [dict(text=TEXTS[0], seed=1), dict(text=TEXTS[1], seed=2, joins_at=3, cfg_weight=0.3, temperature=1.0),
            dict(text=TEXTS[2], seed=3, joins_at=5, stop_after=12), dict(text=TEXTS[1], seed=4, joins_at=20)]
    together, together_logits = decode(chatterbox, jobs)
    for index, job in enumerate(jobs):
        alone, alone_logits = decode(chatterbox, [{**job, "joins_at": 0}])
        assert together[index] == alone[0], f"stream {index} sampled other tokens in the batch"
        batched, solo = torch.stack(together_logits[index]), torch.stack(alone_logits[0])
        assert torch.equal(batched[0], solo[0]), "the prefill is the same computation"
        assert (batched - solo).abs().max().item() < 1e-5 * solo.abs().max().item()
    assert len(together[2]) == 12
    assert together[1] == raw_tokens(chatterbox, TEXTS[1], 2, 0.3, 1.0)


def test_neighbours_do_not_change_a_streams_sampling(chatterbox) -> None:
    """Per-stream generators: a stream's tokens do not depend on its neighbours' seeds."""
    first, _ = decode(chatterbox, [dict(text=TEXTS[0], seed=1), dict(text=TEXTS[0], seed=2)])
    second, _ = decode(chatterbox, [dict(text=TEXTS[0], seed=1), dict(text=TEXTS[0], seed=99)])
    assert first[0] == second[0] and first[1] != second[1]


def test_a_voices_conditioning_prefix_is_computed_once_and_kept_bounded(chatterbox) -> None:
    """A prefill after a kept conditioning prefix runs only the text: its logits equal a whole causal
    prefill's within float rounding; each conditioning is kept once, the most recent PREFIXES of them."""
    from chatterbox.models.t3.modules.cond_enc import T3Cond

    from voicechat.tts.t3_decoder import PREFIXES

    tts = chatterbox
    decoder = T3Decoder(tts.t3, slots=2)
    with torch.inference_mode():
        first = decoder.prompt(tts.conds.t3, text_tokens(tts, TEXTS[0]))
        second = decoder.prompt(tts.conds.t3, text_tokens(tts, TEXTS[1]))
        assert decoder.cached_prefixes == 1, "one voice, one prefix, whatever the text"
        stream = decoder.join(second, seed=0, cfg_weight=0.5, temperature=0.8)
        decoder._reserve(2, second.shape[1] + 1)
        whole = decoder._prefill(1, second, None)  # the same prompt, every position run, into the free slot
        assert (stream.logits - whole).abs().max().item() < 1e-5 * whole.abs().max().item()
        assert stream.logits.shape == whole.shape == (2, decoder.vocab)

        def voice(exaggeration: float) -> T3Cond:
            base = tts.conds.t3
            return T3Cond(speaker_emb=base.speaker_emb, cond_prompt_speech_tokens=base.cond_prompt_speech_tokens,
                          emotion_adv=exaggeration * torch.ones(1, 1, 1))

        for step in range(PREFIXES + 2):
            decoder.prompt(voice(0.1 + step / 100), text_tokens(tts, TEXTS[2]))
        assert decoder.cached_prefixes == PREFIXES
        assert decoder._prefix_of(first) is None, "the oldest conditioning was let go"


def test_the_unconditional_rows_text_is_kept_in_blocks_the_same_in_any_order(chatterbox) -> None:
    """The CFG unconditional row's text is zeroed, so its keys after the prefix depend on the text's
    length alone: they are kept in fixed blocks, a prefill runs only that row's last two positions, and
    the numbers do not depend on which texts came before (a longer one first, or none)."""
    from voicechat.tts.t3_decoder import UNCOND_BLOCK

    tts = chatterbox
    long_text, short_text = " ".join(TEXTS), TEXTS[1]
    logits = []
    for texts in ([long_text, short_text], [short_text]):
        decoder = T3Decoder(tts.t3, slots=len(texts) + 1)  # one more slot for a whole prefill
        with torch.inference_mode():
            streams = [decoder.join(decoder.prompt(tts.conds.t3, text_tokens(tts, text)), seed=0, cfg_weight=0.5,
                                    temperature=0.8) for text in texts]
        (prefix,) = decoder._prefixes
        longest = max(stream.length for stream in streams) - prefix.embeds.shape[0] - 2
        assert prefix.uncond % UNCOND_BLOCK == 0 and longest <= prefix.uncond < longest + UNCOND_BLOCK
        logits.append(streams[-1].logits)
        with torch.inference_mode():
            embeds = decoder.prompt(tts.conds.t3, text_tokens(tts, short_text))
            decoder._reserve(len(texts) + 1, embeds.shape[1] + 1)
            whole = decoder._prefill(len(texts), embeds, None)
        assert (streams[-1].logits - whole).abs().max().item() < 1e-5 * whole.abs().max().item()
    assert torch.equal(logits[0], logits[1]), "blocks computed the same way whatever came first"


def test_an_unconditional_row_that_is_not_the_zeroed_text_runs_whole(chatterbox) -> None:
    """Only the usual zeroed text takes the kept unconditional keys: any other second row runs all its
    positions after the prefix, and its logits equal a whole prefill's."""
    tts = chatterbox
    decoder = T3Decoder(tts.t3, slots=2)
    with torch.inference_mode():
        embeds = decoder.prompt(tts.conds.t3, text_tokens(tts, TEXTS[0]))
        size = decoder._prefixes[-1].embeds.shape[0]
        embeds[1, size + 2] += 0.5  # no longer the zeroed text
        stream = decoder.join(embeds, seed=0, cfg_weight=0.5, temperature=0.8)
        decoder._reserve(2, embeds.shape[1] + 1)
        whole = decoder._prefill(1, embeds, None)
    assert decoder._prefixes[-1].uncond == 0, "no unconditional keys were kept for it"
    assert (stream.logits - whole).abs().max().item() < 1e-5 * whole.abs().max().item()


def test_keep_prefix_prepares_a_voice_for_texts_up_to_a_length(chatterbox) -> None:
    from voicechat.tts.t3_decoder import UNCOND_BLOCK

    tts = chatterbox
    decoder = T3Decoder(tts.t3, slots=1)
    with torch.inference_mode():
        decoder.keep_prefix(tts.conds.t3, 3 * UNCOND_BLOCK)
        (prefix,) = decoder._prefixes
        assert prefix.uncond == 3 * UNCOND_BLOCK
        decoder.join(decoder.prompt(tts.conds.t3, text_tokens(tts, TEXTS[0])), seed=0, cfg_weight=0.5,
                     temperature=0.8)
    assert decoder.cached_prefixes == 1 and prefix.uncond == 3 * UNCOND_BLOCK, "nothing more to compute"


def test_a_prompt_too_long_for_a_slot_is_refused(chatterbox) -> None:
    decoder = T3Decoder(chatterbox.t3, slots=1, max_context=MAX_NEW_TOKENS + 20)
    with torch.inference_mode(), pytest.raises(PromptTooLongError, match="too long"):
        decoder.join(decoder.prompt(chatterbox.conds.t3, text_tokens(chatterbox, TEXTS[0])), seed=0,
                     cfg_weight=0.5, temperature=0.8)
    assert decoder.active == []


@pytest.mark.slow
def test_full_size_checkpoint_samples_exactly_what_generate_stream_samples(cache_dir: Path) -> None:
    """The full-size random checkpoint (532M-parameter T3, ~7 GB RSS to load: on a shared machine run it
    under the heavy-job lock, ``flock /tmp/heavy.lock pytest -m slow -k full_size``). 50 tokens, 2 seeds."""
    from voicechat.tts.checkpoint import ensure_checkpoint, load_chatterbox

    checkpoint = ensure_checkpoint(cache_dir / "checkpoints" / "full-seed0", variant="full", seed=0)
    tts = load_chatterbox(checkpoint, "cpu")
    for seed in (5, 6):
        expected = raw_tokens(tts, TEXTS[0], seed, 0.5, 0.8, limit=50)
        tokens, _ = decode(tts, [dict(text=TEXTS[0], seed=seed, stop_after=50)])
        assert tokens[0] == expected[:50]


def test_fixed_shape_attention_over_the_whole_cache_matches(chatterbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA-graph step attends over the whole preallocated cache with per-row key masks (fixed
    shapes); on CPU the same computation samples the same tokens as the sliced eager step."""
    jobs = [dict(text=TEXTS[0], seed=1), dict(text=TEXTS[1], seed=2, joins_at=4)]
    expected, _ = decode(chatterbox, jobs)
    step, reserve = T3Decoder._step, T3Decoder._reserve
    monkeypatch.setattr(T3Decoder, "_reserve", lambda self, slots, positions: reserve(self, self.slots, self.max_context))
    monkeypatch.setattr(T3Decoder, "_step", lambda self, x, positions, keys: step(self, x, positions, self.max_context))
    tokens, _ = decode(chatterbox, jobs)
    assert tokens == expected


class _ReplayOnCpu:
    """Stands in for torch.cuda.CUDAGraph on CPU: replay() recomputes the captured step on the static
    buffers, so the bucket / padding / copy logic around the graphs is tested without a GPU."""

    def __init__(self, decoder: T3Decoder, x_in: torch.Tensor, pos_in: torch.Tensor, out: torch.Tensor):
        self.decoder, self.x_in, self.pos_in, self.out = decoder, x_in, pos_in, out
        self.replays = 0

    def replay(self) -> None:
        self.replays += 1
        self.out.copy_(self.decoder._step(self.x_in, self.pos_in, self.decoder.max_context))


def _with_graphs(monkeypatch: pytest.MonkeyPatch, capture) -> list:
    from voicechat.tts import t3_decoder

    made: list = []
    init = T3Decoder.__init__

    def graphed_init(self, *args, **kwargs) -> None:
        init(self, *args, **kwargs)
        self._graphs = t3_decoder._StepGraphs(self)
        self._reserve(self.slots, self.max_context)
        made.append(self._graphs)

    monkeypatch.setattr(T3Decoder, "__init__", graphed_init)
    monkeypatch.setattr(t3_decoder._StepGraphs, "_capture", capture)
    return made


def test_graph_buckets_pad_the_batch_and_sample_the_same_tokens(chatterbox, monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = [dict(text=TEXTS[0], seed=1), dict(text=TEXTS[1], seed=2, joins_at=2), dict(text=TEXTS[2], seed=3, joins_at=4)]
    expected, _ = decode(chatterbox, jobs)

    def capture(self, bucket: int):
        rows, decoder = 2 * bucket, self.decoder
        graph = _ReplayOnCpu(decoder, torch.zeros(rows, 1, decoder._head.in_features),
                             torch.zeros(rows, dtype=torch.long), torch.zeros(rows, decoder.vocab))
        return graph, graph.x_in, graph.pos_in, graph.out

    made = _with_graphs(monkeypatch, capture)
    tokens, _ = decode(chatterbox, jobs)
    assert tokens == expected
    assert sorted(made[0].graphs) == [1, 2, 4], "three streams used the 1, 2 and 4 buckets (4 padded)"
    assert all(graph.replays > 0 for graph, *_ in made[0].graphs.values())


def test_a_failed_graph_capture_falls_back_to_eager_with_one_log_line(
        chatterbox, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    jobs = [dict(text=TEXTS[0], seed=1), dict(text=TEXTS[1], seed=2, joins_at=2)]
    expected, _ = decode(chatterbox, jobs)

    def broken(self, bucket: int):
        raise RuntimeError("operation not permitted when stream is capturing")

    made = _with_graphs(monkeypatch, broken)
    tokens, _ = decode(chatterbox, jobs)
    assert tokens == expected and made[0].broken
    failures = [r for r in caplog.records if "CUDA graph capture" in r.getMessage()]
    assert len(failures) == 1 and "decoding eagerly" in failures[0].getMessage()
