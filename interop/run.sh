#!/usr/bin/env bash
# Interoperability suite: the Go and Python CloudEvents SDKs against the Rust
# services, both directions, over HTTP and Kafka, the Go SDK over NATS
# JetStream, and the JavaScript SDK over MQTT (both ways; a paho-mqtt
# client checks the wire against the MQTT binding and sends to audit-service
# as a client without a binding).
#
# Assumes `cargo build --workspace --examples` has been run, the Kafka
# broker is up (`scripts/kafka.sh start`), a NATS server with JetStream
# (`scripts/nats.sh start`) and an MQTT broker (`scripts/mosquitto.sh
# start`). Sets up, idempotently and under .cache/ (gitignored): the Go
# programs and the conformance tool in .cache/go/bin, a Python venv in
# .cache/venv, the JavaScript SDK and mqtt.js in .cache/interop-js; then
# runs pytest -q. Extra arguments go to pytest (e.g. interop/run.sh -k kafka).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

export GOPATH="$ROOT/.cache/go"
export GOMODCACHE="$ROOT/.cache/go/pkg/mod"
export GOBIN="$ROOT/.cache/go/bin"
export GOFLAGS="${GOFLAGS:-} -modcacherw"
export KAFKA_BROKERS="${KAFKA_BROKERS:-127.0.0.1:9092}"
export NATS_URL="${NATS_URL:-nats://127.0.0.1:4222}"
export MQTT_URL="${MQTT_URL:-mqtt://127.0.0.1:1883}"
VENV="$ROOT/.cache/venv"
JS="$ROOT/.cache/interop-js"

die() { echo "interop/run.sh: $*" >&2; exit 1; }

for bin in target/debug/audit-service target/debug/user-service; do
  [[ -x "$bin" ]] || die "missing $bin: run 'cargo build --workspace --examples' first"
done
[[ -x target/debug/examples/send_event ]] ||
  echo "interop/run.sh: WARNING: target/debug/examples/send_event is missing; the Rust->SDK edge-case tests will fail" >&2

broker="${KAFKA_BROKERS%%,*}"
if ! (exec 3<>"/dev/tcp/${broker%:*}/${broker##*:}") 2>/dev/null; then
  die "no Kafka broker answers on $broker: start it with 'scripts/kafka.sh start'"
fi

nats="${NATS_URL#*://}"
nats="${nats%%,*}"
if ! (exec 3<>"/dev/tcp/${nats%:*}/${nats##*:}") 2>/dev/null; then
  die "no NATS server answers on $nats: start it with 'scripts/nats.sh start'"
fi

mqtt="${MQTT_URL#*://}"
if ! (exec 3<>"/dev/tcp/${mqtt%:*}/${mqtt##*:}") 2>/dev/null; then
  die "no MQTT broker answers on $mqtt: start it with 'scripts/mosquitto.sh start'"
fi

command -v go >/dev/null || die "go is not installed"
command -v npm >/dev/null || die "npm (Node.js) is not installed"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3

# Go programs and the conformance tool (a tool dependency of interop/go,
# pinned in go.mod; the proxy serves github.com/cloudevents/conformance
# v0.2.0 only, so `go install ...@latest` cannot work).
mkdir -p "$GOBIN"
(
  cd interop/go
  go mod download
  go build -o "$GOBIN/" ./cmd/...
  go build -o "$GOBIN/cloudevents" github.com/cloudevents/conformance/cmd/cloudevents
)

# Python venv with pinned requirements; reinstalled when they change.
REQ=interop/python/requirements.txt
if [[ ! -x "$VENV/bin/python" ]]; then
  "$PY" -m venv "$VENV"
fi
if ! cmp -s "$REQ" "$VENV/.interop-requirements" 2>/dev/null; then
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ"
  cp "$REQ" "$VENV/.interop-requirements"
fi

# The JavaScript SDK and mqtt.js, exactly as interop/js/package-lock.json
# pins them; installed again when the lock changes.
mkdir -p "$JS"
if ! cmp -s interop/js/package-lock.json "$JS/.installed-lock" 2>/dev/null; then
  cp interop/js/package.json interop/js/package-lock.json "$JS/"
  (cd "$JS" && npm ci --silent --no-audit --no-fund >/dev/null)
  cp interop/js/package-lock.json "$JS/.installed-lock"
fi

set +e
"$VENV/bin/python" -m pytest -q -p no:cacheprovider interop/tests "$@"
rc=$?
set -e
if [[ $rc -eq 5 ]]; then
  echo "interop/run.sh: pytest collected no tests" >&2
  exit 1
fi
exit $rc
