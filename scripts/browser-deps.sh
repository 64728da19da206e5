#!/bin/sh
# Headless Chromium and its WebDriver for the browser tests (tests/test_web.py).
# Installs Debian's `chromium` and `chromium-driver` only when they are missing.
set -e
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "browser tests need chromium and chromedriver: run 'sudo apt-get install -y chromium chromium-driver'" >&2
    exit 0
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
