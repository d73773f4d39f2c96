#!/usr/bin/env python3
"""The cost of one hostile CESQL filter, against a running audit-service.

    python3 bench/hostile_filter.py http://127.0.0.1:8080 [events] [inner]

Stores `events` events (1,000 by default) with fresh ids, then times one
`GET /v1/events` with the 4,096-byte filter
`CONCAT(id,id,...x680) LIKE '%' + '_'x2039 + 'X'` (LIKE in O(text x pattern)
and an unbounded CONCAT made it cost about 25 ms per examined event), and
the worst `GET /healthz` latency while two such requests run at once. With
`inner` the pattern is `'%' + '_'x2038 + 'X%'` instead, the most expensive
shape for a linear matcher. Start
the service with the settings to measure under, e.g.
`REQUEST_TIMEOUT_MS=2000 DATABASE_URL=sqlite:///tmp/x/audit.db
target/release/audit-service`. Standard library only.
"""

import json
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid


def hostile_filter():
    if "inner" in sys.argv[3:]:
        text = "CONCAT(" + "id," * 679 + "id) LIKE '%" + "_" * 2038 + "X%'"
    else:
        text = "CONCAT(" + "id," * 679 + "id) LIKE '%" + "_" * 2039 + "X'"
    assert len(text) == 4096, len(text)
    return text


def request(url, data=None, headers=None):
    """(status, seconds, body) of one request; HTTP errors are answers too."""
    started = time.monotonic()
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=120) as response:
            body = response.read()
            status = response.status
    except urllib.error.HTTPError as error:
        body = error.read()
        status = error.code
    return status, time.monotonic() - started, body


def store(base, n):
    source = "/hostile-" + uuid.uuid4().hex
    for start in range(0, n, 500):
        batch = [
            {"specversion": "1.0", "id": str(uuid.uuid4()), "source": source,
             "type": "user.storeUser", "subject": "u%d" % i}
            for i in range(start, min(n, start + 500))
        ]
        status, _, body = request(
            base + "/", json.dumps(batch).encode(),
            {"content-type": "application/cloudevents-batch+json"})
        assert status == 204, (status, body)
    return source


def filtered(base, source):
    query = urllib.parse.urlencode(
        {"source": source, "limit": "1000", "filter": hostile_filter()})
    return request(base + "/v1/events?" + query)


def describe(status, seconds, body):
    try:
        page = json.loads(body)
        shape = "%d events, next_after %s" % (len(page["events"]), page["next_after"])
    except (ValueError, KeyError, TypeError):
        shape = body[:120].decode(errors="replace")
    return "%d in %.2f s (%s)" % (status, seconds, shape)


def main():
    base = sys.argv[1].rstrip("/")
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    source = store(base, n)
    print("stored %d events" % n)
    print("one GET /v1/events with the filter: " + describe(*filtered(base, source)))

    answers = []
    threads = [threading.Thread(target=lambda: answers.append(filtered(base, source)))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    worst = 0.0
    probes = 0
    while any(thread.is_alive() for thread in threads):
        status, seconds, _ = request(base + "/healthz")
        assert status == 200, status
        worst = max(worst, seconds)
        probes += 1
        time.sleep(0.05)
    for answer in answers:
        print("two at once: " + describe(*answer))
    print("GET /healthz meanwhile: %d probes, worst %.3f s" % (probes, worst))


if __name__ == "__main__":
    main()
