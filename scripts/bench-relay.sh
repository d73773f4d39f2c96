#!/usr/bin/env bash
# How fast user-service's outbox relay drains a backlog (release build):
# N users are created while the relay points nowhere, then the service is
# restarted towards audit-service and we time until the outbox is empty and
# until the last event is stored. Usage: scripts/bench-relay.sh N http|kafka
# (kafka uses the broker on 127.0.0.1:9092: `make kafka-up`).
set -euo pipefail
n="${1:-2000}"
transport="${2:-http}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
bin=target/release
dir="$(mktemp -d)"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_healthy() { for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$1/healthz" >/dev/null 2>&1 && return; sleep 0.1; done; echo "no answer on $1" >&2; exit 1; }
pending() { sqlite3 "$dir/users.db" "SELECT count(*) FROM outbox WHERE status = 'pending'"; }
now() { date +%s.%N; }

user_port="$(free_port)"
audit_port="$(free_port)"
topic="bench-$(date +%s)-$RANDOM"
common=(DATABASE_URL="sqlite://$dir/users.db" LISTEN_ADDR="127.0.0.1:$user_port" RUST_LOG=warn)

# The backlog: every event stays pending, the receiver being unreachable.
env "${common[@]}" EVENT_TRANSPORT=http AUDIT_URL=http://127.0.0.1:9/ "$bin/user-service" >"$dir/user.log" 2>&1 &
pid=$!
wait_healthy "$user_port"
seq "$n" | xargs -P 8 -I{} curl -fsS -o /dev/null -X POST "http://127.0.0.1:$user_port/v1/user" \
  -H 'Content-Type: application/json' -d '{"name":"bench {}","password":"bench-password"}'
kill "$pid"; wait "$pid" || true
echo "backlog: $(pending) pending events"

env LISTEN_ADDR="127.0.0.1:$audit_port" DATABASE_URL="sqlite://$dir/audit.db" RUST_LOG=warn \
  EVENT_TRANSPORT="$transport" KAFKA_TOPIC="$topic" KAFKA_GROUP_ID="$topic" "$bin/audit-service" >"$dir/audit.log" 2>&1 &
pids+=($!)
wait_healthy "$audit_port"
start="$(now)"
env "${common[@]}" EVENT_TRANSPORT="$transport" KAFKA_TOPIC="$topic" AUDIT_URL="http://127.0.0.1:$audit_port/" \
  "$bin/user-service" >>"$dir/user.log" 2>&1 &
pids+=($!)
until [[ "$(pending)" == 0 ]]; do sleep 0.02; done
drained="$(now)"
last="$((n - 1))"
until curl -fsS "http://127.0.0.1:$audit_port/v1/events?after=$last" | grep -q '"seq"'; do sleep 0.02; done
stored="$(now)"
python3 -c "
n, t0, t1, t2 = $n, $start, $drained, $stored
print(f'relay over $transport: {n} events drained in {t1-t0:.2f} s ({n/(t1-t0):.0f} events/s), all stored after {t2-t0:.2f} s')"
