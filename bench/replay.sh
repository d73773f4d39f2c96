# shellcheck shell=bash
# Figure 11: how fast audit-service replays stored events to Kafka, beside
# user-service's relay draining a backlog of the same size to Kafka (figure
# 4's drain, run again here in the same minute). See bench/README.md.

# store_events URL N: N user events stored through POST /, a thousand to a
# batch request.
store_events() {
  python3 - "$1" "$2" <<'PY'
import json, sys, urllib.request
url, n = sys.argv[1], int(sys.argv[2])
for start in range(0, n, 1000):
    batch = [{"specversion": "1.0", "id": f"replay-bench-{i}", "source": "/bench",
              "type": "user.storeUser", "subject": f"u{i % 1000}",
              "datacontenttype": "application/json", "data": {"id": f"u{i % 1000}", "name": "Bench"}}
             for i in range(start, min(n, start + 1000))]
    request = urllib.request.Request(url, json.dumps(batch).encode(),
                                     {"content-type": "application/cloudevents-batch+json"})
    with urllib.request.urlopen(request) as response:
        assert response.status == 204, response.status
PY
}

# replay_state URL ID TOKEN: the replay's state and sent count.
replay_state() {
  curl -fsS -H "Authorization: Bearer $3" "$1/v1/replays/$2" |
    python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["state"], r["sent"])'
}

bench_replay() {
  local n="${BENCH_REPLAY_EVENTS:-20000}"
  need_kafka
  # The reference: the relay's drain of a backlog of n events to Kafka.
  relay_drain replay-relay kafka synthetic "$n"
  local relay_rate relay_s=$DRAIN_S
  relay_rate="$(rate "$n" "$DRAIN_S")"

  FIGURE=replay-kafka
  local dir="$RUN/replay-kafka" token=bench-admin-token-0123456789
  mkdir -p "$dir"
  start_audit audit-service "$dir" ADMIN_TOKENS="$token"
  healthy audit-service
  local url="http://127.0.0.1:${PORTS[audit-service]}"
  store_events "$url/" "$n"
  local topic="bench-replay-${RUN##*/}"
  new_topic "$topic"

  local t0 id state sent
  t0="$(now)"
  id="$(curl -fsS -X POST "$url/v1/replays" -H "Authorization: Bearer $token" \
    -H 'content-type: application/json' \
    -d "{\"target\": {\"kind\": \"kafka\", \"topic\": \"$topic\"}}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
  local deadline=$((SECONDS + 300))
  while :; do
    read -r state sent <<<"$(replay_state "$url" "$id" "$token")"
    [[ $state == done ]] && break
    [[ $state == running || $state == pending ]] || die "$FIGURE: the replay is $state (see $dir)"
    ((SECONDS < deadline)) || die "$FIGURE: the replay did not end within 300 s"
    sleep 0.05
  done
  local elapsed
  elapsed="$(calc "$(now) - $t0")"
  [[ $sent == "$n" ]] || die "$FIGURE: $sent of $n sent"
  local setup="${CMDS[audit-service]}"
  stop audit-service
  say "$FIGURE: $n events replayed to Kafka in $elapsed s ($(rate "$n" "$elapsed")/s); the relay drained $n in $relay_s s ($relay_rate/s)"

  figure id=replay_kafka run=replay unit=events/s better=higher \
    title="11. replay to Kafka, $n stored events" \
    ours="$(rate "$n" "$elapsed")" note="$n events: POST /v1/replays to state done in $elapsed s" \
    ref="$relay_rate" ref_name="user-service's relay draining $n events to Kafka (figure 4's drain)" \
    ref_note="$relay_s s" \
    command="$n events stored through POST / (batches of 1000); then POST /v1/replays {target: kafka topic} until GET /v1/replays/{id} says done" \
    setup="$setup"
}
