"""4 and 5: the CloudEvents conformance tool and the test vectors of the
conformance module (github.com/cloudevents/conformance v0.2.0, the only
version the Go module proxy serves) against the Rust services.

v0.2.0 has `invoke`, `listen`, `send` and `raw`, but no `diff` command, and
ships no JSON format vectors (format/json/*.json came later). It ships YAML
events (yaml/) and Gherkin scenarios for the HTTP and Kafka protocol bindings
(features/*.feature): those are replayed here, and the invalid inputs are ours
(interop/conformance/invalid-*.json)."""

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml

from conftest import (
    CONFORMANCE_DIR,
    GOBIN,
    ROOT,
    Proc,
    assert_same_event,
    consume_all,
    free_port,
    produce_raw,
    require_file,
    run,
    start_user,
    unique,
    wait_for,
    wait_port,
)

TOOL = GOBIN / "cloudevents"


def conformance_module():
    local = ROOT / ".cache" / "go" / "pkg" / "mod"
    gomodcache = os.environ.get("GOMODCACHE") or (str(local) if local.is_dir() else None) or subprocess.run(
        ["go", "env", "GOMODCACHE"], capture_output=True, text=True, check=True
    ).stdout.strip()
    mods = sorted(Path(gomodcache, "github.com", "cloudevents").glob("conformance@*"))
    assert mods, f"the conformance module is not in {gomodcache} (interop/run.sh downloads it)"
    return mods[-1]


@pytest.fixture(scope="module")
def tool():
    require_file(TOOL, "Run interop/run.sh (it builds the conformance tool).")
    return TOOL


# ---------------------------------------------------------------------------
# YAML events (ours and the module's) through `cloudevents invoke`


def yaml_docs(path):
    return [d for d in yaml.safe_load_all(Path(path).read_text(encoding="utf-8")) if d]


def expected_from_yaml(doc):
    ca = dict(doc["ContextAttributes"])
    ext = ca.pop("Extensions", None) or {}
    ev = {k: str(v) for k, v in ca.items() if v not in (None, "")}
    ev.update({k: str(v) for k, v in ext.items()})
    data = doc.get("Data")
    if data:
        ct = ev.get("datacontenttype", "application/json")
        mode = doc.get("Mode") or "binary"
        is_json = re.match(r"^(application|text)/([\w.-]+\+)?json(;.*)?$", ct)
        if mode == "structured" or is_json:
            ev["data"] = json.loads(data)
        else:
            ev["data"] = data
    return ev


def invoke_and_check(tool, audit, files):
    run([tool, "invoke", audit.url, *sum((["-f", str(f)] for f in files), [])], timeout=120)
    expected = [expected_from_yaml(d) for f in files for d in yaml_docs(f)]
    for ev in expected:
        items = audit.wait_events(1, source=ev["source"], type=ev["type"])
        found = [it["event"] for it in items if it["event"]["id"] == ev["id"]]
        assert len(found) == 1, f"{ev['id']}: stored {len(found)} times: {items}"
        assert_same_event(ev, found[0], where=f"conformance {ev['id']}")


def test_invoke_our_yaml_cases(tool, audit_http):
    invoke_and_check(tool, audit_http, sorted((CONFORMANCE_DIR / "invoke").glob("*.yaml")))


def test_invoke_module_minimum_yaml(tool, audit_http):
    m = conformance_module()
    invoke_and_check(tool, audit_http, [m / "yaml/v1.0/v1_minimum.yaml", m / "yaml/v0.3/v03_minimum.yaml"])


def test_invoke_module_v1_v03_yaml_same_id_stored_once(tool, audit_http):
    # yaml/v1.yaml (binary + structured) and yaml/v03.yaml share source and id:
    # a receiver accepts all three with 2xx and stores one event.
    m = conformance_module()
    run([tool, "invoke", audit_http.url, "-f", m / "yaml/v1.yaml", "-f", m / "yaml/v03.yaml"], timeout=120)
    items = audit_http.wait_events(1, source="/mycontext/subcontext", type="com.example.someevent")
    same = [it for it in items if it["event"]["id"] == "4321-4321-4321"]
    assert len(same) == 1, items
    ev = same[0]["event"]
    assert ev["comexampleextension1"] == "value", ev
    assert ev["data"] == {"world": "hello"}, ev


# ---------------------------------------------------------------------------
# user-service -> `cloudevents listen`, compared with listen/user-service.yaml


def match(expected, got, subst, path=""):
    if isinstance(expected, dict):
        assert isinstance(got, dict), f"{path}: expected a mapping, got {got!r}"
        for k, v in expected.items():
            assert k in got, f"{path}.{k} missing in {got!r}"
            match(v, got[k], subst, f"{path}.{k}")
        return
    exp = str(expected)
    if exp == "<any>":
        assert str(got).strip(), f"{path}: empty"
        return
    for k, v in subst.items():
        exp = exp.replace(f"<{k}>", v)
    if path.endswith(".Data"):
        assert json.loads(got) == json.loads(exp), f"{path}: {got!r} != {exp!r}"
    else:
        assert str(got).strip() == exp.strip(), f"{path}: {got!r} != {exp!r}"


