"""The `voicechat` command's dispatch: per-command help, missing command, bad settings."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def voicechat(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voicechat.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    ("command", "option"),
    [("serve", "--checkpoint"), ("say", "--voice"), ("listen", "--speed"), ("chat", "--provider")],
)
def test_each_command_shows_its_own_options(command: str, option: str) -> None:
    result = voicechat(command, "--help")
    assert result.returncode == 0 and option in result.stdout


def test_top_level_help_and_missing_command() -> None:
    help_result = voicechat("--help")
    assert help_result.returncode == 0 and "make-checkpoint" in help_result.stdout
    assert "noise," in help_result.stdout and "RANDOM-WEIGHT" in help_result.stdout
    missing = voicechat()
    assert missing.returncode == 2 and "COMMAND" in missing.stderr


def test_bad_setting_is_one_plain_line() -> None:
    result = voicechat("serve", env={"VOICECHAT_PORT": "0"})
    assert result.returncode == 2
    assert "invalid setting: port" in result.stderr and "Traceback" not in result.stderr
