"""One module per `voicechat` subcommand (see cli.py)."""
