#!/usr/bin/env bash
# `make bench`: every figure of bench/README.md in one run, on release
# builds, side by side with its reference, then a table on stdout and
# bench/RESULTS.md + bench/results.json.
#
#   scripts/bench.sh                 all figures (what `make bench` runs)
#   scripts/bench.sh sink kafka      only these (sink batch kafka nats mqtt relay e2e rss pg scale
#                                    tlog instructions replay);
#                                    the results then go to the run's folder only
#
# Needs (checked first): cargo, python3, go (figure sink, and nats-server
# if it is not built yet), java (the Kafka broker) and the Debian packages
# wrk, time, sqlite3, kcat, postgresql, mosquitto, mosquitto-clients,
# valgrind and the build's, installed when run as root (otherwise it prints
# the apt-get command). Starts the Kafka broker on 127.0.0.1:9092, NATS on
# 4222, Mosquitto on 1883 and the PostgreSQL cluster of scripts/postgres.sh
# if they do not answer, and stops them at the end only then. Everything it starts listens on loopback, on free
# ports; every load stops by itself. Settings (environment): BENCH_SECONDS
# (10, each wrk run), BENCH_KAFKA_RECORDS (200000), BENCH_RELAY_BACKLOG
# (20000), BENCH_API_BACKLOG (2000; 0 skips it), BENCH_E2E_USERS (300),
# BENCH_SCALE_RECORDS (100000), BENCH_NATS_RECORDS (200000),
# BENCH_MQTT_RECORDS (100000), BENCH_INSTR_SECONDS (10, each callgrind load),
# BENCH_KEEP=1 keeps the run's folder (logs, databases) in .cache/bench/.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

ALL=(sink batch kafka nats mqtt relay e2e rss pg scale tlog instructions replay)
figures=("$@")
((${#figures[@]})) || figures=("${ALL[@]}")
for f in "${figures[@]}"; do
  [[ " ${ALL[*]} " == *" $f "* ]] || {
    echo "usage: scripts/bench.sh [${ALL[*]}]..." >&2
    exit 2
  }
done

# The services read their settings from the environment: a shell's RUST_LOG
# or KAFKA_* must not change what is measured.
unset RUST_LOG LOG_FORMAT LISTEN_ADDR DATABASE_URL EVENT_TRANSPORT AUDIT_URL HTTP_CONTENT_MODE \
  EVENT_SOURCE PUBLISH_TIMEOUT_MS MAX_BODY_BYTES "${!RELAY_@}" "${!KAFKA_@}" "${!NATS_@}" "${!MQTT_@}" \
  "${!INGEST_@}"

# shellcheck source=bench/lib.sh
source bench/lib.sh
for f in sink consume nats mqtt relay e2e postgres tlog instructions replay; do
  # shellcheck source=/dev/null
  source "bench/$f.sh"
done

# ------------------------------------------------------------------ setup
scripts/ensure-debs.sh wrk time sqlite3 kcat cmake libcurl4-openssl-dev zlib1g-dev \
  pkg-config libssl-dev g++ make postgresql mosquitto mosquitto-clients valgrind || die "install the packages above, then run it again"
needs=(cargo python3)
[[ " ${figures[*]} " == *" "@(sink|nats|relay)" "* ]] && needs+=(go)
[[ " ${figures[*]} " == *" "@(kafka|relay|e2e|scale|replay)" "* ]] && needs+=(java)
for tool in "${needs[@]}"; do
  command -v "$tool" >/dev/null || die "'$tool' is not on PATH (see README.md, 'What make test needs')"
done

say "building (release)"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
cargo build --release -p user-service -p audit-service -p e2e --bins \
  --example bench_null_sink --example bench_produce --example bench_nats --example bench_backlog --example bench_latency
BIN="${CARGO_TARGET_DIR:-$REPO/target}/release"
[[ $BIN == /* ]] || BIN="$REPO/$BIN"
# The seed's Go receiver, built as interop/run.sh builds the Go programs.
GOBIN="$REPO/.cache/go/bin"
if [[ " ${needs[*]} " == *" go "* ]]; then
  (
    cd interop/go
    GOPATH="$REPO/.cache/go" GOMODCACHE="$REPO/.cache/go/pkg/mod" GOFLAGS="-modcacherw" \
      go build -o "$GOBIN/bench-receiver" ./cmd/bench-receiver
  )
fi

# ------------------------------------------------------------------ run
RUN="$REPO/.cache/bench/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$RUN"
date -u +%FT%TZ >"$RUN/started"
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
[[ -z "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]] || commit+=" with uncommitted changes"
echo "$commit" >"$RUN/commit"
cut -d' ' -f1-3 /proc/loadavg >"$RUN/load.start"

finish() {
  local status=$?
  stop_all
  if [[ -n "$STARTED_KAFKA" ]]; then scripts/kafka.sh stop || true; fi
  if [[ -n "$STARTED_PG" ]]; then scripts/postgres.sh stop || true; fi
  if [[ -n "$STARTED_NATS" ]]; then NATSD_PORT="${NATSD_PORT:-4222}" scripts/nats.sh stop || true; fi
  if [[ -n "$STARTED_MQTT" ]]; then MQTT_PORT="$MQTT_PORT_BENCH" scripts/mosquitto.sh stop || true; fi
  if ((status)); then
    say "failed; logs and databases kept in $RUN"
  elif [[ "${BENCH_KEEP:-}" != 1 ]]; then
    # The numbers stay (results.json, RESULTS.md); the bulk goes.
    find "$RUN" -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +
  fi
}
trap finish EXIT

say "run folder $RUN; load average $(cat "$RUN/load.start")"
for f in "${figures[@]}"; do
  "bench_$f"
done
cut -d' ' -f1-3 /proc/loadavg >"$RUN/load.end"

echo
if [[ "${figures[*]}" == "${ALL[*]}" ]]; then
  python3 bench/report.py report "$RUN" --write bench
else
  python3 bench/report.py report "$RUN"
  say "partial run: results in $RUN (bench/RESULTS.md is written by a full run)"
fi
