"""`docker compose up --wait` for a compose project, in namespaces: checks
what can be checked before anything runs (images, variables, host names,
healthcheck commands), then creates every container, starts each service
once what it `depends_on` is started, healthy or completed as the condition
says, runs the healthchecks, and returns once every service runs and is
healthy, or raises `Failure` naming the service and the reason. `down()`
removes everything, also after a failure or an interrupt."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from . import health, wiring
from .image_kafka import KafkaImage
from .image_mosquitto import MosquittoImage
from .image_nats import NatsImage
from .image_ours import BuiltImage
from .image_postgres import PostgresImage
from .images import Image, Layer, Main, StartError
from .project import ComposeError, Project, Service
from .sandbox import BindMount, Container, Network, SandboxError, hosts_file

REPO = Path(__file__).resolve().parents[2]
LOG_TAIL = 15


class Failure(Exception):
    """The stack did not come up; the message names the service and why."""


def image_for(service: Service) -> Image:
    if service.build_target:
        return BuiltImage(service)
    reference = service.image or ""
    if reference.startswith("apache/kafka:"):
        return KafkaImage(reference)
    if reference.startswith("postgres:"):
        return PostgresImage(reference)
    if reference.startswith("nats:") and reference.endswith("-alpine"):
        return NatsImage(reference)
    if reference.startswith("eclipse-mosquitto:2"):
        return MosquittoImage(reference)
    raise ComposeError(f"{service.name}: no emulation for image {reference!r} (stack.py image_for)")


@dataclass
class Unit:
    """One service of the running stack."""

    service: Service
    image: Image
    container: Container | None = None
    main: Main | None = None
    state: str = "created"  # created, starting, running, exited, failed
    error: str = ""
    health: health.Health | None = None
    exit_code: int | None = None
    logs: list[Path] = field(default_factory=list)


class Stack:
    def __init__(self, project: Project, repo: Path = REPO, say=print) -> None:
        self.project = project
        self.repo = repo
        self.say = say
        self.units: dict[str, Unit] = {}
        self.network: Network | None = None
        self.run_dir: Path | None = None
        self.timeline: list[tuple[float, str, str]] = []
        self.kafka_libs = repo / ".cache" / "kafka" / "libs"
        self.nats_server = repo / ".cache" / "go" / "bin" / "nats-server"
        self._proxy: subprocess.Popen | None = None
        self._stopping = threading.Event()
        self._t0 = time.monotonic()
        self._lock = threading.Lock()
        self._log_files: dict[str, object] = {}

    # ------------------------------------------------------------ checks

    def check(self) -> list[str]:
        """What is wrong before anything runs, one line per problem."""
        problems = []
        for name in self.project.active:
            service = self.project.services[name]
            try:
                image = image_for(service)
                image.commands()
            except ComposeError as error:
                problems.append(str(error))
                continue
            self.units[name] = Unit(service, image)
            problems += image.problems(service)
            if service.healthcheck:
                try:
                    missing = health.missing_commands(service.healthcheck, image)
                except ValueError as error:
                    problems.append(f"{name}: healthcheck {error}")
                    continue
                problems += [
                    f"{name}: healthcheck runs `{command}`, which the {image.reference} image does not have"
                    for command in missing
                ]
                playable = health.stand_ins(image)
                problems += [
                    f"{name}: healthcheck runs `{command}`: the image has it, but nothing here can play it (images.py)"
                    for command in health.commands_of(service.healthcheck)
                    if command not in missing and "/" not in command and command not in playable
                ]
        problems += wiring.unknown_hosts(self.project)
        published: dict[int, str] = {}
        for name in self.project.active:
            for port in self.project.services[name].ports:
                if port.published in published:
                    problems.append(f"{name}: port {port.published} is already published by {published[port.published]}")
                published[port.published] = name
        return problems

    # ------------------------------------------------------------ runtime, for the images

    def log(self, service: str):
        """The service's log (what `docker compose logs` shows), to write to."""
        if service not in self._log_files:
            path = self.run_dir / "logs" / f"{service}.log"
            self.units[service].logs.insert(0, path)
            self._log_files[service] = open(path, "ab")
        return self._log_files[service]

    def also_log(self, service: str, path: Path) -> None:
        self.units[service].logs.append(path)

    def healthcheck_passes(self, service: str) -> bool:
        passed, _ = self._probe(self.units[service])
        return passed

    # ------------------------------------------------------------ up

    def event(self, service: str, what: str) -> None:
        with self._lock:
            self.timeline.append((time.monotonic() - self._t0, service, what))
            self.say(f"compose-netns: {time.monotonic() - self._t0:6.1f}s {service}: {what}")

    def up(self, timeout: float = 300) -> None:
        for warning in self.project.warnings:
            self.say(f"compose-netns: warning: {warning}")
        problems = self.check()
        if problems:
            raise Failure("\n".join(problems))
        self._fetch()
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"compose-netns-{os.getpid()}-"))
        (self.run_dir / "logs").mkdir()
        atexit.register(self.down)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        try:
            self._create()
            self._start_all(timeout)
            self._check_ports()
        except (SandboxError, ComposeError) as error:
            raise Failure(str(error)) from error

    def _fetch(self) -> None:
        images = {type(u.image) for u in self.units.values()}
        if KafkaImage in images:
            subprocess.run([str(self.repo / "scripts" / "kafka.sh"), "fetch"], check=True)
        if NatsImage in images:
            subprocess.run([str(self.repo / "scripts" / "nats.sh"), "install"], check=True)

    def _create(self) -> None:
        self.network = Network()
        self.network.create()
        for name in self.project.active:
            self.units[name].container = Container(self.network, name, self.run_dir)
        names = {name: unit.container.ip for name, unit in self.units.items()}
        for unit in self.units.values():
            c = unit.container
            self.network.write_etc(c.ns, hosts_file((c.hostname, c.ip), names))
            layer = Layer(c.image)
            unit.image.build(layer, unit.service, self)
            for command, program in health.stand_ins(unit.image).items():
                layer.symlink(f"{health.BIN}/{command}", program)
            layer.finish()
            c.start(self._mounts(unit, layer))
            self.event(unit.service.name, f"created ({c.ip}, namespace {c.ns})")
        forwards = [f"{p.published}={u.container.ip}:{p.target}" for u in self.units.values() for p in u.service.ports]
        if forwards:
            self._proxy = self.network.on_host(
                [sys.executable, "-m", "compose_netns.proxy", *forwards], stdout=subprocess.PIPE,
                env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
            if self._proxy.stdout.readline().strip() != b"ready":
                raise Failure(f"published ports: the proxy did not start ({forwards})")

    def _mounts(self, unit: Unit, layer: Layer) -> list[BindMount]:
        mounts = list(unit.image.mounts(unit.service, self))
        for mount in unit.service.mounts:
            if mount.bind:
                mounts.append(BindMount(Path(mount.source), mount.target, mount.read_only))
                continue
            volume = self.run_dir / "volumes" / mount.source
            if not volume.exists():
                # A new named volume takes the owner and mode of the image's folder.
                volume.mkdir(parents=True)
                image_dir = layer.root / mount.target.lstrip("/")
                if image_dir.is_dir():
                    stat = image_dir.stat()
                    os.chown(volume, stat.st_uid, stat.st_gid)
                    volume.chmod(stat.st_mode & 0o7777)
            mounts.append(BindMount(volume, mount.target, mount.read_only))
        return mounts

    def _ready_for(self, unit: Unit) -> tuple[bool, str]:
        """Whether `unit` may start, and what it waited for."""
        waited = []
        for dep in unit.service.depends_on:
            if dep.service not in self.units:
                continue
            other = self.units[dep.service]
            if other.state == "failed" or (other.health and other.health.status == "unhealthy"):
                raise Failure(f"{unit.service.name}: dependency failed to start: {dep.service} is "
                              f"{'unhealthy' if other.health and other.health.status == 'unhealthy' else 'failed'}\n"
                              + self._describe(other))
            if dep.condition == "service_started" and other.state not in ("running", "exited"):
                return False, ""
            if dep.condition == "service_healthy" and not (other.health and other.health.status == "healthy"):
                return False, ""
            if dep.condition == "service_completed_successfully":
                if other.state == "exited" and other.exit_code != 0:
                    raise Failure(f"{unit.service.name}: dependency {dep.service} exited with status {other.exit_code}")
                if other.state != "exited":
                    return False, ""
            waited.append(f"{dep.service} {dep.condition.removeprefix('service_')}")
        return True, ", ".join(waited)

    def _start(self, unit: Unit) -> None:
        try:
            unit.main = unit.image.start(unit.container, unit.service, self)
            unit.state = "running"
            self.event(unit.service.name, "running")
            if unit.service.healthcheck:
                unit.health = health.Health(unit.service.healthcheck, time.monotonic())
                threading.Thread(target=self._watch_health, args=(unit,), daemon=True).start()
        except StartError as error:
            unit.error = str(error)
            unit.state = "failed"
        except Exception:  # a fault of this package: reported as the service's, with where
            unit.error = f"{unit.service.name}: the emulation failed:\n{traceback.format_exc()}"
            unit.state = "failed"

    def _start_all(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = self.project.start_order()
        while True:
            for unit in self.units.values():
                self._observe(unit)
            for name in list(pending):
                unit = self.units[name]
                ready, waited = self._ready_for(unit)
                if ready:
                    pending.remove(name)
                    unit.state = "starting"
                    self.event(name, f"starting{' after ' + waited if waited else ''}")
                    threading.Thread(target=self._start, args=(unit,), daemon=True).start()
            if not pending and all(self._settled(u) for u in self.units.values()):
                return
            if time.monotonic() > deadline:
                waiting = [f"{u.service.name} ({self._status(u)})" for u in self.units.values() if not self._settled(u)]
                raise Failure(f"not up after {timeout:.0f}s: {', '.join(waiting)}\n"
                              + "\n".join(self._describe(u) for u in self.units.values() if not self._settled(u)))
            time.sleep(0.1)

    def _observe(self, unit: Unit) -> None:
        name = unit.service.name
        if unit.state == "failed":
            raise Failure(unit.error + "\n" + self._describe(unit))
        if unit.state == "running" and unit.main and (code := unit.main.poll()) is not None:
            unit.state, unit.exit_code = "exited", code
            self.event(name, f"exited with status {code}")
            dependents_wait = any(
                d.service == name and d.condition == "service_completed_successfully"
                for u in self.units.values() for d in u.service.depends_on)
            if code != 0 or not dependents_wait:
                restart = f" (compose would restart it: restart: {unit.service.restart})" if unit.service.restart != "no" else ""
                raise Failure(f"{name}: exited with status {code}{restart}\n" + self._describe(unit))
        if unit.health and unit.health.status == "unhealthy":
            raise Failure(f"{name}: unhealthy: its healthcheck failed {unit.health.failures} times in a row\n"
                          + self._describe(unit))

    def _settled(self, unit: Unit) -> bool:
        if unit.state == "exited":
            return unit.exit_code == 0
        return unit.state == "running" and (unit.health is None or unit.health.status == "healthy")

    def _status(self, unit: Unit) -> str:
        return unit.state if not unit.health else f"{unit.state}, health {unit.health.status}"

    # ------------------------------------------------------------ healthchecks

    def _probe(self, unit: Unit) -> tuple[bool, str]:
        check = unit.service.healthcheck
        env = {**unit.image.environment(unit.container, unit.service), "PATH": health.BIN}
        status, output = unit.container.run(health.argv(check), env, timeout=check.timeout, user=unit.image.user)
        if status is None:
            return False, f"timed out after {check.timeout:g}s; {output}"
        return status == 0, f"exit status {status}; {output}" if status else output

    def _watch_health(self, unit: Unit) -> None:
        check = unit.service.healthcheck
        while not self._stopping.wait(check.interval):
            if unit.state != "running":
                return
            passed, output = self._probe(unit)
            before = unit.health.status
            unit.health.record(passed, output, time.monotonic())
            if unit.health.status != before:
                self.event(unit.service.name, unit.health.status)

    # ------------------------------------------------------------ after up

    def _check_ports(self) -> None:
        """Each host:port a running service names accepts its connections."""
        problems, notes = [], []
        for name in self.project.active:
            for ref in wiring.references(self.project, name):
                if ref.host not in self.project.services or ref.port is None:
                    continue
                if ref.host not in self.units:
                    notes.append(f"{name}: {ref.variable} names {ref.host}, which is not running under the enabled profiles")
                    continue
                address = self.units[ref.host].container.ip
                status, _ = self.units[name].container.run(
                    ["/bin/bash", "-c", f"exec 3<>/dev/tcp/{address}/{ref.port}"], {"PATH": "/usr/bin:/bin"}, timeout=5)
                if status != 0:
                    problems.append(f"{name}: {ref.variable}={wiring.masked(ref.value)}: nothing accepts connections on {ref.host}:{ref.port}")
        for note in notes:
            self.say(f"compose-netns: note: {note}")
        if problems:
            raise Failure("\n".join(problems))

    def _describe(self, unit: Unit) -> str:
        name = unit.service.name
        parts = []
        if unit.health and unit.health.last_output:
            parts.append(f"last healthcheck of {name}: {unit.health.last_output[-800:]}")
        tail = self.logs(name).splitlines()[-LOG_TAIL:]
        if tail:
            parts.append(f"last lines of {name}'s log:\n" + "\n".join(f"  {line}" for line in tail))
        return "\n".join(parts)

    # ------------------------------------------------------------ for tests and users

    def logs(self, service: str) -> str:
        text = []
        for path in self.units[service].logs if service in self.units else []:
            try:
                text.append(path.read_text(errors="replace"))
            except OSError:
                pass
        return "".join(text)

    def on_host(self, argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Runs `argv` on the machine's side, where the published ports are."""
        return subprocess.run(["ip", "netns", "exec", self.network.host_ns, *argv], capture_output=True,
                              text=True, timeout=timeout)

    def wait_for(self, what: str, predicate, timeout: float):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for unit in self.units.values():
                self._observe(unit)
            if result := predicate():
                return result
            time.sleep(0.2)
        raise Failure(f"timed out after {timeout:.0f}s waiting for {what}")

    def down(self) -> None:
        self._stopping.set()
        for unit in self.units.values():
            if unit.container:
                unit.container.stop()
        if self._proxy:
            self._proxy.kill()
            self._proxy.wait()
            self._proxy = None
        if self.network:
            self.network.destroy()
            self.network = None
        for file in self._log_files.values():
            file.close()
        self._log_files.clear()
        if self.run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self.run_dir = None

    def __enter__(self) -> "Stack":
        return self

    def __exit__(self, *exc) -> None:
        self.down()
