#!/usr/bin/env bash
# `make up` / `make down`: runs Docker Compose with the given arguments, as the
# `docker compose` plugin or the older `docker-compose`, whichever is
# installed, and says what to do when neither is.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if docker compose version >/dev/null 2>&1; then
  exec docker compose "$@"
elif command -v docker-compose >/dev/null 2>&1; then
  exec docker-compose "$@"
fi
cat >&2 <<'TXT'
compose.sh: Docker Compose is not installed: neither `docker compose` nor
`docker-compose` runs here. Install Docker with its Compose plugin, or run
without Docker: `make kafka-up` starts a local Kafka broker, then start both
services with EVENT_TRANSPORT=kafka (README.md, "Running on Kafka").
TXT
exit 1
