"""Run the `voicechat` command the way a container would (used by the deployment tests)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VOICECHAT = Path(sys.executable).with_name("voicechat")  # the console script in the same venv


def run_voicechat(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(VOICECHAT), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


# --- Dockerfile ---------------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str  # FROM, RUN, ENV ... in capitals
    args: str  # the rest, continuation lines joined
    stage: int  # 0 for the first FROM's stage, 1 for the next ...


def dockerfile(path: Path = REPO / "Dockerfile") -> list[Instruction]:
    """The instructions of a Dockerfile: comments dropped, backslash continuations joined."""
    instructions: list[Instruction] = []
    stage = -1
    pending = ""
    for line in path.read_text().splitlines():
        if line.strip().startswith("#") or (not line.strip() and not pending):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, args = pending.strip().partition(" ")
        if keyword.upper() == "FROM":
            stage += 1
        instructions.append(Instruction(keyword.upper(), " ".join(args.split()), stage))
        pending = ""
    return instructions


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    last = max(instruction.stage for instruction in instructions)
    return [instruction for instruction in instructions if instruction.stage == last]


def image_env(instructions: list[Instruction]) -> dict[str, str]:
    """ENV of the final stage (KEY=VALUE form), $VAR references to earlier keys left as written."""
    env: dict[str, str] = {}
    for instruction in final_stage(instructions):
        if instruction.keyword == "ENV":
            for token in shlex.split(instruction.args):
                key, _, value = token.partition("=")
                env[key] = value
    return env


def exec_form(instruction: Instruction) -> list[str]:
    """The JSON argument list of a CMD, or of the CMD inside a HEALTHCHECK."""
    text = instruction.args
    if instruction.keyword == "HEALTHCHECK":
        text = text[text.index(" CMD ") + len(" CMD ") :]
    return json.loads(text)
