#!/usr/bin/env bash
# Installs everything the tests need on a fresh machine (Debian packages, a .venv with the project and
# its test extra), then runs the tests. Extra arguments go to pytest, e.g. scripts/test.sh -m slow.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
# espeak-ng renders test speech, sox converts it; asterisk-core-sounds-en-wav is human speech (one
# speaker's recorded prompts, cut by tests/human_speech.py). The page is tested in three engines: chromium
# (Playwright), firefox-esr (puppeteer-core over WebDriver BiDi, from npm) and WebKitGTK's MiniBrowser
# (webkit2gtk-driver + Selenium, under xvfb); pulseaudio is the virtual microphone of the last two.
ensure_debian_packages espeak-ng sox asterisk-core-sounds-en-wav chromium firefox-esr libwebkit2gtk-4.1-0 webkit2gtk-driver xvfb \
  pulseaudio pulseaudio-utils gstreamer1.0-plugins-base gstreamer1.0-plugins-good
command -v npm >/dev/null || ensure_debian_packages nodejs npm  # a machine may have its own Node.js
ensure_node_modules tests/browser
ensure_venv "[test]"
exec .venv/bin/python -m pytest "$@"
