"""Several streams on one model: voices never mix, scheduling is fair, slow consumers are not advanced."""

from __future__ import annotations

import asyncio
import math

import numpy as np

from tts_helpers import collect, wait_until
from voicechat.tts.engine import TTSEngine, TTSParams
from voicechat.tts.scheduler import MAX_PENDING_CHUNKS, Job, next_job

TEXT = "Hello there, this is a short test."
ALICE = TTSParams(voice="alice", seed=11)
BOB = TTSParams(voice="bob", seed=22)


async def _spoken(engine: TTSEngine, params: TTSParams, order: list[str] | None = None) -> tuple[np.ndarray, list[int]]:
    """A stream's audio and its speech tokens (``order`` records the arrival of each chunk)."""
    stream = engine.stream(TEXT, params)
    chunks = []
    async for chunk in stream:
        if order is not None:
            order.append(params.voice)
        chunks.append(chunk)
    return np.concatenate(chunks), stream._job.tokens


async def test_voices_never_mix_whether_alternating_or_concurrent(engine: TTSEngine) -> None:
    """Alone, a stream is bit-exact across runs. Together, two streams decode in one batch and render in
    one batch: each samples exactly its solo tokens (per-stream generators; its batched logits differ
    from its solo logits only by float rounding, tests/tts/test_t3_decoder.py) and its audio equals its
    solo audio within float rounding of the batched S3Gen (int16: a few steps; tests/tts/test_render.py)."""
    alone_alice, alice_tokens = await _spoken(engine, ALICE)
    alone_bob, bob_tokens = await _spoken(engine, BOB)
    # The test can tell voices apart: the same seed with the other voice sounds different.
    assert not np.array_equal((await _spoken(engine, TTSParams(voice="bob", seed=11)))[0], alone_alice)
    order: list[str] = []
    (together_alice, alice_tokens_2), (together_bob, bob_tokens_2) = await asyncio.gather(
        _spoken(engine, ALICE, order), _spoken(engine, BOB, order))
    assert "alice" in order[order.index("bob"):], "the streams really interleaved"
    assert alice_tokens_2 == alice_tokens and bob_tokens_2 == bob_tokens
    for together, alone in ((together_alice, alone_alice), (together_bob, alone_bob)):
        assert len(together) == len(alone)
        assert np.abs(together.astype(int) - alone).max() <= 8, "within float rounding (int16 steps)"
    # And after all that, alice alone is still bit-exactly alice alone.
    assert np.array_equal((await _spoken(engine, ALICE))[0], alone_alice)


async def test_a_new_stream_gets_its_first_chunk_while_another_speaks(engine: TTSEngine) -> None:
    """A newcomer joins the batch at the next token step and its first chunk arrives within a couple of
    the older stream's chunks; from then on both advance together, one token per step each, so their
    chunks alternate. (Who takes a free decoder slot first is earliest deadline first:
    test_earliest_deadline_first.)"""
    arrivals: list[str] = []

    async def listen(name: str, stream) -> None:
        async for _chunk in stream:
            arrivals.append(name)

    first_task = asyncio.create_task(listen("A", engine.stream(TEXT + " " + TEXT, TTSParams(seed=1, chunk_size=5))))
    await wait_until(lambda: len(arrivals) >= 2)
    await listen("B", engine.stream(TEXT, TTSParams(seed=2, chunk_size=5)))
    await first_task
    order = "".join(arrivals)
    assert order.index("B") <= 4, f"B waited behind A: {order}"
    assert "ABAB" in order[order.index("B") - 1:] or "BABA" in order[order.index("B"):], order


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
    job = Job(segments=None, params=None, inbox=None, created=created)
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
