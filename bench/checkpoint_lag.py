#!/usr/bin/env python3
"""The lag from an event's commit to the first signed checkpoint that holds it.

    checkpoint_lag.py watch URL OUT     poll URL (/log/checkpoint) every 20 ms,
                                        appending "unix_time size" lines to OUT,
                                        until killed
    checkpoint_lag.py report OUT DB     p50/p99/max lag in seconds, as JSON

An event's commit time is its `received_at` (the writer stamps it just
before the commit). It is in the tree of the first checkpoint seen whose size
is above its leaf index; the lag is the time that checkpoint was first seen
minus the commit. Polling adds up to 20 ms. Read from the database (a SQLite
file): every event's leaf index and received_at."""

import bisect
import json
import sqlite3
import sys
import time
import urllib.request
from datetime import datetime


def watch(url, out):
    with open(out, "a") as f:
        while True:
            try:
                text = urllib.request.urlopen(url, timeout=2).read().decode()
                size = int(text.split("\n")[1])
                f.write(f"{time.time():.6f} {size}\n")
                f.flush()
            except (OSError, ValueError, IndexError):
                pass
            time.sleep(0.02)


def report(out, db):
    seen = []  # (time, size) for each growth
    for line in open(out):
        t, size = line.split()
        t, size = float(t), int(size)
        if not seen or size > seen[-1][1]:
            seen.append((t, size))
    sizes = [s for _, s in seen]
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    # The log is on from the first event, so the tree holds the events in
    # seq order: an event's index is its rank.
    (size,) = conn.execute("SELECT size FROM log_state").fetchone()
    rows = conn.execute("SELECT received_at FROM events ORDER BY seq LIMIT ?", (size,)).fetchall()
    lags = []
    for index, (received_at,) in enumerate(rows):
        committed = datetime.fromisoformat(received_at.replace("Z", "+00:00")).timestamp()
        # The first checkpoint whose size exceeds the index.
        i = bisect.bisect_right(sizes, index)
        if i == len(seen) or seen[i][0] < committed - 1:
            continue  # integrated after the watch stopped, or before it began
        lags.append(max(0.0, seen[i][0] - committed))
    if not lags:
        sys.exit("checkpoint_lag.py: no event was seen in a checkpoint")
    lags.sort()
    pick = lambda q: lags[min(len(lags) - 1, int(q * len(lags)))]
    print(json.dumps({"events": len(lags), "p50_s": round(pick(0.5), 3), "p99_s": round(pick(0.99), 3),
                      "max_s": round(lags[-1], 3)}))


if __name__ == "__main__":
    if sys.argv[1:2] == ["watch"]:
        watch(sys.argv[2], sys.argv[3])
    elif sys.argv[1:2] == ["report"]:
        report(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
