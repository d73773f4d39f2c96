#!/usr/bin/env python3
"""Publish CloudEvents to an MQTT topic at QoS 1 with paho-mqtt, the way
clients without a CloudEvents MQTT binding do (the Python SDK has none):

  --mode structured --protocol 3.1.1   the JSON event as the payload, no
                                       properties (MQTT 3.1.1 has none)
  --mode go-binary                     MQTT 5, every attribute a user
                                       property named ce-<name>, as sdk-go's
                                       mqtt_paho binding writes binary mode;
                                       the data the payload, datacontenttype
                                       the Content Type

Reads a JSON array of events (JSON format) from --in (a file, or - for
stdin); exits 0 once every message is acknowledged, 1 on a PUBACK failure
("no matching subscribers" is one here: subscribe before sending)."""

import argparse
import base64
import json
import sys
import uuid
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

DATA = ("data", "data_base64")


def go_binary(event):
    """(payload, properties) of sdk-go's binary mode."""
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [(f"ce-{k}", str(v)) for k, v in event.items() if k not in DATA and k != "datacontenttype"]
    if "datacontenttype" in event:
        props.ContentType = event["datacontenttype"]
    if "data_base64" in event:
        payload = base64.b64decode(event["data_base64"])
    elif "data" not in event:
        payload = b""
    elif isinstance(event["data"], str) and not (event.get("datacontenttype") or "application/json").endswith("json"):
        payload = event["data"].encode()
    else:
        payload = json.dumps(event["data"]).encode()
    return payload, props


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", default="mqtt://127.0.0.1:1883")
    p.add_argument("--topic", required=True)
    p.add_argument("--mode", choices=["structured", "go-binary"], required=True)
    p.add_argument("--protocol", choices=["5", "3.1.1"], default="5")
    p.add_argument("--in", dest="input", default="-")
    a = p.parse_args()
    events = json.load(sys.stdin if a.input == "-" else open(a.input, encoding="utf-8"))

    v5 = a.protocol == "5"
    if a.mode == "go-binary" and not v5:
        sys.exit("binary mode needs MQTT 5 (user properties)")
    url = urlparse(a.url)
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"interop-py-send-{uuid.uuid4().hex[:12]}",
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
    )
    failures = []

    def on_publish(_client, _userdata, mid, reason_code, _properties):
        if reason_code.is_failure or (v5 and reason_code.value == 0x10):
            failures.append((mid, str(reason_code)))

    client.on_publish = on_publish
    client.connect(url.hostname, url.port or 1883)
    client.loop_start()
    infos = []
    for event in events:
        if a.mode == "structured":
            props = None
            if v5:
                props = Properties(PacketTypes.PUBLISH)
                props.ContentType = "application/cloudevents+json"
            infos.append(client.publish(a.topic, json.dumps(event).encode(), qos=1, properties=props))
        else:
            payload, props = go_binary(event)
            infos.append(client.publish(a.topic, payload, qos=1, properties=props))
    for info in infos:
        info.wait_for_publish(timeout=30)
        if not info.is_published():
            failures.append((info.mid, "no PUBACK within 30 s"))
    client.disconnect()
    client.loop_stop()
    if failures:
        sys.stderr.write(f"publish failed: {failures}\n")
        sys.exit(1)


if __name__ == "__main__":
    main()
