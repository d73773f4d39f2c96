"""Checks that README.md's configuration table lists every environment variable
the services read (found in their sources, see envvars.py), once, and names no
variable that nothing reads; that each service's `--help` names every
variable that service reads; and that every `NAME=value scripts/<x>.sh` the
README shows sets a variable that script reads. Test-only variables are
left out.

Exit status 0 when the table and the sources agree; otherwise each difference
is printed."""

import collections
import pathlib
import os
import re
import subprocess
import sys

from envvars import REPO, variables_read_by

# Read only by the test helpers, documented with the tests.
TEST_ONLY = {"TEST_LOG", "TEST_DATABASE", "TEST_PG_URL"}
# Rows that stand for a family rather than one name.
FAMILIES = {"KAFKA_<PROPERTY>", "OTEL_*"}
# Read by librdkafka's client through KafkaConfig::from_vars (KAFKA_ prefix).
KAFKA_OWN = {"KAFKA_BROKERS", "KAFKA_TOPIC"}


def table_rows(readme: str) -> list[list[str]]:
    """The variables named in the first cell of each row of the table."""
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        first_cell = line.split("|")[1]
        rows.append(re.findall(r"`([A-Z][A-Z0-9_<>*]*)`", first_cell))
    return rows


def help_text(service: str) -> str:
    """What `<service> --help` prints (the binary `make test` built)."""
    target = os.environ.get("CARGO_TARGET_DIR", str(REPO / "target"))
    binary = pathlib.Path(target) / "debug" / service
    if not binary.exists():
        sys.exit(f"check-docs: {binary} is missing; run cargo build first")
    try:
        return subprocess.run(
            [str(binary), "--help"], check=True, capture_output=True, text=True, timeout=30
        ).stdout
    except subprocess.TimeoutExpired:
        sys.exit(f"check-docs: `{service} --help` did not exit within 30 s: it serves instead")


def covered_by_help(name: str, text: str) -> bool:
    """Whether `--help` names the variable, itself or by its family."""
    if re.search(rf"\b{name}\b", text):
        return True
    return (name.startswith("OTEL_") and "OTEL_*" in text) or (
        name.startswith("KAFKA_") and "KAFKA_<PROPERTY>" in text
    )


def script_settings(readme: str) -> list[tuple[str, str]]:
    """(variable, script) for each `NAME=value ... scripts/<x>.sh` in the
    README, line breaks included."""
    found = []
    text = " ".join(readme.split())
    for match in re.finditer(r"((?:[A-Z][A-Z0-9_]*=\S+ )+)scripts/([a-z-]+\.sh)", text):
        for name in re.findall(r"([A-Z][A-Z0-9_]*)=", match.group(1)):
            found.append((name, match.group(2)))
    return found


def main() -> int:
    readme = (REPO / "README.md").read_text()
    rows = table_rows(readme)
    documented = {name for row in rows for name in row}
    read_by = {s: variables_read_by(s) - TEST_ONLY for s in ("user-service", "audit-service")}
    read = read_by["user-service"] | read_by["audit-service"]
    problems = []
    counts = collections.Counter(name for row in rows for name in set(row))
    for name in sorted(n for n, c in counts.items() if c > 1):
        problems.append(f"README.md's configuration table lists {name} in {counts[name]} rows")
    for service, names in read_by.items():
        text = help_text(service)
        for name in sorted(n for n in names if not covered_by_help(n, text)):
            problems.append(f"`{service} --help` does not name {name}, which it reads")
    for name in sorted(read - documented):
        problems.append(f"README.md's configuration table lacks {name}")
    for name in sorted(documented - read - FAMILIES - KAFKA_OWN):
        problems.append(f"README.md's configuration table lists {name}, which no service reads")
    for name, script in script_settings(readme):
        source = (REPO / "scripts" / script).read_text()
        if not re.search(rf"\$\{{?{name}\b", source):
            problems.append(f"README.md sets {name} for scripts/{script}, which does not read it")
    for p in problems:
        print(f"check-docs: {p}", file=sys.stderr)
    print(f"check-docs: {'ok' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
