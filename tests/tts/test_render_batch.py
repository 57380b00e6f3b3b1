"""How many chunks a render lane takes into one S3Gen call (``tts_render_batch``), which go first, and
when a lane takes the other lane's kind of chunk."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from tts_helpers import Held, collect, tts_settings, wait_until
from voicechat.tts.engine import DEFAULT_MAX_STREAMS, TTSEngine, TTSParams, stream_limits

TEXT = "Hello there, this is a short test."


def recording(render, sizes: list[int]):
    """``render`` that also notes how many chunks each call was given."""

    def call(requests):
        sizes.append(len(requests))
        return render(requests)

    return call


def test_render_batch_default_per_device(tiny_checkpoint: Path, voices_dir: Path) -> None:
    """Unset: one chunk per render call on a CPU (batching S3Gen gains nothing there), no cap but
    max_streams elsewhere; a setting wins, never above max_streams."""
    unset = tts_settings(tiny_checkpoint, voices_dir)
    assert stream_limits(unset, "cpu") == (DEFAULT_MAX_STREAMS["cpu"], 1)
    for device, kind in (("cuda", "cuda"), ("cuda:1", "cuda"), ("mps", "mps")):
        assert stream_limits(unset, device) == (DEFAULT_MAX_STREAMS[kind], DEFAULT_MAX_STREAMS[kind])
    assert stream_limits(tts_settings(tiny_checkpoint, voices_dir, tts_render_batch=3), "cpu")[1] == 3
    capped = tts_settings(tiny_checkpoint, voices_dir, tts_max_streams=8, tts_render_batch=2)
    assert stream_limits(capped, "cuda") == (8, 2)
    assert stream_limits(tts_settings(tiny_checkpoint, voices_dir, tts_render_batch=32), "cuda") == (4, 4)


async def test_one_chunk_per_render_call_on_cpu_and_each_stream_sounds_as_alone(
        engine: TTSEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Streams started together on a CPU: no render call takes more than one chunk, and every stream is
    complete and bit-exactly its solo audio (the same tokens, rendered one chunk at a time)."""
    assert engine.render_batch == 1
    sizes: list[int] = []
    for lane in engine._lanes:
        monkeypatch.setattr(lane.renderer, "render", recording(lane.renderer.render, sizes))
    params = [TTSParams(seed=seed, chunk_size=5) for seed in (1, 2, 3, 4)]
    alone = [await collect(engine.stream(TEXT, each)) for each in params]
    together = await asyncio.gather(*(collect(engine.stream(TEXT, each)) for each in params))
    assert sizes and max(sizes) == 1
    for mine, solo in zip(together, alone):
        assert len(solo) > 0 and np.array_equal(mine, solo)


async def test_the_oldest_first_chunks_are_rendered_first_one_per_call(
        chatterbox, tiny_checkpoint: Path, voices_dir: Path) -> None:
    """With both lanes held inside a render and three first chunks ready at once, the lanes take them one
    per call (render_batch 1), the oldest stream's first, whatever order the engine keeps its jobs in."""
    other = TTSEngine(chatterbox, tts_settings(tiny_checkpoint, voices_dir))
    first_lane = next(lane for lane in other._lanes if lane.first)
    steady_lane = next(lane for lane in other._lanes if not lane.first)
    sizes: list[int] = []
    held_first = Held(recording(first_lane.renderer.render, sizes))
    held_steady = Held(recording(steady_lane.renderer.render, sizes))
    first_lane.renderer.render, steady_lane.renderer.render = held_first, held_steady
    taken = []  # the jobs whose first chunk a lane took, in the order taken (under the engine's lock)
    ready_chunks = other._ready_chunks

    def noting(lane):
        chunks = ready_chunks(lane)
        taken.extend(job for job, *_ in chunks if job.first_handover is None)
        return chunks

    other._ready_chunks = noting

    def first_chunks_ready() -> int:
        with other._lock:
            return len(other._chunks_ready(first=True))

    streams = []
    try:
        streams.append(other.stream(TEXT, TTSParams(seed=1)))
        await asyncio.to_thread(held_first.inside.wait, 120)  # its first chunk is held in the first lane
        streams.append(other.stream(TEXT, TTSParams(seed=2)))
        await asyncio.to_thread(held_steady.inside.wait, 120)  # the steady lane took that one: held too
        streams += [other.stream(TEXT, TTSParams(seed=seed)) for seed in (3, 4, 5)]
        await wait_until(lambda: first_chunks_ready() == 3)
        with other._lock:
            other._jobs.reverse()  # the newest first: the order must come from the streams' urgency
        held_first.release.set()
        held_steady.release.set()
        audio = await asyncio.gather(*(collect(stream) for stream in streams))
    finally:
        held_first.release.set()
        held_steady.release.set()
        await asyncio.to_thread(other.close)
    assert all(len(each) > 0 for each in audio)
    assert taken == [stream._job for stream in streams]
    assert max(sizes) == 1, "three first chunks were ready at once, yet each call took one"


