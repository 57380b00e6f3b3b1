"""Several streams on one model: voices never mix, scheduling is fair, slow consumers are not advanced."""

from __future__ import annotations

import asyncio
import math

import numpy as np

from conftest import collect, wait_until
from voicechat.tts.engine import TTSEngine, TTSParams
from voicechat.tts.scheduler import MAX_PENDING_CHUNKS, Job, next_job

TEXT = "Hello there, this is a short test."
ALICE = TTSParams(voice="alice", seed=11)
BOB = TTSParams(voice="bob", seed=22)


async def test_voices_never_mix_whether_alternating_or_concurrent(engine: TTSEngine) -> None:
    alone_alice = await collect(engine.stream(TEXT, ALICE))
    alone_bob = await collect(engine.stream(TEXT, BOB))
    # The test can tell voices apart: the same seed with the other voice sounds different.
    assert not np.array_equal(alone_alice, await collect(engine.stream(TEXT, TTSParams(voice="bob", seed=11))))
    # Concurrent: both streams interleave chunk by chunk on the one model.
    order: list[str] = []

    async def tagged(name: str, params: TTSParams) -> np.ndarray:
        chunks = []
        async for chunk in engine.stream(TEXT, params):
            order.append(name)
            chunks.append(chunk)
        return np.concatenate(chunks)

    together_alice, together_bob = await asyncio.gather(tagged("alice", ALICE), tagged("bob", BOB))
    assert "alice" in order[order.index("bob"):], "the streams really interleaved"
    assert np.array_equal(together_alice, alone_alice)
    assert np.array_equal(together_bob, alone_bob)
    # And after all that alternating, alice alone is still alice alone.
    assert np.array_equal(await collect(engine.stream(TEXT, ALICE)), alone_alice)


async def test_a_new_stream_goes_first_then_the_listener_closest_to_running_out(engine: TTSEngine) -> None:
    """Earliest deadline first, seen from the listeners: a newcomer is served at the next chunk
    boundary; after that, each chunk goes to the stream whose listener runs out of audio soonest
    (deadline = its first chunk's arrival + the seconds of audio it has received)."""
    loop = asyncio.get_running_loop()
    first: dict[str, float] = {}
    audio_s = {"A": 0.0, "B": 0.0}
    running = {"A": True, "B": False}
    arrivals: list[str] = []
    late_picks: list[str] = []

    async def listen(name: str, stream) -> None:
        running[name] = True
        async for chunk in stream:
            other = "B" if name == "A" else "A"
            if name in first and running[other] and other in first:
                mine, theirs = first[name] + audio_s[name], first[other] + audio_s[other]
                if mine > theirs + 0.25:  # one 5-token chunk (0.2 s) of slack for timing jitter
                    late_picks.append(f"{name} at chunk {len(arrivals)}: {mine:.2f} > {theirs:.2f}")
            first.setdefault(name, loop.time())
            audio_s[name] += len(chunk) / 24000
            arrivals.append(name)
        running[name] = False

    first_task = asyncio.create_task(listen("A", engine.stream(TEXT + " " + TEXT, TTSParams(seed=1, chunk_size=5))))
    await wait_until(lambda: len(arrivals) >= 2)
    await listen("B", engine.stream(TEXT, TTSParams(seed=2, chunk_size=5)))
    await first_task
    order = "".join(arrivals)
    assert order.index("B") <= 3, f"B waited behind A: {order}"
    assert not late_picks, f"{order}: {late_picks}"
    assert "ABAB" in order[order.index("B"):], f"the streams never took turns: {order}"


async def test_a_consumer_that_does_not_read_is_not_advanced(engine: TTSEngine) -> None:
    stalled = engine.stream(TEXT + " " + TEXT, TTSParams(seed=3, chunk_size=5))
    reader = engine.stream(TEXT, TTSParams(seed=4, chunk_size=5))
    audio = await collect(reader)  # completes although the other stream is never read
    assert len(audio) > 0
    job = stalled._job
    assert job.pending == MAX_PENDING_CHUNKS, "exactly a full queue was produced, then it stopped"
    assert engine.active_streams == 1
    chunks = [chunk async for chunk in stalled]  # reading resumes it to the end
    assert len(chunks) > MAX_PENDING_CHUNKS and engine.active_streams == 0


def _job(created: float, first: float | None = None, audio_s: float = 0.0, pending: int = 0) -> Job:
    job = Job(segments=None, params=None, inbox=None, rng=None, created=created)
    job.first_handover, job.audio_s, job.pending = first, audio_s, pending
    return job


def test_earliest_deadline_first() -> None:
    ahead = _job(created=0, first=10.0, audio_s=5.0)  # listener has audio until t=15
    behind = _job(created=1, first=11.0, audio_s=2.0)  # until t=13
    assert next_job([ahead, behind]) is behind
    newcomer = _job(created=2)
    assert newcomer.deadline == -math.inf
    assert next_job([ahead, behind, newcomer]) is newcomer
    older_newcomer = _job(created=1.5)
    assert next_job([newcomer, older_newcomer]) is older_newcomer, "ties go to the oldest"
    full = _job(created=0, first=0.0, audio_s=1.0, pending=MAX_PENDING_CHUNKS)
    assert next_job([full, ahead]) is ahead, "a stream with a full queue waits"
    assert next_job([full]) is None
    full.cancelled = False
    gone = _job(created=0)
    gone.cancelled = True
    assert next_job([gone]) is None
