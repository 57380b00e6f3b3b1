"""`voicechat download-models`: local directories, the Hugging Face cache, clear errors, Ollama pulls.

No hub is reachable here, so every run has HF_HUB_OFFLINE=1: the hub paths are tested through the
real huggingface_hub cache look-up (a cache laid out as the hub would leave it) and through the error
a user without internet meets.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import pytest
from deploy_helpers import run_voicechat
from fake_llm import FakeLLM

from voicechat.commands.download_models import (
    CHATTERBOX_FILES,
    CHATTERBOX_REPO,
    DownloadError,
    pull_ollama_model,
)
from voicechat.config import Settings


def fake_checkpoint(folder: Path, files: tuple[str, ...] = CHATTERBOX_FILES) -> Path:
    """A directory with the Chatterbox file names (download-models checks presence, not weights)."""
    folder.mkdir(parents=True)
    for name in files:
        (folder / name).write_bytes(b"placeholder")
    return folder


def hub_cache(hf_home: Path, repo: str, files: dict[str, Path | bytes]) -> Path:
    """Lay out a Hugging Face cache entry the way a finished download leaves it."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    entry = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    snapshot = entry / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text(revision)
    for name, content in files.items():
        if isinstance(content, Path):
            shutil.copyfile(content, snapshot / name)
        else:
            (snapshot / name).write_bytes(content)
    return snapshot


def test_file_list_matches_chatterbox_from_pretrained() -> None:
    # Read the installed package's source: importing it would load torch for nothing.
    tts_py = Path(importlib.util.find_spec("chatterbox").origin).parent / "tts.py"
    source = tts_py.read_text()
    assert re.search(rf'REPO_ID\s*=\s*"{re.escape(CHATTERBOX_REPO)}"', source)
    listed = re.search(r"for fpath in \[([^\]]*)\]", source)
    assert listed, "ChatterboxTTS.from_pretrained no longer lists its files the way this test expects"
    assert tuple(re.findall(r'"([^"]+)"', listed.group(1))) == CHATTERBOX_FILES


