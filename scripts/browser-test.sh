#!/usr/bin/env bash
# Drives Debian's Chromium with Playwright against a real opsrun: CORS from an allowed
# and a refused origin, Swagger UI's Authorize and "Try it out", and proof that the CORS
# check fails without OPSRUN_CORS_ORIGINS (scripts/browser_test.py says what it checks).
# Needs target/debug/opsrun (built by `cargo test`), python3 and chromium.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/browser-venv
if ! "$venv/bin/python" -c 'import playwright' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'playwright==1.65.2'
fi
[ -x target/debug/opsrun ] || cargo build --quiet --bin opsrun
# `playwright install` cannot download browsers here: use the system's Chromium.
export CHROMIUM=${CHROMIUM:-$(command -v chromium || echo /usr/bin/chromium)}
timeout 600 "$venv/bin/python" scripts/browser_test.py
