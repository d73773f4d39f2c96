"""Copies of docker-compose.yaml (and of the Dockerfile), each broken in one
way that `docker compose up` would only show as a stack that does not work:
each must fail, with a message that names the service and the setting."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from compose_netns.stack import REPO, Failure

from .helpers import COMPOSE, compose_up, our_namespaces


def rename(service: str, old: str, new: str):
    def change(compose: dict, _: Path) -> None:
        env = compose["services"][service]["environment"]
        env[new] = env.pop(old)
    return change


def set_env(service: str, name: str, value: str):
    def change(compose: dict, _: Path) -> None:
        compose["services"][service]["environment"][name] = value
    return change


def healthcheck(service: str, test: list[str]):
    def change(compose: dict, _: Path) -> None:
        compose["services"][service]["healthcheck"]["test"] = test
    return change


def dockerfile_without(packages: str):
    """Our services built from a copy of the Dockerfile whose runtime stage
    does not install `packages`."""
    def change(compose: dict, directory: Path) -> None:
        broken = directory / "Dockerfile"
        text = (REPO / "Dockerfile").read_text()
        assert f" {packages} " in text
        broken.write_text(text.replace(f" {packages} ", " "))
        for name in ("audit-service", "user-service"):
            compose["services"][name]["build"]["dockerfile"] = str(broken)
    return change


CASES = {
    # A misspelt variable: the image's setup turns it into a property Kafka does not have.
    "kafka_variable_misspelt": ([], rename("kafka", "KAFKA_ADVERTISED_LISTENERS", "KAFKA_ADVERTISED_LISTENER"),
                                ["kafka:", "KAFKA_ADVERTISED_LISTENER", "advertised.listener"]),
    "service_variable_misspelt": ([], rename("audit-service", "NATS_SUBJECT", "NATS_SUBJET"),
                                  ["audit-service:", "NATS_SUBJET"]),
    "postgres_variable_misspelt": (["replicas"], rename("postgres", "POSTGRES_PASSWORD", "POSTGRES_PASWORD"),
                                   ["postgres:", "POSTGRES_PASWORD"]),
    # A wrong host name, alone and inside a URL.
    "broker_host_wrong": ([], set_env("audit-service", "KAFKA_BROKERS", "kafak:19092"),
                          ["audit-service:", "KAFKA_BROKERS", "kafak"]),
    "database_host_wrong": (["replicas"], set_env("user-service-1", "DATABASE_URL",
                                                  "postgres://postgres:postgres@postgress:5432/users"),
                            ["user-service-1:", "DATABASE_URL", "postgress"]),
    # A healthcheck command the image lacks.
    "wget_in_our_image": ([], healthcheck("user-service", ["CMD", "wget", "-qO-", "http://127.0.0.1:3000/readyz"]),
                          ["user-service:", "healthcheck", "`wget`"]),
    "curl_in_the_kafka_image": ([], healthcheck("kafka", ["CMD-SHELL", "curl -fsS http://localhost:9092 || exit 1"]),
                                ["kafka:", "healthcheck", "`curl`"]),
    "curl_gone_from_the_dockerfile": ([], dockerfile_without("curl"), ["audit-service:", "healthcheck", "`curl`"]),
    # Not asked for, but the same kind of fault: a library the binary needs.
    "openssl_gone_from_the_dockerfile": ([], dockerfile_without("ca-certificates curl libcurl4 libssl3"),
                                         ["user-service:", "libssl.so.3", "libssl3"]),
}


@pytest.mark.parametrize("case", CASES)
def test_a_broken_copy_fails_naming_the_service_and_setting(case: str, tmp_path: Path):
    profiles, change, expected = CASES[case]
    compose = copy.deepcopy(yaml.safe_load(COMPOSE.read_text()))
    change(compose, tmp_path)
    broken = tmp_path / "docker-compose.yaml"
    broken.write_text(yaml.safe_dump(compose, sort_keys=False))
    with pytest.raises(Failure) as failure:
        with compose_up(profiles, path=broken):
            pass
    message = str(failure.value)
    for part in expected:
        assert part in message, f"{part!r} not in: {message}"
    assert our_namespaces() == []
