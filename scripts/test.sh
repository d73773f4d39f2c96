#!/usr/bin/env bash
# `make test`: the whole suite, from a fresh clone. Installs what it needs
# (scripts/setup.sh), starts a Kafka broker on 127.0.0.1:9092 unless one is
# already running (and stops it afterwards if it started it), then runs the
# Rust tests (the CESQL TCK among them), the compose-file check, the audit
# console in headless Chromium and the cross-SDK interop suite.
# Any missing dependency is a failure, never a skipped test.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

scripts/setup.sh

# Two cores: keep the build from starving the machine.
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
cargo build --workspace --all-targets --examples

started_kafka=""
if ! scripts/kafka.sh status >/dev/null 2>&1; then
  scripts/kafka.sh start
  started_kafka=yes
fi
cleanup() { if [[ -n "$started_kafka" ]]; then scripts/kafka.sh stop || true; fi; }
trap cleanup EXIT

echo "== compose file"
.cache/venv/bin/python scripts/check-compose.py

echo "== Rust tests"
cargo test --workspace --no-fail-fast

echo "== the audit console in headless Chromium"
browser/run.sh

echo "== interop with the Go and Python CloudEvents SDKs"
interop/run.sh
