"""2 and 3 (Rust -> SDK): what user-service publishes, over HTTP and Kafka, is
decoded by the Go and Python CloudEvents SDKs attribute by attribute, over
NATS JetStream by the Go SDK (and by its plain NATS binding in structured
mode, the one mode it reads), and over MQTT by the JavaScript SDK in both
content modes; arbitrary events published through user-service's publisher
(examples/send_event) too."""

import base64
import json
import re
import urllib.parse

import pytest

from conftest import (
    SEND_EVENT_BIN,
    NatsNames,
    assert_same_event,
    create_topics,
    mqtt_topic,
    parse_time,
    require_file,
    run,
    service_env,
    start_http_receiver,
    start_kafka_receiver,
    start_nats_plain_receiver,
    start_mqtt_receiver,
    start_nats_receiver,
    start_user,
    unique,
    wait_for,
)
from vectors import make_events

SDKS = ["go", "python"]


def check_user_events(rcv, uid, name, new_name, password, transport, decode=lambda lines: lines):
    lines = decode(rcv.wait(3, what="user events"))
    raw = rcv.out.read_text(encoding="utf-8")
    assert password not in raw, "the password reached the receiver"
    errors = [l for l in lines if "error" in l]
    assert not errors, f"the SDK could not decode: {errors}"
    evs = [l["event"] for l in lines]
    assert [e["type"] for e in evs] == ["user.storeUser", "user.updateUser", "user.deleteUser"], evs
    assert len({e["id"] for e in evs}) == 3, evs
    for l, e in zip(lines, evs):
        assert e["specversion"] == "1.0", e
        assert e["subject"] == uid, e
        assert e.get("source"), e
        assert e.get("time"), e
        assert e["datacontenttype"].split(";")[0] == "application/json", e
        assert isinstance(e.get("data"), dict), e
        assert e["data"]["id"] == uid, e
        assert set(e["data"]) <= {"id", "name"}, f"unexpected data fields: {e['data']}"
        assert "password" not in json.dumps(e).lower(), e
        meta = l["meta"]
        if transport == "http":
            # binary content mode: attributes in ce- headers, data in the body
            assert meta["content_type"].startswith("application/json"), meta
            assert {"ce-id", "ce-source", "ce-type", "ce-specversion"} <= set(meta["ce_headers"]), meta
        elif transport == "mqtt":
            # binary mode (MQTT binding 3.1): attributes as unprefixed user
            # properties, datacontenttype as the Content Type; structured
            # mode: the JSON event as the payload
            if meta["content_type"] == "application/cloudevents+json":
                assert meta["user_properties"] == {}, meta
            else:
                assert meta["content_type"] == "application/json", meta
                assert {"id", "source", "type", "specversion"} <= set(meta["user_properties"]), meta
                assert not any(k.startswith(("ce-", "ce_")) for k in meta["user_properties"]), meta
            assert meta["qos"] == 1, meta
        elif transport == "nats":
            # binary content mode (NATS binding 1.0.3): ce- headers, the
            # event id as the JetStream message id
            assert {"ce-id", "ce-source", "ce-type", "ce-specversion", "ce-datacontenttype"} <= set(meta["headers"]), meta
            assert meta["headers"]["Nats-Msg-Id"] == e["id"], meta
        else:
            assert meta["key"] == uid, f"record key {meta['key']!r} is not the user id"
            assert {"ce_id", "ce_source", "ce_type", "ce_specversion"} <= set(meta["headers"]), meta
    assert evs[0]["data"] == {"id": uid, "name": name}, evs[0]
    assert evs[1]["data"].get("name") == new_name, evs[1]


def user_round_trip(us, rcv, transport, decode=lambda lines: lines):
    """Creates, renames and deletes a user through `us`, checks the three
    events `rcv` decoded, and stops both."""
    try:
        name, pw = f'Zoë "Q" 100% {unique("u")}', unique("Secret-pw")
        u = us.create(name, pw)
        us.update(u["id"], name + " v2")
        us.delete(u["id"])
        check_user_events(rcv, u["id"], name, name + " v2", pw, transport, decode=decode)
    finally:
        us.proc.stop()
        rcv.proc.stop()


@pytest.mark.parametrize("sdk", SDKS)
def test_user_service_http_to_sdk_receiver(rust_binaries, go_programs, tmpdir_keep, sdk):
    rcv = start_http_receiver(sdk, tmpdir_keep)
    us = start_user(tmpdir_keep, "http", audit_url=rcv.url)
    user_round_trip(us, rcv, "http")


@pytest.mark.parametrize("sdk", SDKS)
def test_user_service_kafka_to_sdk_receiver(rust_binaries, go_programs, kafka, tmpdir_keep, sdk):
    topic = unique("interop-users")
    create_topics(topic)
    rcv = start_kafka_receiver(sdk, tmpdir_keep, topic)
    us = start_user(tmpdir_keep, "kafka", topic=topic)
    user_round_trip(us, rcv, "kafka")


