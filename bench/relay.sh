# shellcheck shell=bash
# Figure 4: how fast user-service's outbox relay drains a backlog, over HTTP
# to Kafka and to NATS JetStream. See bench/README.md.

# backlog_synthetic DIR N: N pending events written straight into the
# database (USER_DB when set) by the bench_backlog example (the rows the
# service would write).
backlog_synthetic() {
  BACKLOG_CMD="bench_backlog $2"
  measured bench_backlog "$1/backlog.out" env DATABASE_URL="$(db_url "${USER_DB:-$1/user-service.db}")" \
    "$BIN/examples/bench_backlog" "$2"
}

# backlog_api DIR N: about N users created through POST /v1/user, 8 at a
# time, while the relay points at a port nobody listens on, so every event
# stays pending.
backlog_api() {
  local dir=$1 n=$2 dead figure=$FIGURE
  BACKLOG_CMD="wrk -t1 -c8 -s bench/wrk/create.lua USER_URL/v1/user -- TAG $n (relay pointed at a closed port)"
  FIGURE="$figure-creates"
  dead="$(free_port)"
  start_user user-service "$dir" EVENT_TRANSPORT=http AUDIT_URL="http://127.0.0.1:$dead/"
  healthy user-service
  measured wrk "$dir/create.out" wrk -t1 -c8 -d300s --timeout 10s -s bench/wrk/create.lua \
    "http://127.0.0.1:${PORTS[user-service]}/v1/user" -- "$(basename "$RUN")" "$n"
  stop user-service
  FIGURE=$figure
}

