"""`voicechat download-models`: fetch the configured models ahead of time, with progress.

What `voicechat serve` would otherwise download on its first start: the Chatterbox files (into the
Hugging Face cache, exactly where ``ChatterboxTTS.from_pretrained`` looks for them) and the
faster-whisper model, and with the ``local`` LLM provider (the default) its model. A setting that names a
local directory is checked instead of downloaded. ``--ollama`` also pulls the LLM (``VOICECHAT_MODEL``) on the Ollama server. Silero VAD and Smart Turn
ship inside the pipecat-ai wheel: nothing to fetch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from voicechat.config import Settings, load_settings

# What ChatterboxTTS.from_pretrained downloads (chatterbox/tts.py); tests check these against it.
CHATTERBOX_REPO = "ResembleAI/chatterbox"
CHATTERBOX_FILES = ("ve.pt", "t3_cfg.pt", "s3gen.pt", "tokenizer.json", "conds.pt")
CHATTERBOX_OPTIONAL = {"conds.pt"}  # the built-in voice; without it every session needs a reference WAV
WHISPER_FILES = ("model.bin", "config.json")  # the least a CTranslate2 Whisper directory has


class DownloadError(Exception):
    """A model could not be fetched or checked; the message says what to do about it."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ollama",
        action="store_true",
        help="also pull VOICECHAT_MODEL on the Ollama server (VOICECHAT_BASE_URL)",
    )


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    steps: list[tuple[str, Callable[[Settings], str]]] = [
        ("Chatterbox", fetch_chatterbox),
        ("faster-whisper", fetch_whisper),
    ]
    if settings.provider == "local":
        steps.append(("language model", fetch_local_llm))
    if args.ollama:
        steps.append(("Ollama", pull_ollama_model))
    failed = 0
    for name, step in steps:
        print(f"== {name}", flush=True)
        try:
            print(f"{name}: {step(settings)}", flush=True)
        except DownloadError as error:
            failed += 1
            print(f"{name}: ERROR: {error}", file=sys.stderr, flush=True)
    print("all models are in place" if not failed else f"{failed} of {len(steps)} failed", flush=True)
    return 1 if failed else 0


def fetch_chatterbox(settings: Settings) -> str:
    if settings.checkpoint is not None:
        folder = _check_local_dir(Path(settings.checkpoint), CHATTERBOX_FILES, "VOICECHAT_CHECKPOINT")
        note = "" if (folder / "conds.pt").exists() else " (no conds.pt: set VOICECHAT_VOICE to a reference WAV)"
        return f"local checkpoint {folder}, nothing to download{note}"

    from huggingface_hub import hf_hub_download

    paths = []
    for filename in CHATTERBOX_FILES:
        try:
            paths.append(Path(hf_hub_download(repo_id=CHATTERBOX_REPO, filename=filename)))
        except OSError as error:  # every hub, network and disk failure (hub errors are OSErrors too)
            raise DownloadError(
                f"cannot fetch {filename} from the Hugging Face repo {CHATTERBOX_REPO}: {_hub_reason(error)}. "
                f"Without internet, copy the model files ({', '.join(CHATTERBOX_FILES)}) into a directory "
                "and set VOICECHAT_CHECKPOINT to it."
            ) from None
    return f"{CHATTERBOX_REPO} in {paths[0].parent} ({_size(paths)})"


def fetch_whisper(settings: Settings) -> str:
    if Path(settings.stt_model).is_dir():
        folder = _check_local_dir(Path(settings.stt_model), WHISPER_FILES, "VOICECHAT_STT_MODEL")
        return f"local model {folder}, nothing to download"

    from faster_whisper.utils import download_model

    try:
        folder = Path(download_model(settings.stt_model))
    except OSError as error:  # every hub, network and disk failure (hub errors are OSErrors too)
        raise DownloadError(
            f"cannot fetch the faster-whisper model {settings.stt_model!r} from the Hugging Face hub: "
            f"{_hub_reason(error)}. Without internet, copy a CTranslate2 Whisper model directory onto this "
            "machine and set VOICECHAT_STT_MODEL to its path."
        ) from None
    except ValueError as error:  # an unknown model name: faster-whisper lists the valid ones
        raise DownloadError(f"VOICECHAT_STT_MODEL={settings.stt_model!r}: {error}") from None
    return f"{settings.stt_model} in {folder} ({_size(list(folder.iterdir()))})"


def fetch_local_llm(settings: Settings) -> str:
    """The local provider's model (VOICECHAT_MODEL, or the default for this machine's device)."""
    from voicechat.llm import LLMError
    from voicechat.llm.local_model import hub_repo, model_dir

    source = settings.llm_model()
    try:
        folder = model_dir(source)
    except LLMError as error:
        raise DownloadError(str(error)) from None
    if hub_repo(source) is None:
        return f"local model {folder.resolve()}, nothing to download"
    return f"{source} in {folder} ({_size(list(folder.iterdir()))})"


def pull_ollama_model(settings: Settings) -> str:
    if settings.provider != "ollama":
        raise DownloadError(f"--ollama needs VOICECHAT_PROVIDER=ollama (it is {settings.provider})")

    import ollama

    from voicechat.llm.ollama import DEFAULT_URL

    url = (settings.base_url or DEFAULT_URL).rstrip("/")
    headers = {"Authorization": f"Bearer {key}"} if (key := settings.effective_api_key()) else None
    try:
        with ollama.Client(host=url, headers=headers) as client:
            _show_pull(client.pull(settings.llm_model(), stream=True))
    except ollama.ResponseError as error:
        raise DownloadError(f"Ollama at {url} could not pull {settings.llm_model()!r}: {error.error}") from None
    except Exception as error:  # noqa: BLE001 - connection refused, DNS, timeouts
        raise DownloadError(f"cannot reach Ollama at {url} (VOICECHAT_BASE_URL): {_reason(error)}") from None
    return f"{settings.llm_model()} is on {url}"


def _show_pull(progress_stream: Iterable) -> None:
    """Ollama's pull progress: status lines, and a byte bar for each layer it downloads."""
    from tqdm import tqdm

    bar: tqdm | None = None
    status = ""
    try:
        for progress in progress_stream:
            if progress.digest and progress.total:
                if bar is None or bar.desc != progress.digest[:19]:
                    if bar is not None:
                        bar.close()
                    bar = tqdm(total=progress.total, unit="B", unit_scale=True, desc=progress.digest[:19])
                bar.update((progress.completed or 0) - bar.n)
            elif progress.status and progress.status != status:
                status = progress.status
                print(f"  {status}", flush=True)
    finally:
        if bar is not None:
            bar.close()


def _check_local_dir(folder: Path, files: tuple[str, ...], setting: str) -> Path:
    if not folder.is_dir():
        raise DownloadError(f"{setting}={folder} is not a directory")
    missing = [name for name in files if name not in CHATTERBOX_OPTIONAL and not (folder / name).is_file()]
    if missing:
        raise DownloadError(f"{setting}={folder} lacks {', '.join(missing)}")
    return folder.resolve()


def _reason(error: BaseException) -> str:
    """The first line of an exception, with its type: hub errors run to several paragraphs."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0].rstrip('.')}" if lines else type(error).__name__


def _hub_reason(error: BaseException) -> str:
    from huggingface_hub import constants

    return _reason(error) + (" (HF_HUB_OFFLINE is set)" if constants.HF_HUB_OFFLINE else "")


def _size(paths: list[Path]) -> str:
    total = sum(path.stat().st_size for path in paths if path.is_file())
    return f"{total / 1e9:.2f} GB" if total >= 1e8 else f"{total / 1e6:.1f} MB"
