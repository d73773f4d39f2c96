"""Checks that README.md's configuration table lists every environment variable
the services read (found in their sources, see envvars.py), and names no
variable that nothing reads. Test-only variables are left out.

Exit status 0 when the table and the sources agree; otherwise each difference
is printed."""

import re
import sys

from envvars import REPO, variables_read_by

# Read only by the test helpers, documented with the tests.
TEST_ONLY = {"TEST_LOG", "TEST_DATABASE", "TEST_PG_URL"}
# Rows that stand for a family rather than one name.
FAMILIES = {"KAFKA_<PROPERTY>", "OTEL_*"}
# Read by librdkafka's client through KafkaConfig::from_vars (KAFKA_ prefix).
KAFKA_OWN = {"KAFKA_BROKERS", "KAFKA_TOPIC"}


def table_variables(readme: str) -> set[str]:
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    names = set()
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        first_cell = line.split("|")[1]
        names.update(re.findall(r"`([A-Z][A-Z0-9_<>*]*)`", first_cell))
    return names


def main() -> int:
    readme = (REPO / "README.md").read_text()
    documented = table_variables(readme)
    read = (variables_read_by("user-service") | variables_read_by("audit-service")) - TEST_ONLY
    problems = []
    for name in sorted(read - documented):
        problems.append(f"README.md's configuration table lacks {name}")
    for name in sorted(documented - read - FAMILIES - KAFKA_OWN):
        problems.append(f"README.md's configuration table lists {name}, which no service reads")
    for p in problems:
        print(f"check-docs: {p}", file=sys.stderr)
    print(f"check-docs: {'ok' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
