#!/usr/bin/env bash
# Installs everything the tests need on a fresh machine (Debian packages, a .venv with the project and
# its test extra), then runs the tests. Extra arguments go to pytest, e.g. scripts/test.sh -m slow.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
# espeak-ng renders test speech, sox converts it, chromium is the browser for the page tests.
ensure_debian_packages espeak-ng sox chromium
ensure_venv "[test]"
exec .venv/bin/python -m pytest "$@"
