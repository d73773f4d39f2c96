#!/usr/bin/env bash
# MQTT consume + store, measured once by hand (not part of `make bench`
# yet): a backlog of N structured-mode events at QoS 1 queued by Mosquitto
# for a persistent session, drained by audit-service (release build) into a
# fresh SQLite store, beside mosquitto_sub draining the same backlog
# (mosquitto-clients package) as the bare-client figure.
#
#   cargo build --release -p audit-service && bench/mqtt-backlog.sh [N]
#
# Needs the broker on 127.0.0.1:1883 (scripts/mosquitto.sh start). The rate
# of audit-service is taken from its first stored event to its last (the
# received_at of each commit), as bench/consume.sh does for Kafka.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
N="${1:-100000}"
BIN="${AUDIT_BIN:-$REPO/target/release/audit-service}"
RUN="$(mktemp -d /tmp/mqtt-backlog-XXXXXX)"
TAG="$(basename "$RUN" | tr -dc 'a-zA-Z0-9')"
[[ -x "$BIN" ]] || { echo "missing $BIN: cargo build --release -p audit-service" >&2; exit 1; }
command -v mosquitto_sub >/dev/null || { echo "missing mosquitto_sub: apt-get install mosquitto-clients" >&2; exit 1; }

PY="$REPO/.cache/venv/bin/python"
[[ -x "$PY" ]] || { echo "missing $PY (paho-mqtt): run scripts/setup.sh" >&2; exit 1; }
backlog() { # $1: topic; N structured-mode events at QoS 1, each PUBACK awaited
  "$PY" - "$1" "$N" <<'PYTHON'
import json, sys
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
topic, n = sys.argv[1], int(sys.argv[2])
client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
client.max_inflight_messages_set(1000)
client.max_queued_messages_set(5000)
client.connect("127.0.0.1", 1883)
client.loop_start()
props = Properties(PacketTypes.PUBLISH)
props.ContentType = "application/cloudevents+json"
sent = []
for i in range(n):
    event = {"specversion": "1.0", "id": f"e{i}", "source": f"/bench/{topic}", "type": "user.updateUser",
             "subject": f"user-{i % 100}", "datacontenttype": "application/json", "data": {"n": i}}
    while True:
        info = client.publish(topic, json.dumps(event), qos=1, properties=props)
        if info.rc == mqtt.MQTT_ERR_SUCCESS:
            break
        sent[-1].wait_for_publish(30)
    sent.append(info)
    if len(sent) >= 4000:
        for info in sent:
            info.wait_for_publish(30)
        sent = []
for info in sent:
    info.wait_for_publish(30)
client.disconnect()
client.loop_stop()
PYTHON
}
now() { date +%s.%N; }

# The bare client: a persistent session, the backlog queued, then drained.
topic="bench/sub/$TAG"
mosquitto_sub -V mqttv5 -q 1 -c -i "sub-$TAG" -x 3600 -t "$topic" -E
backlog "$topic"
t0="$(now)"
mosquitto_sub -V mqttv5 -q 1 -c -i "sub-$TAG" -x 3600 -t "$topic" -C "$N" >/dev/null
t1="$(now)"
echo "mosquitto_sub: $N messages in $(echo "$t1 - $t0" | bc) s, $(echo "$N / ($t1 - $t0)" | bc) messages/s"

# audit-service: subscribe once (the session), stop, queue the backlog, start.
topic="bench/audit/$TAG"
env_vars=(EVENT_TRANSPORT=mqtt MQTT_TOPIC="$topic" MQTT_GROUP="g$TAG" MQTT_CLIENT_ID="audit-$TAG"
  MQTT_DLQ_TOPIC="$topic/dlq" DATABASE_URL="sqlite://$RUN/audit.db" LISTEN_ADDR=127.0.0.1:18089 RUST_LOG=warn)
start() { env "${env_vars[@]}" "$BIN" >>"$RUN/audit.log" 2>&1 & PID=$!; }
wait_ready() { for _ in $(seq 300); do curl -fsS -o /dev/null http://127.0.0.1:18089/readyz && return; sleep 0.1; done; exit 1; }
start; wait_ready; kill -TERM "$PID"; wait "$PID" || true
backlog "$topic"
t0="$(now)"
start
until [[ "$(sqlite3 "$RUN/audit.db" 'SELECT count(*) FROM events' 2>/dev/null || echo 0)" -ge "$N" ]]; do sleep 0.2; done
t1="$(now)"
span="$(sqlite3 "$RUN/audit.db" "SELECT (julianday(max(received_at)) - julianday(min(received_at))) * 86400 FROM events")"
peak="$(awk '/VmHWM/ {print $2 / 1024 " MiB"}' "/proc/$PID/status")"
kill -TERM "$PID"; wait "$PID" || true
echo "audit-service: $N events stored in $span s from the first to the last, $(echo "$N / $span" | bc) events/s ($(echo "$t1 - $t0" | bc) s from launch), peak resident memory $peak"
rm -rf "$RUN"
