# shellcheck shell=bash
# Figure 3b: NATS JetStream consume + store, beside a bare JetStream pull
# consumer that only acknowledges. See bench/README.md.

# The shared server on 4222, started (and later stopped) by this run only if
# nothing answers there.
NATS_URL_BENCH="nats://127.0.0.1:${NATSD_PORT:-4222}"
STARTED_NATS=""
need_nats() {
  if ! NATSD_PORT="${NATSD_PORT:-4222}" "$REPO/scripts/nats.sh" status >/dev/null 2>&1; then
    NATSD_PORT="${NATSD_PORT:-4222}" "$REPO/scripts/nats.sh" start
    STARTED_NATS=yes
  fi
}

# nats_names TAG: a stream, subject and dead-letter pair of this run only
# (a stream captures the first token of its subject and everything under
# it, so the first token is the run's too). Sets NATS_ENV.
nats_names() {
  local tag
  tag="$(tr -cd '[:alnum:]' <<<"$1$(basename "$RUN")")"
  NATS_STREAM_BENCH="B$tag"
  NATS_SUBJECT_BENCH="b$tag.events"
  NATS_DLQ_STREAM_BENCH="D$tag"
  NATS_ENV=(NATS_URL="$NATS_URL_BENCH" NATS_STREAM="$NATS_STREAM_BENCH" NATS_SUBJECT="$NATS_SUBJECT_BENCH"
    NATS_CONSUMER=audit NATS_DLQ_STREAM="D$tag" NATS_DLQ_SUBJECT="d$tag.dlq")
}

# nats_delete: drops the streams nats_names named (the server is shared).
nats_delete() {
  "$BIN/examples/bench_nats" delete "$NATS_URL_BENCH" "$NATS_STREAM_BENCH" "$NATS_DLQ_STREAM_BENCH" ||
    note "$FIGURE: streams $NATS_STREAM_BENCH and $NATS_DLQ_STREAM_BENCH were not deleted"
}

bench_nats() {
  FIGURE="nats"
  local dir="$RUN/nats" n="${BENCH_NATS_RECORDS:-200000}"
  mkdir -p "$dir"
  need_nats
  nats_names consume
  local tool="$BIN/examples/bench_nats"

  measured bench_nats "$dir/produce.out" "$tool" produce "$NATS_URL_BENCH" "$NATS_STREAM_BENCH" "$NATS_SUBJECT_BENCH" "$n"
  say "$FIGURE: $(cat "$dir/produce.out")"

  # audit-service from launch until the last event is in its store; the
  # rate over the span of stored received_at, as for Kafka.
  local t0 t1 consumed_s
  cpu_watch "$dir/cpu.json"
  t0="$(now)"
  start_audit audit-service "$dir" EVENT_TRANSPORT=nats "${NATS_ENV[@]}"
  t1="$(wait_rows --pid "${PIDS[audit-service]}" 300 \
    "$dir/audit-service.db" "SELECT max(seq) >= $n FROM events")" ||
    die "audit-service did not store $n events (see $dir/audit-service.log)"
  consumed_s="$(calc "$t1 - $t0")"
  cpu_seen "$dir/cpu.json"
  local stored_span ours stored
  stored_span="$(sql "$dir/audit-service.db" \
    "SELECT round((julianday(max(received_at)) - julianday(min(received_at))) * 86400, 3) FROM events")"
  ours="$(rate "$n" "$stored_span")"
  stored="$(sql "$dir/audit-service.db" 'SELECT count(*) FROM events')"
  [[ "$stored" == "$n" ]] || die "audit-service stored $stored events, not $n"
  local setup="${CMDS[audit-service]}"
  stop audit-service
  say "$FIGURE: audit-service stored $n events in $stored_span s from the first to the last ($ours events/s), $consumed_s s from launch"

  # The bare consumer on a durable consumer of its own over the same stream,
  # timed by itself from connecting to its last acknowledgement flushed.
  measured bench_nats-drain "$dir/drain.out" "$tool" drain "$NATS_URL_BENCH" "$NATS_STREAM_BENCH" bare "$n"
  local bare_s ref
  bare_s="$(tail -n 1 "$dir/drain.out")"
  ref="$(rate "$n" "$bare_s")"
  say "$FIGURE: the bare pull consumer acknowledged $n events in $bare_s s ($ref events/s)"
  nats_delete

  figure id=nats run=nats unit=events/s better=higher \
    title="3b. NATS JetStream consume + store, $n binary events" \
    ours="$ours" note="$stored_span s first to last stored; $consumed_s s from launch; $CPU_NOTE" \
    ref="$ref" ref_name="a bare JetStream pull consumer that only acknowledges (bench_nats drain)" \
    ref_note="$bare_s s" goal=0.5 goal_on=ratio goal_text=">= 0.5x the bare consumer and >= 100,000 events/s" \
    command="bench_nats produce URL STREAM SUBJECT $n; then audit-service until max(seq) = $n, rate over the stored span of received_at; bench_nats drain URL STREAM bare $n" \
    setup="$setup"
  figure id=nats_rate run=nats unit=events/s better=higher \
    title="3b. NATS JetStream consume + store, events/s" \
    ours="$ours" goal=100000 goal_text=">= 100,000 events/s" \
    command="as the row above" setup="$setup"
}
