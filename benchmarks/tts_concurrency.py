"""Many voices at once: raw Chatterbox ``generate_stream`` (streams one after another, as the per-stream
engine serves them) against our engine (N streams concurrently), on one checkpoint, in one run.

For N = 1, 2, 4, 8 concurrent streams (all asked for at the same moment) it reports:
- time to first audio (TTFA) p50 / p95 over the N streams;
- aggregate seconds of audio per second of wall time (the whole run's compute);
- underruns: chunks that arrive after the moment their listener would have run out of audio (the
  listener starts playing at the first chunk);
- peak RSS during that row (and peak GPU memory on CUDA).
Each stream is measured until it has delivered ``--audio-s`` seconds of audio (then it is cancelled) or
its text is spoken. The raw side runs the streams one after another once; its N-stream rows are the
first N of that run (that is exactly what N streams one after another are). Then the ratios new/old,
and the issue's CPU-floor rows: 1 stream TTFA at equal chunk size and with the first-chunk policy, 8
streams T3 tokens/s batched vs one by one (the lean decoder, when present), 8 streams audio throughput.

    python benchmarks/tts_concurrency.py                          # full-size random checkpoint, CPU/GPU auto
    python benchmarks/tts_concurrency.py --variant tiny --streams 1,2
    python benchmarks/tts_concurrency.py --device cuda            # absolute GPU times (gpu_check.sh)

Random-weight checkpoints produce noise, not speech; the amount of computation is the real model's.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
from model_options import add_model_options, checkpoint_of

TEXTS = [
    "The weather is lovely this afternoon, so I would suggest a walk in the park.",
    "Let me explain how the system works before we start with the first lesson.",
    "Your order has been shipped and should arrive at your door within three days.",
    "I am not sure I understood the question, could you say it again please?",
    "Here is a short summary of the meeting that took place this morning.",
    "The train to the city leaves every twenty minutes from the second platform.",
    "Thank you for waiting, I found three restaurants near you that are open now.",
    "Good morning! It is a quarter past eight and the sky is clear today.",
]
SAMPLE_RATE = 24_000


# --- measuring -----------------------------------------------------------------------------------


class RssPeak:
    """Peak resident set size while active (sampled every 20 ms from /proc), and CUDA's peak."""

    def __init__(self, cuda: bool):
        self.cuda, self.peak_mb, self._stop = cuda, 0.0, threading.Event()

    def _sample(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while True:
            try:
                with open("/proc/self/statm") as statm:
                    self.peak_mb = max(self.peak_mb, int(statm.read().split()[1]) * page / 2**20)
            except OSError:
                return
            if self._stop.wait(0.02):
                return

    def __enter__(self) -> RssPeak:
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.cuda:
            import torch

            self.gpu_mb = torch.cuda.max_memory_allocated() / 2**20


@dataclasses.dataclass
class Stream:
    """Arrival times (s since the row's start) and durations (s) of one stream's chunks."""

    arrivals: list[float] = dataclasses.field(default_factory=list)
    seconds: list[float] = dataclasses.field(default_factory=list)

    def add(self, arrival: float, samples: int) -> None:
        self.arrivals.append(arrival)
        self.seconds.append(samples / SAMPLE_RATE)

    @property
    def ttfa(self) -> float:
        return self.arrivals[0] if self.arrivals else float("nan")

    @property
    def audio(self) -> float:
        return sum(self.seconds)

    def underruns(self) -> int:
        """Chunks that arrive after the listener (playing since the first chunk) ran out of audio."""
        late, playable_until = 0, None
        for arrival, seconds in zip(self.arrivals, self.seconds):
            if playable_until is None:
                playable_until = arrival
            elif arrival > playable_until + 1e-9:
                late += 1
                playable_until = arrival  # playback resumes when the late chunk arrives
            playable_until += seconds
        return late


@dataclasses.dataclass
class Row:
    streams: list[Stream]
    wall: float
    rss_mb: float
    gpu_mb: float | None = None

    def ttfa(self, q: float) -> float:
        return float(np.percentile([s.ttfa for s in self.streams], q))

    @property
    def throughput(self) -> float:
        return sum(s.audio for s in self.streams) / self.wall

    @property
    def underruns(self) -> int:
        return sum(s.underruns() for s in self.streams)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


# --- the raw side --------------------------------------------------------------------------------


def text_of(index: int, sentences: int) -> str:
    """Stream ``index``'s text: ``sentences`` consecutive sentences of TEXTS (one segment each)."""
    return " ".join(TEXTS[(index + k) % len(TEXTS)] for k in range(sentences))


def run_raw(tts, count: int, params, audio_s: float, device: str, sentences: int = 1) -> list[tuple[float, Stream, float]]:
    """``count`` streams, one after another, each through its own generate_stream calls (per sentence):
    (start offset, stream with arrivals relative to the run's start, end offset)."""
    import torch

    from voicechat.tts.engine import split_for_speech

    results = []
    started = time.perf_counter()
    with torch.inference_mode():
        for index in range(count):
            torch.manual_seed(1000 + index)
            stream, begin = Stream(), time.perf_counter() - started
            for sentence in split_for_speech(text_of(index, sentences)):
                generator = tts.generate_stream(sentence, exaggeration=params.exaggeration,
                                                cfg_weight=params.cfg_weight, temperature=params.temperature,
                                                chunk_size=params.chunk_size, print_metrics=False)
                for audio, _ in generator:
                    samples = audio.squeeze(0).numpy()  # a caller needs the samples on the CPU
                    sync(device)
                    stream.add(time.perf_counter() - started, len(samples))
                    if stream.audio >= audio_s:
                        break
                generator.close()
                if stream.audio >= audio_s:
                    break
            results.append((begin, stream, time.perf_counter() - started))
    return results


def raw_row(runs: list[tuple[float, Stream, float]], count: int, rss_mb: float, gpu_mb: float | None) -> Row:
    """The first ``count`` streams of the one-after-another run: all asked for at time 0."""
    return Row([stream for _, stream, _ in runs[:count]], runs[count - 1][2], rss_mb, gpu_mb)


# --- the engine side -----------------------------------------------------------------------------


async def run_engine(engine, count: int, base_params, audio_s: float, sentences: int = 1,
                     timeout: float | None = None) -> tuple[list[Stream], float]:
    started = time.perf_counter()

    async def one(index: int) -> Stream:
        params = dataclasses.replace(base_params, seed=1000 + index)
        stream, measured = engine.stream(text_of(index, sentences), params), Stream()
        async with stream:
            async for chunk in stream:
                measured.add(time.perf_counter() - started, len(chunk))
                if measured.audio >= audio_s:
                    break
        return measured

    # With a timeout, a row that takes longer is a hang, not a measurement: it fails (the report goes on).
    streams = await asyncio.wait_for(asyncio.gather(*(one(index) for index in range(count))), timeout=timeout)
    return list(streams), time.perf_counter() - started


def engine_rows(tts, settings, counts: list[int], audio_s: float, device: str, sentences: int = 1,
                warm_streams: int = 0, timeout: float | None = None) -> tuple[dict[int, Row], float]:
    """Rows for each N on one engine (sharing the loaded model), and the engine's start-up time. With
    ``warm_streams``, an unreported row of that many streams runs first (on CUDA it captures most
    CUDA-graph shapes, which otherwise land inside the first rows)."""
    from voicechat.tts.engine import TTSEngine, TTSParams
    from voicechat.tts.stages import difference

    started = time.perf_counter()
    engine = TTSEngine(tts, settings)
    params = TTSParams.from_settings(settings)
    rows: dict[int, Row] = {}
    loop = asyncio.new_event_loop()
    try:
        engine.warm_up(params)
        start_s = time.perf_counter() - started
        print(f"  engine start-up (graph captures, warm-up): {start_s:.1f} s", file=sys.stderr, flush=True)
        if warm_streams:
            _, wall = loop.run_until_complete(run_engine(engine, warm_streams, params, audio_s, sentences, timeout))
            print(f"  engine, warm-up row of {warm_streams} stream(s): {wall:.1f} s", file=sys.stderr, flush=True)
        for count in counts:
            # Each row starts from a quiet engine, as the raw side does: a chunk that a lane was rendering
            # when the previous row (or the warm-up) cancelled its streams is rendered to its end first.
            while engine.busy:
                time.sleep(0.05)
            before = engine.stages.snapshot()
            try:
                with RssPeak(device.startswith("cuda")) as rss:
                    streams, wall = loop.run_until_complete(run_engine(engine, count, params, audio_s, sentences,
                                                                       timeout))
            except Exception as error:  # keep the rows measured so far
                print(f"FAILED: engine, {count} stream(s): {error!r}", flush=True)
                break
            row = rows[count] = Row(streams, wall, rss.peak_mb, getattr(rss, "gpu_mb", None))
            print(f"  engine, {count} stream(s): {wall:.1f} s; TTFA p50 {row.ttfa(50):.3f} p95 {row.ttfa(95):.3f} s; "
                  f"{row.throughput:.2f} s of audio per s ({row.throughput / count:.2f} per stream); "
                  f"underruns {row.underruns}", file=sys.stderr, flush=True)
            print_stages(difference(engine.stages.snapshot(), before), wall)
    finally:
        closing = threading.Thread(target=engine.close, daemon=True)  # a hung engine must not hang the report
        closing.start()
        closing.join(timeout=30)
        loop.close()
    return rows, start_s


def print_stages(counted: dict[tuple[str, str], tuple[float, int]], wall: float) -> None:
    """Where each engine thread spent the row (tts/stages.py): share of the row's wall time and ms per
    call of each busy stage; the rest is waiting for work, locks, hand-over and Python between stages
    (an idle wait is counted when it ends, so it may have begun before the row: it is not shown)."""
    for thread in sorted({thread for thread, _ in counted}):
        stages = {stage: value for (name, stage), value in counted.items() if name == thread and stage != "idle"}
        busy = sum(seconds for seconds, _ in stages.values())
        parts = [f"{stage} {seconds / wall:4.0%} ({calls} x {seconds / calls * 1000:.1f} ms)"
                 for stage, (seconds, calls) in sorted(stages.items(), key=lambda item: -item[1][0])]
        print(f"    {thread}: " + ", ".join(parts) + f"; idle or between stages {max(0.0, wall - busy) / wall:.0%}",
              file=sys.stderr, flush=True)


def settings_for(checkpoint: Path, device: str, chunk_size: int, **policy: object):
    """Engine settings; policy settings that this version of config.py does not have are left out."""
    from voicechat.config import Settings, load_settings

    known = {name: value for name, value in policy.items() if name in Settings.model_fields}
    return load_settings(checkpoint=str(checkpoint), device=device, chunk_size=chunk_size, voice=None,
                         tts_warmup=True, **known), sorted(set(policy) - set(known))


# --- T3 alone --------------------------------------------------------------------------------------


def t3_tokens_per_s(tts, count: int, steps: int, params) -> tuple[float, float] | None:
    """Decode-only T3 tokens/s of ``count`` streams: batched in one lean decoder vs one by one.
    None when the lean decoder (tts/t3_decoder.py) is not there."""
    try:
        from voicechat.tts.t3_decoder import T3Decoder
    except ImportError:
        return None
    import torch
    import torch.nn.functional as F
    from chatterbox.tts import punc_norm

    def prompt(decoder, index: int):
        text = tts.tokenizer.text_to_tokens(punc_norm(TEXTS[index % len(TEXTS)])).to(decoder.device)
        text = torch.cat([text, text])
        text = F.pad(F.pad(text, (1, 0), value=tts.t3.hp.start_text_token), (0, 1), value=tts.t3.hp.stop_text_token)
        return decoder.prompt(tts.conds.t3, text)

    def decode(decoder, indices: list[int]) -> tuple[int, float]:
        for index in indices:
            decoder.join(prompt(decoder, index), seed=1000 + index, cfg_weight=params.cfg_weight,
                         temperature=params.temperature)
        sync(str(decoder.device))
        tokens, started = 0, time.perf_counter()
        for _ in range(steps):
            tokens += len(decoder.sample())
            for stream in [s for s in decoder.active if s.done]:
                decoder.leave(stream)
            if not decoder.active:
                break
            decoder.forward()
        sync(str(decoder.device))
        elapsed = time.perf_counter() - started
        for stream in list(decoder.active):
            decoder.leave(stream)
        return tokens, elapsed

    cuda = str(tts.device).startswith("cuda")  # as the engine runs it there: bf16, CUDA graphs
    with torch.inference_mode():
        batched = T3Decoder(tts.t3, slots=count, bf16=cuda, cuda_graphs=cuda)
        decode(batched, [0])  # warm-up
        if cuda:
            decode(batched, list(range(count)))  # captures the batch's graph bucket
        tokens, elapsed = decode(batched, list(range(count)))
        together = tokens / elapsed
        single = T3Decoder(tts.t3, slots=1, bf16=cuda, cuda_graphs=cuda)
        if cuda:
            decode(single, [0])
        tokens = elapsed = 0.0
        for index in range(count):
            done, took = decode(single, [index])
            tokens, elapsed = tokens + done, elapsed + took
        return together, tokens / elapsed


# --- S3Gen alone ----------------------------------------------------------------------------------


def render_rows(tts, count: int, chunk: int, first: int, ref_s: float, device: str) -> dict[str, float]:
    """Seconds per call of the batched renderer (tts/render.py): a segment's first chunk with the whole
    reference prompt and with ``ref_s`` of it (``chunk`` and ``first`` new tokens), and a steady-state
    chunk (``chunk`` new tokens after 2 chunks of context) of ``count`` streams, batched vs one by one."""
    import torch

    from voicechat.tts.render import RenderRequest, Renderer

    ref = tts.conds.gen
    tokens = [torch.randint(0, 6561, (3 * chunk,), generator=torch.Generator().manual_seed(i)).to(tts.device)
              for i in range(count)]

    def timed(renderer, requests) -> float:
        sync(device)
        started = time.perf_counter()
        renderer.render(requests)
        sync(device)
        return time.perf_counter() - started

    whole, short = Renderer(tts), Renderer(tts, first_chunk_ref_s=ref_s)
    timed(whole, [RenderRequest(tokens[0][:chunk], 0, ref, False)])  # warm-up
    results = {}
    for name, renderer, size in (("first chunk, whole prompt", whole, chunk), ("first chunk, short prompt", short, chunk),
                                 ("small first chunk, whole prompt", whole, first),
                                 ("small first chunk, short prompt", short, first)):
        results[name] = min(timed(renderer, [RenderRequest(tokens[0][:size], 0, ref, False)]) for _ in range(2))
    states = []
    for i in range(count):  # two chunks rendered: the third has context and a held-back tail
        [(_, state)] = whole.render([RenderRequest(tokens[i][:chunk], 0, ref, False, None, i)])
        [(_, state)] = whole.render([RenderRequest(tokens[i][:2 * chunk], chunk, ref, False, state, i)])
        states.append(state)

    def third(i: int) -> RenderRequest:
        state = dataclasses.replace(states[i], phase=states[i].phase.clone(),
                                    generator=torch.Generator(device=tts.device).manual_seed(i))
        return RenderRequest(tokens[i], 2 * chunk, ref, False, state, i)

    reps = 2 if device.startswith("cuda") else 1  # a full-size CPU pass takes many seconds: once is enough
    results["steady chunk, one by one"] = min(sum(timed(whole, [third(i)]) for i in range(count)) for _ in range(reps))
    results["steady chunk, batched"] = min(timed(whole, [third(i) for i in range(count)]) for _ in range(reps))
    if device.startswith("cuda"):  # the same with the flow solve captured as CUDA graphs
        graphed = Renderer(tts, cuda_graphs=True)
        graphed.render([third(i) for i in range(count)])  # captures
        graphed.render([third(0)])
        batched = [audio for audio, _ in whole.render([third(i) for i in range(count)])]
        replayed = [audio for audio, _ in graphed.render([third(i) for i in range(count)])]
        results["graph vs eager max |diff|"] = max(float(np.abs(a - b).max()) for a, b in zip(batched, replayed))
        results["steady chunk, one by one, graphs"] = min(sum(timed(graphed, [third(i)]) for i in range(count))
                                                          for _ in range(2))
        results["steady chunk, batched, graphs"] = min(timed(graphed, [third(i) for i in range(count)])
                                                       for _ in range(2))
        graphed_first = Renderer(tts, cuda_graphs=True, first_chunk_ref_s=ref_s)
        for size, name in ((chunk, "first chunk, short prompt, graphs"), (first, "small first chunk, short prompt, graphs")):
            timed(graphed_first, [RenderRequest(tokens[0][:size], 0, ref, False)])  # captures
            results[name] = min(timed(graphed_first, [RenderRequest(tokens[0][:size], 0, ref, False)]) for _ in range(2))
    return results


def attempt(name: str, function, *args):
    """Run one part of the benchmark; a failure is printed and the other parts still run."""
    try:
        return function(*args)
    except Exception:  # a benchmark reports what it could measure
        import traceback

        print(f"FAILED: {name}", flush=True)
        traceback.print_exc()
        return None


# --- main ------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_options(parser, variant="full")
    parser.add_argument("--streams", default="1,2,4,8", help="comma-separated numbers of concurrent streams")
    parser.add_argument("--audio-s", type=float, default=1.5, help="seconds of audio measured per stream")
    parser.add_argument("--first-chunk", type=int, default=10, help="first-chunk policy: tokens of the first chunk")
    parser.add_argument("--first-ref-s", type=float, default=1.0, help="first-chunk policy: reference prompt seconds")
    parser.add_argument("--t3-steps", type=int, default=25, help="decode steps for the T3 tokens/s row")
    parser.add_argument("--s3gen-streams", type=int, default=None,
                        help="streams of the S3Gen-alone batched row (default: the largest N)")
    parser.add_argument("--sentences", type=int, default=1,
                        help="sentences (segments) per stream's text: more measures sustained real time")
    parser.add_argument("--raw-max", type=int, default=None,
                        help="raw streams one after another (default: the largest N); rows above it have no old side")
    parser.add_argument("--warm-streams", type=int, default=0,
                        help="an unreported engine row of this many streams first (captures CUDA-graph shapes)")
    parser.add_argument("--row-timeout", type=float, default=None,
                        help="seconds after which an engine row counts as hung and fails (default: none)")
    args = parser.parse_args()
    counts = sorted({int(n) for n in args.streams.split(",")})

    import torch

    from voicechat.tts.checkpoint import load_chatterbox
    from voicechat.tts.engine import TTSParams, detect_device

    if args.threads:
        torch.set_num_threads(args.threads)
    checkpoint = checkpoint_of(args)
    device = detect_device(args.device)
    cuda = device.startswith("cuda")
    gpu = torch.cuda.get_device_name(0) if cuda else None
    print(f"device: {device}{f' ({gpu})' if gpu else ''}, torch {torch.__version__}, "
          f"threads: {torch.get_num_threads()}", flush=True)

    started = time.perf_counter()
    tts = load_chatterbox(checkpoint, device)
    print(f"model loaded in {time.perf_counter() - started:.1f} s", flush=True)
    plain, _ = settings_for(checkpoint, device, args.chunk_size)
    params = TTSParams.from_settings(plain)

    # Raw: warm up, then the streams one after another.
    with torch.inference_mode():
        for _ in tts.generate_stream("Warming up.", chunk_size=args.chunk_size, print_metrics=False):
            break
    with RssPeak(cuda) as rss:
        raw_runs = run_raw(tts, min(args.raw_max or max(counts), max(counts)), params, args.audio_s, device,
                           args.sentences)
    raw = {n: raw_row(raw_runs, n, rss.peak_mb, getattr(rss, "gpu_mb", None)) for n in counts if n <= len(raw_runs)}
    print(f"raw, {len(raw_runs)} stream(s) one after another: {raw_runs[-1][2]:.1f} s; first audio at "
          + ", ".join(f"{stream.ttfa:.3f}" for _, stream, _ in raw_runs) + " s", flush=True)

    top = max(counts)
    s3_streams = args.s3gen_streams or top
    s3 = attempt("S3Gen alone", render_rows, tts, s3_streams, args.chunk_size, args.first_chunk, args.first_ref_s,
                 device)
    if s3:
        print()
        print(f"S3Gen alone (tts/render.py), ms per call: prompt {tts.conds.gen['prompt_token'].shape[1] / 25:.1f} s "
              f"whole / {args.first_ref_s:g} s short; first chunk {args.chunk_size} tokens, small {args.first_chunk}:")
        for name, seconds in s3.items():
            print(f"  {name:<40} {seconds:>9.2e}" if "diff" in name else f"  {name:<40} {seconds * 1000:>9.1f}")
        print(f"  short prompt / whole: first chunk {s3['first chunk, short prompt'] / s3['first chunk, whole prompt']:.2f}"
              f", small first chunk {s3['small first chunk, short prompt'] / s3['small first chunk, whole prompt']:.2f}")
        print(f"  {s3_streams} streams batched vs one by one: "
              f"{s3['steady chunk, one by one'] / s3['steady chunk, batched']:.2f}x",
              flush=True)
    t3 = attempt("T3 alone", t3_tokens_per_s, tts, top, args.t3_steps, params)

    # New engine: first chunk the size of the others, whole reference prompt (like for like); then the
    # first-chunk policy, one stream.
    capacity = max(counts + [args.warm_streams])  # the engine's slots: every row's streams at once
    equal, _ = settings_for(checkpoint, device, args.chunk_size, tts_first_chunk_tokens=args.chunk_size,
                            tts_first_chunk_ref_s=None, tts_max_streams=capacity)
    new, engine_start_s = attempt("engine", engine_rows, tts, equal, counts, args.audio_s, device, args.sentences,
                                  args.warm_streams, args.row_timeout) or ({}, 0.0)
    policy, missing = settings_for(checkpoint, device, args.chunk_size, tts_first_chunk_tokens=args.first_chunk,
                                   tts_first_chunk_ref_s=args.first_ref_s)
    policy_rows = (attempt("engine, first-chunk policy", engine_rows, tts, policy, [1], args.audio_s, device,
                           args.sentences, 0, args.row_timeout) or ({}, 0.0))[0]

    # --- report ---
    print()
    print(f"checkpoint: {checkpoint} ({args.variant if args.checkpoint is None else 'given'}), device {device}"
          f"{f' ({gpu})' if gpu else ''}, chunk size {args.chunk_size}, {args.audio_s:g} s of audio per stream, "
          f"engine start-up {engine_start_s:.1f} s")
    header = (f"{'N':>2} | {'old TTFA p50':>12} {'p95':>7} | {'new TTFA p50':>12} {'p95':>7} | {'ratio p50':>9} "
              f"{'p95':>5} | {'old audio/s':>11} {'new':>6} {'ratio':>6} {'per stream':>10} | "
              f"{'underruns old':>13} {'new':>4} | {'peak RSS MB old':>15} {'new':>6}"
              + (f" | {'peak GPU MB old':>15} {'new':>6}" if cuda else ""))
    print(header)
    print("-" * len(header))

    def cell(value: float | None, width: int, form: str) -> str:
        return f"{'-':>{width}}" if value is None else f"{value:>{width}{form}}"

    for n in counts:
        o, w = raw.get(n), new.get(n)
        ratio = (lambda a, b: None if a is None or b is None else a / b)
        line = (f"{n:>2} | {cell(o and o.ttfa(50), 11, '.3f')}s {cell(o and o.ttfa(95), 6, '.3f')}s | "
                f"{cell(w and w.ttfa(50), 11, '.3f')}s {cell(w and w.ttfa(95), 6, '.3f')}s | "
                f"{cell(ratio(w and w.ttfa(50), o and o.ttfa(50)), 9, '.3f')} "
                f"{cell(ratio(w and w.ttfa(95), o and o.ttfa(95)), 5, '.3f')} | "
                f"{cell(o and o.throughput, 11, '.3f')} {cell(w and w.throughput, 6, '.3f')} "
                f"{cell(ratio(w and w.throughput, o and o.throughput), 6, '.2f')} "
                f"{cell(w and w.throughput / n, 10, '.2f')} | "
                f"{cell(o and o.underruns, 13, 'd')} {cell(w and w.underruns, 4, 'd')} | "
                f"{cell(o and o.rss_mb, 15, '.0f')} {cell(w and w.rss_mb, 6, '.0f')}")
        if cuda:
            line += f" | {cell(o and o.gpu_mb, 15, '.0f')} {cell(w and w.gpu_mb, 6, '.0f')}"
        print(line + ("" if w is not None else "  (engine failed)"))
    print("old: raw generate_stream, the N streams one after another (all asked for at time 0); new: our engine,")
    print("N streams at once. audio/s: seconds of audio delivered per second of wall time, all streams together.")
    print()
    print("CPU-floor rows (issue 12):")
    one_old, one_new = raw.get(counts[0]), new.get(counts[0])
    if one_new is not None and one_old is not None:
        print(f"  {counts[0]} stream: TTFA new/old, equal chunk size: {one_new.ttfa(50) / one_old.ttfa(50):.3f} "
              f"(floor <= 0.95; old {one_old.ttfa(50):.3f} s, new {one_new.ttfa(50):.3f} s)")
    if 1 in policy_rows and one_old is not None:
        note = f" (settings not in this config, left out: {', '.join(missing)})" if missing else ""
        print(f"  1 stream: TTFA new/old, first-chunk policy ({args.first_chunk} tokens, {args.first_ref_s:g} s "
              f"prompt): {policy_rows[1].ttfa(50) / one_old.ttfa(50):.3f} (floor <= 0.6; new "
              f"{policy_rows[1].ttfa(50):.3f} s){note}")
    if t3:
        print(f"  {top} streams: T3 tokens/s batched vs one by one: {t3[0] / t3[1]:.2f}x (floor >= 2.2; "
              f"{t3[0]:.1f} vs {t3[1]:.1f} tokens/s, decode steps only)")
    else:
        print(f"  {top} streams: T3 tokens/s batched vs one by one: n/a")
    if top in new and top in raw:
        print(f"  {top} streams: aggregate audio throughput new/old: "
              f"{new[top].throughput / raw[top].throughput:.2f}x (floor >= 1.6)")
    if 1 in policy_rows:
        print(f"  1 stream, first-chunk policy: first audio {policy_rows[1].ttfa(50) * 1000:.0f} ms")
    if one_old is not None:
        print(f"  raw first chunk (one stream, generate_stream): {one_old.ttfa(50) * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
