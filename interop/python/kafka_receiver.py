#!/usr/bin/env python3
"""Consume a Kafka topic in a consumer group, decode every record with the
Python SDK's Kafka binding (cloudevents.core.bindings.kafka.from_kafka, binary
or structured) and write every event as one JSON line; keep going."""

import argparse
import base64
import signal
import sys

from cloudevents.core.bindings import kafka as cekafka
from kafka import KafkaConsumer

from ceio import FORMAT, Output, event_to_json


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--brokers", default="127.0.0.1:9092")
    p.add_argument("--topic", default="audit")
    p.add_argument("--group", default="interop-python-receiver")
    p.add_argument("--out", default="-")
    a = p.parse_args()

    out = Output(a.out)
    consumer = KafkaConsumer(
        a.topic,
        bootstrap_servers=a.brokers.split(","),
        group_id=a.group,
        auto_offset_reset="earliest",
        enable_auto_commit=True,
    )
    signal.signal(signal.SIGTERM, lambda *_: (consumer.close(), sys.exit(0)))
    sys.stderr.write(f"kafka_receiver consuming {a.topic} as {a.group}\n")
    for rec in consumer:
        headers = {}
        for k, v in rec.headers or []:
            headers[k] = v if v is not None else b""
        meta = {
            "topic": rec.topic,
            "partition": rec.partition,
            "offset": rec.offset,
            "key": rec.key.decode("utf-8", "replace") if rec.key is not None else None,
            "headers": {k: v.decode("utf-8", "replace") for k, v in headers.items()},
            "value_base64": base64.b64encode(rec.value or b"").decode("ascii"),
        }
        try:
            event = cekafka.from_kafka(cekafka.KafkaMessage(headers=headers, key=rec.key, value=rec.value or b""), FORMAT)
            ev = event_to_json(event)
            # The binding copies the record key into the partitionkey extension;
            # report it in meta when the sender did not set that extension.
            sent_pk = "ce_partitionkey" in {k.lower() for k in headers}
            if not sent_pk and rec.headers and not _structured_has_pk(meta, headers):
                meta["binding_partitionkey"] = ev.pop("partitionkey", None)
            out.write({"event": ev, "meta": meta})
        except Exception as e:
            out.write({"error": f"{type(e).__name__}: {e}", "meta": meta})


def _structured_has_pk(meta, headers):
    if any(k.lower().startswith("ce_") for k in headers):
        return False
    try:
        import json

        return "partitionkey" in json.loads(base64.b64decode(meta["value_base64"]))
    except Exception:
        return False


if __name__ == "__main__":
    main()
