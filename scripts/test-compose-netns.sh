#!/usr/bin/env bash
# `docker compose up` without a Docker engine: runs docker-compose.yaml's
# services in network namespaces as Compose would wire them
# (scripts/compose_netns), for the default, nats, mqtt and replicas profiles, and
# checks that broken copies of the file fail naming the service and setting.
# Needs root (namespaces and mounts, as make test runs), the debug build of
# both services (cargo build), and scripts/setup.sh's tools; anything
# missing is a failure. Extra arguments go to pytest (-k replicas).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="$repo/.cache/venv/bin/python"

die() { echo "test-compose-netns: $*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "needs root: it makes network namespaces and mounts (make test runs as root)"
for tool in ip nsenter unshare setpriv curl wget kcat java; do
  command -v "$tool" >/dev/null || die "missing $tool: run scripts/setup.sh"
done
[[ -x "$py" ]] || die "missing $py: run scripts/setup.sh"
for binary in user-service audit-service; do
  [[ -x "$repo/target/debug/$binary" ]] || die "missing target/debug/$binary: cargo build -p $binary"
done

cd "$repo/scripts"
exec "$py" -m pytest -q -p no:cacheprovider compose_netns/tests "$@"
