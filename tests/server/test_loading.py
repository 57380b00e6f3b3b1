"""Model loading progress: the cache watcher's bytes and stages, and the `loading` messages a waiting
conversation receives until the models are ready."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from voicechat.loading import LoadProgress, report_until_ready, whisper_repo


def test_a_download_is_reported_with_its_bytes_then_ready(tmp_path: Path) -> None:
    progress = LoadProgress()
    progress.pre_register("Chatterbox voice")
    blobs = tmp_path / "blobs"
    blobs.mkdir()

    def fake_from_pretrained() -> str:
        (blobs / "aaaa.incomplete").write_bytes(b"x" * 3000)  # what huggingface_hub writes meanwhile
        assert progress.wait_for(lambda models: models[0]["stage"] == "downloading", timeout=10)
        (blobs / "aaaa.incomplete").rename(blobs / "aaaa")
        assert progress.wait_for(lambda models: models[0]["stage"] == "loading", timeout=10)
        return "model"

    assert progress.snapshot() == [
        {"name": "Chatterbox voice", "stage": "waiting", "bytes_done": None, "bytes_total": None}
    ]
    assert progress.run("Chatterbox voice", tmp_path, fake_from_pretrained) == "model"
    (model,) = progress.snapshot()
    assert model["stage"] == "ready" and model["bytes_done"] == 3000


def test_a_failed_load_is_reported_and_raised() -> None:
    progress = LoadProgress()

    def broken() -> None:
        raise RuntimeError("no weights")

    with pytest.raises(RuntimeError):
        progress.run("Whisper speech recognition", None, broken)
    assert progress.snapshot()[0]["stage"] == "failed"


def test_whisper_repo_names_the_hub_repository_or_none_for_a_folder(tmp_path: Path) -> None:
    assert whisper_repo(str(tmp_path)) is None
    assert whisper_repo("someone/whisper-ct2") == "someone/whisper-ct2"
    assert whisper_repo("tiny.en") == "Systran/faster-whisper-tiny.en"


async def test_a_waiting_conversation_gets_each_change_until_ready() -> None:
    progress = LoadProgress()
    progress.pre_register("Chatterbox voice", "Whisper speech recognition")
    ready = asyncio.Event()
    sent: list[dict] = []
    changes = asyncio.Queue()

    async def send_text(text: str) -> None:
        sent.append(json.loads(text))
        await changes.put(None)

    reporter = asyncio.create_task(report_until_ready(send_text, progress, ready))
    await changes.get()
    progress.update("Chatterbox voice", stage="downloading", bytes_done=10, bytes_total=100)
    await changes.get()
    ready.set()
    await reporter
    assert [m["type"] for m in sent] == ["loading", "loading"]
    assert sent[0]["models"][0]["stage"] == "waiting"
    assert sent[1]["models"][0] == {
        "name": "Chatterbox voice", "stage": "downloading", "bytes_done": 10, "bytes_total": 100
    }
