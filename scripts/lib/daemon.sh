# shellcheck shell=bash
# One server process per port, run the same way by every server script
# (scripts/kafka.sh, nats.sh, mosquitto.sh; postgres.sh uses the lock and
# the log lines, pg_ctl does the rest): a pid file checked against the
# process's command line, a lock per instance, a process detached from the
# caller, a wait until it answers, a stop with a deadline and a status line.
#
# Sourced, not run. The script sets these, then calls daemon_settings:
#   DAEMON_PORT       the port on 127.0.0.1
#   DAEMON_FILES      the path its pid file, log and lock are named after
#                     (`.cache/kafka/kafka-9092` -> kafka-9092.pid, .log, .lock)
#   DAEMON_DATA       its data directory, for messages
#   DAEMON_MARK       a string the server's command line holds (its config
#                     or data path): a stale pid file whose number was
#                     reused by another process is not taken for ours
#   DAEMON_NOUN       what it is in messages ("broker", "server")
#   DAEMON_PROGRAM    the process in messages ("broker", "nats-server")
#   DAEMON_KIND       what must answer on the port ("an answering Kafka broker")
#   DAEMON_START_DEADLINE   seconds until a started server must answer
#   DAEMON_COMMAND    the server's command line (an array)
# and, before daemon_start, DAEMON_BANNER (what the log's start line says
# about the instance). Optional: DAEMON_FOREIGN (what answers when it is
# not ours, default DAEMON_KIND), DAEMON_STOP_DEADLINE (seconds of SIGTERM
# grace before SIGKILL, default 30), DAEMON_POLL (seconds between probes
# while starting, default 0.2). The script defines these functions:
#   daemon_answers    exit 0 when the server answers (the readiness probe)
#   daemon_prepare    what a first start needs (config, data directory)
#   daemon_log_tail   what to print of the log when a start fails

log() { echo "${0##*/}: $*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

# One start/stop at a time per instance, on descriptor 8, held until the
# script exits: two test binaries starting the same port at once do not
# both launch; the loser of the race then finds the server answering.
daemon_lock() {
  exec 8>"$1"
  flock 8
}

# Derives the names every function below uses (DAEMON_ADDR,
# DAEMON_PIDFILE, DAEMON_LOGFILE, DAEMON_LOCKFILE) and the defaults.
daemon_settings() {
  DAEMON_ADDR="127.0.0.1:$DAEMON_PORT"
  DAEMON_PIDFILE="$DAEMON_FILES.pid"
  DAEMON_LOGFILE="$DAEMON_FILES.log"
  DAEMON_LOCKFILE="$DAEMON_FILES.lock"
  DAEMON_FOREIGN="${DAEMON_FOREIGN:-$DAEMON_KIND}"
  DAEMON_STOP_DEADLINE="${DAEMON_STOP_DEADLINE:-30}"
  DAEMON_POLL="${DAEMON_POLL:-0.2}"
}

# Something accepts TCP connections on 127.0.0.1:$1 (cheap, no client).
daemon_port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Pid from the pid file, if that process is still our server.
daemon_pid() {
  [[ -f "$DAEMON_PIDFILE" ]] || return 1
  local pid
  pid="$(cat "$DAEMON_PIDFILE")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$DAEMON_MARK" || return 1
  echo "$pid"
}

# Starts DAEMON_COMMAND detached and records its pid. setsid + nohup: the
# server must outlive this script and the caller's terminal and process
# group. All its output goes to the log file, so it never holds a caller's
# stdout open (cargo test would wait for it).
daemon_spawn() {
  {
    echo
    echo "===== $(date -u +%FT%TZ) ${0##*/} start ($DAEMON_BANNER) ====="
  } >>"$DAEMON_LOGFILE"
  (
    # Close every descriptor the caller may have passed down (lock files,
    # a harness's pipes): a long-lived server holding a pipe open makes
    # whoever reads that pipe wait forever.
    for fd in /proc/self/fd/*; do
      fd="${fd##*/}"
      if ((fd > 2)); then eval "exec $fd>&-"; fi
    done
    exec nohup setsid "${DAEMON_COMMAND[@]}" </dev/null >>"$DAEMON_LOGFILE" 2>&1
  ) &
  # The subshell execs nohup, which execs setsid, which execs the server:
  # the same pid all along.
  DAEMON_SPAWNED=$!
  echo "$DAEMON_SPAWNED" >"$DAEMON_PIDFILE"
}

