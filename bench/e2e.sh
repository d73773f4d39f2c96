# shellcheck shell=bash
# Figure 5: end-to-end latency, 201-to-stored, and figure 6's user-service
# under creates. See bench/README.md.

# stack TRANSPORT DIR: audit-service and user-service wired together.
stack() {
  local transport=$1 dir=$2
  local transport_env=(EVENT_TRANSPORT="$transport")
  if [[ $transport == kafka ]]; then
    need_kafka
    local topic="bench-$FIGURE-${RUN##*/}"
    new_topic "$topic"
    transport_env+=(KAFKA_TOPIC="$topic" KAFKA_GROUP_ID="$topic")
  fi
  start_audit audit-service "$dir" "${transport_env[@]}"
  healthy audit-service
  start_user user-service "$dir" "${transport_env[@]}" AUDIT_URL="http://127.0.0.1:${PORTS[audit-service]}/"
  healthy user-service
  SETUP="${CMDS[audit-service]}"$'\n'"${CMDS[user-service]}"
}

# e2e_latency TRANSPORT GOAL_MS: sets LATENCY (the example's JSON line).
e2e_latency() {
  local transport=$1
  FIGURE="e2e-$transport"
  local dir="$RUN/$FIGURE" users="${BENCH_E2E_USERS:-300}"
  mkdir -p "$dir"
  stack "$transport" "$dir"
  local urls=("http://127.0.0.1:${PORTS[user-service]}" "http://127.0.0.1:${PORTS[audit-service]}")
  # A first few users warm both services and, on Kafka, wait out the
  # consumer group's join: a one-off cost, not the steady latency.
  measured bench_latency "$dir/warmup.out" "$BIN/examples/bench_latency" "${urls[@]}" 20 4
  measured bench_latency "$dir/latency.out" "$BIN/examples/bench_latency" "${urls[@]}" "$users" 4
  LATENCY="$(cat "$dir/latency.out")"
  stop user-service
  stop audit-service
  say "$FIGURE: $LATENCY"
}

bench_e2e() {
  local transport goal name p50 p99 users
  for transport in http kafka; do
    e2e_latency "$transport"
    goal=20 name=HTTP
    [[ $transport == kafka ]] && goal=100 name=Kafka
    p50="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["p50_ms"])' "$LATENCY")"
    p99="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["p99_ms"])' "$LATENCY")"
    users="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["count"])' "$LATENCY")"
    figure id="e2e_$transport" run=e2e unit=ms better=lower \
      title="5. end to end over $name, 201 to stored (live tail), p99 of $users users, 4 at a time" \
      ours="$p99" note="p50 $p50 ms" goal="$goal" goal_text="p99 < $goal ms" \
      command="bench_latency USER_URL AUDIT_URL $users 4 (after 20 warm-up users)" \
      setup="$SETUP" details="$LATENCY"
  done
}

bench_rss() {
  FIGURE="rss-creates"
  local dir="$RUN/rss-creates"
  mkdir -p "$dir"
  stack http "$dir"
  wrk_run wrk "$dir/wrk.out" create.lua "http://127.0.0.1:${PORTS[user-service]}/v1/user" 8 "$(basename "$RUN")"
  local rps kib
  rps="$(wrk_field "$WRK" rps)"
  kib="$(awk '/^VmHWM:/ {print $2}' "/proc/${PIDS[user-service]}/status")"
  stop user-service
  stop audit-service
  say "$FIGURE: user-service peak RSS $((kib / 1024)) MiB after ${WRK_SECONDS} s of creates ($rps users/s)"
  figure id=rss_user_creates run=rss unit=MiB better=lower \
    title="6. user-service peak RSS under ${WRK_SECONDS} s of creates, 8 at a time" \
    ours="$(calc "$kib / 1024")" note="$rps users created/s" goal=64 goal_text="< 64 MiB" \
    command="${WRK_CMD//http:\/\/127.0.0.1:${PORTS[user-service]}/USER_URL}" setup="$SETUP"
}
