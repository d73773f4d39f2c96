"""Fixtures and helpers that run the real Rust services and the Go/Python
CloudEvents SDK programs on loopback.

Environment (all optional):
  INTEROP_ROOT     repository root (default: two levels above this file)
  KAFKA_BROKERS    broker for the Kafka tests (default 127.0.0.1:9092)
  NATS_URL         NATS server with JetStream for the NATS tests (default nats://127.0.0.1:4222)
  MQTT_URL         MQTT broker for the MQTT tests (default mqtt://127.0.0.1:1883)
  INTEROP_KEEP     keep temporary directories (logs, databases) after the run
"""

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest
import requests

ROOT = Path(os.environ.get("INTEROP_ROOT", Path(__file__).resolve().parents[2]))
TARGET = ROOT / "target" / "debug"
AUDIT_BIN = TARGET / "audit-service"
USER_BIN = TARGET / "user-service"
SEND_EVENT_BIN = TARGET / "examples" / "send_event"
GOBIN = ROOT / ".cache" / "go" / "bin"
PYDIR = ROOT / "interop" / "python"
PYTHON = sys.executable
CONFORMANCE_DIR = ROOT / "interop" / "conformance"
BROKERS = os.environ.get("KAFKA_BROKERS", "127.0.0.1:9092")
NATS_URL = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")
MQTT_URL = os.environ.get("MQTT_URL", "mqtt://127.0.0.1:1883")
# The JavaScript SDK and mqtt.js, installed by interop/run.sh.
JSDIR = ROOT / "interop" / "js"
JS_MODULES = ROOT / ".cache" / "interop-js" / "node_modules"

STARTUP_TIMEOUT = 60.0
DELIVERY_TIMEOUT = 40.0


# --------------------------------------------------------------------------
# small helpers


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout, proc=None, what=""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{what} did not listen on 127.0.0.1:{port} within {timeout}s")


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def require_file(path, hint):
    if not Path(path).is_file() or not os.access(path, os.X_OK):
        pytest.fail(f"MISSING: {path} does not exist or is not executable. {hint}", pytrace=False)


def tail(path, n=60):
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])
    except OSError:
        return "(no log)"


class Proc:
    """A child process with its output in a log file, stopped with SIGTERM."""

    def __init__(self, name, argv, env=None, log_dir=None, stdin_data=None):
        self.name = name
        self.log = Path(log_dir or tempfile.mkdtemp()) / f"{name}.log"
        full_env = dict(os.environ)
        full_env.update(env or {})
        self._logf = open(self.log, "ab")
        self.p = subprocess.Popen(
            [str(a) for a in argv],
            stdout=self._logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
            start_new_session=True,
        )

    def alive(self):
        return self.p.poll() is None

    def stop(self):
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait(timeout=5)
        self._logf.close()

    def logtext(self):
        return tail(self.log)


def run(argv, input_bytes=None, env=None, timeout=60, check=True):
    full_env = dict(os.environ)
    full_env.update(env or {})
    r = subprocess.run([str(a) for a in argv], input=input_bytes, capture_output=True, env=full_env, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(
            f"command failed ({r.returncode}): {' '.join(map(str, argv))}\n"
            f"stdout: {r.stdout.decode(errors='replace')}\nstderr: {r.stderr.decode(errors='replace')}"
        )
    return r


def wait_for(pred, timeout, what, interval=0.2):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last={last!r}")


# --------------------------------------------------------------------------
# Kafka


def kafka_up():
    host, port = BROKERS.split(",")[0].rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


def create_topics(*names, partitions=1):
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=BROKERS.split(","), client_id="interop-admin")
    try:
        for n in names:
            try:
                admin.create_topics([NewTopic(name=n, num_partitions=partitions, replication_factor=1)])
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()


def produce_raw(topic, value, headers, key=None):
    """Produce one record exactly as given (for hand-written binding vectors)."""
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=BROKERS.split(","), acks="all")
    try:
        hdrs = [(k, v if isinstance(v, bytes) else v.encode("utf-8")) for k, v in headers]
        p.send(topic, value=value, key=key.encode() if isinstance(key, str) else key, headers=hdrs).get(timeout=30)
        p.flush()
    finally:
        p.close()