def test_user_service_with_listen(tool, rust_binaries, tmpdir_keep):
    port = free_port()
    listener = Proc("conformance-listen", [tool, "listen", "-P", port], log_dir=tmpdir_keep)
    wait_port(port, 30, listener.p, "cloudevents listen")
    us = start_user(tmpdir_keep, "http", audit_url=f"http://127.0.0.1:{port}/")
    try:
        name = unique("Listen User")
        user = us.create(name, "pw-" + unique("s"))

        def docs():
            text = listener.log.read_text(encoding="utf-8", errors="replace")
            # the tool's own "listening on :PORT" line shares the log
            text = "\n".join(l for l in text.splitlines() if not l.startswith("listening on"))
            if "---" not in text:
                return None
            try:
                ds = [d for d in yaml.safe_load_all(text) if isinstance(d, dict) and "ContextAttributes" in d]
            except yaml.YAMLError:
                return None
            return ds or None

        got = wait_for(docs, 40, "an event at `cloudevents listen`")
        expected = yaml_docs(CONFORMANCE_DIR / "listen/user-service.yaml")[0]
        first = got[0]
        match(expected, first, {"user.id": user["id"], "user.name": name})
        extra = set(first["ContextAttributes"]) - set(expected["ContextAttributes"])
        assert not extra, f"attributes not in the expected YAML: {extra}"
    finally:
        us.proc.stop()
        listener.stop()


# ---------------------------------------------------------------------------
# the module's Gherkin scenarios as vectors


def parse_feature(path):
    """Scenarios of a .feature file: docstrings, tables, expanded Examples."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    scenarios, cur, i = [], None, 0
    while i < len(lines):
        s = lines[i].strip()
        if s.startswith("Scenario"):
            cur = {"name": s, "doc": [], "tables": [], "examples": None}
            scenarios.append(cur)
        elif cur is not None and s == '"""':
            indent = len(lines[i]) - len(lines[i].lstrip())
            j, buf = i + 1, []
            while lines[j].strip() != '"""':
                buf.append(lines[j][indent:] if len(lines[j]) >= indent else lines[j].strip())
                j += 1
            cur["doc"].append("\n".join(buf))
            i = j
        elif cur is not None and s.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                i += 1
            if lines[i - len(rows) - 1].strip().startswith("Examples"):
                cur["examples"] = rows
            else:
                cur["tables"].append(rows)
            continue
        i += 1
    out = []
    for sc in scenarios:
        if sc["examples"]:
            head, *vals = sc["examples"]
            for v in vals:
                sub = dict(zip(head, v))

                def r(t, sub=sub):
                    for k, x in sub.items():
                        t = t.replace(f"<{k}>", x)
                    return t

                out.append({
                    "name": r(sc["name"]),
                    "doc": [r(d) for d in sc["doc"]],
                    "tables": [[[r(c) for c in row] for row in t] for t in sc["tables"]],
                })
        else:
            out.append(sc)
    return out


def table_dict(t):
    return {k: v for k, v in t[1:]}


def feature_cases(name):
    try:
        m = conformance_module()
    except Exception:  # reported by the test itself
        return [pytest.param(None, id="module-missing")]
    return [pytest.param(sc, id=sc["name"]) for sc in parse_feature(m / "features" / name)]


@pytest.mark.parametrize("sc", feature_cases("http-protocol-binding.feature"))
def test_http_binding_feature(audit_http, sc):
    assert sc is not None, "conformance module missing"
    raw, data_json = sc["doc"]
    attrs = table_dict(sc["tables"][0])
    # The scenarios share one id; give each its own so none is a duplicate.
    eid = unique("feature-http")
    raw = raw.replace(attrs["id"], eid)
    attrs["id"] = eid
    head, _, body = raw.partition("\n\n")
    headers = {}
    for h in head.splitlines()[1:]:
        k, _, v = h.partition(":")
        if k.strip().lower() not in ("host", "content-length"):
            headers[k.strip()] = v.strip()
    r = requests.post(audit_http.url, headers=headers, data=body.encode(), timeout=10)
    assert 200 <= r.status_code < 300, f"{sc['name']}: {r.status_code} {r.text}"
    items = audit_http.wait_events(1, source=attrs["source"], type=attrs["type"])
    got = [it["event"] for it in items if it["event"]["id"] == eid]
    assert len(got) == 1, items
    assert_same_event({**attrs, "data": json.loads(data_json)}, got[0], where=sc["name"])


@pytest.mark.parametrize("sc", feature_cases("kafka-protocol-binding.feature"))
def test_kafka_binding_feature(audit_kafka, sc):
    assert sc is not None, "conformance module missing"
    payload, data_json = sc["doc"]
    hdr_table, attr_table = sc["tables"][0], sc["tables"][1]
    attrs = table_dict(attr_table)
    eid = unique("feature-kafka")
    payload = payload.replace(attrs["id"], eid)
    headers = [(k, eid if v == attrs["id"] else v) for k, v in hdr_table[1:]]
    attrs["id"] = eid
    produce_raw(audit_kafka.topic, payload.encode(), headers, key="feature")
    items = audit_kafka.wait_events(1, source=attrs["source"], type=attrs["type"])
    assert [it["event"]["id"] for it in items] == [eid], items
    assert items[0]["transport"] == "kafka"
    assert_same_event({**attrs, "data": json.loads(data_json)}, items[0]["event"], where=sc["name"])


