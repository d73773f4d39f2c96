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

# shellcheck source-path=SCRIPTDIR source=lib/daemon.sh
source "$REPO/scripts/lib/daemon.sh"
DAEMON_PORT="$PORT"
DAEMON_FILES="$CACHE/nats-$PORT"
DAEMON_DATA="$DATA"
DAEMON_MARK="$DATA"
DAEMON_NOUN=server
DAEMON_PROGRAM=nats-server
DAEMON_KIND="a NATS server with JetStream"
DAEMON_START_DEADLINE=30
DAEMON_COMMAND=("$BIN" -a 127.0.0.1 -p "$PORT" -js -sd "$DATA")
daemon_settings

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

# A NATS server greets every client with an INFO line; ours must say that
# JetStream is on.
daemon_answers() {
  local info
  info="$(
    exec 2>/dev/null
    exec 3<>"/dev/tcp/127.0.0.1/$PORT" || exit 1
    IFS= read -r -t 2 line <&3 || exit 1
    echo "$line"
  )" || return 1
  [[ "$info" == INFO* && "$info" == *'"jetstream":true'* ]]
}

daemon_prepare() {
  mkdir -p "$DATA"
}

daemon_log_tail() {
  tail -n 30 "$DAEMON_LOGFILE" >&2 || true
}

cmd_start() {
  cmd_install
  DAEMON_BANNER="$("$BIN" --version), 127.0.0.1:$PORT"
  daemon_start
}

case "${1:-}" in
install) cmd_install ;;
start) cmd_start ;;
# SIGTERM: the server closes its clients and flushes JetStream's storage.
stop) daemon_stop ;;
status) daemon_status ;;
*)
  sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
  ;;
esac
