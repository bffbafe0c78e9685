#!/usr/bin/env bash
# Installs what the test suite needs beyond Python packages: Debian's Chromium for browser tests.
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's chromium for browser tests..."
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "warning: chromium missing and cannot be installed (not root); browser tests will fail" >&2
  fi
fi