def consume_all(topic, expect, timeout=DELIVERY_TIMEOUT):
    """Read records of topic from the start until `expect` were seen or timeout."""
    from kafka import KafkaConsumer

    c = KafkaConsumer(
        topic,
        bootstrap_servers=BROKERS.split(","),
        group_id=unique("interop-reader"),
        auto_offset_reset="earliest",
        consumer_timeout_ms=1000,
    )
    out = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and len(out) < expect:
            for rec in c:
                out.append(rec)
                if len(out) >= expect:
                    break
    finally:
        c.close()
    return out


# --------------------------------------------------------------------------
# NATS


def nats_up():
    """A NATS server with JetStream greets us with an INFO line saying so."""
    hostport = NATS_URL.split("://", 1)[-1].split(",")[0]
    host, port = hostport.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=2) as s:
            s.settimeout(2)
            info = s.recv(4096).decode(errors="replace")
            return info.startswith("INFO") and '"jetstream":true' in info
    except OSError:
        return False


class NatsNames:
    """A stream, subject, consumer and dead-letter subject of one test's own."""

    def __init__(self, tag):
        u = uuid.uuid4().hex[:12]
        self.stream = f"IOP_{tag.upper()}_{u}"
        self.subject = f"iop{u}.events"
        self.consumer = f"audit-{u}"
        self.dlq_subject = f"iopdlq{u}"
        self.dlq_stream = f"IOP_{tag.upper()}_{u}_DLQ"

    def env(self):
        return {
            "NATS_URL": NATS_URL,
            "NATS_STREAM": self.stream,
            "NATS_SUBJECT": self.subject,
            "NATS_CONSUMER": self.consumer,
            "NATS_DLQ_SUBJECT": self.dlq_subject,
            "NATS_DLQ_STREAM": self.dlq_stream,
        }


# --------------------------------------------------------------------------
# MQTT


