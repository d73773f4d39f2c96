"""audit-service's transparency log checked by another ecosystem's code: the
Go verifier (interop/go/cmd/tlog-verify, on golang.org/x/mod/sumdb/tlog and
note) uses only the HTTP API and the public key. After 10,000 events it checks
every event's inclusion and the log's consistency with three checkpoints
saved on the way, on SQLite and on PostgreSQL; and it names the seq of an
event whose data was changed in the database."""

import os
import sqlite3
import subprocess
import uuid

import pytest
import requests

from conftest import AUDIT_BIN, GOBIN, Proc, free_port, require_file, run, wait_for, wait_ready

PG_ADMIN = os.environ.get("TEST_PG_URL", "postgres://postgres@127.0.0.1:55432/postgres")
EVENTS = 10_000


@pytest.fixture(scope="module")
def verifier_bin():
    require_file(GOBIN / "tlog-verify", "Run interop/run.sh (it builds the Go programs).")
    return GOBIN / "tlog-verify"


def database(kind, tmp):
    if kind == "sqlite":
        return f"sqlite://{tmp}/audit.db"
    name = f"interop_{uuid.uuid4().hex[:12]}"
    r = subprocess.run(["psql", PG_ADMIN, "-qc", f"CREATE DATABASE {name} TEMPLATE template0"], capture_output=True)
    if r.returncode != 0:
        pytest.fail(f"MISSING: no PostgreSQL at {PG_ADMIN} ({r.stderr.decode()}); start it with `scripts/postgres.sh start`",
                    pytrace=False)
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name


def start_logged(tmp, kind):
    keys = run([AUDIT_BIN, "log-key", "interop.test/audit"])
    signer = keys.stdout.decode().strip()
    verifier = keys.stderr.decode().strip().removeprefix("verifier key: ")
    port = free_port()
    url = database(kind, tmp)
    env = {"DATABASE_URL": url, "LISTEN_ADDR": f"127.0.0.1:{port}", "LOG_SIGNING_KEY": signer, "LOG_FORMAT": "json"}
    proc = Proc(f"audit-tlog-{kind}", [AUDIT_BIN], env=env, log_dir=tmp)
    wait_ready(proc, port, "audit-service")
    return proc, port, verifier, url


def post(port, first, n):
    for start in range(first, first + n, 1000):
        events = [{"specversion": "1.0", "id": f"ev-{i}", "source": "/interop", "type": "user.storeUser",
                   "subject": f"user-{i % 97}", "datacontenttype": "application/json",
                   "data": {"id": f"user-{i % 97}", "name": f"Name {i}"}}
                  for i in range(start, min(start + 1000, first + n))]
        r = requests.post(f"http://127.0.0.1:{port}/", json=events,
                          headers={"content-type": "application/cloudevents-batch+json"}, timeout=30)
        assert r.status_code == 204, r.text


def checkpoint_of(port, size):
    def reached():
        text = requests.get(f"http://127.0.0.1:{port}/log/checkpoint", timeout=5).text
        lines = text.split("\n")
        return text if len(lines) > 2 and lines[1].isdigit() and int(lines[1]) >= size else None
    return wait_for(reached, 60, f"a checkpoint of {size} entries")


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_the_go_verifier_checks_every_event_and_three_checkpoints(kind, verifier_bin, tmp_path):
    proc, port, verifier, _ = start_logged(tmp_path, kind)
    try:
        saved = []
        for n, total in [(3000, 3000), (3333, 6333), (EVENTS - 6333, EVENTS)]:
            post(port, total - n, n)
            path = tmp_path / f"checkpoint-{total}"
            path.write_text(checkpoint_of(port, total))
            saved.append(path)
        args = [verifier_bin, "-url", f"http://127.0.0.1:{port}", "-key", verifier]
        for path in saved:
            args += ["-checkpoint", path]
        r = run(args, timeout=300, check=False)
        out = r.stdout.decode() + r.stderr.decode()
        assert r.returncode == 0, out + proc.logtext()
        assert f"verified {EVENTS} events" in out and "consistent with 3 earlier checkpoints" in out, out
    finally:
        proc.stop()


def test_the_go_verifier_names_the_seq_of_changed_data(verifier_bin, tmp_path):
    proc, port, verifier, url = start_logged(tmp_path, "sqlite")
    try:
        post(port, 0, 50)
        checkpoint_of(port, 50)
        db = sqlite3.connect(url.removeprefix("sqlite://"))
        seq, text = db.execute("SELECT seq, event_json FROM events ORDER BY seq LIMIT 1 OFFSET 20").fetchone()
        db.execute("UPDATE events SET event_json = ? WHERE seq = ?", (text.replace("Name 20", "Name 21"), seq))
        db.commit()
        db.close()
        r = run([verifier_bin, "-url", f"http://127.0.0.1:{port}", "-key", verifier], check=False)
        out = r.stderr.decode()
        assert r.returncode == 1, out
        # The data's commitment is made from the data served and its salt,
        # so the changed event's entry is not the one in the tree.
        assert f"seq {seq}: not in the tree of the signed checkpoint" in out, out
    finally:
        proc.stop()
