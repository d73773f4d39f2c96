#!/usr/bin/env bash
# Runs a real NATS server with JetStream on loopback without Docker, for the
# integration tests and for users who have no Docker.
#
#   scripts/nats.sh install   build nats-server into .cache/go/bin if it is not there yet
#   scripts/nats.sh start     install if needed, start, wait until it answers with JetStream on
#   scripts/nats.sh stop      SIGTERM (a clean JetStream shutdown), SIGKILL after a deadline; data is kept
#   scripts/nats.sh status    exit 0 if a server with JetStream answers on NATSD_PORT
#
# Environment (NATSD_*, not NATS_*: the services read NATS_* themselves, so a
# shared shell must not hold script settings there):
#   NATSD_PORT      client port, default 4222
#   NATSD_VERSION   nats-server version built with `go install`, default below
#
# Why `go install` and not Debian's nats-server package: Debian ships 2.9.10;
# the Go module proxy serves current releases, and the project already needs
# Go for the interop suite. The build goes into the project-local Go cache
# (.cache/go), once. Everything lives under $REPO/.cache (gitignored):
#   .cache/go/bin/nats-server          the server
#   .cache/nats/data-$PORT             JetStream storage of the instance on $PORT
#   .cache/nats/nats-$PORT.{pid,log}   its pid file and log
# Several instances can run side by side: each NATSD_PORT gets its own files.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$REPO/.cache/nats"
GOCACHE_DIR="$REPO/.cache/go"
BIN="$GOCACHE_DIR/bin/nats-server"

NATSD_VERSION="${NATSD_VERSION:-v2.15.2}"
PORT="${NATSD_PORT:-4222}"
DATA="$CACHE/data-$PORT"
PIDFILE="$CACHE/nats-$PORT.pid"
LOGFILE="$CACHE/nats-$PORT.log"

START_DEADLINE=30 # seconds until a started server must answer
STOP_DEADLINE=30  # seconds of SIGTERM grace before SIGKILL

log() { echo "nats.sh: $*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

cmd_install() {
  if [[ -x "$BIN" && "$("$BIN" --version 2>/dev/null)" == *"${NATSD_VERSION#v}"* ]]; then
    return 0
  fi
  command -v go >/dev/null || die "go is needed to build nats-server (go install github.com/nats-io/nats-server/v2@$NATSD_VERSION)"
  mkdir -p "$GOCACHE_DIR" "$CACHE"
  # Tests may start several instances at once; only one of them builds.
  exec 9>"$CACHE/.install.lock"
  flock 9
  if [[ -x "$BIN" && "$("$BIN" --version 2>/dev/null)" == *"${NATSD_VERSION#v}"* ]]; then
    exec 9>&-
    return 0
  fi
  log "building nats-server $NATSD_VERSION with go install (first run only)..."
  GOPATH="$GOCACHE_DIR" GOMODCACHE="$GOCACHE_DIR/pkg/mod" GOBIN="$GOCACHE_DIR/bin" \
    GOFLAGS="${GOFLAGS:-} -modcacherw -buildvcs=false" \
    go install "github.com/nats-io/nats-server/v2@$NATSD_VERSION" >"$CACHE/install.log" 2>&1 || {
    cat "$CACHE/install.log" >&2
    die "go install github.com/nats-io/nats-server/v2@$NATSD_VERSION failed (see above)"
  }
  exec 9>&-
  log "installed $("$BIN" --version)"
}

# Pid from the pid file, if that process is still our server. Checking the
# command line guards against a stale pid file whose number was reused.
server_pid() {
  [[ -f "$PIDFILE" ]] || return 1
  local pid
  pid="$(cat "$PIDFILE")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$DATA" || return 1
  echo "$pid"
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# A NATS server greets every client with an INFO line; ours must say that
# JetStream is on.
server_answers() {
  local info
  info="$(
    exec 2>/dev/null
    exec 3<>"/dev/tcp/127.0.0.1/$PORT" || exit 1
    IFS= read -r -t 2 line <&3 || exit 1
    echo "$line"
  )" || return 1
  [[ "$info" == INFO* && "$info" == *'"jetstream":true'* ]]
}

cmd_start() {
  cmd_install
  mkdir -p "$CACHE"
  # One start/stop at a time per instance.
  exec 8>"$CACHE/nats-$PORT.lock"
  flock 8

  if server_answers; then
    log "server already running on 127.0.0.1:$PORT"
    return 0
  fi
  local pid
  if pid="$(server_pid)"; then
    log "server (pid $pid) is starting; waiting for it"
  else
    port_open "$PORT" && die "port $PORT is taken by something that is not a NATS server with JetStream"
    mkdir -p "$DATA"
    {
      echo
      echo "===== $(date -u +%FT%TZ) nats.sh start ($("$BIN" --version), 127.0.0.1:$PORT) ====="
    } >>"$LOGFILE"
    (
      # Close every descriptor the caller may have passed down (lock files,
      # a harness's pipes): a long-lived server holding a pipe open makes
      # whoever reads that pipe wait forever.
      for fd in /proc/self/fd/*; do
        fd="${fd##*/}"
        if ((fd > 2)); then eval "exec $fd>&-"; fi
      done
      exec nohup setsid "$BIN" -a 127.0.0.1 -p "$PORT" -js -sd "$DATA" \
        </dev/null >>"$LOGFILE" 2>&1
    ) &
    pid=$!
    echo "$pid" >"$PIDFILE"
    log "started nats-server pid $pid on 127.0.0.1:$PORT (log: $LOGFILE)"
  fi

  local deadline=$((SECONDS + START_DEADLINE))
  while ((SECONDS < deadline)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$LOGFILE" >&2 || true
      rm -f "$PIDFILE"
      die "nats-server on 127.0.0.1:$PORT exited during startup"
    fi
    if server_answers; then
      log "server ready on 127.0.0.1:$PORT"
      return 0
    fi
    sleep 0.2
  done
  tail -n 30 "$LOGFILE" >&2 || true
  die "nats-server on 127.0.0.1:$PORT did not answer within ${START_DEADLINE}s (pid $pid left running; 'scripts/nats.sh stop' ends it)"
}

cmd_stop() {
  local pid
  mkdir -p "$CACHE"
  exec 8>"$CACHE/nats-$PORT.lock"
  flock 8
  if ! pid="$(server_pid)"; then
    rm -f "$PIDFILE"
    if port_open "$PORT"; then
      die "something answers on port $PORT but was not started by this script (no live pid in $PIDFILE)"
    fi
    log "server on 127.0.0.1:$PORT is not running"
    return 0
  fi
  # SIGTERM: the server closes its clients and flushes JetStream's storage.
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + STOP_DEADLINE))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "nats-server pid $pid still running after ${STOP_DEADLINE}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  fi
  rm -f "$PIDFILE"
  log "server on 127.0.0.1:$PORT stopped (data kept in $DATA)"
}

cmd_status() {
  local pid
  if server_answers; then
    if pid="$(server_pid)"; then
      echo "running: pid $pid on 127.0.0.1:$PORT (data $DATA)"
    else
      echo "running: a NATS server with JetStream answers on 127.0.0.1:$PORT (not started by this script)"
    fi
    return 0
  fi
  if pid="$(server_pid)"; then
    echo "starting or unhealthy: pid $pid is alive but 127.0.0.1:$PORT does not answer"
  else
    echo "stopped: nothing answers on 127.0.0.1:$PORT"
  fi
  return 1
}

case "${1:-}" in
install) cmd_install ;;
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
*)
  sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
  ;;
esac
