#!/usr/bin/env bash
# Make the system's Chromium available to the browser tests (tests/demo): Debian's `chromium` package, installed
# with apt-get when it is missing and we are root; otherwise say how. Never `playwright install` (a download).
set -euo pipefail
for browser in "${CHROMIUM_PATH:-}" /usr/lib/chromium/chromium "$(command -v chromium || true)"; do
    [ -n "$browser" ] && [ -x "$browser" ] && exit 0
done
if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
    echo "install_browser.sh: installing Debian's chromium for the browser tests" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq > /dev/null
    apt-get install -y -qq chromium > /dev/null
    exit 0
fi
echo "install_browser.sh: no Chromium: the browser tests (tests/demo) will be skipped (failed with CI=true)." \
    "Install it (Debian/Ubuntu: sudo apt-get install chromium) or set CHROMIUM_PATH to a Chromium binary." >&2
