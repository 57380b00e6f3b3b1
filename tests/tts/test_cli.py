"""`voicechat make-checkpoint` and `voicechat say`, run as real subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from speech import read_pcm16


def voicechat(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("VOICECHAT_", "HF_"))}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", VOICECHAT_TTS_WARMUP="false")
    return subprocess.run([sys.executable, "-m", "voicechat.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=Path(__file__).parent)


def test_make_checkpoint_help_says_noise_not_speech() -> None:
    result = voicechat("make-checkpoint", "--help")
    assert result.returncode == 0
    assert "noise, not speech" in result.stdout.replace("\n", " ").replace("NOISE, NOT SPEECH", "noise, not speech")


def test_make_checkpoint_is_reproducible(tmp_path: Path, tiny_checkpoint: Path) -> None:
    out = tmp_path / "tiny"
    result = voicechat("make-checkpoint", "--variant", "tiny", "--seed", "0", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "noise, not speech" in result.stdout
    built = torch.load(out / "t3_cfg.pt")
    cached = torch.load(tiny_checkpoint / "t3_cfg.pt")
    assert built.keys() == cached.keys()
    assert all(torch.equal(built[name], cached[name]) for name in built), "same seed, same weights"
    again = voicechat("make-checkpoint", str(out))
    assert again.returncode == 2 and "already exists" in again.stdout


def test_say_writes_a_24khz_wav_and_reports_speed(tmp_path: Path, tiny_checkpoint: Path, alice_wav: Path) -> None:
    out = tmp_path / "hello.wav"
    result = voicechat("say", "Hello there. This is a test.", "--out", str(out), "--checkpoint", str(tiny_checkpoint),
                       "--voice", str(alice_wav), "--device", "cpu", "--seed", "1", "--chunk-size", "20",
                       "--exaggeration", "0.7")
    assert result.returncode == 0, result.stdout + result.stderr
    samples, rate = read_pcm16(out)
    assert rate == 24000 and len(samples) > 24000
    assert "time to first audio:" in result.stdout and "real-time factor:" in result.stdout
    assert "noise, not speech" in result.stdout  # it tells a random checkpoint apart


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["...", "--out", "x.wav"], "nothing to say"),
        (["Hello.", "--out", "x.wav", "--temperature", "9"], "temperature"),
        (["Hello.", "--out", "/nonexistent-folder/x.wav"], "does not exist"),
        (["Hello.", "--out", "x.wav", "--checkpoint", "/nonexistent-checkpoint"], "does not exist"),
    ],
)
def test_say_errors_exit_non_zero_with_a_plain_message(args: list[str], message: str) -> None:
    result = voicechat("say", *args)
    assert result.returncode != 0
    assert result.stdout.startswith("error:") and message in result.stdout
    assert "Traceback" not in result.stderr