# ---------------------------------------------------------------------------
# invalid inputs: 400 problem+json over HTTP, dead letter over Kafka; never stored


def invalid_cases(name):
    cases = json.loads((CONFORMANCE_DIR / name).read_text(encoding="utf-8"))
    return [pytest.param(c, id=c["name"]) for c in cases]


@pytest.mark.parametrize("case", invalid_cases("invalid-http.json"))
def test_invalid_http_rejected(audit_http, case):
    before = len(audit_http.all_events())
    body = case["body"] if isinstance(case["body"], str) else json.dumps(case["body"])
    r = requests.post(audit_http.url, headers=case["headers"], data=body.encode("utf-8"), timeout=10)
    assert r.status_code == case.get("status", 400), f"{case['name']}: {r.status_code} {r.headers.get('content-type')} {r.text}"
    assert r.headers.get("content-type", "").startswith("application/problem+json"), f"{case['name']}: {r.headers} {r.text}"
    problem = r.json()
    assert problem.get("status") == r.status_code and problem.get("title"), problem
    if case.get("detail_mentions"):
        assert case["detail_mentions"] in json.dumps(problem), f"detail should name {case['detail_mentions']!r}: {problem}"
    time.sleep(0.3)
    after = audit_http.all_events()
    assert len(after) == before, f"{case['name']}: something was stored: {after[before:]}"


def test_invalid_kafka_dead_lettered(audit_kafka):
    cases = json.loads((CONFORMANCE_DIR / "invalid-kafka.json").read_text(encoding="utf-8"))
    for c in cases:
        value = None if c.get("value") is None else (c["value"] if isinstance(c["value"], str) else json.dumps(c["value"])).encode()
        produce_raw(audit_kafka.topic, value, [(k, v) for k, v in c["headers"]], key=c["name"])
    sentinel = unique("sentinel")
    produce_raw(
        audit_kafka.topic,
        b'{"ok":true}',
        [("ce_specversion", "1.0"), ("ce_id", sentinel), ("ce_source", "/interop/sentinel"),
         ("ce_type", "com.example.sentinel"), ("content-type", "application/json")],
        key="sentinel",
    )
    audit_kafka.wait_events(1, source="/interop/sentinel")
    stored = audit_kafka.all_events()
    assert [it["event"]["id"] for it in stored] == [sentinel], f"stored besides the sentinel: {stored}"
    dead = consume_all(audit_kafka.dlq, len(cases))
    keys = sorted((r.key or b"").decode() for r in dead)
    assert len(dead) == len(cases), f"dead-letter topic {audit_kafka.dlq} has {len(dead)} records (keys {keys}), want {len(cases)}"
    for r in dead:
        assert r.headers, f"dead letter {r.key} carries no error header"


# ---------------------------------------------------------------------------
# valid inputs of every shape the JSON format allows: all stored as sent


VALID = json.loads((CONFORMANCE_DIR / "valid-http.json").read_text(encoding="utf-8"))


def _fresh(event, tag):
    """The event under a source of its own, so runs and cases don't collide."""
    return {**event, "source": f"{event['source']}/{tag}"}


@pytest.mark.parametrize("case", [pytest.param(c, id=c["name"]) for c in VALID["events"]])
def test_valid_structured_event_is_stored_as_sent(audit_http, case):
    event = _fresh(case["event"], unique(case["name"]))
    r = requests.post(audit_http.url, headers={"Content-Type": "application/cloudevents+json"},
                      data=json.dumps(event).encode(), timeout=10)
    assert 200 <= r.status_code < 300, f"{case['name']}: {r.status_code} {r.text}"
    items = audit_http.wait_events(1, source=event["source"])
    assert len(items) == 1, items
    sent = {k: v for k, v in event.items() if v is not None}
    assert_same_event(sent, items[0]["event"], where=case["name"])


@pytest.mark.parametrize("case", [pytest.param(c, id=c["name"]) for c in VALID["batches"]])
def test_valid_batch_is_stored_whole(audit_http, case):
    tag = unique(case["name"])
    batch = [_fresh(e, tag) for e in case["batch"]]
    before = len(audit_http.all_events())
    r = requests.post(audit_http.url, headers={"Content-Type": "application/cloudevents-batch+json"},
                      data=json.dumps(batch).encode(), timeout=10)
    assert 200 <= r.status_code < 300, f"{case['name']}: {r.status_code} {r.text}"
    if batch:
        items = audit_http.wait_events(len(batch), source=batch[0]["source"])
        assert sorted(i["event"]["id"] for i in items) == sorted(e["id"] for e in batch)
        for e in batch:
            got = next(i["event"] for i in items if i["event"]["id"] == e["id"])
            assert_same_event(e, got, where=f"{case['name']} {e['id']}")
    else:
        time.sleep(0.3)
        assert len(audit_http.all_events()) == before
