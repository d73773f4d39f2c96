#!/usr/bin/env python3
"""Queues N `user.storeUser` events in structured mode (user-service's
MQTT_CONTENT_MODE=structured: one JSON object, content type
application/cloudevents+json), each with its own id, at QoS 1 on TOPIC, and
waits for every PUBACK; fails if any is missing. For bench/mqtt.sh.

    mqtt_publish.py HOST PORT TOPIC N
"""

import json
import sys
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

host, port, topic, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
client.max_inflight_messages_set(1000)
client.max_queued_messages_set(5000)
client.connect(host, port)
client.loop_start()
props = Properties(PacketTypes.PUBLISH)
props.ContentType = "application/cloudevents+json"
pending = []
for i in range(n):
    user = str(uuid.uuid4())
    event = {
        "specversion": "1.0", "id": f"{topic}-{i}", "source": "/user-service",
        "type": "user.storeUser", "subject": user, "time": "2026-11-27T00:00:00Z",
        "datacontenttype": "application/json",
        "data": {"id": user, "name": f"bench user {i}"},
    }
    payload = json.dumps(event, separators=(",", ":"))
    while True:
        info = client.publish(topic, payload, qos=1, properties=props)
        if info.rc == mqtt.MQTT_ERR_SUCCESS:
            break
        pending[-1].wait_for_publish(30)
    pending.append(info)
    if len(pending) >= 4000:
        for info in pending:
            info.wait_for_publish(30)
        pending = []
for info in pending:
    info.wait_for_publish(30)
unacknowledged = sum(1 for info in pending if not info.is_published())
client.disconnect()
client.loop_stop()
if unacknowledged:
    sys.exit(f"{unacknowledged} of the last messages were not acknowledged")
print(f"{n} messages published to {topic}")
