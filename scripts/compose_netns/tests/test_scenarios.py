"""The compose file's four ways of running, each brought up as `docker
compose up` would and used as the README says: from the machine's side,
through the published ports."""

from __future__ import annotations

import json
import re

from compose_netns.stack import REPO

from .helpers import compose_up, curl_json, happened, our_namespaces, stored_events

STORE_WAIT = 60


def readme_curl() -> str:
    """The README's request, the one a new user copies."""
    blocks = re.findall(r"```sh\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    return next(b for b in blocks if 'curl -X "POST"' in b and "localhost:3000/v1/user" in b)


def run_readme_curl(stack) -> dict:
    done = stack.on_host(["bash", "-c", readme_curl()])
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def stored_line_for(stack, service: str, user_id: str) -> dict:
    return stack.wait_for(
        f"{service}'s `audit event stored` line for user {user_id}",
        lambda: next((e for e in stored_events(stack, service) if e.get("subject") == user_id), None),
        STORE_WAIT,
    )


def test_default_profile_stores_the_readme_users_event_over_kafka():
    with compose_up([]) as stack:
        # Started in the order compose gives: the services once Kafka is healthy.
        for service in ("audit-service", "user-service"):
            assert happened(stack, "kafka", "healthy") < happened(stack, service, "starting")
        user = run_readme_curl(stack)
        line = stored_line_for(stack, "audit-service", user["id"])
        assert (line["type"], line["transport"]) == ("user.storeUser", "kafka"), line
        # The broker is published on the host as the compose file says:
        # kcat there reaches it through the HOST listener it advertises.
        kcat = stack.on_host(["kcat", "-b", "127.0.0.1:9092", "-C", "-t", "audit", "-o", "beginning", "-e", "-q"])
        assert kcat.returncode == 0 and user["id"] in kcat.stdout, kcat.stderr
    assert our_namespaces() == []


def test_nats_profile_stores_the_readme_users_event_over_nats():
    with compose_up(["nats"], {"EVENT_TRANSPORT": "nats"}) as stack:
        user = run_readme_curl(stack)
        line = stored_line_for(stack, "audit-service", user["id"])
        assert (line["type"], line["transport"]) == ("user.storeUser", "nats"), line
    assert our_namespaces() == []


def test_mqtt_profile_stores_the_readme_users_event_over_mqtt():
    with compose_up(["mqtt"], {"EVENT_TRANSPORT": "mqtt"}) as stack:
        # audit-service has subscribed (its /readyz says so) before the
        # request: MQTT drops what nobody subscribes to, and user-service
        # keeps the event in its outbox until someone does.
        ready = stack.on_host(["curl", "-fsS", "--retry", "30", "--retry-delay", "1", "--retry-all-errors",
                               "http://localhost:8080/readyz"])
        assert ready.returncode == 0, ready.stderr
        user = run_readme_curl(stack)
        line = stored_line_for(stack, "audit-service", user["id"])
        assert (line["type"], line["transport"]) == ("user.storeUser", "mqtt"), line
    assert our_namespaces() == []


def test_replicas_profile_stores_users_of_both_user_services_once_and_both_audit_replicas_list_them():
    with compose_up(["replicas"]) as stack:
        for replica in ("audit-service-1", "audit-service-2", "user-service-1", "user-service-2"):
            assert happened(stack, "postgres", "healthy") < happened(stack, replica, "starting")
        ids = []
        for n in range(3):
            for port in (3001, 3002):
                user = curl_json(stack, "-X", "POST", f"http://localhost:{port}/v1/user",
                                 "-H", "Content-Type: application/json",
                                 "-d", f'{{"name": "replica user {n} via {port}", "password": "12345"}}')
                ids.append(user["id"])

        def listed(port: int) -> list[str]:
            page = curl_json(stack, f"http://localhost:{port}/v1/events?type=user.storeUser&limit=1000")
            return [item["event"]["subject"] for item in page["events"]]

        def stored() -> list[str]:
            return [e["subject"] for r in ("audit-service-1", "audit-service-2") for e in stored_events(stack, r)]

        stack.wait_for("both audit replicas to list every user, and their stored lines",
                       lambda: len(stored()) >= len(ids) and all(set(ids) <= set(listed(p)) for p in (8081, 8082)),
                       STORE_WAIT)
        for port in (8081, 8082):
            subjects = listed(port)
            assert sorted(s for s in subjects if s in ids) == sorted(ids), f"port {port}: {subjects}"
        assert sorted(stored()) == sorted(ids), "each event stored once, by one of the replicas"
        # The default SQLite audit-service reads another topic: none of these.
        assert not set(ids) & set(listed(8080))
    assert our_namespaces() == []
