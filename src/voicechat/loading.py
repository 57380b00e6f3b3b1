"""Model loading progress, for the page's start-up screen: which model, at what stage, how many bytes.

The loaders themselves (Chatterbox's ``from_pretrained``, faster-whisper) download from the Hugging
Face hub with their own progress bars on the console; what the page sees comes from watching the
hub cache folder of the model grow (a file still downloading ends in ``.incomplete``), so no loader
needs a hook. A model loaded from a local directory goes straight to "loading".
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from voicechat import protocol as p

log = logging.getLogger(__name__)

T = TypeVar("T")
WATCH_INTERVAL_S = 0.5  # how often the cache folder is measured while a model downloads
REPORT_INTERVAL_S = 0.5  # how often a waiting conversation is sent the progress, when it changed


@dataclass
class ModelProgress:
    name: str
    stage: str = "waiting"  # waiting | downloading | loading | ready | failed
    bytes_done: int | None = None
    bytes_total: int | None = None


class LoadProgress:
    """Thread-safe progress of every model the server loads; `version` counts the changes."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._models: dict[str, ModelProgress] = {}
        self.version = 0

    def update(self, name: str, **fields: Any) -> None:
        with self._changed:
            model = self._models.setdefault(name, ModelProgress(name))
            for key, value in fields.items():
                setattr(model, key, value)
            self.version += 1
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float) -> bool:
        """Block until `predicate(snapshot)` holds (True) or `timeout` passes (False)."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self._snapshot()), timeout)

    def snapshot(self) -> list[dict[str, Any]]:
        with self._changed:
            return self._snapshot()

    def _snapshot(self) -> list[dict[str, Any]]:
        return [asdict(model) for model in self._models.values()]

    def run(self, name: str, hub_folder: Path | None, load: Callable[..., T], *args: Any) -> T:
        """Call ``load(*args)`` (blocking), reporting it as `name`; while it runs, watch `hub_folder`
        (the model's folder in the hub cache, None for a local directory) for download progress."""
        self.update(name, stage="loading")
        stop = threading.Event()
        watcher = None
        if hub_folder is not None:
            watcher = threading.Thread(target=self._watch, args=(name, hub_folder, stop), daemon=True)
            watcher.start()
        try:
            result = load(*args)
        except BaseException:
            self.update(name, stage="failed")
            raise
        finally:
            stop.set()
            if watcher is not None:
                watcher.join()
        self.update(name, stage="ready")
        return result

    def _watch(self, name: str, folder: Path, stop: threading.Event) -> None:
        while not stop.wait(WATCH_INTERVAL_S):
            try:
                files = [path for path in (folder / "blobs").iterdir() if path.is_file()]
                done = sum(path.stat().st_size for path in files)
            except OSError:
                continue  # not created yet, or a file renamed under us: measure again next time
            downloading = any(path.name.endswith(".incomplete") for path in files)
            self.update(name, stage="downloading" if downloading else "loading", bytes_done=done)

    def pre_register(self, *names: str) -> None:
        for name in names:
            self.update(name)


def hub_cache_folder(repo_id: str) -> Path:
    """Where huggingface_hub keeps a model repository (its ``blobs`` hold the downloaded files)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"


def whisper_repo(model: str) -> str | None:
    """The hub repository faster-whisper downloads `model` from, or None for a local directory."""
    if Path(model).expanduser().is_dir():
        return None
    if "/" in model:
        return model
    from faster_whisper import utils

    return getattr(utils, "_MODELS", {}).get(model)


async def report_until_ready(
    send_text: Callable[[str], Awaitable[None]], progress: LoadProgress, ready: asyncio.Event
) -> None:
    """Send a waiting conversation the `loading` message whenever the progress changed, until ready."""
    sent = -1
    while not ready.is_set():
        if progress.version != sent:
            sent = progress.version
            await send_text(p.encode(p.Loading(models=progress.snapshot())))
        try:
            await asyncio.wait_for(ready.wait(), REPORT_INTERVAL_S)
        except TimeoutError:
            pass
