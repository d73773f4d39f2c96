"""The environment variables a service's binary reads, found in its Rust
sources and the workspace crates' under crates/ it builds on: the names passed
to the configuration helpers (env_or, env_parse, positive, count_in, at_least_one,
retention, std::env::var, the token readers' from_env, and the lookups of
brokers::nats's settings) and every
OTEL_* name the telemetry code mentions. Used by check-compose.py and
check-docs.py so both hold the same list."""

import pathlib
import re

REPO = pathlib.Path(__file__).resolve().parent.parent
# Read by libraries rather than by a call in our sources.
READ_BY_LIBRARIES = {"RUST_LOG"}
ENV_CALL = re.compile(
    r'(?:env_or|env_parse|positive|count_in|at_least_one|retention|env::var|env::var_os|from_env|\bget)\(\s*"([A-Z][A-Z0-9_]*)"'
)
# A setting read as a pair, such as a rate and its burst:
# RateSettings::from_env("INGEST_RATE_LIMIT", "INGEST_RATE_BURST").
SECOND_OF_PAIR = re.compile(r'from_env\(\s*"[A-Z][A-Z0-9_]*",\s*"([A-Z][A-Z0-9_]*)"')
# The workspace's crates both services build on; test-kit and cesql read no
# setting of a service.
LIBRARIES = [
    REPO / "crates" / name / "src"
    for name in ("settings", "cloudevents-wire", "brokers", "service-kit")
]
OTEL_NAME = re.compile(r'"(OTEL_[A-Z0-9_]+)"')


def variables_read_by(crate: str) -> set[str]:
    names = set(READ_BY_LIBRARIES)
    for src in [REPO / crate / "src", *LIBRARIES]:
        for path in src.rglob("*.rs"):
            text = path.read_text()
            names.update(ENV_CALL.findall(text))
            names.update(SECOND_OF_PAIR.findall(text))
            names.update(OTEL_NAME.findall(text))
    return names
