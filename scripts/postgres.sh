#!/usr/bin/env bash
# Runs a private PostgreSQL cluster on loopback, without Docker, for the test
# suite and for people (`make pg-up` / `make pg-down`).
#
#   scripts/postgres.sh start     install PostgreSQL if missing, initdb once, start, wait until it answers
#   scripts/postgres.sh stop      fast shutdown (clients are disconnected); data is kept
#   scripts/postgres.sh restart   stop then start (the tests restart a private instance under load)
#   scripts/postgres.sh status    exit 0 if the cluster on PG_PORT answers
#   scripts/postgres.sh url       print the superuser URL of the cluster
#   scripts/postgres.sh clean     drop the databases tests left behind (named test_*)
#
# Environment (PG_*, not PG*: libpq reads PGPORT, PGUSER and friends, and a
# shell that sets them for this script must not redirect the services too):
#   PG_PORT   port on 127.0.0.1, default 55432 (not 5432, so a system cluster can run beside it)
#   PG_DIR    where the clusters live, default $REPO/.cache/postgres (as root, when
#             the server's user cannot reach the checkout: /var/tmp/cloudevents-pg-<hash>)
#   PG_LISTEN       listen_addresses at start, default 127.0.0.1; `*` for every
#                   interface, empty for none (then PG_SOCKET_DIR must be set)
#   PG_SOCKET_DIR   unix_socket_directories at start, default none
#   PG_PASSWORD     set when the cluster is created: the superuser's password,
#                   required from every client but loopback (scram-sha-256), as
#                   the postgres image's entrypoint sets it up from POSTGRES_PASSWORD
#
# The server refuses to run as root. As root, the cluster is run as the
# `postgres` user that Debian's package creates (or, failing that, a system
# user `cloudevents-pg` made with useradd); otherwise as the calling user.
# Each PG_PORT gets its own data directory ($PG_DIR/data-$PORT), log and
# lock, so several instances can run side by side. Authentication is `trust`
# on loopback and the socket; other addresses need PG_PASSWORD, and without
# it nothing else is let in: a private test cluster, never a production setup.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PORT="${PG_PORT:-55432}"
DIR="${PG_DIR:-$REPO/.cache/postgres}"
DATA="$DIR/data-$PORT"
LOGFILE="$DIR/postgres-$PORT.log"
SUPERUSER=postgres
URL="postgres://$SUPERUSER@127.0.0.1:$PORT/postgres"
LISTEN="${PG_LISTEN-127.0.0.1}"
SOCKET_DIR="${PG_SOCKET_DIR:-}"
PASSWORD="${PG_PASSWORD:-}"
START_DEADLINE=60

# Its log lines and per-instance lock; pg_ctl detaches, waits and stops
# the server itself.
# shellcheck source-path=SCRIPTDIR source=lib/daemon.sh
source "$REPO/scripts/lib/daemon.sh"

# The newest installed server's binaries (Debian keeps them off PATH).
bindir() {
  local dir
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  if [[ -n "$dir" && -x "$dir/initdb" ]]; then
    echo "$dir"
  elif command -v initdb >/dev/null; then
    dirname "$(command -v initdb)"
  else
    return 1
  fi
}

ensure_installed() {
  bindir >/dev/null && return 0
  "$REPO/scripts/ensure-debs.sh" postgresql ||
    die "PostgreSQL is not installed; install it with the command above"
  bindir >/dev/null || die "PostgreSQL was installed but no initdb was found"
}

# Who runs the server: the caller, or when root a user PostgreSQL accepts.
run_as() {
  if [[ $(id -u) -ne 0 ]]; then
    id -un
  elif id -u postgres >/dev/null 2>&1; then
    echo postgres
  else
    id -u cloudevents-pg >/dev/null 2>&1 ||
      useradd --system --no-create-home --shell /usr/sbin/nologin cloudevents-pg
    echo cloudevents-pg
  fi
}

as_owner() {
  local user
  user="$(run_as)"
  if [[ "$user" == "$(id -un)" ]]; then
    "$@"
  else
    runuser -u "$user" -- "$@"
  fi
}

psql_admin() {
  "$(bindir)/psql" "$URL" -v ON_ERROR_STOP=1 -qAt "$@"
}

# Over TCP on loopback when the server listens there, else on its socket.
answers() {
  local host=127.0.0.1
  [[ -n "$LISTEN" ]] || host="$SOCKET_DIR"
  "$(bindir)/pg_isready" -q -h "$host" -p "$PORT" -U "$SUPERUSER" -t 2 2>/dev/null
}

