"""Our services' images, read from the Dockerfile target the compose file
builds: the base image, the packages and users its RUN lines add, WORKDIR,
USER, ENV, and the ENTRYPOINT the container runs. The binary is the one
cargo built (`target/debug/<name>`, the build `make test` makes) where the
image copies the release build from its build stage.

A RUN line is read for what it does to the final image: apt-get install (the
commands the image gains), useradd, mkdir -p and chown. Any other command in
the runtime stages is an error, so a new kind of step is never silently
skipped."""

from __future__ import annotations

import shlex
import subprocess
from functools import cache
from pathlib import Path

import envvars

from . import dockerfile
from .images import APT_COMMANDS, DEBIAN_ESSENTIAL, DEBIAN_PATH, LIBRARY_PACKAGES, Image, Layer, ProcessMain
from .project import ComposeError, Service

# The debug build make test makes, standing for the image's release build.
REPO_TARGET = Path(__file__).resolve().parents[2] / "target" / "debug"
# `useradd --system` gives a fresh Debian image's first system user uid 999.
FIRST_SYSTEM_UID = 999
# Where the build stage's binaries are, and where cargo puts ours.
RELEASE_DIR = "/src/target/release/"
# What debian:bookworm-slim has installed (`dpkg -l` in the image): the
# shared libraries our binaries find there without an apt-get install.
BOOKWORM_SLIM = set("""
adduser apt base-files base-passwd bash bsdutils coreutils dash debconf debian-archive-keyring debianutils
diffutils dpkg e2fsprogs findutils gcc-12-base gpgv grep gzip hostname init-system-helpers libacl1
libapt-pkg6.0 libattr1 libaudit-common libaudit1 libblkid1 libbz2-1.0 libc-bin libc6 libcap-ng0 libcap2
libcom-err2 libcrypt1 libdb5.3 libdebconfclient0 libext2fs2 libffi8 libgcc-s1 libgcrypt20 libgmp10
libgnutls30 libgpg-error0 libhogweed6 libidn2-0 liblz4-1 liblzma5 libmd0 libmount1 libnettle8 libp11-kit0
libpam-modules libpam-modules-bin libpam-runtime libpam0g libpcre2-8-0 libseccomp2 libselinux1
libsemanage-common libsemanage2 libsepol2 libsmartcols1 libss2 libstdc++6 libsystemd0 libtasn1-6 libtinfo6
libudev1 libunistring2 libuuid1 libxxhash0 libzstd1 login logsave mawk mount ncurses-base ncurses-bin passwd
perl-base sed sysvinit-utils tar tzdata usr-is-merged util-linux util-linux-extra zlib1g
""".split())


@cache
def with_dependencies(packages: tuple[str, ...]) -> frozenset[str]:
    """`packages` and what apt installs with them (no recommends, as the
    Dockerfile's --no-install-recommends), from this machine's apt lists."""
    if not packages:
        return frozenset()
    done = subprocess.run(
        ["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
         "--no-breaks", "--no-replaces", "--no-enhances", *packages], capture_output=True, text=True)
    if done.returncode != 0:
        raise ComposeError(f"apt-cache cannot say what {' '.join(packages)} install: {done.stderr.strip()} "
                           "(apt-get update first)")
    return frozenset(line.strip() for line in done.stdout.splitlines() if line and not line.startswith((" ", "<")))


@cache
def shared_library_packages(binary: Path) -> dict[str, str]:
    """The binary's shared libraries here: file name -> the Debian package
    that ships it ("?" for none)."""
    libraries = {}
    for line in subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout.splitlines():
        name, _, where = line.partition("=>")
        if where.strip().startswith("/"):
            path = where.split()[0]
            # dpkg knows a file by the path its package ships, /lib or /usr/lib.
            libraries[name.strip()] = {path, str(Path(path).resolve())}
            libraries[name.strip()] |= {p.replace("/usr/lib/", "/lib/", 1) for p in libraries[name.strip()]}
            libraries[name.strip()] |= {p.replace("/lib/", "/usr/lib/", 1) for p in libraries[name.strip()]}
    paths = sorted(set().union(*libraries.values())) if libraries else []
    owners = {}
    for line in subprocess.run(["dpkg", "-S", *paths], capture_output=True, text=True).stdout.splitlines():
        package, _, path = line.partition(": ")
        owners[path.strip()] = package.split(":")[0]
    return {name: next((owners[p] for p in candidates if p in owners), "?") for name, candidates in libraries.items()}


def _simple_commands(text: str) -> list[list[str]]:
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands, current = [], []
    for token in lexer:
        if token in ("&&", "||", ";", "|"):
            if current:
                commands.append(current)
            current = []
        else:
            current.append(token)
    if current:
        commands.append(current)
    return commands


