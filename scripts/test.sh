#!/usr/bin/env bash
# `make test`: the whole suite, from a fresh clone. Installs what it needs
# (scripts/setup.sh), starts a Kafka broker on 127.0.0.1:9092, a NATS
# server with JetStream on 127.0.0.1:4222, a Mosquitto MQTT broker on
# 127.0.0.1:1883 and a private PostgreSQL cluster on 127.0.0.1:55432
# unless they already run (and stops afterwards what it started), then
# runs the compose-file checks (the file's services brought up in network
# namespaces among them) and the README checks, schemathesis
# against both APIs, the Rust tests (the CESQL TCK among them; the storage
# and delivery tests twice: on SQLite, then on PostgreSQL), the audit
# console in headless Chromium and the cross-SDK interop suite. Any
# missing dependency is a failure, never a skipped test.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

scripts/setup.sh

# Two cores: keep the build from starving the machine.
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
cargo build --workspace --all-targets --examples
# ...with the same features as `make run`'s build of the two services, so a
# user who ran the tests gets a running service at once.
.cache/venv/bin/python scripts/check-build-features.py

started_kafka=""
started_nats=""
started_mqtt=""
started_pg=""
cleanup() {
  if [[ -n "$started_kafka" ]]; then scripts/kafka.sh stop || true; fi
  if [[ -n "$started_nats" ]]; then NATSD_PORT=4222 scripts/nats.sh stop || true; fi
  if [[ -n "$started_mqtt" ]]; then MQTT_PORT=1883 scripts/mosquitto.sh stop || true; fi
  if [[ -n "$started_pg" ]]; then scripts/postgres.sh stop || true; fi
}
trap cleanup EXIT
if ! scripts/kafka.sh status >/dev/null 2>&1; then
  scripts/kafka.sh start
  started_kafka=yes
fi
if ! NATSD_PORT=4222 scripts/nats.sh status >/dev/null 2>&1; then
  NATSD_PORT=4222 scripts/nats.sh start
  started_nats=yes
fi
if ! MQTT_PORT=1883 scripts/mosquitto.sh status >/dev/null 2>&1; then
  MQTT_PORT=1883 scripts/mosquitto.sh start
  started_mqtt=yes
fi
if ! scripts/postgres.sh status >/dev/null 2>&1; then
  scripts/postgres.sh start
  started_pg=yes
fi
# Databases an interrupted earlier run left behind.
scripts/postgres.sh clean

echo "== compose file, and make up without Docker Compose"
.cache/venv/bin/python scripts/check-compose.py
scripts/test-compose-sh.sh

echo "== docker compose up, its services in network namespaces (default, nats and replicas profiles)"
scripts/test-compose-netns.sh

echo "== README's configuration table against the variables the services read"
.cache/venv/bin/python scripts/check-docs.py

echo "== both HTTP APIs against their OpenAPI documents (schemathesis)"
scripts/check-api.sh

echo "== Rust tests (storage on SQLite; the tests of replicas always on PostgreSQL)"
cargo test --workspace --no-fail-fast

echo "== storage and delivery tests again, on PostgreSQL"
# The same tests with their databases on the PostgreSQL cluster; the
# replica and scale tests (replicas::, postgres::) ran above already, and
# the README and trace checks (readme::, trace::) do not depend on storage.
TEST_DATABASE=postgres cargo test -p user-service -p audit-service -p e2e --no-fail-fast \
  --test api --test flow -- --skip replicas:: --skip postgres:: --skip readme:: --skip trace::

echo "== the audit console in headless Chromium"
browser/run.sh

echo "== interop with the Go and Python CloudEvents SDKs"
interop/run.sh