# relay_drain NAME TRANSPORT BACKLOG N: builds the backlog (BACKLOG is
# synthetic or api), starts audit-service, then times user-service from
# launch until its outbox has no pending row (DRAIN_S) and until
# audit-service has stored every event (STORED_S), and reads the span of
# delivered_at (SPAN_S, over SPAN_ROWS rows). Sets N to the backlog.
# The databases are SQLite files, or USER_DB and AUDIT_DB when set.
relay_drain() {
  local name=$1 transport=$2 backlog=$3
  N=$4
  FIGURE="relay-$name"
  local dir="$RUN/relay-$name"
  mkdir -p "$dir"
  local udb="${USER_DB:-$dir/user-service.db}" adb="${AUDIT_DB:-$dir/audit-service.db}"
  "backlog_$backlog" "$dir" "$N"
  N="$(sql "$udb" "SELECT count(*) FROM outbox WHERE status = 'pending'")"
  ((N > 0)) || die "$FIGURE: the backlog is empty"

  local transport_env=(EVENT_TRANSPORT="$transport")
  if [[ $transport == kafka ]]; then
    need_kafka
    local topic="bench-relay-$name-${RUN##*/}"
    new_topic "$topic"
    transport_env+=(KAFKA_TOPIC="$topic" KAFKA_GROUP_ID="$topic")
  elif [[ $transport == nats ]]; then
    need_nats
    nats_names "relay$name"
    transport_env+=("${NATS_ENV[@]}")
  fi
  start_audit audit-service "$dir" "${transport_env[@]}" DATABASE_URL="$(db_url "$adb")"
  healthy audit-service

  local t0 times
  cpu_watch "$dir/cpu.json"
  t0="$(now)"
  start_user user-service "$dir" "${transport_env[@]}" AUDIT_URL="http://127.0.0.1:${PORTS[audit-service]}/" \
    DATABASE_URL="$(db_url "$udb")"
  times="$(wait_rows --pid "${PIDS[user-service]}" --pid "${PIDS[audit-service]}" 300 \
    "$udb" "SELECT NOT EXISTS (SELECT 1 FROM outbox WHERE status = 'pending')" \
    "$adb" "SELECT count(*) >= $N FROM events")" ||
    die "$FIGURE: the backlog was not drained and stored (see the logs in $dir)"
  cpu_seen "$dir/cpu.json"
  DRAIN_S="$(calc "$(sed -n 1p <<<"$times") - $t0")"
  STORED_S="$(calc "$(sed -n 2p <<<"$times") - $t0")"

  local delivered stored
  delivered="$(sql "$udb" "SELECT count(*) FROM outbox WHERE status = 'delivered'")"
  # The drain rate itself, as the consume figures take theirs: from the
  # first commit of delivered rows to the last (each commit stamps its rows'
  # delivered_at), over the rows after the first commit. Launch, connecting
  # and the broker's first answer are a fixed cost, noted beside it.
  local span
  if [[ $udb == postgres://* ]]; then
    span="SELECT extract(epoch FROM max(delivered_at) - min(delivered_at)), \
      count(*) FILTER (WHERE delivered_at > (SELECT min(delivered_at) FROM outbox)) FROM outbox"
  else
    span="SELECT (julianday(max(delivered_at)) - julianday(min(delivered_at))) * 86400, \
      (SELECT count(*) FROM outbox WHERE delivered_at > (SELECT min(delivered_at) FROM outbox)) FROM outbox"
  fi
  span="$(sql "$udb" "$span")"
  SPAN_S="$(calc "${span%|*}")"
  SPAN_ROWS="${span#*|}"
  stored="$(sql "$adb" 'SELECT count(*) FROM events')"
  [[ $delivered == "$N" && $stored == "$N" ]] ||
    die "$FIGURE: $N pending, $delivered delivered, $stored stored"
  SETUP="${CMDS[audit-service]}"$'\n'"${CMDS[user-service]}"
  stop user-service
  stop audit-service
  [[ $transport != nats ]] || nats_delete
  say "$FIGURE: $N events, $SPAN_ROWS delivered after the first commit in $SPAN_S s, outbox empty $DRAIN_S s after launch, all stored after $STORED_S s"
}

# span_rate: the last relay_drain's rate over the span of delivered_at.
span_rate() {
  ((SPAN_ROWS > 0)) && [[ $SPAN_S != 0 && $SPAN_S != 0.0 ]] ||
    die "$FIGURE: every row was delivered in one commit: make the backlog larger (BENCH_RELAY_BACKLOG)"
  rate "$SPAN_ROWS" "$SPAN_S"
}

# relay_figure ID TITLE GOAL GOAL_TEXT [from-launch]: the figure of the last
# relay_drain, at its rate over the span of delivered_at, or from launch
# (the two small backlogs that check each other: 2,000 rows go out in a
# few commits, too few for a span).
relay_figure() {
  local ours
  if [[ ${5:-} == from-launch ]]; then ours="$(rate "$N" "$DRAIN_S")"; else ours="$(span_rate)"; fi
  figure id="$1" run=relay unit=events/s better=higher title="$2" \
    ours="$ours" \
    note="$N events: $SPAN_ROWS delivered after the first commit, in $SPAN_S s; from launch, outbox empty after $DRAIN_S s ($(rate "$N" "$DRAIN_S")/s), all stored after $STORED_S s; $CPU_NOTE" \
    ${3:+goal="$3"} goal_text="$4" \
    command="$BACKLOG_CMD; then user-service until its outbox has no pending row, rate over the span of delivered_at; audit-service until it stored $N" \
    setup="$SETUP"
}

bench_relay() {
  local n="${BENCH_RELAY_BACKLOG:-20000}" api="${BENCH_API_BACKLOG:-2000}"
  relay_drain http http synthetic "$n"
  relay_figure relay_http "4. relay drain over HTTP, $N-event backlog" 20000 ">= 20,000 events/s"
  relay_drain kafka kafka synthetic "$n"
  relay_figure relay_kafka "4. relay drain to Kafka, $N-event backlog" 50000 ">= 50,000 events/s"
  relay_drain nats nats synthetic "$n"
  relay_figure relay_nats "4. relay drain to NATS JetStream, $N-event backlog" 30000 ">= 30,000 events/s"
  # The same drain on a backlog made through the API, and on a written one
  # of the same size: the two should agree, which is what vouches for the
  # written backlog above.
  if ((api > 0)); then
    relay_drain http-api http api "$api"
    relay_figure relay_http_api "4. relay drain over HTTP, $N-event backlog created through POST /v1/user, from launch" \
      "" "(check: should agree with the next row)" from-launch
    relay_drain http-small http synthetic "$N"
    relay_figure relay_http_small "4. relay drain over HTTP, $N-event written backlog, from launch" \
      "" "(check: should agree with the row above)" from-launch
  fi
}
