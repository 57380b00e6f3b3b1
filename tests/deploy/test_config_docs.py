"""docs/configuration.md and .env.example stay true to the Settings model (both are generated from it)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from deploy_helpers import REPO

from voicechat.commands import serve
from voicechat.config import Settings

DOC = REPO / "docs" / "configuration.md"
ENV_EXAMPLE = REPO / ".env.example"


def env_name(field: str) -> str:
    return f"VOICECHAT_{field.upper()}"


def test_generated_files_are_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen_config_docs.py"), "--check"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr + result.stdout


@pytest.mark.parametrize("field", list(Settings.model_fields))
def test_every_setting_is_documented(field: str) -> None:
    assert f"| `{env_name(field)}` |" in DOC.read_text(), f"{field} is missing from docs/configuration.md"
    assert re.search(rf"^# {env_name(field)}=", ENV_EXAMPLE.read_text(), re.M), f"{field} is missing from .env.example"


def test_every_serve_flag_is_a_setting_and_documented() -> None:
    doc = DOC.read_text()
    for flag, (dest, *_rest) in serve.FLAGS.items():
        assert dest in Settings.model_fields, f"voicechat serve {flag} sets an unknown setting {dest!r}"
        assert f"| `{env_name(dest)}` | `{flag}` |" in doc


def test_env_example_values_read_back_as_the_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Uncomment every line of .env.example: the settings it gives must be exactly the defaults (so its
    quoting survives python-dotenv)."""
    for name in list(os.environ):
        if name.startswith("VOICECHAT_"):
            monkeypatch.delenv(name)
    lines = re.findall(r"^# (VOICECHAT_\w+=.+)$", ENV_EXAMPLE.read_text(), re.M)  # unset defaults stay out
    assert len(lines) == len([field for field in Settings.model_fields.values() if field.default not in (None, "")])
    dotenv = tmp_path / ".env"
    dotenv.write_text("\n".join(lines) + "\n")
    assert Settings(_env_file=dotenv) == Settings(_env_file=None)
    # ... and the file is really read: a changed value comes through.
    dotenv.write_text("\n".join(lines).replace("VOICECHAT_PORT=8000", "VOICECHAT_PORT=8123") + "\n")
    assert Settings(_env_file=dotenv).port == 8123
