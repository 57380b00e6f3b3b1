"""Run the `voicechat` command the way a container would (used by the deployment tests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VOICECHAT = Path(sys.executable).with_name("voicechat")  # the console script in the same venv


def run_voicechat(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(VOICECHAT), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
