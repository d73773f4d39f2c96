#!/usr/bin/env bash
# Runs schemathesis against both services' OpenAPI documents (/openapi.json)
# on the built binaries, each on a free port with a fresh database: it must
# find no 5xx and no response (status, content type, headers, body) the
# document does not allow. Bounded: a few examples per operation, a time
# budget per service. Needs scripts/setup.sh (schemathesis in .cache/venv)
# and `cargo build` first.
#
# user-service is held to every check. audit-service is held to every check
# but the two that judge requests as valid or invalid from the document
# alone: POST / takes three content modes (binary mode's attributes are
# ce- headers that structured and batch modes must not need, which OpenAPI
# cannot tie to a content type), and an empty query value counts as absent.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${CARGO_TARGET_DIR:-$repo/target}/debug"
st="$repo/.cache/venv/bin/schemathesis"
[[ -x "$st" ]] || { echo "check-api: $st is missing; run scripts/setup.sh" >&2; exit 1; }

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_healthy() {
  local url="$1" log="$2" deadline=$((SECONDS + 30))
  until curl -fsS -o /dev/null "$url/healthz" 2>/dev/null; do
    if ((SECONDS > deadline)); then
      echo "check-api: $url did not answer; its log:" >&2
      cat "$log" >&2
      exit 1
    fi
    sleep 0.2
  done
}

audit_port="$(free_port)"
user_port="$(free_port)"
# With the transparency log on, so that its endpoints answer as they do in use.
log_key="$("$bin/audit-service" log-key check-api.local/audit 2>/dev/null)"
LISTEN_ADDR="127.0.0.1:$audit_port" DATABASE_URL="sqlite://$work/audit.db" RUST_LOG=warn \
  LOG_SIGNING_KEY="$log_key" "$bin/audit-service" >"$work/audit.log" 2>&1 &
pids+=($!)
LISTEN_ADDR="127.0.0.1:$user_port" DATABASE_URL="sqlite://$work/users.db" RUST_LOG=warn \
  AUDIT_URL="http://127.0.0.1:$audit_port/" "$bin/user-service" >"$work/user.log" 2>&1 &
pids+=($!)
wait_healthy "http://127.0.0.1:$audit_port" "$work/audit.log"
wait_healthy "http://127.0.0.1:$user_port" "$work/user.log"

# Hypothesis keeps its example database in the working directory.
cd "$work"
common=(--max-examples 25 --max-time 45 --request-timeout 10 --seed 20261127 --no-color --generation-database none)

echo "check-api: user-service"
"$st" run "http://127.0.0.1:$user_port/openapi.json" "${common[@]}" --checks all

echo "check-api: audit-service"
"$st" run "http://127.0.0.1:$audit_port/openapi.json" "${common[@]}" --checks all \
  --exclude-checks positive_data_acceptance,negative_data_rejection \
  --exclude-path /v1/events/stream

# Nothing the fuzzing sent may have made either service log an error.
if grep -h '"level":"ERROR"' "$work/audit.log" "$work/user.log"; then
  echo "check-api: a service logged an error (above)" >&2
  exit 1
fi
echo "check-api: ok"
