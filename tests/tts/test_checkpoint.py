"""Random-weight checkpoints: the real architecture, loaded by the real from_local, finite seeded speech ids."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from voicechat.tts.checkpoint import (
    CHECKPOINT_FILES,
    CheckpointError,
    ensure_checkpoint,
    load_chatterbox,
    read_manifest,
    variant_classes,
)


def test_tiny_checkpoint_is_a_chatterbox_directory_with_a_manifest(tiny_checkpoint: Path) -> None:
    for name in CHECKPOINT_FILES:
        assert (tiny_checkpoint / name).stat().st_size > 0, name
    manifest = json.loads((tiny_checkpoint / "manifest.json").read_text())
    assert manifest["variant"] == "tiny" and manifest["seed"] == 0
    assert "noise, not speech" in manifest["note"]
    # No half-built copies left beside it.
    assert not list(tiny_checkpoint.parent.glob(".*building*"))


def test_loads_through_the_real_from_local_with_the_shrunk_architecture(chatterbox) -> None:
    from chatterbox.tts import ChatterboxTTS

    assert isinstance(chatterbox, ChatterboxTTS)
    config = chatterbox.t3.cfg
    assert config.hidden_size == 1024 and config.num_hidden_layers == 10 and config.num_attention_heads == 2
    t3_params = sum(p.numel() for p in chatterbox.t3.parameters())
    s3gen_params = sum(p.numel() for p in chatterbox.s3gen.parameters())
    assert t3_params < 60e6 and s3gen_params < 40e6  # the real ones: 532M and 264M
    assert chatterbox.conds is not None  # the built-in voice (conds.pt)


def test_loading_restores_the_real_classes(chatterbox) -> None:
    from chatterbox.models.s3gen import s3gen as s3gen_module
    from chatterbox.models.s3tokenizer.s3tokenizer import S3Tokenizer
    from chatterbox.models.t3.modules.t3_config import T3Config

    assert T3Config.llama_config_name == "Llama_520M"
    assert s3gen_module.S3Tokenizer is S3Tokenizer
    with variant_classes("tiny"):
        assert T3Config.llama_config_name != "Llama_520M"
        assert s3gen_module.S3Tokenizer is not S3Tokenizer
    with variant_classes("full"):  # a real checkpoint: nothing substituted
        assert T3Config.llama_config_name == "Llama_520M"
        assert s3gen_module.S3Tokenizer is S3Tokenizer
    assert s3gen_module.S3Tokenizer is S3Tokenizer


def test_a_directory_without_manifest_loads_as_the_real_architecture(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """A real Chatterbox directory has no manifest and must load unchanged: so tiny weights without
    their manifest do not fit the real architecture (from_local loads state dicts strictly)."""
    plain = tmp_path / "plain"
    plain.mkdir()
    for name in ("ve.pt", "tokenizer.json", "conds.pt"):
        shutil.copy(tiny_checkpoint / name, plain / name)
    assert read_manifest(plain) is None
    with pytest.raises(CheckpointError, match="missing t3_cfg.pt, s3gen.pt"):
        load_chatterbox(plain, "cpu")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_chatterbox(tmp_path / "nowhere", "cpu")


def test_unknown_variant_in_a_manifest_is_refused(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"variant": "huge", "seed": 0}))
    with pytest.raises(CheckpointError, match="no known variant"):
        read_manifest(tmp_path)


def test_ensure_checkpoint_reuses_and_never_overwrites(tiny_checkpoint: Path, tmp_path: Path) -> None:
    before = (tiny_checkpoint / "t3_cfg.pt").stat().st_mtime_ns
    assert ensure_checkpoint(tiny_checkpoint, variant="tiny", seed=0) == tiny_checkpoint
    assert (tiny_checkpoint / "t3_cfg.pt").stat().st_mtime_ns == before
    with pytest.raises(CheckpointError, match="seed 1"):
        ensure_checkpoint(tiny_checkpoint, variant="tiny", seed=1)
    foreign = tmp_path / "real-model"
    foreign.mkdir()
    with pytest.raises(CheckpointError, match="no manifest"):
        ensure_checkpoint(foreign, variant="tiny", seed=0)


def _speech_tokens(chatterbox, seed: int, temperature: float = 0.8) -> list[int]:
    conds = chatterbox.conds
    text = chatterbox.tokenizer.text_to_tokens("Hello there, this is a test.")
    text = torch.nn.functional.pad(torch.cat([text, text]), (1, 0), value=chatterbox.t3.hp.start_text_token)
    text = torch.nn.functional.pad(text, (0, 1), value=chatterbox.t3.hp.stop_text_token)
    torch.manual_seed(seed)
    with torch.inference_mode():
        chunks = list(chatterbox.inference_stream(t3_cond=conds.t3, text_tokens=text, temperature=temperature,
                                                  chunk_size=25))
    return torch.cat(chunks, dim=1)[0].tolist()


def test_random_t3_emits_only_speech_ids_and_stops_after_a_finite_seeded_length(chatterbox) -> None:
    lengths = []
    for seed in range(4):
        tokens = _speech_tokens(chatterbox, seed)
        assert tokens[-1] == 6562, "every utterance ends with the stop token"
        assert all(0 <= token < 6561 for token in tokens[:-1]), "only valid speech ids"
        lengths.append(len(tokens))
    assert all(20 <= length <= 150 for length in lengths), lengths  # about 1-6 s of audio
    assert len(set(lengths)) > 1, "lengths vary with the seed"
    assert _speech_tokens(chatterbox, 2) == _speech_tokens(chatterbox, 2), "same seed, same tokens"
    # Far from the reference temperature the stop still comes, well before the 1000-token cap.
    assert len(_speech_tokens(chatterbox, 0, temperature=2.0)) < 400
