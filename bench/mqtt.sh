# shellcheck shell=bash
# Figure 3c: MQTT consume + store: a backlog of structured-mode events at
# QoS 1 queued by Mosquitto for a persistent session, drained by
# audit-service into a fresh store, beside mosquitto_sub draining the same
# kind of backlog for its own session. See bench/README.md.

MQTT_PORT_BENCH="${MQTT_PORT:-1883}"
STARTED_MQTT=""
need_mqtt() {
  if ! MQTT_PORT="$MQTT_PORT_BENCH" "$REPO/scripts/mosquitto.sh" status >/dev/null 2>&1; then
    MQTT_PORT="$MQTT_PORT_BENCH" "$REPO/scripts/mosquitto.sh" start
    STARTED_MQTT=yes
  fi
}

# mqtt_python: a Python with paho-mqtt (the version interop/python pins),
# in a venv of the benchmark's own under .cache, made once.
mqtt_python() {
  local venv="$REPO/.cache/bench-venv"
  if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import paho.mqtt' 2>/dev/null; then
    python3 -m venv "$venv" || die "python3 -m venv failed (Debian: python3-venv)"
    "$venv/bin/pip" install -q --disable-pip-version-check \
      "$(grep '^paho-mqtt==' "$REPO/interop/python/requirements.txt")" || die "could not install paho-mqtt"
  fi
  MQTT_PY="$venv/bin/python"
}

# mqtt_backlog TOPIC N OUT: N structured-mode events queued at QoS 1 for the
# sessions subscribed to TOPIC, every PUBACK awaited (bench/mqtt_publish.py;
# mosquitto_pub -l was tried and drops what is in flight when its input ends).
mqtt_backlog() {
  local topic=$1 n=$2 out=$3
  measured mqtt_publish "$out" "$MQTT_PY" "$REPO/bench/mqtt_publish.py" 127.0.0.1 "$MQTT_PORT_BENCH" "$topic" "$n"
}

bench_mqtt() {
  FIGURE="mqtt"
  local dir="$RUN/mqtt" n="${BENCH_MQTT_RECORDS:-100000}"
  mkdir -p "$dir"
  need_mqtt
  mqtt_python
  local tag
  tag="$(basename "$RUN" | tr -cd '[:alnum:]')"

  # audit-service: started once to make its session (the subscription),
  # stopped, the backlog queued for it, started again and timed.
  local topic="bench/audit/$tag"
  local env_vars=(EVENT_TRANSPORT=mqtt MQTT_URL="mqtt://127.0.0.1:$MQTT_PORT_BENCH" MQTT_TOPIC="$topic"
    MQTT_GROUP="g$tag" MQTT_CLIENT_ID="audit-$tag" MQTT_DLQ_TOPIC="$topic/dlq" MQTT_SESSION_EXPIRY_SECS=600)
  start_audit audit-service "$dir" "${env_vars[@]}"
  wait_http audit-service "http://127.0.0.1:${PORTS[audit-service]}/readyz"
  local first_port=${PORTS[audit-service]}
  FIGURE="mqtt-subscribe" stop audit-service
  mqtt_backlog "$topic" "$n" "$dir/backlog-audit.out"
  say "$FIGURE: $n events queued for audit-service's session in $ELAPSED s"

  local t0 t1 consumed_s
  t0="$(now)"
  start "audit-service" "$dir/audit-service.log" LISTEN_ADDR="127.0.0.1:$first_port" \
    DATABASE_URL="sqlite://$dir/audit-service.db" "${env_vars[@]}" -- "$BIN/audit-service"
  t1="$(wait_rows --pid "${PIDS[audit-service]}" 300 \
    "$dir/audit-service.db" "SELECT max(seq) >= $n FROM events")" ||
    die "audit-service did not store $n events (see $dir/audit-service.log)"
  consumed_s="$(calc "$t1 - $t0")"
  local stored_span ours stored
  stored_span="$(sql "$dir/audit-service.db" \
    "SELECT round((julianday(max(received_at)) - julianday(min(received_at))) * 86400, 3) FROM events")"
  ours="$(rate "$n" "$stored_span")"
  stored="$(sql "$dir/audit-service.db" 'SELECT count(*) FROM events')"
  [[ "$stored" == "$n" ]] || die "audit-service stored $stored events, not $n"
  local setup="${CMDS[audit-service]}"
  stop audit-service
  say "$FIGURE: audit-service stored $n events in $stored_span s from the first to the last ($ours events/s), $consumed_s s from launch"

  # mosquitto_sub the same way: its session made, the backlog queued, then
  # timed from launch until it has printed all N and exits.
  topic="bench/sub/$tag"
  local sub=(mosquitto_sub -V mqttv5 -h 127.0.0.1 -p "$MQTT_PORT_BENCH" -q 1 -c -i "sub-$tag" -x 600 -t "$topic")
  "${sub[@]}" -E || die "mosquitto_sub could not subscribe"
  mqtt_backlog "$topic" "$n" "$dir/backlog-sub.out"
  measured mosquitto_sub "$dir/sub.out" "${sub[@]}" -C "$n"
  local read ref
  read="$(wc -l <"$dir/sub.out")"
  [[ "$read" == "$n" ]] || die "mosquitto_sub read $read messages, not $n"
  ref="$(rate "$n" "$ELAPSED")"
  rm -f "$dir/sub.out"
  say "$FIGURE: mosquitto_sub read $n messages in $ELAPSED s ($ref messages/s)"

  figure id=mqtt run=mqtt unit=events/s better=higher \
    title="3c. MQTT consume + store, a $n-event QoS 1 backlog of a persistent session" \
    ours="$ours" note="$stored_span s first to last stored; $consumed_s s from launch" \
    ref="$ref" ref_name="mosquitto_sub -q 1 -c draining the same kind of backlog" ref_note="$ELAPSED s" \
    goal=0.5 goal_on=ratio goal_text=">= 0.5x the bare subscriber" \
    command="bench/mqtt_publish.py ($n structured events, QoS 1) for each session; audit-service until max(seq) = $n, rate over the stored span of received_at; ${sub[*]/$tag/TAG} -C $n >file" \
    setup="$setup"
}