class BuiltImage(Image):
    def __init__(self, service: Service) -> None:
        path = service.dockerfile
        if path is None or not path.is_file():
            raise ComposeError(f"{service.name}: no Dockerfile at {path}")
        self.target = dockerfile.target(path, service.build_target or "")
        self.reference = f"{path.name} target {service.build_target}"
        if self.target.base_image != "debian:bookworm-slim":
            raise ComposeError(f"{service.name}: base image {self.target.base_image} has no command list here (images.py)")
        self.path = self.target.env.get("PATH", DEBIAN_PATH)
        self.user = self.target.user
        self.packages: list[str] = []
        self.users: dict[str, tuple[int, str, bool]] = {}
        self.dirs: dict[str, str] = {}
        for run in self.target.runs:
            for words in _simple_commands(run):
                self._read(words, f"{path.name}: RUN {' '.join(words)}")
        self.binaries = {}
        for copy in self.target.copies:
            for source in copy.sources:
                if copy.from_stage is None or not source.startswith(RELEASE_DIR):
                    raise ComposeError(f"{path.name}: COPY {source} is not a binary of the build stage")
                name = source.removeprefix(RELEASE_DIR)
                dest = copy.dest if not copy.dest.endswith("/") else copy.dest + name
                self.binaries[dest] = name

    def _read(self, words: list[str], where: str) -> None:
        command, args = words[0], words[1:]
        if command == "apt-get" and args[:1] == ["update"]:
            return
        if command == "apt-get" and "install" in args:
            self.packages += [a for a in args[args.index("install") + 1 :] if not a.startswith("-")]
        elif command == "rm" and all(a.startswith("-") or a.startswith("/var/lib/apt/lists") for a in args):
            return
        elif command == "useradd":
            home, system, create = None, False, False
            rest = iter(args)
            for arg in rest:
                if arg in ("--home-dir", "-d"):
                    home = next(rest)
                elif arg in ("--system", "-r"):
                    system = True
                elif arg in ("--create-home", "-m"):
                    create = True
                elif arg in ("--shell", "-s", "--uid", "-u", "--gid", "-g"):
                    next(rest)
                elif not arg.startswith("-"):
                    uid = FIRST_SYSTEM_UID - len(self.users) if system else 1000 + len(self.users)
                    self.users[arg] = (uid, home or f"/home/{arg}", create)
        elif command == "mkdir":
            for arg in args:
                if not arg.startswith("-"):
                    self.dirs.setdefault(arg, "root")
        elif command == "chown":
            owner, paths = args[0].split(":")[0], args[1:]
            for p in paths:
                self.dirs[p] = owner
        else:
            raise ComposeError(f"{where}: this emulation does not know what `{command}` does to the image (image_ours.py)")

    def commands(self) -> dict[str, str]:
        commands = {name: f"/usr/bin/{name}" for name in DEBIAN_ESSENTIAL}
        commands["sh"] = "/bin/sh"
        for package in self.packages:
            if package.startswith("lib") or package in LIBRARY_PACKAGES:
                continue
            if package not in APT_COMMANDS:
                raise ComposeError(f"{self.reference}: what apt package {package} installs is not listed in images.py APT_COMMANDS")
            commands.update({name: f"/usr/bin/{name}" for name in APT_COMMANDS[package]})
        for dest in self.binaries:
            commands[dest.rsplit("/", 1)[-1]] = dest
        return commands

    def _binary(self) -> str:
        names = set(self.binaries.values())
        if len(names) != 1:
            raise ComposeError(f"{self.reference}: copies {sorted(names)}; expected one service binary")
        return names.pop()

    def problems(self, service: Service) -> list[str]:
        binary = self._binary()
        known = envvars.variables_read_by(binary) | set(self.target.env)
        problems = [
            f"{service.name}: sets {name}, which {binary} does not read (a misspelling?)"
            for name in service.environment
            # Every KAFKA_<PROPERTY> goes to librdkafka, which refuses an
            # unknown one when the service starts.
            if name not in known and not name.startswith("KAFKA_")
        ]
        # The container runs on this machine's libraries; the image has
        # only its base's and what its apt-get installs.
        has = BOOKWORM_SLIM | with_dependencies(tuple(self.packages))
        built = REPO_TARGET / binary
        if built.is_file():
            problems += [
                f"{service.name}: {binary} needs {library} (Debian package {package}), which the {self.reference} "
                "image neither has nor installs"
                for library, package in shared_library_packages(built).items()
                if package not in has
            ]
        return problems

    def _uid(self, user: str) -> int:
        return 0 if user == "root" else self.users[user][0]

    def build(self, layer: Layer, service: Service, runtime) -> None:
        for name, (uid, home, create) in self.users.items():
            layer.user(name, uid, home)
            if create:
                layer.dir(home, uid)
        for path, owner in self.dirs.items():
            layer.dir(path, self._uid(owner))
        if not (layer.root / self.target.workdir.lstrip("/")).exists():
            layer.dir(self.target.workdir)
        for dest, name in self.binaries.items():
            built = REPO_TARGET / name
            if not built.is_file():
                raise ComposeError(f"{service.name}: {built} is missing; build it with `cargo build -p {name}`")
            layer.symlink(dest, str(built))

    def environment(self, container, service: Service) -> dict[str, str]:
        home = self.users[self.user][1] if self.user in self.users else "/root"
        return {"PATH": self.path, "HOSTNAME": container.hostname, "HOME": home, **self.target.env, **service.environment}

    def start(self, container, service: Service, runtime):
        if service.entrypoint is not None:
            argv = service.entrypoint + (service.command or [])
        else:
            argv = self.target.entrypoint + (service.command if service.command is not None else self.target.cmd)
        proc = container.process(argv, self.environment(container, service), user=self.user,
                                 cwd=self.target.workdir, stdout=runtime.log(service.name))
        return ProcessMain(proc)