def decode_nats_go(lines):
    """The Go SDK (v2.16.2) does not percent-decode ce- header values (NATS
    binding 1.0.3, 3.1.3.2): check each is spec-encoded on the wire, and
    decode it here to compare the values."""
    decoded = []
    for l in lines:
        if "event" not in l:
            decoded.append(l)
            continue
        ev = dict(l["event"])
        for name, wire in l["meta"]["headers"].items():
            attr = name[3:] if name.lower().startswith("ce-") else None
            if attr in ev and isinstance(ev[attr], str) and attr != "time":
                assert wire_is_encoded(wire), f"{name} not percent-encoded: {wire!r}"
                ev[attr] = urllib.parse.unquote(wire)
        decoded.append({**l, "event": ev})
    return decoded


def test_user_service_nats_to_go_sdk_receiver(rust_binaries, go_programs, nats_server, tmpdir_keep):
    names = NatsNames("users")
    # user-service first: its /readyz creates the stream the receiver needs.
    us = start_user(tmpdir_keep, "nats", nats=names)
    rcv = start_nats_receiver(tmpdir_keep, names)
    user_round_trip(us, rcv, "nats", decode=decode_nats_go)


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_user_service_mqtt_to_js_sdk_receiver(rust_binaries, js_sdk, mqtt_broker, tmpdir_keep, mode):
    topic = mqtt_topic(f"users-{mode}")
    # Subscribed first: the broker drops what nobody subscribes to, and
    # user-service keeps such events until someone does.
    rcv = start_mqtt_receiver("js", tmpdir_keep, topic)
    us = start_user(tmpdir_keep, "mqtt", MQTT_TOPIC=topic, MQTT_CONTENT_MODE=mode)
    user_round_trip(us, rcv, "mqtt")


@pytest.mark.parametrize("mode", ["structured", "binary"])
def test_a_plain_nats_go_subscriber_reads_user_service_in_structured_mode_only(
        rust_binaries, go_programs, nats_server, tmpdir_keep, mode):
    """sdk-go's plain NATS binding (v2.16.2) reads structured mode only, as
    the README says: such a subscriber needs NATS_CONTENT_MODE=structured."""
    names = NatsNames("plain")
    us = start_user(tmpdir_keep, "nats", nats=names, NATS_CONTENT_MODE=mode)
    rcv = start_nats_plain_receiver(tmpdir_keep, names)
    try:
        # A core NATS subscriber gets only what is published after it has
        # subscribed: create users until the first reaches it.
        def arrived():
            us.create(unique("warm-up"), "12345")
            return rcv.lines()
        wait_for(arrived, 30, "a first message at the plain subscriber", interval=1)
        name = unique("Plain")
        u = us.create(name, "12345")
        us.update(u["id"], name + " v2")
        us.delete(u["id"])

        def mine():
            lines = rcv.lines()
            ours = [l for l in lines if l.get("event", {}).get("subject") == u["id"]]
            if mode == "binary":
                # Nothing decodes; every message of the test is an error.
                return len(lines) >= 4 and lines
            return len(ours) >= 3 and ours
        lines = wait_for(mine, 30, f"the user's events at the plain subscriber ({mode})")
        if mode == "structured":
            assert [l["event"]["type"] for l in lines] == ["user.storeUser", "user.updateUser", "user.deleteUser"]
            assert lines[0]["event"]["data"] == {"id": u["id"], "name": name}
        else:
            assert all("event" not in l and l.get("error") for l in lines), lines
    finally:
        us.proc.stop()
        rcv.proc.stop()


# ---------------------------------------------------------------------------
# arbitrary events through user-service's publisher

PCT_ATTRS = ("id", "subject", "comexamplenote")


def send_event(tmp, event, transport, audit_url=None, topic=None, nats=None, **extra):
    require_file(
        SEND_EVENT_BIN,
        "user-service must provide the example `send_event` (reads one structured CloudEvent "
        "JSON on stdin, publishes it with the service's publisher); build with `cargo build --workspace --examples`.",
    )
    env = service_env(tmp, transport, AUDIT_URL=audit_url, KAFKA_TOPIC=topic, **(nats.env() if nats else {}), **extra)
    env["DATABASE_URL"] = f"sqlite://{tmp}/db/send_event.db"
    run([SEND_EVENT_BIN], input_bytes=json.dumps(event).encode(), env=env, timeout=60)


PCT = re.compile(r"%[0-9A-Fa-f]{2}")


def wire_is_encoded(wire):
    return wire.isascii() and not any(c in wire for c in ' "') and "%" not in PCT.sub("", wire)


