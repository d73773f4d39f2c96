#!/usr/bin/env python3
"""Subscribe to an MQTT topic at QoS 1 with paho-mqtt, as an MQTT 5 or an
MQTT 3.1.1 client, and write what arrives on the wire, one JSON line per
message: {"meta": {"protocol", "topic", "qos", "retain", "content_type",
"user_properties": [[name, value], ...], "payload_base64"}}. The Python SDK
has no MQTT binding: the suite checks these lines against the CloudEvents
MQTT binding itself. Prints "subscribed" once the broker granted the
subscription; keeps going until SIGTERM."""

import argparse
import base64
import signal
import sys
import uuid
from urllib.parse import urlparse

import paho.mqtt.client as mqtt

from ceio import Output


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", default="mqtt://127.0.0.1:1883")
    p.add_argument("--topic", required=True)
    p.add_argument("--protocol", choices=["5", "3.1.1"], default="5")
    p.add_argument("--out", default="-")
    a = p.parse_args()

    out = Output(a.out)
    url = urlparse(a.url)
    v5 = a.protocol == "5"
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"interop-py-{uuid.uuid4().hex[:12]}",
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
    )

    def on_connect(client, _userdata, _flags, reason_code, _properties):
        if reason_code.is_failure:
            sys.stderr.write(f"connect refused: {reason_code}\n")
            sys.exit(1)
        client.subscribe(a.topic, qos=1)

    def on_subscribe(_client, _userdata, _mid, reason_codes, _properties):
        if any(rc.is_failure for rc in reason_codes):
            sys.stderr.write(f"subscribe refused: {reason_codes}\n")
            sys.exit(1)
        print("subscribed", flush=True)

    def on_message(_client, _userdata, msg):
        props = msg.properties
        out.write(
            {
                "meta": {
                    "protocol": a.protocol,
                    "topic": msg.topic,
                    "qos": msg.qos,
                    "retain": bool(msg.retain),
                    "content_type": getattr(props, "ContentType", None),
                    "user_properties": [list(p) for p in getattr(props, "UserProperty", [])],
                    "payload_base64": base64.b64encode(msg.payload).decode("ascii"),
                }
            }
        )

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    signal.signal(signal.SIGTERM, lambda *_: (client.disconnect(), sys.exit(0)))
    client.connect(url.hostname, url.port or 1883, keepalive=30)
    client.loop_forever()


if __name__ == "__main__":
    main()
