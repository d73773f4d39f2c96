#!/usr/bin/env python3
"""Waits, in order, until each SQLite (or PostgreSQL) query answers true, and
prints the Unix time (seconds, as a float) at which each one first did, one
per line. A DB that starts with postgres:// is asked through psql.

    wait_rows.py [--pid PID]... TIMEOUT_S  DB SQL  [DB SQL]...

The benchmarks time how long a service takes to get through a backlog by
watching its database. One process holding its connections open and
polling every few milliseconds costs far less CPU than a sqlite3 process a
poll, and the machine it shares is the one being measured. Databases are
opened read-only; one that does not exist yet, or has no tables yet, is
polled again. Exits 1 at the deadline, or as soon as a --pid has died (a
crashed service would otherwise cost the whole deadline).
"""

import argparse
import os
import sqlite3
import subprocess
import sys
import time

POLL_S = 0.005
# Each PostgreSQL poll is a psql process: poll less often.
PG_POLL_S = 0.05


def pg_answer(db, sql):
    """The first column through psql; t/f as booleans, None on an error."""
    done = subprocess.run(["psql", db, "-Atqc", sql], capture_output=True, text=True)
    if done.returncode:
        return None
    out = done.stdout.strip().splitlines()[:1]
    if not out:
        return None
    value = out[0]
    if value in ("t", "f"):
        return value == "t"
    try:
        return float(value)
    except ValueError:
        return value


def answer(db, sql, connections):
    """The query's first column, or None while the database is not there yet."""
    if db.startswith("postgres://"):
        return pg_answer(db, sql)
    try:
        if db not in connections:
            connections[db] = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        # fetchall steps the statement to its end, so no read transaction
        # stays open between polls (it would pin an old snapshot).
        return connections[db].execute(sql).fetchall()[0][0]
    except sqlite3.Error:
        connections.pop(db, None)
        return None


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited but still answers kill(0).
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--pid", type=int, action="append", default=[])
    parser.add_argument("timeout", type=float)
    parser.add_argument("pairs", nargs="+", metavar="DB SQL")
    args = parser.parse_args()
    if len(args.pairs) % 2:
        parser.error("each DB needs its SQL")
    deadline = time.time() + args.timeout
    connections = {}
    for db, sql in zip(args.pairs[::2], args.pairs[1::2]):
        while True:
            value = answer(db, sql, connections)
            if value:
                print(f"{time.time():.6f}", flush=True)
                break
            dead = [p for p in args.pid if not alive(p)]
            if dead or time.time() > deadline:
                why = f"process {dead[0]} exited" if dead else f"{args.timeout:g} s passed"
                print(f"wait_rows: {why} before {sql!r} on {db} was true (last answer {value!r})",
                      file=sys.stderr)
                sys.exit(1)
            time.sleep(PG_POLL_S if db.startswith("postgres://") else POLL_S)


if __name__ == "__main__":
    main()
