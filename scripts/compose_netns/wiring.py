"""Host names and ports in the services' environment: every `host:port`,
URL or Kafka listener/voter a variable names. On a compose network a host
name resolves only to a service of the project, so any other name (a
misspelling, a leftover) is a failure before anything starts; once the
services run, each named port must accept connections from the service
that names it."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from .project import Project

_REFERENCE = re.compile(
    r"^(?:[A-Za-z][A-Za-z0-9+.-]*://)?(?:[^@/]*@)?(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]*)"
    r"(?::(?P<port>\d+))?(?:[/?#].*)?$"
)
LOCAL_NAMES = {"localhost", "ip6-localhost", "ip6-loopback"}
_PASSWORD = re.compile(r"(://[^:/@]*:)[^@/]*@")


def masked(value: str) -> str:
    """A value fit for a message: a URL's password becomes ***."""
    return _PASSWORD.sub(r"\1***@", value)


@dataclass(frozen=True)
class Reference:
    service: str
    variable: str
    value: str
    host: str
    port: int | None


def references(project: Project, service: str) -> list[Reference]:
    """The host names a service's environment gives, with their ports."""
    found = []
    for variable, value in project.services[service].environment.items():
        for token in re.split(r"[,\s]+", value):
            has_scheme = "://" in token
            match = _REFERENCE.match(token)
            if not match or not (has_scheme or match.group("port")) or not match.group("host"):
                continue
            host = match.group("host").strip("[]")
            port = int(match.group("port")) if match.group("port") else None
            found.append(Reference(service, variable, value, host, port))
    return found


def is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def unknown_hosts(project: Project) -> list[str]:
    """Host names no service of the file answers to, for each active service."""
    problems = []
    for service in project.active:
        for ref in references(project, service):
            if is_address(ref.host) or ref.host in LOCAL_NAMES or ref.host in project.services:
                continue
            problems.append(
                f"{service}: {ref.variable}={masked(ref.value)} names host `{ref.host}`, which is no service of "
                f"{project.path.name} (services: {', '.join(sorted(project.services))})"
            )
    return problems