# Starts the server unless it answers already, then waits until it does.
daemon_start() {
  mkdir -p "${DAEMON_FILES%/*}"
  daemon_lock "$DAEMON_LOCKFILE"
  if daemon_answers; then
    log "$DAEMON_NOUN already running on $DAEMON_ADDR"
    return 0
  fi
  local pid
  if pid="$(daemon_pid)"; then
    # Ours but not answering yet: an earlier start gave up waiting for it
    # (slow machine) and left it running; wait again.
    log "$DAEMON_NOUN (pid $pid) is starting; waiting for it"
  else
    daemon_port_open "$DAEMON_PORT" && die "port $DAEMON_PORT is taken by something that is not $DAEMON_KIND"
    daemon_prepare
    daemon_spawn
    pid="$DAEMON_SPAWNED"
    log "started $DAEMON_PROGRAM pid $pid on $DAEMON_ADDR (log: $DAEMON_LOGFILE)"
  fi

  local deadline=$((SECONDS + DAEMON_START_DEADLINE))
  while ((SECONDS < deadline)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      daemon_log_tail
      rm -f "$DAEMON_PIDFILE"
      die "$DAEMON_PROGRAM on $DAEMON_ADDR exited during startup"
    fi
    if daemon_answers; then
      log "$DAEMON_NOUN ready on $DAEMON_ADDR"
      return 0
    fi
    sleep "$DAEMON_POLL"
  done
  daemon_log_tail
  die "$DAEMON_PROGRAM on $DAEMON_ADDR did not answer within ${DAEMON_START_DEADLINE}s (pid $pid left running; 'scripts/${0##*/} stop' ends it)"
}

# SIGTERM (each server's clean shutdown), SIGKILL after the deadline; the
# data is kept.
daemon_stop() {
  mkdir -p "${DAEMON_FILES%/*}"
  daemon_lock "$DAEMON_LOCKFILE"
  local pid
  if ! pid="$(daemon_pid)"; then
    # A pid file whose process is gone is stale. One whose process lives
    # but runs something else is kept: a checkout sharing this .cache
    # through a symlink names its paths differently, and the server it
    # started is not this script's to forget.
    pid="$(cat "$DAEMON_PIDFILE" 2>/dev/null || true)"
    if ! [[ "$pid" =~ ^[0-9]+$ ]] || ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$DAEMON_PIDFILE"
    fi
    if daemon_port_open "$DAEMON_PORT"; then
      die "something answers on port $DAEMON_PORT but was not started by this script (no live pid in $DAEMON_PIDFILE)"
    fi
    log "$DAEMON_NOUN on $DAEMON_ADDR is not running"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + DAEMON_STOP_DEADLINE))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "$DAEMON_PROGRAM pid $pid still running after ${DAEMON_STOP_DEADLINE}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  fi
  rm -f "$DAEMON_PIDFILE"
  log "$DAEMON_NOUN on $DAEMON_ADDR stopped (data kept in $DAEMON_DATA)"
}

# One line on stdout; exit 0 only when the server answers.
daemon_status() {
  local pid
  if daemon_answers; then
    if pid="$(daemon_pid)"; then
      echo "running: pid $pid on $DAEMON_ADDR (data $DAEMON_DATA)"
    else
      echo "running: $DAEMON_FOREIGN answers on $DAEMON_ADDR (not started by this script)"
    fi
    return 0
  fi
  if pid="$(daemon_pid)"; then
    echo "starting or unhealthy: pid $pid is alive but $DAEMON_ADDR does not answer"
  else
    echo "stopped: nothing answers on $DAEMON_ADDR"
  fi
  return 1
}
