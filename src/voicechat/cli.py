"""The `voicechat` command: one subcommand per job, each in its own module.

Every command module exposes ``add_arguments(parser)`` and ``run(args) -> int``; it is imported only
when its command runs, so `voicechat --help` stays fast and a command never pays for another's models.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from pydantic import ValidationError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("voicechat.commands.serve", "run the voice chat web server"),
    "say": ("voicechat.commands.say", "speak a text through the Chatterbox engine into a WAV file"),
    "listen": ("voicechat.commands.listen", "feed a WAV file through speech input and print its events"),
    "chat": ("voicechat.commands.chat", "stream one LLM reply to the terminal (checks your LLM set-up)"),
    "make-checkpoint": (
        "voicechat.commands.make_checkpoint",
        "build a RANDOM-WEIGHT Chatterbox checkpoint (noise, not speech: for tests and benchmarks)",
    ),
    "download-models": ("voicechat.commands.download_models", "pre-fetch the configured models"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voicechat", description="Real-time voice chat with Chatterbox TTS.")
    parser.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        command_parser.set_defaults(_module=module_name)
        # Arguments are added lazily below, once we know which command runs.
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    # First pass: find the command, then let its module declare its arguments and parse again.
    if not any(arg in COMMANDS for arg in argv):
        parser.parse_args(argv)  # top-level --help, or the "no command" error; both exit
    # (-h is held back from this pass, or it would print the help before the command's options exist.)
    known, _ = parser.parse_known_args([arg for arg in argv if arg not in ("-h", "--help")])
    module = importlib.import_module(known._module)
    sub_action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    module.add_arguments(sub_action.choices[known.command])
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=(args.log_level or "info").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(module.run(args) or 0)
    except ValidationError as error:  # a bad setting from flags, environment or .env
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors(include_url=False))
        print(f"voicechat: invalid setting: {problems}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
