#!/usr/bin/env bash
# Fetches the CESQL TCK, the YAML test cases that sdk-go publishes in its
# sql/v2 module, into the project's Go module cache (.cache/go, gitignored)
# and prints the directory that holds them. The cases are the spec's, so they
# are fetched rather than committed. crates/cesql/tests/tck.rs runs this; any failure
# exits non-zero with the reason on stderr, and the test fails with it.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
module="github.com/cloudevents/sdk-go/sql/v2"
version="v2.16.2"

command -v go >/dev/null || {
  echo "crates/cesql/tck/fetch.sh: 'go' is not on PATH; it downloads the TCK (scripts/setup.sh checks for it)" >&2
  exit 1
}

export GOMODCACHE="$repo/.cache/go/pkg/mod"
export GOPROXY="${GOPROXY:-https://proxy.golang.org}"
# Read-write, so the cache can be deleted like the rest of .cache.
export GOFLAGS="-modcacherw"
export GO111MODULE=on GOWORK=off
mkdir -p "$GOMODCACHE"
# Outside any go.mod, so no project module is consulted or changed.
cd "$GOMODCACHE"
go mod download "$module@$version" >&2

dir="$GOMODCACHE/$module@$version/test/tck"
[[ -d "$dir" ]] || { echo "crates/cesql/tck/fetch.sh: $dir is missing after the download" >&2; exit 1; }
echo "$dir"
