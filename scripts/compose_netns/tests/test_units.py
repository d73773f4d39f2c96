"""The pieces that read files and commands, on small inputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from compose_netns import dockerfile, health, wiring
from compose_netns.image_kafka import property_name
from compose_netns.image_ours import BuiltImage
from compose_netns.project import ComposeError, Healthcheck, interpolate, load
from compose_netns.stack import REPO


def test_interpolation_follows_compose():
    warnings: list[str] = []
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET:-d} ${UNSET:-d} ${EMPTY:-d} ${EMPTY-d} $$SET $SET", env, "w", warnings) == "x d d  $SET x"
    assert interpolate("${UNSET}", env, "w", warnings) == "" and warnings
    with pytest.raises(ComposeError, match="NEEDED"):
        interpolate("${NEEDED:?must be set}", env, "w", warnings)


def test_profiles_choose_the_services_and_a_disabled_dependency_is_an_error(tmp_path: Path):
    path = tmp_path / "compose.yaml"
    path.write_text("services:\n  a: {image: x, depends_on: [b]}\n  b: {image: x, profiles: [p]}\n")
    with pytest.raises(ComposeError, match="disabled by its profiles"):
        load(path, [], {})
    assert load(path, ["p"], {}).start_order() == ["b", "a"]


@pytest.mark.parametrize("script, commands", [
    ("wget -q -O /dev/null 'http://localhost:8222/healthz'", ["sh", "wget"]),
    ("/opt/kafka/bin/kafka-broker-api-versions.sh --bootstrap-server kafka:19092 >/dev/null 2>&1",
     ["sh", "/opt/kafka/bin/kafka-broker-api-versions.sh"]),
    ("A=1 exec timeout 5 curl -f http://x || exit 1", ["sh", "timeout", "curl"]),
    ("test -f /ready && nc -z localhost 1 | grep -q x", ["sh", "nc", "grep"]),
])
def test_the_commands_a_shell_healthcheck_runs(script: str, commands: list[str]):
    assert health.commands_of(Healthcheck(["CMD-SHELL", script])) == commands


def test_references_find_hosts_in_urls_lists_and_listeners():
    project = load(REPO / "docker-compose.yaml", ["replicas"], {})
    found = {(r.service, r.variable, r.host, r.port) for name in project.active for r in wiring.references(project, name)}
    assert ("kafka", "KAFKA_CONTROLLER_QUORUM_VOTERS", "kafka", 9093) in found
    assert ("user-service-1", "DATABASE_URL", "postgres", 5432) in found
    assert ("audit-service-1", "LISTEN_ADDR", "0.0.0.0", 8080) in found
    assert all(r[2] for r in found), "a listener without a host names none"


def test_messages_mask_a_urls_password():
    assert wiring.masked("postgres://postgres:s3cret@postgres:5432/users") == "postgres://postgres:***@postgres:5432/users"
    assert wiring.masked("kafka:19092") == "kafka:19092"


def test_kafka_variables_become_properties_as_the_image_wrapper_makes_them():
    assert property_name("KAFKA_ADVERTISED_LISTENERS") == "advertised.listeners"
    assert property_name("KAFKA_LISTENER_NAME_INTERNAL_SSL__KEY___X") == "listener.name.internal.ssl_key-x"


def test_our_image_is_read_from_the_dockerfile_target():
    target = dockerfile.target(REPO / "Dockerfile", "audit-service")
    assert (target.base_image, target.user, target.workdir, target.entrypoint) == (
        "debian:bookworm-slim", "app", "/app", ["audit-service"])
    project = load(REPO / "docker-compose.yaml", [], {})
    image = BuiltImage(project.services["audit-service"])
    assert image.has("curl") and image.has("/usr/local/bin/audit-service") and not image.has("wget")
