#!/usr/bin/env python3
"""Send CloudEvents (JSON event format on stdin or a file) over HTTP with the
Python SDK's HTTP binding, in binary or structured content mode.

The Python SDK has no batch content mode, so there is no batch option.
"""

import argparse
import sys

import requests
from cloudevents.core.bindings import http as cehttp

from ceio import FORMAT, read_events


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", default="http://127.0.0.1:8080/")
    p.add_argument("--mode", choices=["binary", "structured"], default="binary")
    p.add_argument("--in", dest="path", default="-")
    p.add_argument("--timeout", type=float, default=10.0)
    a = p.parse_args()

    failed = False
    for event in read_events(a.path):
        if a.mode == "binary":
            msg = cehttp.to_binary(event, FORMAT)
        else:
            msg = cehttp.to_structured(event, FORMAT)
        r = requests.post(a.url, headers=msg.headers, data=msg.body, timeout=a.timeout)
        print(r.status_code, r.text.replace("\n", " "))
        if not 200 <= r.status_code < 300:
            failed = True
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
