#!/usr/bin/env bash
# The audit console in a real browser: headless Chromium from Debian's
# package (/usr/bin/chromium), driven by Playwright for Python from the
# project venv (.cache/venv). Never `playwright install`: the browser is the
# system's. Starts both debug binaries on loopback (HTTP transport, fresh
# SQLite files), so it needs `cargo build --workspace` and scripts/setup.sh
# first; anything missing is a failure, never a skip.
#
# Screenshots go to .cache/browser-screenshots; `SCREENSHOTS_DIR=docs
# browser/run.sh` refreshes the ones the README shows. Extra arguments go to
# pytest (e.g. browser/run.sh -k pause).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$ROOT/.cache/venv/bin/python"

die() { echo "browser/run.sh: $*" >&2; exit 1; }
[[ -x /usr/bin/chromium ]] || die "missing /usr/bin/chromium: run scripts/setup.sh as root (it installs Debian's chromium)"
[[ -x "$PY" ]] || die "missing $PY: run scripts/setup.sh"
"$PY" -c 'import playwright, pytest' 2>/dev/null || die "playwright or pytest is missing from .cache/venv: run scripts/setup.sh"

cd "$ROOT/browser"
exec "$PY" -m pytest -q -p no:cacheprovider "$@"
