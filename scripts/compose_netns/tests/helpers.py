"""What the scenario and broken-copy tests share: bringing a compose file up
in namespaces, and reading what the services logged."""

from __future__ import annotations

import json
import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

from compose_netns.project import load
from compose_netns.stack import REPO, Stack

COMPOSE = REPO / "docker-compose.yaml"


@contextmanager
def compose_up(profiles: list[str], variables: dict[str, str] | None = None, path: Path = COMPOSE):
    """`docker compose --profile ... up --wait`, and down afterwards whatever happens."""
    stack = Stack(load(path, profiles, variables or {}, directory=REPO))
    try:
        stack.up()
        yield stack
    finally:
        stack.down()


def stored_events(stack: Stack, service: str) -> list[dict]:
    """The `audit event stored` lines of a service's JSON log."""
    found = []
    for line in stack.logs(service).splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("message") == "audit event stored":
            found.append(entry)
    return found


def happened(stack: Stack, service: str, what: str) -> int:
    """Where in the stack's timeline `service` first did `what`."""
    for index, (_, name, event) in enumerate(stack.timeline):
        if name == service and event.startswith(what):
            return index
    raise AssertionError(f"{service} never {what}: {stack.timeline}")


def curl_json(stack: Stack, *args: str) -> dict:
    done = stack.on_host(["curl", "-sS", "--fail-with-body", *args])
    assert done.returncode == 0, f"curl {' '.join(args)}: {done.stderr}{done.stdout}"
    return json.loads(done.stdout)


def our_namespaces() -> list[str]:
    """The namespaces this test process's stacks made and have not removed."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in listed.splitlines() if line.startswith(f"cnet{os.getpid()}-")]
