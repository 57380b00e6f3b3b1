"""Random-weight Chatterbox checkpoints of the real architecture, and the one loader for any checkpoint.

A built checkpoint is a directory that the real ``ChatterboxTTS.from_local`` loads (ve.pt, t3_cfg.pt,
s3gen.pt, tokenizer.json, conds.pt) plus ``manifest.json`` naming its variant and seed. Its weights are
random: it produces NOISE, NOT SPEECH. It exists so that tests and benchmarks run the real code paths
(and, for ``full``, the real amount of computation) without downloading the real model.

Two variants:
- ``full``: the real architecture at real size (T3 532M, S3Gen 264M parameters).
- ``tiny``: T3 keeps hidden size 1024 (the Perceiver is fixed at 1024) and 10 layers (layer 9 is
  hard-coded for the alignment analyzer) with few heads and a small MLP; S3Gen has no config, so the
  classes it constructs are replaced by smaller ones while building and loading (:func:`variant_classes`).

A random T3 would sample ids outside the speech vocabulary (S3Gen then fails) and never stop. So T3's
weights are shaped (:func:`_shape_t3`): residual dimension ``_CONST_DIM`` carries a large constant at
every speech position and dimension ``_RAMP_DIM`` the position index; no layer writes to either. After
the final RMSNorm they are fixed values, and the speech head's columns for them set fixed logit
offsets: invalid ids are ruled out, and the stop token's logit rises with the position, so every
utterance ends after a finite, seeded number of tokens (about 50-75 at the default temperature).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from chatterbox.tts import ChatterboxTTS

Variant = Literal["tiny", "full"]
VARIANTS: tuple[str, ...] = ("tiny", "full")
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "voicechat-random-chatterbox"
CHECKPOINT_FILES = ("ve.pt", "t3_cfg.pt", "s3gen.pt", "tokenizer.json", "conds.pt")

# Speech vocabulary of Chatterbox: ids below 6561 are speech, 6561 is start, 6562 is stop.
_SPEECH_VOCAB = 6561
_STOP_SPEECH = 6562

# T3 weight shaping (see the module docstring).
_CONST_DIM, _RAMP_DIM = 0, 1
_CONST = 1000.0  # dominates the residual's RMS, so RMSNorm turns it into ~sqrt(hidden)
_RAMP_PER_POSITION = 0.1  # kept small next to _CONST so the RMS stays put
_FORBIDDEN_LOGIT = -1.0e4
# Stop-token hazard at the default temperature: P(stop at step i) ~ sigmoid((i - _STOP_CENTER) / _STOP_WIDTH).
_REFERENCE_TEMPERATURE = 0.8
_STOP_CENTER, _STOP_WIDTH = 75.0, 6.0

_TINY_LLAMA = "Llama_voicechat_tiny"
_TINY_LLAMA_OVERRIDES = dict(num_hidden_layers=10, num_attention_heads=2, num_key_value_heads=2,
                             head_dim=64, intermediate_size=256)

_patch_lock = threading.RLock()


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be built or loaded, with the reason in plain words."""


# --- Variants -------------------------------------------------------------------------------------


def _with_defaults(factory, **overrides):
    """``factory`` with some keyword arguments forced: used to shrink the classes S3Gen constructs."""

    @functools.wraps(factory)
    def build(*args, **kwargs):
        return factory(*args, **{**kwargs, **overrides})

    return build


def _tiny_s3gen_classes() -> dict[str, object]:
    from chatterbox.models.s3gen import s3gen as s3gen_module
    from chatterbox.models.s3tokenizer.s3tokenizer import S3Tokenizer
    from s3tokenizer.model_v2 import ModelConfig, S3TokenizerV2

    class TinyS3Tokenizer(S3Tokenizer):
        """The S3 speech tokenizer with one small encoder layer (head size 64 is fixed by its RoPE)."""

        def __init__(self, name: str = "speech_tokenizer_v2_25hz", config: ModelConfig | None = None):
            small = ModelConfig(n_audio_state=128, n_audio_head=2, n_audio_layer=1)
            S3TokenizerV2.__init__(self, name, small)
            # The buffers S3Tokenizer.__init__ registers, for the small config.
            import librosa
            import torch

            self.n_fft = 400
            mel = librosa.filters.mel(sr=16_000, n_fft=self.n_fft, n_mels=small.n_mels)
            self.register_buffer("_mel_filters", torch.FloatTensor(mel))
            self.register_buffer("window", torch.hann_window(self.n_fft))

    m = s3gen_module
    return {
        "S3Tokenizer": TinyS3Tokenizer,
        "CAMPPlus": _with_defaults(m.CAMPPlus, growth_rate=8, bn_size=2, init_channels=32),
        # Input/output stay 512: its pre-lookahead and upsampling layers are hard-coded to 512.
        "UpsampleConformerEncoder": _with_defaults(
            m.UpsampleConformerEncoder, attention_heads=2, linear_units=256, num_blocks=1
        ),
        "ConditionalDecoder": _with_defaults(
            m.ConditionalDecoder, channels=[64], attention_head_dim=32, num_heads=2, n_blocks=1, num_mid_blocks=1
        ),
        "HiFTGenerator": _with_defaults(m.HiFTGenerator, base_channels=64),
        "ConvRNNF0Predictor": _with_defaults(m.ConvRNNF0Predictor, cond_channels=64),
    }


