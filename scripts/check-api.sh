#!/usr/bin/env bash
# Runs schemathesis against both services' OpenAPI documents (/openapi.json)
# on the built binaries, each on a free port with a fresh database: it must
# find no 5xx and no response (status, content type, headers, body) the
# document does not allow. Bounded: a few examples per operation, a time
# budget per service. Needs scripts/setup.sh (schemathesis in .cache/venv)
# and `cargo build` first.
#
# The answers of audit-service's limits are provoked too, so an undocumented
# one fails: its live tail runs with one place, taken (every stream request
# is 503 with Retry-After), a second audit-service with a 1 ms request
# timeout answers 408 to most requests, and scripts/check-api-limits.py
# sends the requests generation never makes (64 KiB of headers, a body
# that stops half way, a filter with a mistake) and validates their answers
# with schemathesis's checks. A 503 the document describes is a refusal,
# not a server error (scripts/schemathesis.toml); any other 5xx fails.
#
# The slow run skips the two stateful checks that POST then GET the same
# resource: with every other request answered 408 they cannot hold.
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
slow_port="$(free_port)"
user_port="$(free_port)"
# With the transparency log on, so that its endpoints answer as they do in use.
log_key="$("$bin/audit-service" log-key check-api.local/audit 2>/dev/null)"
LISTEN_ADDR="127.0.0.1:$audit_port" DATABASE_URL="sqlite://$work/audit.db" RUST_LOG=warn \
  LOG_SIGNING_KEY="$log_key" MAX_STREAM_CLIENTS=1 "$bin/audit-service" >"$work/audit.log" 2>&1 &
pids+=($!)
LISTEN_ADDR="127.0.0.1:$slow_port" DATABASE_URL="sqlite://$work/slow.db" RUST_LOG=warn \
  REQUEST_TIMEOUT_MS=1 "$bin/audit-service" >"$work/slow.log" 2>&1 &
pids+=($!)
LISTEN_ADDR="127.0.0.1:$user_port" DATABASE_URL="sqlite://$work/users.db" RUST_LOG=warn \
  AUDIT_URL="http://127.0.0.1:$audit_port/" "$bin/user-service" >"$work/user.log" 2>&1 &
pids+=($!)
wait_healthy "http://127.0.0.1:$audit_port" "$work/audit.log"
wait_healthy "http://127.0.0.1:$user_port" "$work/user.log"
wait_healthy "http://127.0.0.1:$slow_port" "$work/slow.log"

# Take the live tail's one place, and wait until it is taken. The holder asks
# again whenever it is refused: a probe below may have been first, and then
# holds the place for a second before giving it back.
( while :; do curl -sN -o /dev/null "http://127.0.0.1:$audit_port/v1/events/stream"; sleep 0.2; done ) &
pids+=($!)
deadline=$((SECONDS + 30))
until [[ "$(curl -s -o /dev/null --max-time 1 -w '%{http_code}' "http://127.0.0.1:$audit_port/v1/events/stream")" == 503 ]]; do
  if ((SECONDS > deadline)); then
    echo "check-api: the live tail's place was not taken" >&2
    exit 1
  fi
  sleep 0.2
done

# Hypothesis keeps its example database in the working directory.
cd "$work"
common=(--max-examples 25 --max-time 45 --request-timeout 10 --seed 20261127 --no-color --generation-database none)

echo "check-api: user-service"
"$st" --config-file "$repo/scripts/schemathesis.toml" run "http://127.0.0.1:$user_port/openapi.json" "${common[@]}" --checks all

echo "check-api: audit-service"
"$st" --config-file "$repo/scripts/schemathesis.toml" run "http://127.0.0.1:$audit_port/openapi.json" "${common[@]}" --checks all \
  --exclude-checks positive_data_acceptance,negative_data_rejection

echo "check-api: audit-service with a 1 ms request timeout"
"$st" --config-file "$repo/scripts/schemathesis.toml" run "http://127.0.0.1:$slow_port/openapi.json" "${common[@]}" --max-examples 5 --checks all \
  --exclude-checks positive_data_acceptance,negative_data_rejection,use_after_free,ensure_resource_availability

echo "check-api: audit-service's limits, provoked"
"$repo/.cache/venv/bin/python" "$repo/scripts/check-api-limits.py" \
  "http://127.0.0.1:$audit_port" "http://127.0.0.1:$slow_port"

# Nothing the fuzzing sent may have made either service log an error.
if grep -h '"level":"ERROR"' "$work/audit.log" "$work/slow.log" "$work/user.log"; then
  echo "check-api: a service logged an error (above)" >&2
  exit 1
fi
echo "check-api: ok"
