#!/usr/bin/env bash
# The browser tests drive Debian's Chromium (no browser download): install it when we may.
set -euo pipefail
command -v chromium >/dev/null 2>&1 && [ -x /usr/bin/chromium ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's chromium for the browser tests…"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-core >/dev/null
  exit 0
fi
echo "The browser tests need Debian's Chromium at /usr/bin/chromium: run 'sudo apt-get install chromium' and try again." >&2
exit 1
