# shellcheck shell=bash
# Figure 3: Kafka consume + store. See bench/README.md.

bench_kafka() {
  FIGURE="kafka"
  local dir="$RUN/kafka" n="${BENCH_KAFKA_RECORDS:-200000}"
  mkdir -p "$dir"
  need_kafka
  local topic
  topic="bench-consume-$(basename "$RUN")"

  # The records first, into a fresh one-partition topic.
  measured bench_produce "$dir/produce.out" "$BIN/examples/bench_produce" "$BROKER" "$topic" "$n"
  say "$FIGURE: $(cat "$dir/produce.out")"

  # audit-service from launch until the last record is in its store. Its
  # seq only grows by one per stored event in a fresh store, so max(seq) is
  # the count, read from the primary key instead of a scan.
  local t0 t1 consumed_s
  cpu_watch "$dir/cpu.json"
  t0="$(now)"
  start_audit audit-service "$dir" EVENT_TRANSPORT=kafka KAFKA_TOPIC="$topic" KAFKA_GROUP_ID="$topic"
  t1="$(wait_rows --pid "${PIDS[audit-service]}" 300 \
    "$dir/audit-service.db" "SELECT max(seq) >= $n FROM events")" ||
    die "audit-service did not store $n records (see $dir/audit-service.log)"
  consumed_s="$(calc "$t1 - $t0")"
  cpu_seen "$dir/cpu.json"
  # The rate is taken from the first stored event to the last (each commit
  # stamps its rows' received_at): launch and the group join are a fixed
  # cost, reported beside it, not spread over the records.
  local stored_span ours
  stored_span="$(sql "$dir/audit-service.db" \
    "SELECT round((julianday(max(received_at)) - julianday(min(received_at))) * 86400, 3) FROM events")"
  ours="$(rate "$n" "$stored_span")"
  local stored
  stored="$(sql "$dir/audit-service.db" 'SELECT count(*) FROM events')"
  [[ "$stored" == "$n" ]] || die "audit-service stored $stored events, not $n"
  local setup="${CMDS[audit-service]}"
  stop audit-service
  say "$FIGURE: audit-service stored $n records in $stored_span s from the first to the last ($ours records/s), $consumed_s s from launch"

  # kcat reading the same records, from launch to exit at the partition end.
  local kcat_cmd=(kcat -C -b "$BROKER" -t "$topic" -o beginning -e -q)
  measured kcat "$dir/kcat.out" "${kcat_cmd[@]}"
  local read ref
  read="$(wc -l <"$dir/kcat.out")"
  [[ "$read" == "$n" ]] || die "kcat read $read records, not $n"
  ref="$(rate "$n" "$ELAPSED")"
  rm -f "$dir/kcat.out"
  say "$FIGURE: kcat read $n records in $ELAPSED s ($ref records/s)"

  figure id=kafka run=kafka unit=events/s better=higher \
    title="3. Kafka consume + store, $n binary records, one partition" \
    ours="$ours" note="$stored_span s first to last stored; $consumed_s s from launch; $CPU_NOTE" ref="$ref" ref_name="kcat -C -e reading the same topic" \
    ref_note="$ELAPSED s" goal=0.5 goal_on=ratio goal_text=">= 0.5x kcat" \
    command="bench_produce $BROKER TOPIC $n; then audit-service until max(seq) = $n, rate over the stored span of received_at; ${kcat_cmd[*]/$topic/TOPIC} >file" \
    setup="$setup"
}
