#!/usr/bin/env bash
# Install Debian's Chromium for the capstone's browser test (tests/test_support_ui_browser.py).
# Playwright drives this system browser; the course never downloads a browser of its own.
# Idempotent: returns at once when /usr/bin/chromium is already there.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
  echo "browser: /usr/bin/chromium is installed ($(/usr/bin/chromium --version 2>/dev/null || echo 'version unknown'))"
  exit 0
fi

if ! command -v apt-get >/dev/null; then
  echo "browser: /usr/bin/chromium is missing and this system has no apt-get." >&2
  echo "         Install Chromium with your package manager so that /usr/bin/chromium exists." >&2
  exit 1
fi

SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "browser: installing chromium needs root; run: apt-get install -y chromium" >&2
    exit 1
  fi
fi

echo "browser: installing Debian's chromium (once; about a minute)"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
echo "browser: installed $(/usr/bin/chromium --version 2>/dev/null || echo chromium)"