@contextlib.contextmanager
def variant_classes(variant: str) -> Iterator[None]:
    """While active, ``T3()`` and ``S3Gen()`` construct the given variant (``full``: unchanged)."""
    if variant not in VARIANTS:
        raise CheckpointError(f"unknown checkpoint variant {variant!r} (expected one of {', '.join(VARIANTS)})")
    from chatterbox.models.s3gen import s3gen as s3gen_module
    from chatterbox.models.t3.llama_configs import LLAMA_CONFIGS
    from chatterbox.models.t3.modules.t3_config import T3Config

    with _patch_lock:
        if variant == "full":
            yield
            return
        LLAMA_CONFIGS.setdefault(_TINY_LLAMA, {**LLAMA_CONFIGS["Llama_520M"], **_TINY_LLAMA_OVERRIDES})
        saved_config_name = T3Config.llama_config_name
        replacements = _tiny_s3gen_classes()
        saved_classes = {name: getattr(s3gen_module, name) for name in replacements}
        T3Config.llama_config_name = _TINY_LLAMA
        for name, replacement in replacements.items():
            setattr(s3gen_module, name, replacement)
        try:
            yield
        finally:
            T3Config.llama_config_name = saved_config_name
            for name, original in saved_classes.items():
                setattr(s3gen_module, name, original)


# --- Manifest -------------------------------------------------------------------------------------


def read_manifest(ckpt_dir: Path) -> dict | None:
    """The manifest of a built checkpoint, or None for a directory without one (a real checkpoint)."""
    path = Path(ckpt_dir) / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path} is not a readable manifest: {error}") from error
    if not isinstance(manifest, dict) or manifest.get("variant") not in VARIANTS:
        raise CheckpointError(f"{path} names no known variant (expected one of {', '.join(VARIANTS)})")
    return manifest


# --- Building -------------------------------------------------------------------------------------


def _shape_t3(t3) -> None:
    """Make a random T3 emit only valid speech ids and stop after a finite, seeded number of tokens."""
    import torch

    hidden = t3.cfg.hidden_size
    h_const = math.sqrt(hidden)  # the constant dimension after RMSNorm (it dominates the RMS)
    with torch.no_grad():
        t3.speech_emb.weight[:, _CONST_DIM] = _CONST
        t3.speech_emb.weight[:, _RAMP_DIM] = 0.0
        positions = t3.speech_pos_emb.emb.weight
        positions[:, _CONST_DIM] = 0.0
        positions[:, _RAMP_DIM] = _RAMP_PER_POSITION * torch.arange(positions.shape[0], dtype=positions.dtype)
        for layer in t3.tfmr.layers:  # no layer writes to the two carrier dimensions
            for weight in (layer.self_attn.o_proj.weight, layer.mlp.down_proj.weight):
                weight[[_CONST_DIM, _RAMP_DIM], :] = 0.0
        t3.tfmr.norm.weight.fill_(1.0)

        head = t3.speech_head.weight  # (vocab, hidden)
        head[:, [_CONST_DIM, _RAMP_DIM]] = 0.0
        head[_SPEECH_VOCAB:, _CONST_DIM] = _FORBIDDEN_LOGIT / h_const
        # Stop logit at step i: T * (log(n) + (i - center) / width), n ~ the speech ids top-p keeps.
        temperature = _REFERENCE_TEMPERATURE
        kept = 0.8 * _SPEECH_VOCAB
        head[_STOP_SPEECH, _CONST_DIM] = temperature * (math.log(kept) - _STOP_CENTER / _STOP_WIDTH) / h_const
        h_ramp_per_position = _RAMP_PER_POSITION * h_const / _CONST
        head[_STOP_SPEECH, _RAMP_DIM] = temperature / _STOP_WIDTH / h_ramp_per_position


