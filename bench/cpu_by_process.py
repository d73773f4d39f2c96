#!/usr/bin/env python3
"""Where a figure's CPU went, by process name, over one measured window.

    cpu_by_process.py OUT_JSON     samples until SIGTERM, then writes OUT_JSON
                                   (OUT_JSON.ready appears once the window opened)

A rate says how fast; it does not say whether a path waits for a broker or a
database server on the same two cores, or computes. This samples every
process's CPU time (utime + stime of /proc/PID/stat, which includes its
exited threads) every 100 ms and, when stopped, writes the CPU seconds each
process name (comm: java, nats-server, postgres, audit-service, ...) used
during the window, beside the machine's busy core-seconds from /proc/stat.
A process alive at the start counts from there; one started later counts
from its start. One that exits between two samples loses at most its last
100 ms, and so does one that starts and ends between them: the figures are
a floor, good to a few percent on the long-lived processes that matter.
"""

import json
import os
import signal
import sys
import time

INTERVAL_S = 0.1
TICKS = os.sysconf("SC_CLK_TCK")


def processes():
    """{(pid, start time): (comm, cpu ticks)} of every process now."""
    seen = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # exited meanwhile
        # comm is in parentheses and may hold spaces: split after the last ')'.
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        # Fields 14, 15 (utime, stime) and 22 (starttime) of proc(5), counted
        # from 3 (state) here.
        seen[(int(name), fields[19])] = (comm, int(fields[11]) + int(fields[12]))
    return seen


def machine_busy():
    """(busy, total) ticks of all cores from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def main():
    out = sys.argv[1]
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    me = os.getpid()
    t0, busy0 = time.monotonic(), machine_busy()
    first = processes()
    last = dict(first)
    open(out + ".ready", "w").close()
    while not stopping:
        time.sleep(INTERVAL_S)
        last.update(processes())
    t1, busy1 = time.monotonic(), machine_busy()
    last.update(processes())

    by_name = {}
    for key, (comm, ticks) in last.items():
        if key[0] == me:
            continue
        used = ticks - first.get(key, (comm, 0))[1]
        if used > 0:
            by_name[comm] = by_name.get(comm, 0) + used
    result = {
        "wall_s": round(t1 - t0, 3),
        "cores": os.cpu_count(),
        "machine_busy_s": round((busy1[0] - busy0[0]) / TICKS, 2),
        "cpu_s": {n: round(t / TICKS, 2) for n, t in sorted(by_name.items(), key=lambda kv: -kv[1])},
    }
    with open(out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
