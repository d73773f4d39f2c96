"""The CloudEvents MQTT binding on the wire, read by a paho-mqtt client
(the Python SDK has no MQTT binding): what user-service publishes, and what
the JavaScript SDK's sender publishes (the sender the suite uses towards
audit-service). Binary mode: every attribute an MQTT 5 user property under
its own name, unprefixed, its value as is; datacontenttype the Content
Type; the data the payload. Structured mode: Content Type
application/cloudevents+json and the JSON event as the payload, which is
all an MQTT 3.1.1 client gets, and all it needs."""

import base64
import json

import pytest

from conftest import (
    assert_same_event,
    data_of,
    mqtt_topic,
    parse_time,
    send_mqtt_js,
    start_mqtt_receiver,
    start_user,
    unique,
)
from test_rust_to_sdk import send_event
from vectors import make_events

STRUCTURED = "application/cloudevents+json"


def payload(meta):
    return base64.b64decode(meta["payload_base64"])


def attributes(event):
    """An event's attributes (data aside), as the JSON format has them."""
    return {k: v for k, v in event.items() if k not in ("data", "data_base64")}


def check_binary(sent, meta, where):
    """One binary-mode message against the event it carries."""
    assert meta["protocol"] == "5" and meta["qos"] == 1, f"{where}: {meta}"
    names = [name for name, _ in meta["user_properties"]]
    assert len(names) == len(set(names)), f"{where}: a repeated user property: {names}"
    props = dict(meta["user_properties"])
    # Names unchanged (3.1.3.1): exactly the event's attributes, no prefix.
    assert set(props) == set(attributes(sent)), f"{where}: user properties {sorted(props)}"
    for name, value in attributes(sent).items():
        if name == "time":
            assert parse_time(props[name]) == parse_time(value), f"{where}: time {props[name]!r}"
        else:
            # The canonical string, not percent-encoded (3.1.3.2).
            assert props[name] == str(value), f"{where}: {name} is {props[name]!r}, sent {value!r}"
    # datacontenttype is the MQTT 5 Content Type (3.1.1).
    assert meta["content_type"] == sent["datacontenttype"], f"{where}: Content Type {meta['content_type']!r}"
    # The data, as is, is the payload (3.1.2).
    kind, data = data_of(sent)
    body = payload(meta)
    if kind == "json":
        assert json.loads(body) == data, f"{where}: payload {body!r}"
    elif kind == "bytes":
        assert body == data, f"{where}: payload {body!r}"
    else:
        assert body == b"", f"{where}: payload {body!r}"


def check_structured(sent, meta, where):
    """One structured-mode message: the whole event in the payload."""
    if meta["protocol"] == "5":
        assert meta["content_type"] == STRUCTURED, f"{where}: Content Type {meta['content_type']!r}"
    else:
        # MQTT 3.1.1 has no properties: the JSON format is implied.
        assert meta["content_type"] is None and meta["user_properties"] == [], f"{where}: {meta}"
    assert_same_event(sent, json.loads(payload(meta)), where=where)


def by_id(lines, what):
    return {json.loads(payload(l["meta"]))["id"] if what == "structured" else dict(l["meta"]["user_properties"])["id"]: l["meta"]
            for l in lines}


def test_user_service_binary_mode_is_the_mqtt_binding_on_the_wire(rust_binaries, mqtt_broker, tmpdir_keep):
    topic = mqtt_topic("wire-binary")
    rcv = start_mqtt_receiver("python", tmpdir_keep, topic)
    try:
        sent = make_events(unique("wire-binary"))
        for e in sent:
            send_event(tmpdir_keep, e, "mqtt", MQTT_TOPIC=topic, MQTT_CONTENT_MODE="binary")
        got = by_id(rcv.wait(len(sent)), "binary")
        assert sorted(got) == sorted(e["id"] for e in sent)
        for e in sent:
            check_binary(e, got[e["id"]], f"binary {e['id']!r}")
    finally:
        rcv.proc.stop()


def test_user_service_structured_mode_is_the_mqtt_binding_for_mqtt_5_and_3_1_1(rust_binaries, mqtt_broker, tmpdir_keep):
    topic = mqtt_topic("wire-structured")
    v5 = start_mqtt_receiver("python", tmpdir_keep, topic, protocol="5")
    v311 = start_mqtt_receiver("python", tmpdir_keep, topic, protocol="3.1.1")
    try:
        sent = make_events(unique("wire-structured"))
        for e in sent:
            send_event(tmpdir_keep, e, "mqtt", MQTT_TOPIC=topic, MQTT_CONTENT_MODE="structured")
        for rcv in (v5, v311):
            got = by_id(rcv.wait(len(sent)), "structured")
            for e in sent:
                check_structured(e, got[e["id"]], f"structured {e['id']!r}")
    finally:
        v5.proc.stop()
        v311.proc.stop()


def test_an_mqtt_3_1_1_client_gets_whole_events_only_in_structured_mode(rust_binaries, mqtt_broker, tmpdir_keep):
    """Binary mode is MQTT 5 only (binding 1.3): its attributes are user
    properties, which an MQTT 3.1.1 subscriber never sees."""
    topic = mqtt_topic("wire-3-1-1")
    v5 = start_mqtt_receiver("python", tmpdir_keep, topic, protocol="5")
    v311 = start_mqtt_receiver("python", tmpdir_keep, topic, protocol="3.1.1")
    us = start_user(tmpdir_keep, "mqtt", MQTT_TOPIC=topic, MQTT_CONTENT_MODE="binary")
    try:
        uid = us.create(unique("three-one-one"))["id"]
        (five,) = v5.wait(1)
        (old,) = v311.wait(1)
        props = dict(five["meta"]["user_properties"])
        assert props["subject"] == uid and props["specversion"] == "1.0", five
        assert old["meta"]["content_type"] is None and old["meta"]["user_properties"] == [], old
        data = json.loads(payload(old["meta"]))
        assert data == {"id": uid, "name": data["name"]}, data
        assert "specversion" not in data, "the 3.1.1 client got the data only"
    finally:
        us.proc.stop()
        v5.proc.stop()
        v311.proc.stop()


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_js_sdk_sender_writes_the_mqtt_binding(js_sdk, mqtt_broker, tmpdir_keep, mode):
    topic = mqtt_topic(f"js-{mode}")
    rcv = start_mqtt_receiver("python", tmpdir_keep, topic)
    try:
        sent = make_events(unique(f"js-{mode}"))
        send_mqtt_js(topic, mode, sent)
        got = by_id(rcv.wait(len(sent)), mode)
        assert sorted(got) == sorted(e["id"] for e in sent)
        for e in sent:
            meta, where = got[e["id"]], f"js {mode} {e['id']!r}"
            if mode == "structured":
                # With a charset, as the binding's own example (3.2.1).
                assert meta["content_type"].split(";")[0].strip() == STRUCTURED, f"{where}: {meta}"
                assert json.loads(payload(meta))["id"] == e["id"], where
            else:
                props = dict(meta["user_properties"])
                assert {"specversion", "id", "source", "type"} <= set(props), f"{where}: {props}"
                assert not any(n.startswith(("ce-", "ce_")) for n in props), f"{where}: {props}"
                assert meta["content_type"] == e["datacontenttype"], f"{where}: {meta}"
    finally:
        rcv.proc.stop()
