"""The TTS engine on a tiny random-weight Chatterbox: streaming, cancellation, voices, errors."""

from __future__ import annotations

import asyncio
import gc
import io
import logging
import wave
from pathlib import Path

import numpy as np
import pytest

from tts_helpers import Held, collect, tts_settings, wait_until
from voicechat.audio import read_audio
from voicechat.tts.engine import (
    DEFAULT_MAX_STREAMS,
    MAX_SEGMENT_CHARS,
    BadSettingError,
    EngineFullError,
    TTSEngine,
    TTSError,
    TTSParams,
    UnknownVoiceError,
    VoiceError,
    detect_device,
    split_for_speech,
)

TEXT = "Hello there, this is a short test."


def wav_bytes(samples: np.ndarray, rate: int = 24000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples.astype("<i2").tobytes())
    return buffer.getvalue()


async def test_stream_yields_int16_mono_pcm_at_24khz(engine: TTSEngine) -> None:
    stream = engine.stream(TEXT, TTSParams(seed=1))
    chunks = [chunk async for chunk in stream]
    assert engine.sample_rate == 24000
    assert len(chunks) >= 2, "25-token chunks of a ~2-3 s utterance"
    for chunk in chunks:
        assert chunk.dtype == np.int16 and chunk.ndim == 1 and len(chunk) > 0
    audio = np.concatenate(chunks)
    assert 0.5 < len(audio) / 24000 < 10
    assert np.abs(audio).max() > 100, "not silence"
    assert stream.first_chunk_s > 0
    assert engine.active_streams == 0


async def test_speech_starts_and_ends_quietly_and_chunks_join_without_fades(engine: TTSEngine) -> None:
    """The renderer (render.py) fades a segment in and out and carries its chunks across boundaries; the
    engine adds no fades of its own (boundary smoothness itself: tests/tts/test_render.py)."""
    chunks = [chunk async for chunk in engine.stream(TEXT, TTSParams(seed=2, chunk_size=10))]
    assert len(chunks) >= 3
    audio = np.concatenate(chunks)
    quiet = max(4, 0.02 * int(np.abs(audio).max()))  # (the watermark leaves a tiny residue)
    assert abs(int(audio[0])) <= quiet and abs(int(audio[-1])) <= quiet
    inner_edges = [int(chunk[-1]) for chunk in chunks[:-1]]
    assert max(abs(edge) for edge in inner_edges) > quiet, "inner chunk edges are not faded to silence"


async def test_same_seed_same_audio_and_other_seed_other_audio(engine: TTSEngine) -> None:
    first = await collect(engine.stream(TEXT, TTSParams(seed=5)))
    again = await collect(engine.stream(TEXT, TTSParams(seed=5)))
    other = await collect(engine.stream(TEXT, TTSParams(seed=6)))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


async def test_cancel_mid_stream_stops_generation(engine: TTSEngine) -> None:
    stream = engine.stream(TEXT + " " + TEXT, TTSParams(seed=3, chunk_size=5))
    job = stream._job
    await anext(stream)
    await anext(stream)
    stream.cancel()
    stream.cancel()  # idempotent
    await stream.aclose()
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    assert engine.active_streams == 0
    await wait_until(lambda: job.segment is None)  # the owner released the stream's decoder slot
    assert engine._decoder.active == []
    # The engine carries on.
    assert len(await collect(engine.stream(TEXT, TTSParams(seed=3)))) > 0


async def test_context_manager_and_dropped_streams_are_cancelled(engine: TTSEngine) -> None:
    async with engine.stream(TEXT, TTSParams(seed=4)) as stream:
        await anext(stream)
    assert engine.active_streams == 0
    abandoned = engine.stream(TEXT, TTSParams(seed=4, chunk_size=5))
    await anext(abandoned)
    del abandoned
    gc.collect()
    assert engine.active_streams == 0


async def test_long_text_is_spoken_sentence_by_sentence(engine: TTSEngine) -> None:
    one = await collect(engine.stream("This is the first sentence here.", TTSParams(seed=8)))
    two = await collect(engine.stream("This is the first sentence here. And here is a second one.", TTSParams(seed=8)))
    # Two segments, the first sampling and rendering exactly what the single sentence did.
    assert np.array_equal(two[: len(one)], one)
    assert len(two) > len(one) * 1.3