def test_warm_up_captures_render_batches_up_to_the_cap(
        chatterbox, tiny_checkpoint: Path, voices_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lanes' flow graphs are captured for batch sizes 1, 2, 4... up to render_batch, not max_streams
    (a no-op on a CPU: the batch sizes asked for are what is checked)."""
    settings = tts_settings(tiny_checkpoint, voices_dir, tts_max_streams=8, tts_render_batch=2)
    other = TTSEngine(chatterbox, settings)
    asked = []
    try:
        for lane in other._lanes:
            monkeypatch.setattr(lane.renderer, "warm_graphs",
                                lambda ref, sizes, batches, name=lane.name: asked.append((name, batches)))
        other.warm_up(TTSParams.from_settings(settings))
    finally:
        other.close()
    assert asked == [("first", [1, 2]), ("steady", [1, 2])]


async def test_the_first_lane_helps_with_steady_chunks_while_no_listener_waits_for_first_audio(
        chatterbox, tiny_checkpoint: Path, voices_dir: Path) -> None:
    """With the steady lane held inside a render, the idle first lane takes another stream's steady
    chunk, but only once no listener waits for first audio (a new stream's first chunk must find the
    first lane free)."""
    from collections import deque

    from voicechat.tts.scheduler import Job

    other = TTSEngine(chatterbox, tts_settings(tiny_checkpoint, voices_dir))
    first_lane = next(lane for lane in other._lanes if lane.first)
    steady_lane = next(lane for lane in other._lanes if not lane.first)
    held = Held(steady_lane.renderer.render)
    steady_lane.renderer.render = held
    later_chunks_on_first_lane: list[bool] = []
    first_render = first_lane.renderer.render

    def noting(requests):
        later_chunks_on_first_lane.extend(request.state is not None for request in requests)
        return first_render(requests)

    first_lane.renderer.render = noting
    silent = Job(segments=deque(), params=TTSParams(), inbox=None)  # a listener waiting for first audio
    streams = []
    try:
        streams.append(other.stream(TEXT, TTSParams(seed=1, chunk_size=5)))
        await anext(streams[0])
        await asyncio.to_thread(held.inside.wait, 120)  # its next chunk is held in the steady lane
        with other._lock:
            other._jobs.append(silent)
        streams.append(other.stream(TEXT, TTSParams(seed=2, chunk_size=5)))
        await anext(streams[1])  # its first chunk, from the first lane

        def steady_chunk_ready() -> bool:
            with other._lock:
                return any(job is streams[1]._job for job, *_ in other._chunks_ready(first=False))

        await wait_until(steady_chunk_ready)
        with other._lock:
            assert other._ready_chunks(first_lane) == [], "a listener waits for first audio: the lane stays free"
            other._jobs.remove(silent)
            other._lock.notify_all()
        assert len(await anext(streams[1])) > 0  # its second chunk, while the steady lane is still held
        assert True in later_chunks_on_first_lane, "the first lane rendered it"
        held.release.set()
        for stream in streams:
            assert len(await collect(stream)) > 0
    finally:
        held.release.set()
        await asyncio.to_thread(other.close)
