# shellcheck shell=bash
# shellcheck disable=SC2034 # globals set here are read by the figure files
# What every figure of `make bench` shares: free ports, starting a process
# and waiting until it answers, stopping it with its peak RSS read first,
# running a load tool with its time and peak RSS, and recording results.
# Sourced by scripts/bench.sh, which sets REPO, BIN (release binaries),
# GOBIN and RUN (this run's folder: logs, databases, raw results).

BROKER=127.0.0.1:9092
# Load generator settings, the same for every HTTP figure.
WRK_CONNECTIONS=64
WRK_SECONDS="${BENCH_SECONDS:-10}"

declare -A PIDS=()  # label -> pid of a process this run started and has not stopped
declare -A PORTS=() # label -> its port
declare -A CMDS=()  # label -> how it was started, for the results
declare -A LOGS=()  # label -> its log file
FIGURE=""           # the figure running now; labels the RSS records

say() { printf '%s\n' "bench: $*" >&2; }
die() {
  say "ERROR: $*"
  exit 1
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Seconds since the epoch with microseconds, without forking.
now() { echo "$EPOCHREALTIME"; }

# calc EXPR: floating-point arithmetic (bash has only integers), 3 decimals.
calc() { python3 -c "print(round($1, 3))"; }
# rate N SECONDS: events per second, whole.
rate() { python3 -c "print(round($1 / $2))"; }

# start LABEL LOG [VAR=VALUE...] -- COMMAND [ARG...]
# Starts COMMAND in the background with the given environment, its output
# appended to LOG. The pid is the command's own (env execs it), so its
# /proc/PID/status is the service's.
start() {
  local label=$1 log=$2
  shift 2
  local vars=()
  while [[ $1 != -- ]]; do
    vars+=("$1")
    shift
  done
  shift
  env "${vars[@]}" "$@" >>"$log" 2>&1 &
  PIDS[$label]=$!
  LOGS[$label]=$log
  # As the results show it: run folder as $RUN, paths in the checkout relative.
  local line="${vars[*]} $* >${log##*/}"
  line="${line//$RUN/\$RUN}"
  CMDS[$label]="${line# }"
  CMDS[$label]="${CMDS[$label]//$REPO\//}"
}

# hung_in PID: where each thread of a process waits (name:kernel wait
# channel), and how many TCP connections it holds, to tell a lock from I/O.
# A process with no thread left is inside the kernel's exit (its files
# being closed, its memory released): then its state and kernel stack say
# where (the stack is readable as root).
hung_in() {
  local task waits=()
  for task in /proc/"$1"/task/[0-9]*; do
    [[ -e $task ]] || continue
    waits+=("$(cat "$task/comm" 2>/dev/null):$(cat "$task/wchan" 2>/dev/null)")
  done
  if ((${#waits[@]} == 0)); then
    local stack
    stack="$(awk '{print $2}' "/proc/$1/stack" 2>/dev/null | head -n 8 | paste -sd' ' -)"
    waits=("no thread left, state $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null), wchan $(cat "/proc/$1/wchan" 2>/dev/null), kernel stack: ${stack:-unreadable}")
  fi
  echo "${waits[*]}; $(ss -tnpH 2>/dev/null | grep -c "pid=$1,") TCP connections"
}

alive() { kill -0 "$1" 2>/dev/null && [[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]]; }

# Shows why a process is not there: the end of its log.
log_tail() {
  say "last lines of $1:"
  tail -n 20 "$1" >&2 || true
}

# wait_http LABEL URL: polls URL until it answers 2xx (30 s at most).
wait_http() {
  local label=$1 url=$2 deadline=$((SECONDS + 30))
  until curl -fsS -o /dev/null "$url" 2>/dev/null; do
    alive "${PIDS[$label]}" || {
      log_tail "${LOGS[$label]}"
      die "$label exited during startup"
    }
    ((SECONDS < deadline)) || die "$label did not answer $url within 30 s"
    sleep 0.05
  done
}

# wait_tcp LABEL PORT: for servers without a health endpoint.
wait_tcp() {
  local label=$1 port=$2 deadline=$((SECONDS + 30))
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    alive "${PIDS[$label]}" || {
      log_tail "${LOGS[$label]}"
      die "$label exited during startup"
    }
    ((SECONDS < deadline)) || die "$label did not listen on $port within 30 s"
    sleep 0.05
  done
}

# stop LABEL: reads the process's peak RSS (VmHWM) while it still runs,
# records it, then SIGTERM, and SIGKILL after 20 s. A process that is
# already gone crashed during the figure: that fails the run.
stop() {
  local label=$1 pid=${PIDS[$1]} kib
  kib="$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)"
  if [[ -z "$kib" ]] || ! alive "$pid"; then
    log_tail "${LOGS[$label]}"
    die "$label (pid $pid) exited before it was stopped"
  fi
  rss "$label" "$kib"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 20))
  while alive "$pid" && ((SECONDS < deadline)); do sleep 0.05; done
  if alive "$pid"; then
    # Not a benchmark failure, but worth knowing: it goes in the results.
    note "$FIGURE: $label did not stop within 20 s of SIGTERM and was killed; its threads were in: $(hung_in "$pid")"
    log_tail "${LOGS[$label]}"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  unset "PIDS[$label]"
}

# Stops whatever this run started and has not stopped (on exit or error),
# by pid only.
stop_all() {
  local label
  [[ -z "${CPU_WATCH:-}" ]] || kill -TERM "$CPU_WATCH" 2>/dev/null || true
  for label in "${!PIDS[@]}"; do
    kill -TERM "${PIDS[$label]}" 2>/dev/null || true
  done
  for label in "${!PIDS[@]}"; do
    wait "${PIDS[$label]}" 2>/dev/null || true
  done
}

# note TEXT: something seen during the run that the results should mention.
note() {
  say "$1"
  echo "$1" >>"$RUN/notes.txt"
}

# rss LABEL KIB: one peak-RSS record of the current figure.
rss() { printf '%s\t%s\t%s\n' "$FIGURE" "$1" "$2" >>"$RUN/rss.tsv"; }

# measured LABEL OUT COMMAND [ARG...]: runs a tool that ends by itself,
# stdout to OUT, stderr to OUT.err, and records its peak RSS. Sets ELAPSED
# (wall seconds) and fails the run if the tool fails.
measured() {
  local label=$1 out=$2
  shift 2
  local t0 t1
  t0="$(now)"
  if ! /usr/bin/time -f '%M' -o "$out.rss" "$@" >"$out" 2>"$out.err"; then
    cat "$out.err" >&2
    die "$label failed: $*"
  fi
  t1="$(now)"
  ELAPSED="$(calc "$t1 - $t0")"
  rss "$label" "$(tail -n 1 "$out.rss")"
}

# wrk_run LABEL OUT SCRIPT URL CONNECTIONS [SCRIPT_ARG...]: the one load
# generator of the HTTP figures: one thread, keep-alive connections, for
# WRK_SECONDS. Sets WRK to its result (JSON: requests, duration_us, errors,
# latency_us percentiles) and WRK_CMD to the command line. Any error or
# non-2xx answer fails the run: a figure must not count failures as work.
wrk_run() {
  local label=$1 out=$2 script=$3 url=$4 connections=$5
  shift 5
  local cmd=(wrk -t1 -c"$connections" -d"${WRK_SECONDS}s" --timeout 10s -s "bench/wrk/$script" "$url" -- "$@")
  # As the results show it: the run's own tag is no part of the recipe.
  WRK_CMD="${cmd[*]/#$(basename "$RUN")*/TAG}"
  measured "$label" "$out" "${cmd[@]}"
  WRK="$(sed -n 's/^WRK_JSON //p' "$out")"
  [[ -n "$WRK" ]] || die "$label printed no result (see $out)"
  python3 - "$WRK" "$label" <<'EOF' || die "$label had failed requests (see $out)"
import json, sys
r, label = json.loads(sys.argv[1]), sys.argv[2]
bad = {k: v for k, v in r["errors"].items() if v}
if bad or not r["requests"]:
    sys.exit(f"bench: {label}: {r['requests']} requests, errors {bad}")
EOF
}

# wrk_field JSON EXPR: a number from wrk_run's result, e.g. 'rps' or 'p99_ms'.
wrk_field() {
  python3 - "$1" "$2" <<'EOF'
import json, sys
r = json.loads(sys.argv[1])
values = {
    "rps": r["requests"] / (r["duration_us"] / 1e6),
    "requests": r["requests"],
    "p50_ms": r["latency_us"]["p50"] / 1000,
    "p90_ms": r["latency_us"]["p90"] / 1000,
    "p99_ms": r["latency_us"]["p99"] / 1000,
}
print(round(values[sys.argv[2]], 2))
EOF
}

# sql DB QUERY: one value from a service's database (read only): a SQLite
# file, or a postgres:// URL.
sql() {
  if [[ $1 == postgres://* ]]; then
    psql "$1" -Atqc "$2"
  else
    sqlite3 -readonly "$1" "$2"
  fi
}

# db_url DB: the DATABASE_URL of a SQLite file or a postgres:// URL.
db_url() { if [[ $1 == postgres://* ]]; then echo "$1"; else echo "sqlite://$1"; fi; }

# PostgreSQL: the private cluster of scripts/postgres.sh (127.0.0.1:55432),
# started (and later stopped) by this run only if it does not answer.
STARTED_PG=""
need_pg() {
  if ! "$REPO/scripts/postgres.sh" status >/dev/null 2>&1; then
    "$REPO/scripts/postgres.sh" start
    STARTED_PG=yes
  fi
}

# pg_db NAME: a new, empty database on that cluster; prints its URL.
pg_db() {
  local admin name
  admin="$("$REPO/scripts/postgres.sh" url)"
  name="bench_$1_$(basename "$RUN" | tr -cd '[:alnum:]' | tr '[:upper:]' '[:lower:]')"
  psql "$admin" -qc "DROP DATABASE IF EXISTS $name" -c "CREATE DATABASE $name" >/dev/null ||
    die "could not create database $name"
  echo "${admin%/*}/$name"
}

# pg_drop URL: drops a database pg_db made.
pg_drop() { psql "${1%/*}/postgres" -qc "DROP DATABASE IF EXISTS ${1##*/} WITH (FORCE)" >/dev/null || true; }

# wait_rows [--pid PID]... TIMEOUT DB SQL [DB SQL]...: see bench/wait_rows.py.
# Prints the time each condition became true, one per line.
wait_rows() { python3 "$REPO/bench/wait_rows.py" "$@"; }

# figure KEY=VALUE...: one result row (see bench/report.py for the keys).
figure() { python3 "$REPO/bench/report.py" add "$RUN/figures.jsonl" "$@"; }

# ------------------------------------------------------------- the services

# start_audit LABEL DIR [VAR=VALUE...]: audit-service as a user runs it:
# default log level (info) written to a file, its own SQLite file, loopback.
# Sets PORTS[LABEL]; does not wait (the Kafka figure times from launch).
start_audit() {
  local label=$1 dir=$2
  shift 2
  local port
  port="$(free_port)"
  PORTS[$label]=$port
  start "$label" "$dir/$label.log" LISTEN_ADDR="127.0.0.1:$port" \
    DATABASE_URL="sqlite://$dir/$label.db" "$@" -- "$BIN/audit-service"
}

# start_user LABEL DIR [VAR=VALUE...]: user-service likewise.
start_user() {
  local label=$1 dir=$2
  shift 2
  local port
  port="$(free_port)"
  PORTS[$label]=$port
  start "$label" "$dir/$label.log" LISTEN_ADDR="127.0.0.1:$port" \
    DATABASE_URL="sqlite://$dir/$label.db" "$@" -- "$BIN/user-service"
}

# healthy LABEL: waits for a service started above to answer /healthz.
healthy() { wait_http "$1" "http://127.0.0.1:${PORTS[$1]}/healthz"; }

# Kafka: the shared broker on 9092, started (and later stopped) by this run
# only if nothing answers there.
STARTED_KAFKA=""
need_kafka() {
  if ! "$REPO/scripts/kafka.sh" status >/dev/null 2>&1; then
    "$REPO/scripts/kafka.sh" start
    STARTED_KAFKA=yes
  fi
}

# new_topic NAME: creates a one-partition topic (fails if it exists).
new_topic() {
  "$BIN/examples/bench_produce" "$BROKER" "$1" 0 >/dev/null || die "could not create topic $1"
}

# cpu_watch OUT: starts sampling every process's CPU (bench/cpu_by_process.py)
# and returns once the window is open. cpu_seen OUT closes it and sets
# CPU_NOTE to the CPU seconds of the busiest process names over it, beside
# the machine's busy core-seconds: whether a path computed or waited for a
# broker or database server on the same cores.
CPU_WATCH=""
cpu_watch() {
  rm -f "$1" "$1.ready"
  python3 "$REPO/bench/cpu_by_process.py" "$1" &
  CPU_WATCH=$!
  local deadline=$((SECONDS + 10))
  until [[ -e "$1.ready" ]]; do
    ((SECONDS < deadline)) || die "the CPU sampler did not start"
    sleep 0.01
  done
}
cpu_seen() {
  kill -TERM "$CPU_WATCH" 2>/dev/null || true
  wait "$CPU_WATCH" || die "the CPU sampler failed"
  CPU_WATCH=""
  CPU_NOTE="$(python3 - "$1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
# Names that used at least 2% of the window's busy time, busiest first.
busy = max(r["machine_busy_s"], 0.01)
top = [f"{n} {s:.2f}" for n, s in r["cpu_s"].items() if s >= 0.02 * busy]
print(f"CPU s over the {r['wall_s']:.2f} s window: " + ", ".join(top)
      + f"; machine busy {r['machine_busy_s']:.2f} of {r['wall_s'] * r['cores']:.2f} core-s")
PY
)"
}
