#!/usr/bin/env bash
# `make run`: both services on the embedded defaults (HTTP transport, SQLite
# files under data/), no other process needed. Ctrl-C stops both.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
bin="${CARGO_TARGET_DIR:-$repo/target}/debug"
export LOG_FORMAT="${LOG_FORMAT:-pretty}"

pids=()
stop() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait || true
}
trap stop INT TERM EXIT

"$bin/audit-service" & pids+=($!)
"$bin/user-service" & pids+=($!)

cat <<'TXT'

  audit-service  http://localhost:8080   (CloudEvents sink POST /, GET /v1/events)
  user-service   http://localhost:3000   (POST /v1/user)

  Try it in another terminal:

    curl -X "POST" "http://localhost:3000/v1/user" \
         -H 'Accept: application/json' \
         -H 'Content-Type: application/json' \
         -d $'{"name": "Ozzy Osbourne", "password": "12345"}'

  Ctrl-C stops both.

TXT
# Either service exiting (a port in use, say) stops the other too.
wait -n
