"""What a compose network and its containers are made of here, without a
container engine: a network namespace per service, joined by veth pairs to a
bridge in one more namespace that stands for the machine compose runs on
(`<run>-host`, where the published ports are and where a user's curl runs),
and for each service a mount, UTS and PID namespace whose root is the host's
filesystem under a private overlay, plus the files of its image and its
volumes. Killing a container's first process ends everything in it.

Names carry the run's pid (`cnet<pid>-kafka`), so two runs never meet; a run
that was killed leaves namespaces whose pid is gone, and the next run removes
them. Nothing is added to the machine's own network namespace."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

PREFIX = "cnet"
NETNS_ETC = Path("/etc/netns")
# The bridge's subnet lives only inside the run's host namespace.
SUBNET = "10.89.0"
GATEWAY = f"{SUBNET}.1"
NO_DNS = "# No DNS server: the compose network's names are in /etc/hosts.\n"


class SandboxError(Exception):
    pass


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise SandboxError(f"{' '.join(argv)}: {done.stderr.strip() or done.stdout.strip()}")
    return done


def _alive_run(pid: int) -> bool:
    try:
        return b"compose_netns" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def reap_stale() -> list[str]:
    """Removes what runs that no longer exist left behind."""
    removed = []
    for line in sh("ip", "netns", "list").stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        match = re.match(rf"^{PREFIX}(\d+)-", name)
        if not match or _alive_run(int(match.group(1))):
            continue
        for pid in sh("ip", "netns", "pids", name, check=False).stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        sh("ip", "netns", "del", name, check=False)
        shutil.rmtree(NETNS_ETC / name, ignore_errors=True)
        removed.append(name)
    for path in Path("/tmp").glob("compose-netns-*"):
        match = re.match(r"compose-netns-(\d+)-", path.name)
        if match and not _alive_run(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)
    return removed


def hosts_file(own: tuple[str, str] | None, names: dict[str, str]) -> str:
    """An /etc/hosts as Docker writes one, plus the compose network's names
    (which Docker's embedded DNS would answer)."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    if own:
        lines.append(f"{own[1]}\t{own[0]}")
    lines += [f"{ip}\t{name}" for name, ip in sorted(names.items())]
    return "\n".join(lines) + "\n"


class Network:
    def __init__(self) -> None:
        self.id = f"{PREFIX}{os.getpid()}"
        self.host_ns = f"{self.id}-host"
        self.namespaces: list[str] = []
        self._next = 2

    def create(self) -> None:
        reap_stale()
        self._add_namespace(self.host_ns)
        sh("ip", "-n", self.host_ns, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.host_ns, "addr", "add", f"{GATEWAY}/24", "dev", "br0")
        sh("ip", "-n", self.host_ns, "link", "set", "br0", "up")
        self.write_etc(self.host_ns, hosts_file(None, {}))

    def _add_namespace(self, name: str) -> None:
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")

    def attach(self, service: str) -> tuple[str, str]:
        """A namespace for `service`, on the bridge; its name and address."""
        ns, n = f"{self.id}-{service}", self._next
        self._next += 1
        address = f"{SUBNET}.{n}"
        self._add_namespace(ns)
        sh("ip", "-n", self.host_ns, "link", "add", f"v{n}", "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "-n", self.host_ns, "link", "set", f"v{n}", "master", "br0", "up")
        sh("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "route", "add", "default", "via", GATEWAY)
        return ns, address

    def write_etc(self, ns: str, hosts: str) -> None:
        # `ip netns exec` mounts these over /etc/hosts and /etc/resolv.conf.
        (NETNS_ETC / ns).mkdir(parents=True, exist_ok=True)
        (NETNS_ETC / ns / "hosts").write_text(hosts)
        (NETNS_ETC / ns / "resolv.conf").write_text(NO_DNS)

    def on_host(self, argv: list[str], **kwargs) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", self.host_ns, *argv], start_new_session=True, **kwargs)

    def destroy(self) -> None:
        for ns in reversed(self.namespaces):
            sh("ip", "netns", "del", ns, check=False)
            shutil.rmtree(NETNS_ETC / ns, ignore_errors=True)
        self.namespaces.clear()


@dataclass
class BindMount:
    source: Path
    target: str
    read_only: bool = False


class Container:
    """One service's namespaces, kept by a first process (`sleep`) whose root
    is the container's; every process of the service enters them."""

    def __init__(self, network: Network, service: str, run_dir: Path) -> None:
        self.service = service
        self.ns, self.ip = network.attach(service)
        # A container's hostname is its id, which only the container resolves.
        self.hostname = secrets.token_hex(6)
        self.dir = run_dir / "containers" / service
        self.image = self.dir / "image"
        self.image.mkdir(parents=True)
        self.pid = 0
        self._holder: subprocess.Popen | None = None

    def path(self, inside: str) -> Path:
        """A path of the container's filesystem, as the host reaches it."""
        return Path(f"/proc/{self.pid}/root") / inside.lstrip("/")

    def start(self, mounts: list[BindMount]) -> None:
        root, layer, ready = self.dir / "root", self.dir / "layer", self.dir / "ready"
        root.mkdir()
        layer.mkdir()
        lines = [
            "set -eu",
            # A fresh layer over the host's root: what the service writes stays here.
            f"mount -t tmpfs -o mode=0755 tmpfs '{layer}'",
            f"mkdir '{layer}/upper' '{layer}/work'",
            f"mount -t overlay overlay -o 'lowerdir=/,upperdir={layer}/upper,workdir={layer}/work' '{root}'",
            f"mount -t proc proc '{root}/proc'",
            f"mount --rbind /sys '{root}/sys'",
            f"mount --rbind /dev '{root}/dev'",
            # An empty /tmp and /run, as in a container: nothing of the host's.
            f"mount -t tmpfs -o mode=1777 tmpfs '{root}/tmp'",
            f"mount -t tmpfs -o mode=0755 tmpfs '{root}/run'",
            f"cp -a '{self.image}/.' '{root}/'",
            f"mount --bind /etc/hosts '{root}/etc/hosts'",
            f"mount --bind /etc/resolv.conf '{root}/etc/resolv.conf'",
        ]
        for mount in mounts:
            target = f"{root}/{mount.target.lstrip('/')}"
            make = f"mkdir -p '{target}'" if mount.source.is_dir() else f"mkdir -p \"$(dirname '{target}')\" && touch '{target}'"
            lines += [make, f"mount --bind '{mount.source}' '{target}'"]
            if mount.read_only:
                lines.append(f"mount -o remount,bind,ro '{target}'")
        lines += [
            f"hostname '{self.hostname}'",
            f"echo '{self.hostname}' > '{root}/etc/hostname'",
            f"touch '{ready}'",
            f"exec chroot '{root}' /bin/sleep infinity",
        ]
        (self.dir / "setup.sh").write_text("\n".join(lines) + "\n")
        self._holder = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, "unshare", "--mount", "--uts", "--pid", "--fork",
             "--propagation", "private", "--", "sh", str(self.dir / "setup.sh")],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 20

        def failed() -> SandboxError:
            try:
                os.killpg(self._holder.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            output = self._holder.communicate()[0].decode(errors="replace")
            return SandboxError(f"{self.service}: the container did not start: {output.strip()}")

        while not ready.exists():
            if self._holder.poll() is not None or time.monotonic() > deadline:
                raise failed()
            time.sleep(0.02)
        # unshare --fork: its only child is the namespace's first process.
        children = Path(f"/proc/{self._holder.pid}/task/{self._holder.pid}/children").read_text().split()
        if not children:
            raise failed()
        self.pid = int(children[0])
        # Until the first process has chrooted (the last step of setup.sh).
        while Path(f"/proc/{self.pid}/root").resolve() == Path("/"):
            if self._holder.poll() is not None or time.monotonic() > deadline:
                raise failed()
            time.sleep(0.01)

    def process(self, argv: list[str], env: dict[str, str], user: str | None = None, cwd: str = "/",
                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT) -> subprocess.Popen:
        """Starts `argv` inside the container, with exactly `env`."""
        command = ["/usr/bin/nsenter", "-t", str(self.pid), "-n", "-m", "-p", "-u", "-r", "-w", "--",
                   "/usr/bin/env", "-C", cwd]
        if user and user not in ("root", "0"):
            command += ["/usr/bin/setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--"]
        return subprocess.Popen(command + argv, env=env, stdin=subprocess.DEVNULL, stdout=stdout,
                                stderr=stderr, start_new_session=True)

    def run(self, argv: list[str], env: dict[str, str], timeout: float, user: str | None = None,
            cwd: str = "/") -> tuple[int | None, str]:
        """Runs `argv` to its end inside the container: exit status (None on
        timeout, when it is killed) and output."""
        proc = self.process(argv, env, user, cwd, stdout=subprocess.PIPE)
        try:
            out, _ = proc.communicate(timeout=timeout)
            return proc.returncode, out.decode(errors="replace")
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            return None, out.decode(errors="replace")

    def alive(self, pid_inside: int) -> bool:
        return self.path(f"/proc/{pid_inside}").exists()

    def stop(self) -> None:
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self._holder:
            self._holder.wait()
        self.pid = 0
