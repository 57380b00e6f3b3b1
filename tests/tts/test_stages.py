"""Where the speech engine's threads spend their time (tts/stages.py): counted per thread and stage,
named in profiler traces, exported on /metrics."""

from __future__ import annotations

import threading

import torch

from voicechat.metrics import Metrics
from voicechat.tts.engine import TTSEngine, TTSParams
from voicechat.tts.stages import StageClock, difference

TEXT = "Hello there, this is a short test."


def test_each_thread_counts_its_own_stages() -> None:
    clock = StageClock()
    with clock.stage("forward"):
        pass
    clock.add("forward", 0.5)
    before = clock.snapshot()
    worker = threading.Thread(target=lambda: clock.add("flow", 0.25), name="tts-render-first")
    worker.start()
    worker.join()
    me = threading.current_thread().name
    seconds, calls = clock.snapshot()[(me, "forward")]
    assert calls == 2 and seconds >= 0.5
    assert difference(clock.snapshot(), before) == {("tts-render-first", "flow"): (0.25, 1)}


def test_stages_are_named_in_a_profiler_trace() -> None:
    clock = StageClock()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        with clock.stage("sample"):
            torch.ones(4).sum()
    assert "tts.sample" in {event.key for event in profile.key_averages()}


def test_metrics_export_the_seconds_per_thread_and_stage() -> None:
    metrics = Metrics()
    metrics.track_tts_stages(lambda: {("tts-owner", "forward"): (1.5, 3), ("tts-render-steady", "idle"): (2.0, 1)})
    text = metrics.render().decode()
    assert 'voicechat_tts_stage_seconds_total{stage="forward",thread="tts-owner"} 1.5' in text
    assert 'voicechat_tts_stage_seconds_total{stage="idle",thread="tts-render-steady"} 2.0' in text


async def test_the_engine_counts_t3_and_s3gen_stages_of_a_stream(engine: TTSEngine) -> None:
    before = engine.stages.snapshot()
    chunks = [chunk async for chunk in engine.stream(TEXT, TTSParams(seed=1))]
    counted = difference(engine.stages.snapshot(), before)
    assert len(chunks) >= 2
    for stage in ("prefill", "sample", "forward"):
        seconds, calls = counted[("tts-owner", stage)]
        assert calls >= 1 and seconds > 0
    first = {stage for thread, stage in counted if thread == "tts-render-first"}
    steady = {stage for thread, stage in counted if thread == "tts-render-steady"}
    assert {"flow", "vocode", "watermark"} <= first, "the first chunk renders on the first lane"
    assert {"flow", "vocode", "watermark"} <= steady, "the later chunks on the steady lane"