def test_split_for_speech() -> None:
    assert split_for_speech("Hello there. How are you? Fine!") == ["Hello there.", "How are you? Fine!"]
    assert split_for_speech("Dr. Smith is here, e.g. at 3.5 p.m. today.") == ["Dr. Smith is here, e.g. at 3.5 p.m. today."]
    assert split_for_speech("**Hello** there 👋") == ["Hello there"]  # markdown and emoji are not read
    pieces = split_for_speech(("word " * 900).strip())  # no punctuation at all, 4499 characters
    assert all(len(piece) <= MAX_SEGMENT_CHARS for piece in pieces) and len(pieces) >= 15
    assert " ".join(pieces) == ("word " * 900).strip()
    clauses = split_for_speech(", ".join(["a clause of some words"] * 40) + ".")
    assert all(piece.endswith((",", ".")) for piece in clauses)


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "empty"), ("   \n ", "empty"), ("?!... --- !!!", "no letters or digits"), ("a" * 20_000, "too long")],
)
async def test_bad_text_is_refused_at_once(engine: TTSEngine, text: str, message: str) -> None:
    with pytest.raises(BadSettingError, match=message) as caught:
        engine.stream(text, TTSParams())
    assert caught.value.code == "bad_setting"
    assert engine.active_streams == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"exaggeration": 3.0}, "exaggeration must be between 0.25 and 2"),
        ({"cfg_weight": -0.1}, "cfg_weight must be between 0 and 1"),
        ({"temperature": 0.0}, "temperature must be between"),
        ({"temperature": float("nan")}, "temperature must be between"),
        ({"chunk_size": 0}, "chunk_size must be between 1 and 200"),
        ({"chunk_size": 2.5}, "chunk_size must be a whole number"),
        ({"exaggeration": "high"}, "exaggeration must be a number"),
        ({"voice": "../etc/passwd"}, "voice must be a voice name"),
        ({"seed": -1}, "seed must be"),
    ],
)
async def test_out_of_range_settings_are_refused(engine: TTSEngine, change: dict, message: str) -> None:
    params = TTSParams(**change)
    with pytest.raises(BadSettingError, match=message):
        params.validate()
    with pytest.raises(BadSettingError, match=message):
        engine.stream(TEXT, params)


async def test_unknown_voice(engine: TTSEngine) -> None:
    with pytest.raises(UnknownVoiceError, match="unknown voice 'carol'; available: default, alice, bob") as caught:
        engine.stream(TEXT, TTSParams(voice="carol"))
    assert caught.value.code == "unknown_voice"


def test_params_from_settings(tiny_checkpoint: Path, tmp_path: Path) -> None:
    settings = tts_settings(tiny_checkpoint, tmp_path, exaggeration=0.7, temperature=0.6, chunk_size=10)
    params = TTSParams.from_settings(settings, voice="alice")
    assert params == TTSParams(voice="alice", exaggeration=0.7, cfg_weight=0.5, temperature=0.6, chunk_size=10)
    params.validate()


def test_device_detection() -> None:
    assert detect_device("auto") in ("cuda", "mps", "cpu")
    assert detect_device("cpu") == "cpu"
    with pytest.raises(TTSError, match="unknown device"):
        detect_device("tpu")


