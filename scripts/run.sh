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

# The transparency log needs a signing key: made once into data/, kept there.
if [[ -z "${LOG_SIGNING_KEY:-}${LOG_SIGNING_KEY_FILE:-}" && "${TRANSPARENCY_LOG:-}" != off ]]; then
  key_file="$repo/data/log-signing.key"
  if [[ ! -s "$key_file" ]]; then
    mkdir -p "$repo/data"
    (umask 077 && "$bin/audit-service" log-key "${LOG_ORIGIN:-localhost/audit-service}" >"$key_file" 2>/dev/null)
    echo "WARNING: made a new transparency log signing key in data/log-signing.key. Keep it, and keep" >&2
    echo "         it secret: anyone holding it can sign checkpoints, and a new key starts a log" >&2
    echo "         that no earlier checkpoint can be checked against." >&2
  fi
  export LOG_SIGNING_KEY_FILE="$key_file"
fi

"$bin/audit-service" & pids+=($!)
"$bin/user-service" & pids+=($!)

cat <<'TXT'

  audit-service  http://localhost:8080   (CloudEvents sink POST /, GET /v1/events)
                 http://localhost:8080/log/checkpoint, /log/key (the transparency log;
                 its verifier key is also in audit-service's first log lines)
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
