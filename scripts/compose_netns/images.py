"""What each image of the compose file provides, and how its containers are
made here: the commands a healthcheck may run in it (an explicit list per
image, so a command the image lacks is a failure even though the host has
it), the program that plays each command's part here (a stand-in), the
image's files and users, and its entrypoint.

The base images' command lists below are what their packages install:
- debian:bookworm-slim: the Essential packages (bash, coreutils, dash,
  debianutils, diffutils, findutils, grep, gzip, hostname, libc-bin, login,
  mawk, perl-base, sed, tar, util-linux). No curl, wget, ps or nc.
- alpine (nats:*-alpine; eclipse-mosquitto:2; eclipse-temurin:*-alpine under apache/kafka): the
  applets of busybox, and bash where the image adds it. No curl.
Our own images add what their Dockerfile's `apt-get install` lines install
(see APT_COMMANDS)."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from .project import ComposeError, Service

COREUTILS = (
    "basename cat chgrp chmod chown cp cut date dd df dirname du echo env expr false head id ln ls "
    "mkdir mktemp mv nohup nproc od printf pwd readlink realpath rm rmdir seq sha256sum sleep sort stat "
    "tail tee test [ timeout touch tr true uname uniq wc whoami yes"
).split()
DEBIAN_ESSENTIAL = COREUTILS + (
    "sh dash bash grep egrep fgrep sed find xargs gzip gunzip zcat tar hostname getent ldd awk mawk "
    "perl which run-parts diff cmp su login mount umount"
).split()
BUSYBOX = COREUTILS + (
    "sh ash grep egrep fgrep sed awk find xargs gzip gunzip zcat tar hostname wget nc nslookup ping ps "
    "kill pidof pgrep pkill free top netstat which su mount umount vi"
).split()
DEBIAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Commands an apt package installs, for the packages our Dockerfile may add.
# A library package (lib*, zlib1g) installs none. An unknown package is an
# error, so adding one to the Dockerfile means adding it here.
APT_COMMANDS = {
    "curl": ["curl"],
    "wget": ["wget"],
    "ca-certificates": ["update-ca-certificates"],
    "procps": ["ps", "pgrep", "pkill", "free", "top", "watch"],
    "netcat-openbsd": ["nc"],
    "iproute2": ["ip", "ss"],
    "postgresql-client": ["psql", "pg_isready"],
    "tini": ["tini"],
}
LIBRARY_PACKAGES = {"zlib1g"}


def postgres_bindir() -> Path:
    """The newest PostgreSQL server installed here (scripts/postgres.sh's)."""
    dirs = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    if not dirs:
        raise ComposeError("PostgreSQL is not installed (scripts/setup.sh installs it)")
    return dirs[-1]


def stand_in(command: str) -> str | None:
    """The host program that plays `command`'s part here: the same tool
    (GNU wget for busybox's wget, dash for busybox's sh: the options the
    compose file uses mean the same to both), or none."""
    if command in ("pg_isready", "psql"):
        return str(postgres_bindir() / command)
    return shutil.which(command, path="/usr/bin:/bin:/usr/sbin:/sbin")


@dataclass
class Layer:
    """The files an image adds to the container's root, written on the host
    and copied over the root (owners kept) when the container starts."""

    root: Path
    users: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)

    def _place(self, inside: str) -> Path:
        path = self.root / inside.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def dir(self, inside: str, owner: int = 0, mode: int = 0o755) -> None:
        path = self.root / inside.lstrip("/")
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, owner, owner)
        path.chmod(mode)

    def file(self, inside: str, text: str, mode: int = 0o644, owner: int = 0) -> None:
        path = self._place(inside)
        path.write_text(text)
        os.chown(path, owner, owner)
        path.chmod(mode)

    def symlink(self, inside: str, target: str) -> None:
        path = self._place(inside)
        if path.is_symlink() or path.exists():
            path.unlink()
        path.symlink_to(target)

    def user(self, name: str, uid: int, home: str) -> None:
        """A user (and its group) the image has and the host may not."""
        self.users.append(f"{name}:x:{uid}:{uid}::{home}:/bin/sh")
        self.groups.append(f"{name}:x:{uid}:")

    def finish(self) -> None:
        if self.users:
            taken = {p.pw_name for p in pwd.getpwall()}
            extra = [u for u in self.users if u.split(":")[0] not in taken]
            self.file("/etc/passwd", Path("/etc/passwd").read_text() + "".join(u + "\n" for u in extra))
            taken_groups = {g.gr_name for g in grp.getgrall()}
            extra = [g for g in self.groups if g.split(":")[0] not in taken_groups]
            self.file("/etc/group", Path("/etc/group").read_text() + "".join(g + "\n" for g in extra))


class StartError(Exception):
    """A container's entrypoint failed; the message names the service and why."""


class Image(ABC):
    """One image of the compose file, as this package emulates it."""

    # What the compose file names (`image:`), or the build target.
    reference: str
    # The image's PATH, for what a healthcheck's bare command names.
    path: str = DEBIAN_PATH
    # The user its processes (and healthchecks) run as.
    user: str = "root"

    @abstractmethod
    def commands(self) -> dict[str, str]:
        """Every command a healthcheck may run: name -> path in the image."""

    def problems(self, service: Service) -> list[str]:
        """What is wrong before the container starts: environment variables
        the image will not read (misspelt, or meant for another image), and
        what the image lacks; each names the service and the setting."""
        return []

    @abstractmethod
    def environment(self, container, service: Service) -> dict[str, str]:
        """The container's environment: the image's, then the compose file's."""

    @abstractmethod
    def build(self, layer: Layer, service: Service, runtime) -> None:
        """The image's files and users, into the container's layer."""

    def mounts(self, service: Service, runtime) -> list:
        """Bind mounts the image brings (beyond the compose volumes)."""
        return []

    @abstractmethod
    def start(self, container, service: Service, runtime):
        """Runs the image's entrypoint; returns the main process (a `Main`)."""

    def has(self, command: str) -> bool:
        """Whether the image has `command`: a bare name looked up on PATH, or
        an absolute path (a PATH command under any PATH folder counts: /bin
        and /usr/bin are one folder in images with a merged /usr)."""
        commands = self.commands()
        if "/" not in command:
            return command in commands
        if command in commands.values():
            return True
        directory, name = os.path.split(command)
        on_path = self.path.split(":")
        return name in commands and directory in on_path and os.path.dirname(commands[name]) in on_path


class Main(ABC):
    """A container's main process: the container runs while it does."""

    @abstractmethod
    def poll(self) -> int | None:
        """Its exit status once it has ended, None while it runs."""


class ProcessMain(Main):
    def __init__(self, proc) -> None:
        self.proc = proc

    def poll(self) -> int | None:
        return self.proc.poll()
