"""Finding, downloading and loading the local provider's model, like the app's other models.

``VOICECHAT_MODEL`` names a Hugging Face hub id (downloaded into the hub cache with a progress bar, as
Chatterbox and Whisper are) or a local directory. Every failure is one plain sentence
(:class:`~voicechat.llm.errors.LLMModelNotFound`), never a traceback.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voicechat.llm.errors import LLMModelNotFound

log = logging.getLogger(__name__)

# What a transformers model directory needs; weights in safetensors (the hub's Qwen2.5 repos have them).
HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model"]


@dataclass
class LoadedModel:
    model: Any  # a transformers causal LM, in eval mode, on ``device``
    tokenizer: Any
    device: str
    context_tokens: int  # the longest prompt plus reply the model takes
    eos_ids: set[int]
    top_k: int | None
    top_p: float | None


def is_local_path(source: str) -> bool:
    """Whether ``source`` means a directory rather than a hub id (``org/name``)."""
    return source.startswith(("/", ".", "~")) or source.count("/") != 1 or "\\" in source


def hub_repo(source: str) -> str | None:
    """The hub repository ``source`` is fetched from, or None for a local directory."""
    return None if is_local_path(source) or Path(source).expanduser().is_dir() else source


def model_dir(source: str) -> Path:
    """The directory of the model ``source``: a local one, checked, or the hub's copy, downloaded first
    when it is missing (tqdm progress on the console; the page watches the cache folder grow)."""
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise LLMModelNotFound(f"VOICECHAT_MODEL={source} is a directory without a model (no config.json).")
        return path
    if is_local_path(source):
        raise LLMModelNotFound(f"VOICECHAT_MODEL={source} is not a directory; name a model directory or a hub id.")
    from huggingface_hub import constants, snapshot_download

    try:
        return Path(snapshot_download(repo_id=source, allow_patterns=HUB_FILES))
    except Exception as error:  # noqa: BLE001 - hub, network and disk failures: one sentence for the user
        offline = " (HF_HUB_OFFLINE is set)" if constants.HF_HUB_OFFLINE else ""
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0].rstrip(".")
        raise LLMModelNotFound(
            f"the language model {source} is not on this machine and cannot be downloaded{offline} "
            f"({type(error).__name__}: {first_line}); run `voicechat download-models` with internet, "
            "or set VOICECHAT_MODEL to a local model directory."
        ) from None


def load_model(source: str, device: str) -> LoadedModel:
    """Download if needed, then load the tokenizer and model onto ``device`` (blocking, seconds)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    folder = model_dir(source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=dtype).to(device).eval()
    except (OSError, ValueError, KeyError) as error:  # a broken or foreign directory
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0].rstrip(".")
        raise LLMModelNotFound(f"cannot load the language model from {folder}: {first_line}.") from None
    if not getattr(tokenizer, "chat_template", None):
        raise LLMModelNotFound(f"the model in {folder} has no chat template; use an instruct (chat) model.")
    try:
        generation = GenerationConfig.from_pretrained(folder)
    except OSError:
        generation = model.generation_config
    eos = generation.eos_token_id if generation.eos_token_id is not None else tokenizer.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos]) | {tokenizer.eos_token_id}
    context = getattr(model.config, "max_position_embeddings", None) or tokenizer.model_max_length
    log.info("language model %s loaded on %s (context %d tokens)", source, device, context)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        device=device,
        context_tokens=int(context),
        eos_ids={token for token in eos_ids if token is not None},
        top_k=generation.top_k if generation.do_sample else None,
        top_p=generation.top_p if generation.do_sample else None,
    )