init_cluster() {
  [[ -f "$DATA/PG_VERSION" ]] && return 0
  local user
  user="$(run_as)"
  mkdir -p "$DATA"
  chmod 700 "$DATA"
  [[ "$user" == "$(id -un)" ]] || chown "$user" "$DIR" "$DATA"
  # The server's user must reach the data directory through every parent
  # folder; a checkout under a private home (/root) is not reachable.
  as_owner test -w "$DATA" ||
    die "user $user cannot write $DATA (a parent folder is private); set PG_DIR to a folder it can reach, e.g. PG_DIR=/var/tmp/cloudevents-pg"
  log "initdb $DATA (server user $user)"
  local pwfile=()
  if [[ -n "$PASSWORD" ]]; then
    # A file only the server's user reads, gone once initdb has it.
    printf '%s\n' "$PASSWORD" >"$DIR/pwfile-$PORT"
    chmod 600 "$DIR/pwfile-$PORT"
    [[ "$user" == "$(id -un)" ]] || chown "$user" "$DIR/pwfile-$PORT"
    pwfile=(--pwfile="$DIR/pwfile-$PORT")
  fi
  as_owner "$(bindir)/initdb" -D "$DATA" -U "$SUPERUSER" --auth=trust "${pwfile[@]}" -E UTF8 --locale=C.UTF-8 \
    >"$DIR/initdb-$PORT.log" 2>&1 || {
    rm -f "$DIR/pwfile-$PORT"
    cat "$DIR/initdb-$PORT.log" >&2
    die "initdb failed"
  }
  rm -f "$DIR/pwfile-$PORT"
  if [[ -n "$PASSWORD" ]]; then
    # initdb trusts loopback and the socket; every other address must
    # give the password (the same line the postgres image appends).
    printf '\nhost all all all scram-sha-256\n' >>"$DATA/pg_hba.conf"
  fi
  # Loopback TCP only, no Unix socket (its path would depend on the
  # checkout's): the defaults, which PG_LISTEN and PG_SOCKET_DIR replace at
  # each start. Enough connections for a suite that runs tests in parallel,
  # each test with its own database and pools. fsync stays on: the tests
  # prove that a commit is durable.
  cat >>"$DATA/postgresql.conf" <<EOF

# Written by scripts/postgres.sh
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = ''
max_connections = 300
shared_buffers = 128MB
synchronous_commit = on
fsync = on
logging_collector = off
log_min_messages = warning
EOF
}

cmd_start() {
  ensure_installed
  mkdir -p "$DIR"
  daemon_lock "$DIR/postgres-$PORT.lock"
  if answers; then
    log "already running on 127.0.0.1:$PORT"
    return 0
  fi
  init_cluster
  local user
  user="$(run_as)"
  [[ "$user" == "$(id -un)" ]] || { touch "$LOGFILE" && chown "$user" "$LOGFILE"; }
  # -w waits until the server accepts connections; setsid keeps it out of
  # the caller's process group, and its output goes to the log file so it
  # never holds a caller's pipe open (cargo test would wait for it). The
  # lock's descriptor is closed for it: a server holding it would block
  # every later stop.
  # Where it listens is decided at each start (pg_ctl passes -o to the
  # server through a shell, hence the inner quotes).
  as_owner setsid "$(bindir)/pg_ctl" -D "$DATA" -l "$LOGFILE" -w -t "$START_DEADLINE" \
    -o "-c listen_addresses='$LISTEN' -c unix_socket_directories='$SOCKET_DIR'" start \
    </dev/null >/dev/null 2>&1 8>&- || {
    tail -n 40 "$LOGFILE" >&2 || true
    die "PostgreSQL on 127.0.0.1:$PORT did not start"
  }
  answers || die "PostgreSQL on 127.0.0.1:$PORT started but does not answer"
  log "ready: $URL (log: $LOGFILE)"
}

cmd_stop() {
  mkdir -p "$DIR"
  daemon_lock "$DIR/postgres-$PORT.lock"
  if [[ ! -f "$DATA/postmaster.pid" ]]; then
    log "not running on 127.0.0.1:$PORT"
    return 0
  fi
  # fast: roll back open transactions, disconnect clients, checkpoint.
  as_owner "$(bindir)/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null
  log "stopped 127.0.0.1:$PORT (data kept in $DATA)"
}

cmd_status() {
  bindir >/dev/null || {
    echo "not installed: no PostgreSQL server binaries"
    return 1
  }
  if answers; then
    echo "running: $URL (data $DATA)"
  else
    echo "stopped: nothing answers on 127.0.0.1:$PORT"
    return 1
  fi
}

cmd_clean() {
  answers || die "no PostgreSQL on 127.0.0.1:$PORT"
  local db n=0
  for db in $(psql_admin -c "SELECT datname FROM pg_database WHERE datname LIKE 'test\_%'"); do
    psql_admin -c "DROP DATABASE \"$db\" WITH (FORCE)"
    n=$((n + 1))
  done
  log "dropped $n test database(s)"
}

# As root the server runs as another user, who must reach the data folder
# through every parent. A checkout in a private folder (`mktemp -d`, a 0700
# home) is out of its reach, so without PG_DIR the clusters of such a
# checkout live under /var/tmp instead, in a folder of their own per
# checkout.
if [[ -z "${PG_DIR:-}" && $(id -u) -eq 0 ]] && ! runuser -u "$(run_as)" -- test -x "$REPO"; then
  DIR="/var/tmp/cloudevents-pg-$(printf '%s' "$REPO" | sha256sum | cut -c1-12)"
  DATA="$DIR/data-$PORT"
  LOGFILE="$DIR/postgres-$PORT.log"
fi

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
restart)
  cmd_stop
  cmd_start
  ;;
status) cmd_status ;;
url) echo "$URL" ;;
clean) cmd_clean ;;
*)
  sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
  ;;
esac
