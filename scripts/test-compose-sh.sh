#!/usr/bin/env bash
# Checks scripts/compose.sh (what `make up` runs) without Docker: with a
# stand-in `docker-compose` on PATH it runs that one with the arguments, and
# with neither `docker compose` nor `docker-compose` it fails saying so.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/v1" "$work/none"
# The tools compose.sh itself needs, and nothing named docker.
for tool in bash cat dirname; do ln -s "$(command -v "$tool")" "$work/none/$tool"; done
cp -P "$work/none/"* "$work/v1/"
printf '#!/usr/bin/env bash\necho "docker-compose $*"\n' >"$work/v1/docker-compose"
chmod +x "$work/v1/docker-compose"

out="$(PATH="$work/v1" "$repo/scripts/compose.sh" up --build)"
[[ "$out" == "docker-compose up --build" ]] || { echo "test-compose-sh: ran '$out'" >&2; exit 1; }

if err="$(PATH="$work/none" "$repo/scripts/compose.sh" up 2>&1)"; then
  echo "test-compose-sh: succeeded without Docker Compose" >&2
  exit 1
fi
[[ "$err" == *"Docker Compose is not installed"* ]] || { echo "test-compose-sh: said '$err'" >&2; exit 1; }
echo "test-compose-sh: ok"
