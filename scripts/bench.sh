#!/usr/bin/env bash
# `make bench`, release builds, SQLite with synchronous=FULL throughout:
# 1. how many durably stored events per second audit-service's CloudEvents
#    sink acknowledges from 1, 16 and 64 concurrent HTTP clients (one client
#    pays one fsync per event; many share commits: group commit);
# 2. how fast user-service's relay drains a backlog over HTTP and over Kafka
#    (scripts/bench-relay.sh; Kafka is started with scripts/kafka.sh if needed).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

cargo build --release -q -p user-service -p audit-service --bins --example bench_http
dir="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
LISTEN_ADDR="127.0.0.1:$port" DATABASE_URL="sqlite://$dir/audit.db" RUST_LOG=warn \
  target/release/audit-service >"$dir/audit.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$dir"' EXIT

for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done

url="http://127.0.0.1:$port/"
echo "audit-service sink, release build, database in $dir (synchronous=FULL):"
target/release/examples/bench_http "$url" 2000 1
target/release/examples/bench_http "$url" 20000 16
target/release/examples/bench_http "$url" 20000 64

kill $pid; wait $pid || true
scripts/bench-relay.sh 2000 http
scripts/kafka.sh status >/dev/null 2>&1 || scripts/kafka.sh start
scripts/bench-relay.sh 2000 kafka
