#!/usr/bin/env python3
"""Produce CloudEvents (JSON event format on stdin or a file) to a Kafka topic
with the Python SDK's Kafka binding and kafka-python, binary or structured."""

import argparse

from cloudevents.core.bindings import kafka as cekafka
from kafka import KafkaProducer

from ceio import FORMAT, read_events


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--brokers", default="127.0.0.1:9092")
    p.add_argument("--topic", default="audit")
    p.add_argument("--mode", choices=["binary", "structured"], default="binary")
    p.add_argument("--key", default=None, help="record key (default: partitionkey extension)")
    p.add_argument("--in", dest="path", default="-")
    a = p.parse_args()

    producer = KafkaProducer(bootstrap_servers=a.brokers.split(","), acks="all")
    for event in read_events(a.path):
        if a.mode == "binary":
            msg = cekafka.to_binary(event, FORMAT)
        else:
            msg = cekafka.to_structured(event, FORMAT)
        key = a.key if a.key is not None else msg.key
        if isinstance(key, str):
            key = key.encode("utf-8")
        headers = [(k, v if isinstance(v, bytes) else str(v).encode("utf-8")) for k, v in msg.headers.items()]
        producer.send(a.topic, value=msg.value, key=key, headers=headers).get(timeout=30)
        print("sent", event.get_id())
    producer.flush()
    producer.close()


if __name__ == "__main__":
    main()
