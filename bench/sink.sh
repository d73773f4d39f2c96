# shellcheck shell=bash
# Figures 1 and 2: the HTTP sink, loaded by wrk (one thread, 64 keep-alive
# connections, WRK_SECONDS). See bench/README.md.

# sink_server KIND DIR: starts one server on a free port and waits until it
# listens. KIND is audit-service (ours, durable; on AUDIT_DB when set, a
# postgres:// URL), go-receiver (the seed's StartReceiver, printing each
# event) or null-sink (axum answering 204). Sets URL.
sink_server() {
  local kind=$1 dir=$2 port
  case "$kind" in
  audit-service)
    start_audit audit-service "$dir" ${AUDIT_DB:+DATABASE_URL="$AUDIT_DB"}
    healthy audit-service
    port=${PORTS[audit-service]}
    ;;
  go-receiver)
    port="$(free_port)"
    start go-receiver "$dir/go-receiver.log" -- "$GOBIN/bench-receiver" -addr "127.0.0.1:$port"
    wait_tcp go-receiver "$port"
    ;;
  null-sink)
    port="$(free_port)"
    start null-sink "$dir/null-sink.log" LISTEN_ADDR="127.0.0.1:$port" -- "$BIN/examples/bench_null_sink"
    wait_http null-sink "http://127.0.0.1:$port/healthz"
    ;;
  esac
  URL="http://127.0.0.1:$port/"
}

# sink_load KIND DIR SCRIPT [ARG...]: one server under wrk, then stopped.
# Sets RPS, P50, P99 and the command lines.
sink_load() {
  local kind=$1 dir=$2 script=$3
  shift 3
  sink_server "$kind" "$dir"
  cpu_watch "$dir/cpu-$kind.json"
  wrk_run "wrk:$kind" "$dir/wrk-$kind.out" "$script" "$URL" "$WRK_CONNECTIONS" "$(basename "$RUN")-$kind" "$@"
  cpu_seen "$dir/cpu-$kind.json"
  RPS="$(wrk_field "$WRK" rps)"
  P50="$(wrk_field "$WRK" p50_ms)"
  P99="$(wrk_field "$WRK" p99_ms)"
  REQUESTS="$(wrk_field "$WRK" requests)"
  SETUP="${CMDS[$kind]}"
  if [[ $kind == audit-service ]]; then
    # Every answered request must be on disk (more may be: requests still in
    # flight when wrk stopped counting).
    local stored per_request=${BATCH:-1}
    stored="$(sql "${AUDIT_DB:-$dir/audit-service.db}" 'SELECT count(*) FROM events')"
    ((stored >= ${REQUESTS%.*} * per_request)) ||
      die "audit-service acknowledged $((${REQUESTS%.*} * per_request)) events but stored $stored"
  fi
  stop "$kind"
  say "$FIGURE: $kind: $RPS requests/s, p50 $P50 ms, p99 $P99 ms"
}

bench_sink() {
  FIGURE="sink"
  local dir="$RUN/sink"
  mkdir -p "$dir"
  local ours ours_p50 ours_p99 ours_setup ours_cpu go go_p99 go_cpu null null_p99
  sink_load audit-service "$dir" binary.lua
  ours=$RPS ours_p50=$P50 ours_p99=$P99 ours_setup=$SETUP ours_cpu=$CPU_NOTE
  local command=${WRK_CMD//$URL/URL}
  sink_load go-receiver "$dir" binary.lua
  go=$RPS go_p99=$P99 go_cpu=$CPU_NOTE
  local go_setup=$SETUP
  sink_load null-sink "$dir" binary.lua
  null=$RPS null_p99=$P99
  figure id=sink_vs_go run=sink unit=events/s better=higher \
    title="1. audit sink, one binary event a request, durable (vs the seed's Go receiver)" \
    ours="$ours" note="p50 $ours_p50 ms, p99 $ours_p99 ms; $ours_cpu" \
    ref="$go" ref_name="Go sdk-go StartReceiver printing each event" ref_note="p99 $go_p99 ms; $go_cpu" \
    goal=1.0 goal_on=ratio goal_text=">= 1.0x the Go receiver (stretch 1.5x)" \
    command="$command" setup="$ours_setup"$'\n'"$go_setup"
  figure id=sink_vs_ceiling run=sink unit=events/s better=higher \
    title="1. audit sink vs a do-nothing axum handler (the ceiling)" \
    ours="$ours" ref="$null" ref_name="axum POST / answering 204" ref_note="p99 $null_p99 ms" \
    goal_text="(information)" command="$command" setup="$ours_setup"$'\n'"${CMDS[null-sink]:-}"
}

bench_batch() {
  FIGURE="batch"
  local dir="$RUN/batch" size=100
  mkdir -p "$dir"
  local ours ours_p50 ours_p99 ours_setup ours_cpu null null_p99
  BATCH=$size sink_load audit-service "$dir" batch.lua "$size"
  ours="$(calc "$RPS * $size")" ours_p50=$P50 ours_p99=$P99 ours_setup=$SETUP ours_cpu=$CPU_NOTE
  local command=${WRK_CMD//$URL/URL}
  sink_load null-sink "$dir" batch.lua "$size"
  null="$(calc "$RPS * $size")" null_p99=$P99
  figure id=batch run=batch unit=events/s better=higher \
    title="2. batch ingest, $size events a request (application/cloudevents-batch+json)" \
    ours="$ours" note="per request: p50 $ours_p50 ms, p99 $ours_p99 ms; $ours_cpu" \
    ref="$null" ref_name="axum POST / answering 204, same bodies" ref_note="p99 $null_p99 ms" \
    goal=250000 goal_text=">= 250,000 events/s" command="$command" setup="$ours_setup"
}
