#!/usr/bin/env bash
# Installs the app into .venv on a fresh machine and starts the voice chat server.
# Settings come from .env / environment variables; extra arguments go to `voicechat serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
ensure_venv ""
exec .venv/bin/voicechat serve "$@"