def compare_received(sdk, transport, sent, lines):
    errors = [l for l in lines if "error" in l]
    assert not errors, f"{sdk} SDK could not decode: {errors}"
    got = {}
    for l in lines:
        ev = dict(l["event"])
        if sdk == "go" and transport == "http":
            # The Go SDK does not percent-decode ce- header values (HTTP
            # binding 3.1.3.2); check the wire form is spec-encoded, then
            # decode it here to compare the values.
            hdrs = l["meta"]["ce_headers"]
            for k in PCT_ATTRS:
                if k in ev and f"ce-{k}" in hdrs:
                    wire = hdrs[f"ce-{k}"]
                    assert wire_is_encoded(wire), f"ce-{k} not percent-encoded: {wire!r}"
                    ev[k] = urllib.parse.unquote(wire)
        got[ev["id"]] = (ev, l["meta"])
    assert sorted(got) == sorted(e["id"] for e in sent), f"received {sorted(got)}"
    for e in sent:
        ev, meta = got[e["id"]]
        if transport == "http":
            hdrs = meta["ce_headers"]
            for k in PCT_ATTRS:
                if k in e:
                    wire = hdrs.get(f"ce-{k}", "")
                    assert wire_is_encoded(wire) and urllib.parse.unquote(wire) == e[k], (
                        f"ce-{k} on the wire is {wire!r}; the HTTP binding wants space, '\"', '%' and "
                        f"non-ASCII percent-encoded as UTF-8, decoding to {e[k]!r}")
        if sdk == "js" and "time" in e:
            # JavaScript keeps time in a Date: milliseconds. What went on
            # the wire had every digit.
            assert time_on_the_mqtt_wire(meta) == parse_time(e["time"]), f"time of {e['id']!r} on the wire"
            sent_ms = parse_time(e["time"]).replace(microsecond=parse_time(e["time"]).microsecond // 1000 * 1000)
            assert parse_time(ev["time"]) == sent_ms, f"time of {e['id']!r}: {ev['time']} vs {e['time']}"
            ev["time"] = e["time"]
        if transport == "kafka" and "partitionkey" not in e:
            # Our Kafka publisher keys the record by the subject (the user
            # id) and says so in the `partitionkey` extension.
            assert ev.pop("partitionkey", None) == e.get("subject", e["id"]), f"partitionkey of {e['id']!r}"
        assert_same_event(e, ev, where=f"{sdk}/{transport} {e['id']!r}")


@pytest.mark.parametrize("sdk", SDKS)
def test_send_event_http_edge_cases_to_sdk(rust_binaries, go_programs, tmpdir_keep, sdk):
    rcv = start_http_receiver(sdk, tmpdir_keep)
    try:
        sent = make_events(unique(f"rust-http-{sdk}"))
        for e in sent:
            send_event(tmpdir_keep, e, "http", audit_url=rcv.url)
        compare_received(sdk, "http", sent, rcv.wait(len(sent)))
    finally:
        rcv.proc.stop()


@pytest.mark.parametrize("sdk", SDKS)
def test_send_event_kafka_edge_cases_to_sdk(rust_binaries, go_programs, kafka, tmpdir_keep, sdk):
    topic = unique("interop-send")
    create_topics(topic)
    rcv = start_kafka_receiver(sdk, tmpdir_keep, topic)
    try:
        sent = make_events(unique(f"rust-kafka-{sdk}"))
        for e in sent:
            send_event(tmpdir_keep, e, "kafka", topic=topic)
        compare_received(sdk, "kafka", sent, rcv.wait(len(sent)))
    finally:
        rcv.proc.stop()


def time_on_the_mqtt_wire(meta):
    """`time` as an MQTT message carried it: a user property in binary
    mode, a member of the JSON payload in structured mode."""
    if meta["content_type"] == "application/cloudevents+json":
        return parse_time(json.loads(base64.b64decode(meta["payload_b64"]))["time"])
    return parse_time(meta["user_properties"]["time"])


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_send_event_mqtt_edge_cases_to_js_sdk(rust_binaries, js_sdk, mqtt_broker, tmpdir_keep, mode):
    topic = mqtt_topic(f"send-{mode}")
    rcv = start_mqtt_receiver("js", tmpdir_keep, topic)
    try:
        sent = make_events(unique(f"rust-mqtt-js-{mode}"))
        for e in sent:
            send_event(tmpdir_keep, e, "mqtt", MQTT_TOPIC=topic, MQTT_CONTENT_MODE=mode)
        compare_received("js", "mqtt", sent, rcv.wait(len(sent)))
    finally:
        rcv.proc.stop()


def test_send_event_nats_edge_cases_to_go_sdk(rust_binaries, go_programs, nats_server, tmpdir_keep):
    names = NatsNames("send")
    sent = make_events(unique("rust-nats-go"))
    # The first publish creates the stream the receiver subscribes to.
    send_event(tmpdir_keep, sent[0], "nats", nats=names)
    rcv = start_nats_receiver(tmpdir_keep, names)
    try:
        for e in sent[1:]:
            send_event(tmpdir_keep, e, "nats", nats=names)
        lines = decode_nats_go(rcv.wait(len(sent)))
        compare_received("go", "nats", sent, lines)
    finally:
        rcv.proc.stop()