def test_local_directories_need_no_download(tmp_path: Path, clean_env: dict, whisper_tiny_dir: Path) -> None:
    checkpoint = fake_checkpoint(tmp_path / "chatterbox")
    env = clean_env | {"VOICECHAT_CHECKPOINT": str(checkpoint), "VOICECHAT_STT_MODEL": str(whisper_tiny_dir)}
    result = run_voicechat(["download-models"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"Chatterbox: local checkpoint {checkpoint.resolve()}, nothing to download" in result.stdout
    assert f"faster-whisper: local model {whisper_tiny_dir.resolve()}, nothing to download" in result.stdout
    assert "all models are in place" in result.stdout
    assert not (tmp_path / "hf-home").exists(), "a local set-up must not touch the Hugging Face cache"


def test_local_directories_are_checked(tmp_path: Path, clean_env: dict) -> None:
    checkpoint = fake_checkpoint(tmp_path / "chatterbox", files=("ve.pt", "tokenizer.json"))
    env = clean_env | {"VOICECHAT_CHECKPOINT": str(checkpoint), "VOICECHAT_STT_MODEL": str(tmp_path)}
    result = run_voicechat(["download-models"], env, tmp_path)
    assert result.returncode == 1
    assert f"VOICECHAT_CHECKPOINT={checkpoint} lacks t3_cfg.pt, s3gen.pt" in result.stderr
    assert f"VOICECHAT_STT_MODEL={tmp_path} lacks model.bin, config.json" in result.stderr
    assert "2 of 2 failed" in result.stdout

    env["VOICECHAT_CHECKPOINT"] = str(tmp_path / "nowhere")
    result = run_voicechat(["download-models"], env, tmp_path)
    assert f"VOICECHAT_CHECKPOINT={tmp_path / 'nowhere'} is not a directory" in result.stderr


def test_checkpoint_without_builtin_voice_says_so(tmp_path: Path, clean_env: dict, whisper_tiny_dir: Path) -> None:
    checkpoint = fake_checkpoint(tmp_path / "chatterbox", files=CHATTERBOX_FILES[:-1])
    env = clean_env | {"VOICECHAT_CHECKPOINT": str(checkpoint), "VOICECHAT_STT_MODEL": str(whisper_tiny_dir)}
    result = run_voicechat(["download-models"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "no conds.pt: set VOICECHAT_VOICE to a reference WAV" in result.stdout


def test_unreachable_hub_gives_clear_errors(tmp_path: Path, clean_env: dict) -> None:
    result = run_voicechat(["download-models"], clean_env, tmp_path)
    assert result.returncode == 1
    assert "Chatterbox: ERROR: cannot fetch ve.pt from the Hugging Face repo ResembleAI/chatterbox" in result.stderr
    assert "set VOICECHAT_CHECKPOINT to it" in result.stderr
    assert "faster-whisper: ERROR: cannot fetch the faster-whisper model 'large-v3-turbo'" in result.stderr
    assert "set VOICECHAT_STT_MODEL to its path" in result.stderr
    assert result.stderr.count("(HF_HUB_OFFLINE is set)") == 2
    assert "Traceback" not in result.stderr


def test_unknown_whisper_name(tmp_path: Path, clean_env: dict) -> None:
    env = clean_env | {"VOICECHAT_CHECKPOINT": str(fake_checkpoint(tmp_path / "c")), "VOICECHAT_STT_MODEL": "huge-v9"}
    result = run_voicechat(["download-models"], env, tmp_path)
    assert result.returncode == 1
    assert "VOICECHAT_STT_MODEL='huge-v9': Invalid model size 'huge-v9', expected one of:" in result.stderr


def test_models_already_in_the_hub_cache(tmp_path: Path, clean_env: dict, whisper_tiny_dir: Path) -> None:
    """What a second run (or a run after `--profile setup`) sees: everything cached, nothing fetched."""
    hf_home = Path(clean_env["HF_HOME"])
    snapshot = hub_cache(hf_home, CHATTERBOX_REPO, {name: b"x" * 1000 for name in CHATTERBOX_FILES})
    hub_cache(hf_home, "Systran/faster-whisper-tiny.en", {f.name: f for f in whisper_tiny_dir.iterdir()})
    result = run_voicechat(["download-models"], clean_env | {"VOICECHAT_STT_MODEL": "tiny.en"}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"Chatterbox: ResembleAI/chatterbox in {snapshot} (0.0 MB)" in result.stdout
    assert re.search(r"faster-whisper: tiny\.en in .*models--Systran--faster-whisper-tiny\.en.* \(7\d\.\d MB\)", result.stdout)


# --- Ollama ------------------------------------------------------------------------------------


def test_ollama_pull_shows_progress(capsys: pytest.CaptureFixture[str]) -> None:
    with FakeLLM(models=[]) as ollama:
        settings = Settings(_env_file=None, provider="ollama", base_url=ollama.url, model="tiny-llm:1b")
        assert pull_ollama_model(settings) == f"tiny-llm:1b is on {ollama.url}"
        assert ollama.models == ["tiny-llm:1b"]
    out, err = capsys.readouterr()
    assert "  pulling manifest\n" in out and "  writing manifest\n" in out and "  success\n" in out
    assert "sha256:000000000000" in err and "100/100" in err  # tqdm's byte bar for the layer


def test_ollama_pull_errors() -> None:
    with FakeLLM(models=[], pullable=False) as ollama:
        missing = Settings(_env_file=None, provider="ollama", base_url=ollama.url, model="no-such-model")
        with pytest.raises(DownloadError, match=r"could not pull 'no-such-model': pull model manifest: file does no"):
            pull_ollama_model(missing)

    closed = Settings(_env_file=None, provider="ollama", base_url="http://127.0.0.1:9", model="tiny-llm:1b")
    with pytest.raises(DownloadError, match=r"cannot reach Ollama at http://127.0.0.1:9 \(VOICECHAT_BASE_URL\)"):
        pull_ollama_model(closed)

    openai = Settings(_env_file=None, provider="openai", model="gpt-4o-mini")
    with pytest.raises(DownloadError, match="--ollama needs VOICECHAT_PROVIDER=ollama"):
        pull_ollama_model(openai)


def test_ollama_flag_runs_the_pull(tmp_path: Path, clean_env: dict, whisper_tiny_dir: Path) -> None:
    with FakeLLM(models=[]) as ollama:
        env = clean_env | {
            "VOICECHAT_CHECKPOINT": str(fake_checkpoint(tmp_path / "c")),
            "VOICECHAT_STT_MODEL": str(whisper_tiny_dir),
            "VOICECHAT_BASE_URL": ollama.url,
            "VOICECHAT_MODEL": "tiny-llm:1b",
        }
        result = run_voicechat(["download-models", "--ollama"], env, tmp_path)
        assert ollama.models == ["tiny-llm:1b"]
    assert result.returncode == 0, result.stderr
    assert f"Ollama: tiny-llm:1b is on {ollama.url}" in result.stdout
