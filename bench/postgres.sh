# shellcheck shell=bash
# Figures 7 and 8: the audit path and the relay on PostgreSQL, each beside
# the same run on SQLite in the same minute, and Kafka consume + store with
# 1, 2 and 3 audit-service replicas sharing one PostgreSQL database. See
# bench/README.md.

# pg_vs_sqlite FIGURE_ID TITLE GOAL_RATIO SCRIPT PER_REQUEST [ARG...]: audit-service
# under wrk on SQLite, then on a fresh PostgreSQL database.
pg_vs_sqlite() {
  local id=$1 title=$2 goal=$3 script=$4 per=$5
  shift 5
  local dir="$RUN/$FIGURE"
  mkdir -p "$dir"
  local lite lite_p99 lite_cpu pg pg_p50 pg_p99 setup db
  BATCH=$per sink_load audit-service "$dir" "$script" "$@"
  lite="$(calc "$RPS * $per")" lite_p99=$P99 lite_cpu=$CPU_NOTE
  db="$(pg_db "$id")"
  AUDIT_DB=$db BATCH=$per sink_load audit-service "$dir" "$script" "$@"
  pg="$(calc "$RPS * $per")" pg_p50=$P50 pg_p99=$P99 setup=${SETUP//$db/postgres:\/\/...\/DB}
  pg_drop "$db"
  figure id="$id" run=pg unit=events/s better=higher title="$title" \
    ours="$pg" note="per request: p50 $pg_p50 ms, p99 $pg_p99 ms; $CPU_NOTE" \
    ref="$lite" ref_name="the same on SQLite (synchronous=FULL)" ref_note="p99 $lite_p99 ms; $lite_cpu" \
    goal="$goal" goal_on=ratio goal_text=">= ${goal}x SQLite" \
    command="${WRK_CMD//$URL/URL}" setup="$setup"
}

bench_pg() {
  need_pg
  FIGURE="pg-sink"
  pg_vs_sqlite pg_sink "7. audit sink on PostgreSQL, one binary event a request (vs SQLite)" 0.5 binary.lua 1
  FIGURE="pg-batch"
  pg_vs_sqlite pg_batch "7. batch ingest on PostgreSQL, 100 events a request (vs SQLite)" 0.7 batch.lua 100 100

  # The relay over HTTP with both services on PostgreSQL, beside the same
  # drain on SQLite files.
  local n="${BENCH_RELAY_BACKLOG:-20000}" lite lite_note users audit
  relay_drain pg-lite http synthetic "$n"
  lite="$(span_rate)" lite_note="outbox empty $DRAIN_S s after launch; $CPU_NOTE"
  users="$(pg_db relay_users)" audit="$(pg_db relay_audit)"
  USER_DB=$users AUDIT_DB=$audit relay_drain pg http synthetic "$n"
  pg_drop "$users"
  pg_drop "$audit"
  figure id=pg_relay run=pg unit=events/s better=higher \
    title="7. relay drain over HTTP on PostgreSQL (both services), $N-event backlog (vs SQLite)" \
    ours="$(span_rate)" \
    note="outbox empty $DRAIN_S s after launch, all stored after $STORED_S s; $CPU_NOTE" \
    ref="$lite" ref_name="the same drain on SQLite" ref_note="$lite_note" \
    goal=0.5 goal_on=ratio goal_text=">= 0.5x SQLite" \
    command="$BACKLOG_CMD; then user-service until its outbox has no pending row, rate over the span of delivered_at" \
    setup="${SETUP//postgres:\/\/postgres@127.0.0.1:55432\//postgres://.../}"
}

# scale_run K N TOPIC: K audit-service replicas in one group on a fresh
# PostgreSQL database, from launch until N events are stored. Sets
# SCALE_RATE (over the stored span of received_at) and SCALE_S (from launch).
scale_run() {
  local k=$1 n=$2 topic=$3
  FIGURE="scale-$k"
  local dir="$RUN/scale-$k" db t0 t1 r labels=()
  mkdir -p "$dir"
  db="$(pg_db "scale$k")"
  t0="$(now)"
  for ((r = 1; r <= k; r++)); do
    start_audit "audit-$r" "$dir" DATABASE_URL="$db" EVENT_TRANSPORT=kafka \
      KAFKA_TOPIC="$topic" KAFKA_GROUP_ID="$topic-$k"
    labels+=(--pid "${PIDS[audit-$r]}")
  done
  t1="$(wait_rows "${labels[@]}" 600 "$db" "SELECT count(*) >= $n FROM events")" ||
    die "$FIGURE: $k replicas did not store $n events (see $dir)"
  SCALE_S="$(calc "$t1 - $t0")"
  local span stored
  span="$(sql "$db" "SELECT round(extract(epoch FROM max(received_at) - min(received_at))::numeric, 3) FROM events")"
  stored="$(sql "$db" "SELECT count(*) FROM events")"
  [[ $stored == "$n" ]] || die "$FIGURE: $stored events stored, not $n"
  SCALE_RATE="$(rate "$n" "$span")"
  SCALE_SETUP="${CMDS[audit-1]//$db/postgres://.../DB} (x$k)"
  for ((r = 1; r <= k; r++)); do stop "audit-$r"; done
  pg_drop "$db"
  say "$FIGURE: $k replica(s) stored $n events in $span s first to last ($SCALE_RATE/s), $SCALE_S s from launch"
}

bench_scale() {
  need_kafka
  need_pg
  local n="${BENCH_SCALE_RECORDS:-100000}" topic one k
  topic="bench-scale-$(basename "$RUN")"
  # One topic of six partitions, read from the start by each group.
  measured bench_produce "$RUN/scale-produce.out" "$BIN/examples/bench_produce" "$BROKER" "$topic" "$n" 6
  for k in 1 2 3; do
    scale_run "$k" "$n" "$topic"
    [[ $k == 1 ]] && one=$SCALE_RATE
    figure id="scale_$k" run=scale unit=events/s better=higher \
      title="8. Kafka consume + store on PostgreSQL, $k replica(s), $n records on 6 partitions" \
      ours="$SCALE_RATE" note="$SCALE_S s from launch" \
      ${one:+ref="$one"} ref_name="1 replica" goal_text="(information: two cores, one database)" \
      command="bench_produce $BROKER TOPIC $n 6; then $k audit-service(s) in one group until $n are stored, rate over the stored span of received_at" \
      setup="$SCALE_SETUP"
  done
}
