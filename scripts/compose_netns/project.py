"""docker-compose.yaml read the way Docker Compose reads it: YAML anchors and
merge keys, `${VAR:-default}` interpolation, profiles, and the short and long
forms of environment, ports, volumes, depends_on and healthcheck, normalised
into plain data the rest of the package runs."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class ComposeError(Exception):
    """The compose file cannot be run as written; the message says where."""


@dataclass
class Healthcheck:
    # ["CMD", arg...] or ["CMD-SHELL", command]
    test: list[str]
    interval: float = 30.0
    timeout: float = 30.0
    retries: int = 3
    start_period: float = 0.0


@dataclass
class Port:
    published: int
    target: int


@dataclass
class Mount:
    # A named volume's name, or a host path (resolved) for a bind mount.
    source: str
    target: str
    bind: bool
    read_only: bool = False


@dataclass
class Dependency:
    service: str
    condition: str
    required: bool = True


@dataclass
class Service:
    name: str
    image: str | None
    build_target: str | None
    dockerfile: Path | None
    environment: dict[str, str]
    command: list[str] | None
    entrypoint: list[str] | None
    ports: list[Port]
    mounts: list[Mount]
    depends_on: list[Dependency]
    healthcheck: Healthcheck | None
    profiles: list[str]
    restart: str


@dataclass
class Project:
    path: Path
    directory: Path
    services: dict[str, Service]
    active: list[str]
    profiles: list[str]
    warnings: list[str] = field(default_factory=list)

    def start_order(self) -> list[str]:
        """Active services, each after the services it depends on."""
        order: list[str] = []
        visiting: set[str] = set()

        def visit(name: str) -> None:
            if name in order:
                return
            if name in visiting:
                raise ComposeError(f"{name}: depends_on forms a cycle")
            visiting.add(name)
            for dep in self.services[name].depends_on:
                if dep.service in self.active:
                    visit(dep.service)
            visiting.discard(name)
            order.append(name)

        for name in self.active:
            visit(name)
        return order


# Compose's interpolation: $$ is a dollar, ${NAME}, ${NAME:-default},
# ${NAME-default}, ${NAME:?error}, ${NAME?error}, and $NAME.
_INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


def interpolate(value: str, variables: dict[str, str], where: str, warnings: list[str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("braced") or match.group("named")
        op, arg = match.group("op"), match.group("arg") or ""
        current = variables.get(name)
        if op in (":-", ":?") and not current:
            current = None
        if current is not None:
            return current
        if op in (":-", "-"):
            return arg
        if op in (":?", "?"):
            raise ComposeError(f"{where}: required variable {name} is missing a value: {arg}")
        warnings.append(f'{where}: the "{name}" variable is not set; defaulting to a blank string')
        return ""

    return _INTERPOLATION.sub(replace, value)


def _interpolate_tree(node, variables: dict[str, str], where: str, warnings: list[str]):
    if isinstance(node, str):
        return interpolate(node, variables, where, warnings)
    if isinstance(node, list):
        return [_interpolate_tree(v, variables, where, warnings) for v in node]
    if isinstance(node, dict):
        return {k: _interpolate_tree(v, variables, f"{where}.{k}", warnings) for k, v in node.items()}
    return node


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)")
_DURATION_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration(value, where: str) -> float:
    """Compose durations: `1m30s`, `500ms`, `10s`."""
    text = str(value)
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ComposeError(f"{where}: {text!r} is not a duration such as 10s or 1m30s")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


def _scalar(value, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    raise ComposeError(f"{where}: {value!r} is not a string or a number")


def _environment(raw, variables: dict[str, str], where: str) -> dict[str, str]:
    env: dict[str, str] = {}
    if isinstance(raw, list):
        raw = {e.partition("=")[0]: (e.partition("=")[2] if "=" in e else None) for e in raw}
    for name, value in (raw or {}).items():
        if value is None:
            # `NAME` alone: the value comes from the shell running compose.
            if name in variables:
                env[name] = variables[name]
            continue
        env[name] = _scalar(value, f"{where}.{name}")
    return env


def _ports(raw, where: str) -> list[Port]:
    ports = []
    for entry in raw or []:
        if isinstance(entry, dict):
            ports.append(Port(int(entry["published"]), int(entry["target"])))
            continue
        if isinstance(entry, int):
            # PyYAML, like YAML 1.1, reads an unquoted 9092:9092 as a
            # base-60 number; Compose's own docs say to quote mappings.
            raise ComposeError(f"{where}: port {entry} must be a quoted string such as \"9092:9092\"")
        parts = str(entry).split("/")[0].split(":")
        if len(parts) == 1:
            raise ComposeError(f"{where}: {entry!r} publishes on a random port; give HOST:CONTAINER")
        ports.append(Port(int(parts[-2]), int(parts[-1])))
    return ports


def _mounts(raw, directory: Path, where: str) -> list[Mount]:
    mounts = []
    for entry in raw or []:
        if isinstance(entry, dict):
            source, target = entry.get("source", ""), entry["target"]
            read_only = bool(entry.get("read_only", False))
            bind = entry.get("type") == "bind"
        else:
            fields = str(entry).split(":")
            source, target = fields[0], fields[1]
            read_only = len(fields) > 2 and "ro" in fields[2].split(",")
            bind = source.startswith((".", "/", "~"))
        if bind:
            source = str((directory / source).resolve())
        mounts.append(Mount(source, target, bind, read_only))
    return mounts


def _depends_on(raw) -> list[Dependency]:
    if raw is None:
        return []
    if isinstance(raw, list):
        return [Dependency(name, "service_started") for name in raw]
    return [
        Dependency(name, (spec or {}).get("condition", "service_started"), bool((spec or {}).get("required", True)))
        for name, spec in raw.items()
    ]


def _argv(raw, where: str) -> list[str] | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        # The shell form: Compose splits it like a shell would.
        return shlex.split(raw)
    return [_scalar(v, where) for v in raw]


def _healthcheck(raw, where: str) -> Healthcheck | None:
    if not raw or raw.get("disable"):
        return None
    test = raw.get("test")
    if isinstance(test, str):
        test = ["CMD-SHELL", test]
    if not test or test[0] not in ("CMD", "CMD-SHELL", "NONE"):
        raise ComposeError(f"{where}.test: must start with CMD or CMD-SHELL, has {test!r}")
    if test[0] == "NONE":
        return None
    if test[0] == "CMD-SHELL" and len(test) != 2:
        raise ComposeError(f"{where}.test: CMD-SHELL takes one command string")
    check = Healthcheck([str(t) for t in test])
    for key, attr in [("interval", "interval"), ("timeout", "timeout"), ("start_period", "start_period")]:
        if key in raw:
            setattr(check, attr, duration(raw[key], f"{where}.{key}"))
    if "retries" in raw:
        check.retries = int(raw["retries"])
    return check


def load(path: Path, profiles: list[str], variables: dict[str, str], directory: Path | None = None) -> Project:
    """The project `docker compose --profile ... up` would run, with
    `variables` standing for the shell's environment (interpolation)."""
    directory = directory or path.parent
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ComposeError(f"{path}: not YAML: {error}") from error
    warnings: list[str] = []
    services: dict[str, Service] = {}
    raw_services = document.get("services") or {}
    for name, raw in raw_services.items():
        where = f"services.{name}"
        raw = _interpolate_tree(raw, variables, where, warnings)
        build = raw.get("build")
        target = dockerfile = None
        if isinstance(build, dict):
            target = build.get("target")
            context = (directory / build.get("context", ".")).resolve()
            dockerfile = context / build.get("dockerfile", "Dockerfile")
        elif isinstance(build, str):
            dockerfile = (directory / build).resolve() / "Dockerfile"
        services[name] = Service(
            name=name,
            image=raw.get("image"),
            build_target=target,
            dockerfile=dockerfile,
            environment=_environment(raw.get("environment"), variables, f"{where}.environment"),
            command=_argv(raw.get("command"), f"{where}.command"),
            entrypoint=_argv(raw.get("entrypoint"), f"{where}.entrypoint"),
            ports=_ports(raw.get("ports"), f"{where}.ports"),
            mounts=_mounts(raw.get("volumes"), directory, f"{where}.volumes"),
            depends_on=_depends_on(raw.get("depends_on")),
            healthcheck=_healthcheck(raw.get("healthcheck"), f"{where}.healthcheck"),
            profiles=list(raw.get("profiles") or []),
            restart=str(raw.get("restart", "no")),
        )
    active = [n for n, s in services.items() if not s.profiles or set(s.profiles) & set(profiles)]
    project = Project(path, directory, services, active, profiles, warnings)
    for name in active:
        for dep in services[name].depends_on:
            if dep.service not in services:
                raise ComposeError(f"{name}: depends on undefined service {dep.service}")
            if dep.service not in active and dep.required:
                raise ComposeError(
                    f"{name}: depends on {dep.service}, which is disabled by its profiles "
                    f"{services[dep.service].profiles} (enabled: {profiles or 'none'})"
                )
            if dep.condition not in ("service_started", "service_healthy", "service_completed_successfully"):
                raise ComposeError(f"{name}: depends_on.{dep.service}: unknown condition {dep.condition}")
            if dep.condition == "service_healthy" and services[dep.service].healthcheck is None:
                raise ComposeError(f"{name}: waits for {dep.service} to be healthy, but it has no healthcheck")
    project.start_order()
    return project