def mqtt_up():
    """An MQTT broker answers an MQTT 3.1.1 CONNECT with a CONNACK accepting it."""
    hostport = MQTT_URL.split("://", 1)[-1].rstrip("/")
    host, port = hostport.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=2) as s:
            s.settimeout(2)
            s.sendall(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x05\x00\x00")
            return s.recv(4) == b"\x20\x02\x00\x00"
    except OSError:
        return False


def mqtt_topic(tag):
    """A topic of one test's own."""
    return f"interop/{tag}/{uuid.uuid4().hex[:12]}"


# --------------------------------------------------------------------------
# the Rust services


class Audit:
    def __init__(self, proc, port, transport, topic=None, dlq=None, group=None):
        self.proc, self.port, self.transport = proc, port, transport
        self.topic, self.dlq, self.group = topic, dlq, group
        self.url = f"http://127.0.0.1:{port}/"

    def events(self, **params):
        r = requests.get(f"http://127.0.0.1:{self.port}/v1/events", params=params, timeout=10)
        assert r.status_code == 200, f"GET /v1/events {params} -> {r.status_code} {r.text}"
        body = r.json()
        assert isinstance(body.get("events"), list), body
        assert "next_after" in body, body
        return body

    def all_events(self, **params):
        """Every stored item (following next_after)."""
        items, after = [], None
        for _ in range(1000):
            p = dict(params)
            if after is not None:
                p["after"] = after
            body = self.events(**p)
            items.extend(body["events"])
            after = body["next_after"]
            if after is None or not body["events"]:
                break
        return items

    def wait_events(self, n, timeout=DELIVERY_TIMEOUT, **params):
        def have():
            items = self.all_events(**params)
            return items if len(items) >= n else None

        try:
            return wait_for(have, timeout, f"{n} stored events matching {params}")
        except AssertionError as e:
            raise AssertionError(f"{e}\naudit-service log:\n{self.proc.logtext()}") from None


def service_env(tmp, transport, **extra):
    env = {
        "DATABASE_URL": f"sqlite://{tmp}/db/service.db",
        "EVENT_TRANSPORT": transport,
        "KAFKA_BROKERS": BROKERS,
        "NATS_URL": NATS_URL,
        "MQTT_URL": MQTT_URL,
        "RUST_LOG": os.environ.get("INTEROP_RUST_LOG", "info"),
        "LOG_FORMAT": "json",
    }
    env.update({k: str(v) for k, v in extra.items() if v is not None})
    return env


def wait_ready(proc, port, what):
    deadline = time.monotonic() + STARTUP_TIMEOUT
    last = None
    while time.monotonic() < deadline:
        if not proc.alive():
            raise AssertionError(f"{what} exited ({proc.p.returncode}) during startup:\n{proc.logtext()}")
        try:
            r = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
            last = r.status_code
            if r.status_code == 200:
                return
        except requests.RequestException as e:
            last = str(e)
        time.sleep(0.2)
    raise AssertionError(f"{what} not ready on {port} within {STARTUP_TIMEOUT}s (last {last}):\n{proc.logtext()}")


@pytest.fixture(scope="session")
def audit_binary():
    require_file(AUDIT_BIN, "Run `cargo build --workspace --examples` first.")


@pytest.fixture(scope="session")
def rust_binaries(audit_binary):
    require_file(USER_BIN, "Run `cargo build --workspace --examples` first.")


@pytest.fixture(scope="session")
def go_programs():
    for name in ["http-sender", "http-receiver", "kafka-sender", "kafka-receiver", "nats-sender", "nats-receiver",
                 "nats-plain-receiver"]:
        require_file(GOBIN / name, "Run interop/run.sh (it builds the Go programs).")
    return GOBIN


@pytest.fixture(scope="session")
def kafka():
    if not kafka_up():
        pytest.fail(f"MISSING: no Kafka broker answers on {BROKERS}. Start it with `scripts/kafka.sh start`.", pytrace=False)
    return BROKERS


@pytest.fixture
def tmpdir_keep():
    d = Path(tempfile.mkdtemp(prefix="interop-"))
    (d / "db").mkdir()
    yield d
    if not os.environ.get("INTEROP_KEEP"):
        shutil.rmtree(d, ignore_errors=True)


def start_audit(tmp, transport, topic=None, dlq=None, group=None, nats=None, mqtt=None):
    port = free_port()
    env = service_env(tmp, transport, LISTEN_ADDR=f"127.0.0.1:{port}", KAFKA_TOPIC=topic, KAFKA_DLQ_TOPIC=dlq, KAFKA_GROUP_ID=group,
                      **(nats.env() if nats else {}), **(mqtt or {}))
    env["DATABASE_URL"] = f"sqlite://{tmp}/db/audit.db"
    proc = Proc(f"audit-{transport}-{port}", [AUDIT_BIN], env=env, log_dir=tmp)
    wait_ready(proc, port, "audit-service")
    return Audit(proc, port, transport, topic, dlq, group)


@pytest.fixture(scope="module")
def audit_http(audit_binary):
    tmp = Path(tempfile.mkdtemp(prefix="interop-audit-"))
    (tmp / "db").mkdir()
    a = start_audit(tmp, "http")
    yield a
    a.proc.stop()
    if not os.environ.get("INTEROP_KEEP"):
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def nats_server():
    if not nats_up():
        pytest.fail(f"MISSING: no NATS server with JetStream answers on {NATS_URL}. Start it with `scripts/nats.sh start`.", pytrace=False)
    return NATS_URL


@pytest.fixture(scope="session")
def mqtt_broker():
    if not mqtt_up():
        pytest.fail(f"MISSING: no MQTT broker answers on {MQTT_URL}. Start it with `make mqtt-up` (scripts/mosquitto.sh start).",
                    pytrace=False)
    return MQTT_URL


@pytest.fixture(scope="session")
def js_sdk():
    if shutil.which("node") is None:
        pytest.fail("MISSING: node is not installed (the JavaScript SDK runs on it).", pytrace=False)
    if not (JS_MODULES / "cloudevents").is_dir() or not (JS_MODULES / "mqtt").is_dir():
        pytest.fail(f"MISSING: the JavaScript SDK in {JS_MODULES}. Run interop/run.sh (it installs it).", pytrace=False)


@pytest.fixture
def audit_nats(audit_binary, nats_server, tmpdir_keep):
    names = NatsNames("audit")
    a = start_audit(tmpdir_keep, "nats", nats=names)
    a.nats = names
    yield a
    a.proc.stop()


@pytest.fixture
def audit_mqtt(audit_binary, mqtt_broker, tmpdir_keep):
    """audit-service on a topic of its own, subscribed (its /readyz says so)
    before any test publishes: MQTT drops what nobody subscribes to."""
    topic = mqtt_topic("audit")
    tag = uuid.uuid4().hex[:12]
    a = start_audit(tmpdir_keep, "mqtt", mqtt={"MQTT_TOPIC": topic, "MQTT_GROUP": f"g{tag}",
                                               "MQTT_DLQ_TOPIC": f"{topic}/dlq", "MQTT_CLIENT_ID": f"audit-{tag}"})
    a.topic = topic
    yield a
    a.proc.stop()


def send_mqtt_paho(topic, mode, events, protocol="5"):
    """paho-mqtt as a sender without a CloudEvents binding: structured mode,
    or binary mode with sdk-go's ce- prefixed user properties."""
    data = json.dumps(events).encode()
    argv = [PYTHON, PYDIR / "mqtt_sender.py", "--url", MQTT_URL, "--topic", topic, "--mode", mode, "--protocol", protocol,
            "--in", "-"]
    return run(argv, input_bytes=data)


@pytest.fixture
def audit_kafka(audit_binary, kafka, tmpdir_keep):
    topic, dlq, group = unique("interop-audit"), unique("interop-dlq"), unique("interop-group")
    create_topics(topic, dlq)
    a = start_audit(tmpdir_keep, "kafka", topic=topic, dlq=dlq, group=group)
    yield a
    a.proc.stop()


class UserService:
    def __init__(self, proc, port):
        self.proc, self.port = proc, port
        self.base = f"http://127.0.0.1:{port}"

    def create(self, name, password="s3cret-Passw0rd!"):
        r = requests.post(f"{self.base}/v1/user", json={"name": name, "password": password}, timeout=10)
        assert r.status_code == 201, f"POST /v1/user -> {r.status_code} {r.text}"
        body = r.json()
        assert {"id", "name", "created_at"} <= set(body), body
        return body

    def update(self, uid, name):
        r = requests.put(f"{self.base}/v1/users/{uid}", json={"name": name}, timeout=10)
        assert 200 <= r.status_code < 300, f"PUT /v1/users/{uid} -> {r.status_code} {r.text}"

    def delete(self, uid):
        r = requests.delete(f"{self.base}/v1/users/{uid}", timeout=10)
        assert 200 <= r.status_code < 300, f"DELETE /v1/users/{uid} -> {r.status_code} {r.text}"


def start_user(tmp, transport, audit_url=None, topic=None, nats=None, **extra):
    port = free_port()
    env = service_env(tmp, transport, LISTEN_ADDR=f"127.0.0.1:{port}", AUDIT_URL=audit_url, KAFKA_TOPIC=topic,
                      **(nats.env() if nats else {}), **extra)
    env["DATABASE_URL"] = f"sqlite://{tmp}/db/users.db"
    proc = Proc(f"user-{transport}-{port}", [USER_BIN], env=env, log_dir=tmp)
    wait_ready(proc, port, "user-service")
    return UserService(proc, port)


# --------------------------------------------------------------------------
# the SDK receivers


class Receiver:
    """A Go or Python receiver writing JSON lines to a file."""

    def __init__(self, proc, out, url=None, topic=None):
        self.proc, self.out, self.url, self.topic = proc, out, url, topic

    def lines(self):
        if not self.out.exists():
            return []
        return [json.loads(l) for l in self.out.read_text(encoding="utf-8").splitlines() if l.strip()]

    def wait(self, n, timeout=DELIVERY_TIMEOUT, what="events"):
        try:
            return wait_for(lambda: (lambda ls: ls if len(ls) >= n else None)(self.lines()), timeout, f"{n} {what} at receiver")
        except AssertionError as e:
            raise AssertionError(f"{e}\nreceiver log:\n{self.proc.logtext()}") from None


def start_http_receiver(sdk, tmp):
    port = free_port()
    out = tmp / f"{sdk}-http-{port}.jsonl"
    if sdk == "go":
        argv = [GOBIN / "http-receiver", "-addr", f"127.0.0.1:{port}", "-out", out]
    else:
        argv = [PYTHON, PYDIR / "http_receiver.py", "--addr", f"127.0.0.1:{port}", "--out", out]
    proc = Proc(f"{sdk}-http-receiver-{port}", argv, log_dir=tmp)
    wait_port(port, 30, proc.p, f"{sdk} http receiver")
    return Receiver(proc, out, url=f"http://127.0.0.1:{port}/")


def start_kafka_receiver(sdk, tmp, topic):
    group = unique(f"interop-{sdk}-recv")
    out = tmp / f"{sdk}-kafka-{group}.jsonl"
    if sdk == "go":
        argv = [GOBIN / "kafka-receiver", "-brokers", BROKERS, "-topic", topic, "-group", group, "-out", out]
    else:
        argv = [PYTHON, PYDIR / "kafka_receiver.py", "--brokers", BROKERS, "--topic", topic, "--group", group, "--out", out]
    proc = Proc(f"{sdk}-kafka-receiver", argv, log_dir=tmp)
    return Receiver(proc, out, topic=topic)


def start_nats_receiver(tmp, names):
    """The Go SDK's nats_jetstream consumer on the test's stream and subject."""
    out = tmp / f"go-nats-{names.stream}.jsonl"
    argv = [GOBIN / "nats-receiver", "-url", NATS_URL, "-stream", names.stream, "-subject", names.subject, "-out", out]
    proc = Proc("go-nats-receiver", argv, log_dir=tmp)
    return Receiver(proc, out, topic=names.subject)


def start_nats_plain_receiver(tmp, names):
    """The Go SDK's plain (core) NATS consumer on the test's subject: what a
    subscriber that knows nothing of JetStream runs."""
    out = tmp / f"go-nats-plain-{names.stream}.jsonl"
    argv = [GOBIN / "nats-plain-receiver", "-url", NATS_URL, "-subject", names.subject, "-out", out]
    proc = Proc("go-nats-plain-receiver", argv, log_dir=tmp)
    return Receiver(proc, out, topic=names.subject)


def wait_subscribed(proc, what):
    """MQTT receivers print "subscribed" once the broker granted their subscription."""
    def subscribed():
        if not proc.alive():
            raise AssertionError(f"{what} exited ({proc.p.returncode}):\n{proc.logtext()}")
        return "subscribed" in proc.logtext()

    wait_for(subscribed, STARTUP_TIMEOUT, f"{what} to subscribe")


def start_mqtt_receiver(sdk, tmp, topic, protocol="5"):
    """The JavaScript SDK's MQTT binding ("js"), or the raw wire as paho-mqtt
    sees it as an MQTT 5 or 3.1.1 client ("python")."""
    out = tmp / f"{sdk}-mqtt-{uuid.uuid4().hex[:8]}.jsonl"
    if sdk == "js":
        argv = ["node", JSDIR / "mqtt.js", "receive", "--url", MQTT_URL, "--topic", topic, "--out", out,
                "--protocol", "5" if protocol == "5" else "4"]
        env = {"NODE_PATH": str(JS_MODULES)}
    else:
        argv = [PYTHON, PYDIR / "mqtt_receiver.py", "--url", MQTT_URL, "--topic", topic, "--out", out, "--protocol", protocol]
        env = None
    proc = Proc(f"{sdk}-mqtt-receiver-{out.stem}", argv, env=env, log_dir=tmp)
    wait_subscribed(proc, f"{sdk} MQTT receiver")
    return Receiver(proc, out, topic=topic)


# --------------------------------------------------------------------------
# the SDK senders


def send_http(sdk, url, mode, events):
    data = json.dumps(events).encode()
    if sdk == "go":
        argv = [GOBIN / "http-sender", "-url", url, "-mode", mode, "-in", "-"]
    else:
        argv = [PYTHON, PYDIR / "http_sender.py", "--url", url, "--mode", mode, "--in", "-"]
    return run(argv, input_bytes=data)


def send_kafka(sdk, topic, mode, events, key=None):
    data = json.dumps(events).encode()
    if sdk == "go":
        argv = [GOBIN / "kafka-sender", "-brokers", BROKERS, "-topic", topic, "-mode", mode, "-in", "-"]
        if key:
            argv += ["-key", key]
    else:
        argv = [PYTHON, PYDIR / "kafka_sender.py", "--brokers", BROKERS, "--topic", topic, "--mode", mode, "--in", "-"]
        if key:
            argv += ["--key", key]
    return run(argv, input_bytes=data)


def send_nats(names, mode, events):
    """The Go SDK's nats_jetstream sender, into the test's stream."""
    data = json.dumps(events).encode()
    argv = [GOBIN / "nats-sender", "-url", NATS_URL, "-stream", names.stream, "-subject", names.subject, "-mode", mode, "-in", "-"]
    return run(argv, input_bytes=data)


def send_mqtt_js(topic, mode, events):
    """The JavaScript SDK's MQTT binding as a sender, at QoS 1."""
    data = json.dumps(events).encode()
    argv = ["node", JSDIR / "mqtt.js", "send", "--url", MQTT_URL, "--topic", topic, "--mode", mode, "--in", "-"]
    return run(argv, input_bytes=data, env={"NODE_PATH": str(JS_MODULES)})


# --------------------------------------------------------------------------
# comparing events in the JSON format


JSON_CT = ("application/json", "text/json")


def _is_json_ct(ct):
    if ct is None:
        return True
    base = ct.split(";")[0].strip().lower()
    return base in JSON_CT or base.endswith("+json")


def parse_time(s):
    s = s.strip()
    if s.endswith("Z") or s.endswith("z"):
        s = s[:-1] + "+00:00"
    # Python < 3.11 can't parse more than 6 fraction digits; 3.11 can't either.
    if "." in s:
        head, rest = s.split(".", 1)
        i = 0
        while i < len(rest) and rest[i].isdigit():
            i += 1
        frac, tz = rest[:i], rest[i:]
        s = f"{head}.{(frac + '000000')[:6]}{tz}"
    dt = datetime.fromisoformat(s)
    assert dt.tzinfo is not None, f"time without offset: {s}"
    return dt


def data_of(ev):
    """('json', value) or ('bytes', b'...') or ('none', None) for an event in JSON format."""
    ct = ev.get("datacontenttype")
    if "data_base64" in ev:
        return ("bytes", base64.b64decode(ev["data_base64"]))
    if ev.get("specversion") == "0.3" and str(ev.get("datacontentencoding", "")).lower() == "base64":
        return ("bytes", base64.b64decode(ev.get("data", "")))
    if "data" not in ev or ev["data"] is None:
        return ("none", None)
    d = ev["data"]
    if _is_json_ct(ct):
        return ("json", d)
    if isinstance(d, str):
        return ("bytes", d.encode("utf-8"))
    return ("bytes", json.dumps(d, separators=(",", ":")).encode())


IGNORED = {"data", "data_base64", "datacontentencoding"}


def attrs_of(ev, ignore=()):
    out = {}
    for k, v in ev.items():
        if k in IGNORED or k in ignore:
            continue
        if k == "time":
            out[k] = parse_time(v)
        elif k == "specversion":
            out[k] = str(v)
        else:
            out[k] = v if isinstance(v, str) else json.dumps(v)
    return out


def assert_same_event(sent, got, ignore=(), where=""):
    """Attribute by attribute, extensions and data included; `time` as an instant."""
    a, b = attrs_of(sent, ignore), attrs_of(got, ignore)
    # binary-mode transports carry extension values as strings
    for k in set(a) & set(b):
        if k != "time" and a[k] != b[k] and str(sent.get(k)) == str(got.get(k)):
            b[k] = a[k]
    assert a == b, f"{where}: attributes differ\n sent: {sent}\n  got: {got}\n missing: {set(a) - set(b)} extra: {set(b) - set(a)} " + \
        f"different: {[(k, a[k], b[k]) for k in set(a) & set(b) if a[k] != b[k]]}"
    da, db = data_of(sent), data_of(got)
    if da[0] == "bytes" and db[0] == "json" and isinstance(db[1], str):
        db = ("bytes", db[1].encode("utf-8"))
    if db[0] == "bytes" and da[0] == "json" and isinstance(da[1], str):
        da = ("bytes", da[1].encode("utf-8"))
    assert da == db, f"{where}: data differs\n sent: {da}\n  got: {db}\n sent event: {sent}\n got event: {got}"