def _tokenizer_json() -> str:
    """A character-level Hugging Face tokenizer with Chatterbox's special tokens, all ids < 704."""
    specials = ["[STOP]", "[UNK]", "[SPACE]", "[PAD]", "[SEP]", "[CLS]", "[MASK]"]
    vocab = {token: index for index, token in enumerate(specials)}
    for char in "".join(chr(code) for code in range(33, 127)) + "àâäçéèêëîïôöùûüñß’“”—–…":
        vocab.setdefault(char, len(vocab))
    vocab["[START]"] = 255
    assert max(vocab.values()) < 704
    added = [
        {"id": vocab[token], "content": token, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for token in [*specials, "[START]"]
    ]
    return json.dumps({
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": None,
        "post_processor": None,
        "decoder": None,
        "model": {"type": "BPE", "dropout": None, "unk_token": "[UNK]", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "vocab": vocab,
                  "merges": []},
    })


def _reference_voice(path: Path, seed: int, seconds: float = 3.0, rate: int = 24_000) -> None:
    """A seeded voice-like signal (harmonics with vibrato and syllable-rate loudness) for conds.pt."""
    import soundfile

    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = rng.uniform(100, 220) * (1 + 0.05 * np.sin(2 * np.pi * 5 * t))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 12))
    syllables = 0.5 * (1 + np.sin(2 * np.pi * rng.uniform(3, 5) * t)) ** 2
    signal = 0.3 * voice * syllables + 0.01 * rng.standard_normal(len(t))
    soundfile.write(str(path), (signal / np.abs(signal).max() * 0.8).astype(np.float32), rate, subtype="PCM_16")


def build_checkpoint(out_dir: Path, variant: Variant = "tiny", seed: int = 0) -> Path:
    """Write a random-weight checkpoint (noise, not speech) that ``ChatterboxTTS.from_local`` loads."""
    import torch
    from chatterbox.models.s3gen import S3Gen
    from chatterbox.models.t3 import T3
    from chatterbox.models.tokenizers import EnTokenizer
    from chatterbox.models.voice_encoder import VoiceEncoder
    from chatterbox.tts import ChatterboxTTS

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with variant_classes(variant):
        torch.manual_seed(seed)
        ve, t3, s3gen = VoiceEncoder().eval(), T3().eval(), S3Gen().eval()
    _shape_t3(t3)
    torch.save(ve.state_dict(), out_dir / "ve.pt")
    torch.save(t3.state_dict(), out_dir / "t3_cfg.pt")
    torch.save(s3gen.state_dict(), out_dir / "s3gen.pt")
    (out_dir / "tokenizer.json").write_text(_tokenizer_json(), encoding="utf-8")

    # The built-in voice: conditionals of a synthetic reference, saved before any generation
    # (generation adds a cached embedding to the conditionals object).
    tts = ChatterboxTTS(t3, s3gen, ve, EnTokenizer(str(out_dir / "tokenizer.json")), "cpu")
    with tempfile.TemporaryDirectory() as scratch:
        reference = Path(scratch) / "reference.wav"
        _reference_voice(reference, seed)
        with torch.inference_mode():
            tts.prepare_conditionals(str(reference), exaggeration=0.5)
    tts.conds.save(out_dir / "conds.pt")

    manifest = {
        "format": MANIFEST_FORMAT,
        "variant": variant,
        "seed": seed,
        "note": "RANDOM WEIGHTS: this checkpoint produces noise, not speech (for tests and benchmarks).",
        "parameters": {name: sum(p.numel() for p in module.parameters())
                       for name, module in (("t3", t3), ("s3gen", s3gen), ("ve", ve))},
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return out_dir


def ensure_checkpoint(out_dir: Path, variant: Variant = "tiny", seed: int = 0) -> Path:
    """``out_dir`` holding the given checkpoint, built only if missing.

    Built in a temporary sibling directory and renamed into place, so concurrent processes never see
    half a checkpoint; the loser of a race discards its copy.
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        manifest = read_manifest(out_dir)
        if manifest is None or (manifest["variant"], manifest.get("seed")) != (variant, seed):
            found = "no manifest" if manifest is None else f"variant {manifest['variant']}, seed {manifest.get('seed')}"
            raise CheckpointError(f"{out_dir} exists but is not a {variant} checkpoint with seed {seed} ({found})")
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.building-", dir=out_dir.parent))
    try:
        build_checkpoint(scratch, variant=variant, seed=seed)
        try:
            os.rename(scratch, out_dir)
        except OSError:
            if read_manifest(out_dir) is None:  # not a concurrent builder's finished copy
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return out_dir


# --- Loading --------------------------------------------------------------------------------------


def load_chatterbox(checkpoint: str | Path | None, device: str) -> ChatterboxTTS:
    """Chatterbox from the hub (``None``: downloads ResembleAI/chatterbox, with progress bars) or from a
    local directory: a built checkpoint gets its variant applied first, a real one loads unchanged."""
    from chatterbox.tts import ChatterboxTTS

    if checkpoint is None:
        return ChatterboxTTS.from_pretrained(device)
    ckpt_dir = Path(checkpoint).expanduser()
    if not ckpt_dir.is_dir():
        raise CheckpointError(f"checkpoint directory {ckpt_dir} does not exist")
    missing = [name for name in CHECKPOINT_FILES[:4] if not (ckpt_dir / name).exists()]
    if missing:
        raise CheckpointError(f"{ckpt_dir} is not a Chatterbox checkpoint: missing {', '.join(missing)}")
    manifest = read_manifest(ckpt_dir)
    with variant_classes(manifest["variant"] if manifest else "full"):
        return ChatterboxTTS.from_local(ckpt_dir, device)