async def test_add_voice_rejects_bad_recordings(engine: TTSEngine, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    cases = [
        (b"this is not audio at all", "not a readable audio file"),
        (wav_bytes(np.zeros(24000 * 3, dtype=np.int16)), "silent"),
        (wav_bytes((rng.standard_normal(24000 // 4) * 3000).astype(np.int16)), "too short"),
        (wav_bytes((rng.standard_normal(24000 * 61) * 3000).astype(np.int16)), "too long"),
    ]
    for data, message in cases:
        with pytest.raises(VoiceError, match=message):
            await asyncio.to_thread(engine.add_voice, "broken", data)
    with pytest.raises(BadSettingError, match="voice name"):
        engine.add_voice("no/slashes", b"")
    with pytest.raises(BadSettingError, match="voice name"):
        engine.add_voice("default", b"")
    assert "broken" not in engine.voices()


async def test_add_voice_then_speak_with_it(engine: TTSEngine, alice_wav: Path, voices_dir: Path) -> None:
    name = await asyncio.to_thread(engine.add_voice, "dave", alice_wav.read_bytes())
    try:
        assert name == "dave" and "dave" in engine.voices()
        assert (voices_dir / "dave.wav").exists()
        saved, rate = read_audio(voices_dir / "dave.wav")
        assert rate == 24000 and abs(len(saved) - len(read_audio(alice_wav)[0])) == 0
        dave = await collect(engine.stream(TEXT, TTSParams(voice="dave", seed=9)))
        default = await collect(engine.stream(TEXT, TTSParams(seed=9)))
        assert len(dave) > 0 and not np.array_equal(dave, default), "the new voice is used"
    finally:
        (voices_dir / "dave.wav").unlink()


async def test_a_broken_voice_file_fails_its_stream_only(engine: TTSEngine, voices_dir: Path) -> None:
    (voices_dir / "garbled.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    try:
        stream = engine.stream(TEXT, TTSParams(voice="garbled"))
        with pytest.raises(VoiceError, match="not a readable audio file"):
            await collect(stream)
        assert engine.active_streams == 0
        assert len(await collect(engine.stream(TEXT, TTSParams(seed=1)))) > 0  # the owner thread lives on
    finally:
        (voices_dir / "garbled.wav").unlink()


async def test_an_exception_inside_generation_reaches_the_consumer_as_tts_error(
    engine: TTSEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = engine._conditionals

    def failing(voice: str, exaggeration: float):
        if voice == "bob":
            raise RuntimeError("simulated model failure")
        return real(voice, exaggeration)

    monkeypatch.setattr(engine, "_conditionals", failing)
    with pytest.raises(TTSError, match="speech generation failed: simulated model failure"):
        await collect(engine.stream(TEXT, TTSParams(voice="bob")))
    assert len(await collect(engine.stream(TEXT, TTSParams(seed=1)))) > 0


async def test_close_ends_running_streams(chatterbox, tiny_checkpoint: Path, voices_dir: Path) -> None:
    other = TTSEngine(chatterbox, tts_settings(tiny_checkpoint, voices_dir))
    stream = other.stream(TEXT, TTSParams(seed=1, chunk_size=5))
    await anext(stream)
    await asyncio.to_thread(other.close)
    with pytest.raises(TTSError, match="shut down"):
        await collect(stream)
    with pytest.raises(TTSError, match="shut down"):
        other.stream(TEXT, TTSParams())
    other.close()  # idempotent
    assert [thread.name for thread in other._threads] == ["tts-owner", "tts-render-first", "tts-render-steady"]
    assert not any(thread.is_alive() for thread in other._threads), "no thread outlives close()"


async def test_decoding_and_first_chunks_go_on_while_a_steady_chunk_renders(
        chatterbox, tiny_checkpoint: Path, voices_dir: Path) -> None:
    """S3Gen renders on lanes of their own: with the steady lane held inside a render, T3 keeps decoding
    the held stream, and a newcomer's first chunk (the "first" lane) still arrives."""
    other = TTSEngine(chatterbox, tts_settings(tiny_checkpoint, voices_dir))
    steady = next(lane for lane in other._lanes if not lane.first)
    steady.renderer.render = held = Held(steady.renderer.render)
    inside, release = held.inside, held.release
    try:
        first = other.stream(TEXT, TTSParams(seed=1, chunk_size=5))
        await anext(first)  # its first chunk, from the first lane
        await asyncio.to_thread(inside.wait, 120)  # its second chunk is now held in the steady lane
        segment = first._job.segment
        decoded = len(segment.speech)
        newcomer = other.stream(TEXT, TTSParams(seed=2))
        assert len(await anext(newcomer)) > 0, "a first chunk does not wait for another stream's steady chunk"
        assert len(segment.speech) > decoded or segment.finished, "T3 went on decoding during the render"
        assert inside.is_set() and not release.is_set()
        release.set()
        assert len(await collect(first)) > 0 and len(await collect(newcomer)) > 0
    finally:
        release.set()
        await asyncio.to_thread(other.close)
    assert not any(thread.is_alive() for thread in other._threads)


async def test_a_render_failure_ends_its_streams_only(engine: TTSEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    first_lane = next(lane for lane in engine._lanes if lane.first)

    def failing(requests):
        raise RuntimeError("simulated render failure")

    monkeypatch.setattr(first_lane.renderer, "render", failing)
    with pytest.raises(TTSError, match="speech generation failed: simulated render failure"):
        await collect(engine.stream(TEXT, TTSParams(seed=1)))
    monkeypatch.undo()
    await wait_until(lambda: engine._decoder.active == [])  # the owner freed its decoder slot
    assert engine.active_streams == 0
    assert len(await collect(engine.stream(TEXT, TTSParams(seed=1)))) > 0


def test_load_detects_device_warms_up_and_logs(tiny_checkpoint: Path, voices_dir: Path, alice_wav: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="voicechat.tts.engine")
    settings = tts_settings(tiny_checkpoint, voices_dir, device="auto", tts_warmup=True, voice=alice_wav)
    engine = TTSEngine.load(settings)
    try:
        assert engine.device == "cpu"
        assert engine.voices() == ["default", "alice", "bob"]
        messages = " ".join(record.getMessage() for record in caplog.records)
        assert "Chatterbox loaded in" in messages and "warm-up took" in messages
        assert "voice 'default' prepared" in messages  # settings.voice became the default voice
    finally:
        engine.close()


def test_load_errors_are_plain(tmp_path: Path, voices_dir: Path) -> None:
    with pytest.raises(TTSError, match="does not exist"):
        TTSEngine.load(tts_settings(tmp_path / "missing", voices_dir))
    with pytest.raises(TTSError, match="no CUDA GPU"):
        TTSEngine.load(tts_settings(tmp_path, voices_dir, device="cuda"))


async def test_streams_beyond_capacity_are_refused_clearly(chatterbox, tiny_checkpoint: Path, voices_dir: Path) -> None:
    small = TTSEngine(chatterbox, tts_settings(tiny_checkpoint, voices_dir, tts_max_streams=1))
    try:
        assert small.max_streams == 1 and not small.full and small.utilization == 0.0
        first = small.stream(TEXT, TTSParams(seed=1))
        assert small.full and small.utilization == 1.0
        with pytest.raises(EngineFullError, match="busy with 1 streams") as caught:
            small.stream(TEXT, TTSParams(seed=2))
        assert caught.value.code == "tts_busy"
        assert len(await collect(first)) > 0  # the admitted stream is not degraded
        assert not small.full
        assert len(await collect(small.stream(TEXT, TTSParams(seed=2)))) > 0
    finally:
        small.close()


def test_default_capacity_per_device(chatterbox, tiny_checkpoint: Path, voices_dir: Path) -> None:
    engine = TTSEngine(chatterbox, tts_settings(tiny_checkpoint, voices_dir))
    try:
        assert engine.max_streams == DEFAULT_MAX_STREAMS["cpu"]
    finally:
        engine.close()


async def test_preparing_an_uploaded_voice_does_not_stop_other_streams(
        engine: TTSEngine, alice_wav: Path, voices_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """add_voice computes the conditionals on its caller's thread: while it is held inside the
    preparation, another conversation's stream is spoken to its end."""
    held = Held(engine._prepare_voice)
    inside, release = held.inside, held.release
    monkeypatch.setattr(engine, "_prepare_voice", held)
    upload = asyncio.create_task(asyncio.to_thread(engine.add_voice, "erin", alice_wav.read_bytes()))
    try:
        await asyncio.to_thread(inside.wait, 120)
        assert len(await collect(engine.stream(TEXT, TTSParams(seed=1)))) > 0
        assert not upload.done(), "the preparation was still held while the other stream spoke"
        release.set()
        assert await upload == "erin"
        assert len(await collect(engine.stream(TEXT, TTSParams(voice="erin", seed=1)))) > 0
    finally:
        release.set()
        await asyncio.gather(upload, return_exceptions=True)
        (voices_dir / "erin.wav").unlink(missing_ok=True)


async def test_busy_until_a_cancelled_streams_render_has_ended(engine: TTSEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    """``busy`` (benchmarks wait on it between rows) stays true while a lane still renders a chunk of a
    stream cancelled mid-render, and turns false once that render has ended."""
    first_lane = next(lane for lane in engine._lanes if lane.first)
    held = Held(first_lane.renderer.render)
    inside, release = held.inside, held.release
    await wait_until(lambda: not engine.busy)
    monkeypatch.setattr(first_lane.renderer, "render", held)
    stream = engine.stream(TEXT, TTSParams(seed=1))
    try:
        assert engine.busy
        await asyncio.to_thread(inside.wait, 120)  # its first chunk is inside the render
        stream.cancel()
        await wait_until(lambda: engine.active_streams == 0 and engine._decoder.active == [])
        assert engine.busy, "the held render has not ended"
    finally:
        release.set()
    await wait_until(lambda: not engine.busy)


async def test_while_the_first_lane_renders_an_idle_steady_lane_takes_newcomers_first_chunks(
        chatterbox, tiny_checkpoint: Path, voices_dir: Path) -> None:
    """Streams starting together do not queue behind one first-lane batch: with the first lane held
    inside a render, a newcomer's first chunk is rendered by the idle steady lane, and it is the same
    chunk it would be on the first lane (boundaries depend on the tokens alone)."""
    other = TTSEngine(chatterbox, tts_settings(tiny_checkpoint, voices_dir))
    first_lane = next(lane for lane in other._lanes if lane.first)
    held = Held(first_lane.renderer.render)
    inside, release = held.inside, held.release
    try:
        alone = await anext(other.stream(TEXT, TTSParams(seed=2)))  # reference: rendered on the first lane
        await wait_until(lambda: not other.busy)
        first_lane.renderer.render = held
        held_stream = other.stream(TEXT, TTSParams(seed=1))
        await asyncio.to_thread(inside.wait, 120)  # its first chunk is held in the first lane
        newcomer = other.stream(TEXT, TTSParams(seed=2))
        chunk = await anext(newcomer)
        assert not release.is_set(), "the newcomer's first chunk came while the first lane was held"
        assert np.array_equal(chunk, alone)
        release.set()
        assert len(await collect(held_stream)) > 0 and len(await collect(newcomer)) > 0
    finally:
        release.set()
        await asyncio.to_thread(other.close)
