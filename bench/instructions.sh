# shellcheck shell=bash
# Figure 9: instructions per stored event on the sink and batch paths,
# counted by valgrind's callgrind. The count does not depend on what else
# runs on the machine, so a change's effect shows where the rates of
# figures 1 and 2 are lost in noise. See bench/README.md.

# callgrind_load NAME SCRIPT PER_REQUEST [ARG...]: audit-service (release
# build, default settings plus INSTR_VARS) under callgrind; a warm-up, the
# counters zeroed, wrk for INSTR_SECONDS, the counters dumped once the last
# answered event is stored (and, with the transparency log on, in the
# tree). Sets INSTR (instructions per stored event), STORED and IR.
INSTR_VARS=()
INSTR_SECONDS="${BENCH_INSTR_SECONDS:-10}"
callgrind_load() {
  local name=$1 script=$2 per=$3
  shift 3
  FIGURE="instructions-$name"
  local dir="$RUN/$FIGURE" port
  mkdir -p "$dir"
  port="$(free_port)"
  PORTS[callgrind]=$port
  start callgrind "$dir/audit-service.log" LISTEN_ADDR="127.0.0.1:$port" \
    DATABASE_URL="sqlite://$dir/audit-service.db" "${INSTR_VARS[@]}" -- \
    valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out.%p" "$BIN/audit-service"
  local url="http://127.0.0.1:$port/" deadline=$((SECONDS + 300))
  until curl -fsS -o /dev/null "${url}healthz" 2>/dev/null; do
    alive "${PIDS[callgrind]}" || die "audit-service under callgrind exited (see $dir/audit-service.log)"
    ((SECONDS < deadline)) || die "audit-service under callgrind did not answer within 300 s"
    sleep 0.5
  done
  local pid=${PIDS[callgrind]}
  # Warm-up: every code path run once before counting, lazy statics built.
  wrk -t1 -c4 -d2s --timeout 60s -s "bench/wrk/$script" "$url" -- "$(basename "$RUN")-warm" "$@" >/dev/null
  sleep 1
  local before
  before="$(sql "$dir/audit-service.db" 'SELECT count(*) FROM events')"
  callgrind_control --zero "$pid" >/dev/null || die "callgrind_control --zero failed"
  # Few connections: under callgrind the service runs ~50x slower, and every
  # request must be answered within wrk's timeout.
  local cmd=(wrk -t1 -c8 -d"${INSTR_SECONDS}s" --timeout 60s -s "bench/wrk/$script" "$url" -- "$(basename "$RUN")" "$@")
  "${cmd[@]}" >"$dir/wrk.out"
  INSTR_CMD="valgrind --tool=callgrind target/release/audit-service; ${cmd[*]/#$(basename "$RUN")/TAG} (after a 2 s warm-up)"
  INSTR_CMD="${INSTR_CMD//$url/URL}"
  # Requests still in flight when wrk stopped: wait until the count settles.
  local stored last=-1
  while stored="$(sql "$dir/audit-service.db" 'SELECT count(*) FROM events')" && ((stored != last)); do
    last=$stored
    sleep 2
  done
  if [[ " ${INSTR_VARS[*]} " == *" LOG_SIGNING_KEY="* ]]; then
    # The sequencer's work for these events counts too.
    wait_rows 300 "$dir/audit-service.db" "SELECT size >= $stored FROM log_state" >/dev/null ||
      die "$FIGURE: the tree did not catch up with $stored events"
  fi
  callgrind_control --dump "$pid" >/dev/null || die "callgrind_control --dump failed"
  local dump
  dump="$(ls -t "$dir"/callgrind.out."$pid".* | head -n 1)"
  IR="$(awk '/^(summary|totals):/ {print $2; exit}' "$dump")"
  STORED=$((stored - before))
  ((STORED > 0)) || die "$FIGURE: nothing stored under callgrind"
  INSTR="$(python3 -c "print(round($IR / $STORED))")"
  stop callgrind
  say "$FIGURE: $IR instructions for $STORED stored events: $INSTR per event"
}

bench_instructions() {
  callgrind_load sink binary.lua 1
  figure id=instr_sink run=instructions unit=instructions better=lower \
    title="9. instructions per stored event, sink (one binary event a request, callgrind)" \
    ours="$INSTR" note="$IR instructions over $STORED events" \
    goal_text="(information: lower is better, noise-free)" command="$INSTR_CMD"
  callgrind_load batch batch.lua 100 100
  figure id=instr_batch run=instructions unit=instructions better=lower \
    title="9. instructions per stored event, batch ingest (100 events a request, callgrind)" \
    ours="$INSTR" note="$IR instructions over $STORED events" \
    goal_text="(information: lower is better, noise-free)" command="$INSTR_CMD"
  local batch_off=$INSTR
  # The transparency log's cost (figure 10) in instructions: the sequencer
  # runs beside ingest, so on two busy cores what it adds is what ingest
  # loses.
  INSTR_VARS=(LOG_SIGNING_KEY="$("$BIN/audit-service" log-key bench.local/audit 2>/dev/null)")
  callgrind_load batch-log-on batch.lua 100 100
  INSTR_VARS=()
  figure id=instr_batch_log_on run=instructions unit=instructions better=lower \
    title="9. instructions per stored event, batch ingest with the transparency log on (callgrind)" \
    ours="$INSTR" ref="$batch_off" ref_name="the same with the log off (the row above)" \
    note="$IR instructions over $STORED events" \
    goal_text="(information: lower is better; figure 10 compares the rates)" \
    command="LOG_SIGNING_KEY=\$(audit-service log-key bench.local/audit); as the row above"
}
