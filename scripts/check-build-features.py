"""Checks that `make run` right after `make test` compiles nothing.

`make test` builds everything at once (`cargo build --workspace --all-targets
--examples`); `make run` builds the two services alone (`cargo build -p
user-service -p audit-service`). Cargo unifies a crate's features over
everything one build selects, test-only dependencies included, and a crate
built with other features is another build of it and of everything above it.
So any feature a test-only crate turns on (tempfile's `bitflags/std`,
`reqwest/stream`, a `testing` feature of our own) makes `make run` rebuild
most of the tree: about a minute and a half on two cores.

This compares the features cargo resolves for both builds, crate by crate,
and prints each difference with the crates that ask for it. Exit status 0
when every crate of the services' build has the same features in both."""

import collections
import subprocess
import sys

from envvars import REPO

RUN = ["-p", "user-service", "-p", "audit-service", "-e", "normal,build"]
TEST = ["--workspace", "-e", "normal,build,dev"]


def features(selection: list[str]) -> dict[str, set[str]]:
    """Each crate (name and version) of the build with its feature lists (a
    crate built for the host and for the target may have two)."""
    out = subprocess.run(
        ["cargo", "tree", "--prefix", "none", "-f", "{p}|{f}", *selection],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    found = collections.defaultdict(set)
    for line in out.splitlines():
        if "|" not in line:
            continue
        package, feats = line.split("|", 1)
        name_version = " ".join(package.split()[:2])
        found[name_version].add(feats.split(" (*)")[0].strip())
    return found


def main() -> int:
    run, test = features(RUN), features(TEST)
    problems = []
    for crate in sorted(run):
        extra = test.get(crate, set()) - run[crate]
        if extra:
            problems.append(
                f"{crate} is built with features {sorted(run[crate])} by `make run` "
                f"but {sorted(test[crate])} by `make test` (`cargo tree --workspace "
                f"-e features -i {crate.split()[0]}` shows who asks)"
            )
    for p in problems:
        print(f"check-build-features: {p}", file=sys.stderr)
    print(f"check-build-features: {'ok' if not problems else f'{len(problems)} difference(s)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
