"""The postgres image, run with the project's scripts/postgres.sh (the
PostgreSQL server installed here, as the `postgres` user). Its start follows
the image's docker-entrypoint.sh (docker-library/postgres,
17/bookworm/docker-entrypoint.sh):

- on an empty data folder only: POSTGRES_PASSWORD is required (the image
  refuses to start without it); initdb with that superuser password, every
  address but loopback and the socket needing it; a temporary server on the
  Unix socket only; POSTGRES_DB created; each /docker-entrypoint-initdb.d
  file in name order (*.sql through psql with ON_ERROR_STOP, *.sh run);
  the temporary server stopped;
- then the server itself, on every interface and the socket, port 5432.

While the temporary server runs, the compose healthcheck is tried once: a
check that passes then would let services waiting for `service_healthy`
start before the init scripts have made their databases."""

from __future__ import annotations

import pwd

from .images import DEBIAN_ESSENTIAL, DEBIAN_PATH, Image, Layer, Main, StartError, postgres_bindir
from .project import Service

PGDATA = "/var/lib/postgresql/data"
SOCKETS = "/var/run/postgresql"
INITDB_D = "/docker-entrypoint-initdb.d"
PORT = 5432
# Read by the image's entrypoint. Only the first ones are emulated.
EMULATED = {"POSTGRES_PASSWORD", "POSTGRES_USER", "POSTGRES_DB"}
READ_BY_IMAGE = EMULATED | {
    "POSTGRES_PASSWORD_FILE", "POSTGRES_USER_FILE", "POSTGRES_DB_FILE", "POSTGRES_INITDB_ARGS",
    "POSTGRES_INITDB_ARGS_FILE", "POSTGRES_INITDB_WALDIR", "POSTGRES_HOST_AUTH_METHOD", "PGDATA",
}
CLIENT_PROGRAMS = "psql pg_isready pg_ctl postgres initdb createdb dropdb pg_dump pg_restore".split()


class PostmasterMain(Main):
    """The server started by pg_ctl: the container runs while it does."""

    def __init__(self, container, pidfile: str) -> None:
        self.container = container
        self.pid = int(container.path(pidfile).read_text().split()[0])

    def poll(self) -> int | None:
        return None if self.container.alive(self.pid) else 1


class PostgresImage(Image):
    def __init__(self, reference: str) -> None:
        self.reference = reference
        self.major = reference.rsplit(":", 1)[-1].split(".")[0].split("-")[0]
        self.path = f"{DEBIAN_PATH}:/usr/lib/postgresql/{self.major}/bin"

    def commands(self) -> dict[str, str]:
        commands = {name: f"/usr/bin/{name}" for name in DEBIAN_ESSENTIAL}
        commands.update({name: f"/usr/lib/postgresql/{self.major}/bin/{name}" for name in CLIENT_PROGRAMS})
        commands.update(gosu="/usr/local/bin/gosu", **{"docker-entrypoint.sh": "/usr/local/bin/docker-entrypoint.sh"})
        return commands

    def problems(self, service: Service) -> list[str]:
        problems = []
        for name in service.environment:
            if name not in READ_BY_IMAGE and not name.startswith("PG"):
                problems.append(f"{service.name}: sets {name}, which the {self.reference} image does not read (a misspelling?)")
            elif name in READ_BY_IMAGE - EMULATED:
                problems.append(f"{service.name}: {name} is read by the image but not emulated here (image_postgres.py)")
        user = service.environment.get("POSTGRES_USER", "postgres")
        if user != "postgres":
            problems.append(f"{service.name}: POSTGRES_USER={user}: only the superuser `postgres` is emulated")
        if service.command or service.entrypoint:
            problems.append(f"{service.name}: command and entrypoint overrides are not emulated for {self.reference}")
        return problems

    def build(self, layer: Layer, service: Service, runtime) -> None:
        uid = pwd.getpwnam("postgres").pw_uid
        # As the image's Dockerfile makes them.
        layer.dir(PGDATA, uid, 0o1777)
        layer.dir("/run/postgresql", uid, 0o3777)
        layer.dir(INITDB_D)
        # The image's programs where its PATH has them, played by the
        # server installed here (its version may differ: the report says).
        installed = postgres_bindir().parent
        if installed.name != self.major:
            layer.symlink(f"/usr/lib/postgresql/{self.major}", str(installed))

    def environment(self, container, service: Service) -> dict[str, str]:
        return {"PATH": self.path, "PGDATA": PGDATA, "HOSTNAME": container.hostname, "HOME": "/root",
                **service.environment}

    def start(self, container, service: Service, runtime):
        env = self.environment(container, service)
        script = str(runtime.repo / "scripts" / "postgres.sh")
        pg = {**env, "PG_DIR": PGDATA, "PG_PORT": str(PORT), "PG_SOCKET_DIR": SOCKETS}
        data = f"{PGDATA}/data-{PORT}"
        log = runtime.log(service.name)
        runtime.also_log(service.name, container.path(f"{PGDATA}/postgres-{PORT}.log"))

        def step(argv: list[str], environment: dict[str, str], user: str | None = None) -> None:
            status, output = container.run(argv, environment, timeout=120, user=user)
            log.write(output.encode())
            log.flush()
            if status != 0:
                raise StartError(f"{service.name}: `{' '.join(argv[-2:])}` failed: {output.strip()[-500:]}")

        if not container.path(f"{data}/PG_VERSION").exists():
            password = env.get("POSTGRES_PASSWORD", "")
            if not password:
                raise StartError(
                    f"{service.name}: Database is uninitialized and superuser password is not specified "
                    "(POSTGRES_PASSWORD must be set to a non-empty value), as the image says")
            # The temporary server: the Unix socket only.
            step(["/bin/bash", script, "start"], {**pg, "PG_LISTEN": "", "PG_PASSWORD": password})
            if runtime.healthcheck_passes(service.name):
                raise StartError(
                    f"{service.name}: its healthcheck passes while the image's entrypoint is still initialising: "
                    f"the temporary server that runs {INITDB_D} answers on the Unix socket, so a service waiting for "
                    "service_healthy can start before the init scripts have made their databases (check over TCP, "
                    "e.g. `pg_isready -h 127.0.0.1`; the temporary server does not listen there)")
            psql = ["psql", "-v", "ON_ERROR_STOP=1", "--username", "postgres", "--no-password", "--no-psqlrc"]
            database = env.get("POSTGRES_DB", "postgres")
            if database != "postgres":
                step([*psql, "--dbname", "postgres", "-c", f'CREATE DATABASE "{database}"'], env, user="postgres")
            for path in sorted(container.path(INITDB_D).iterdir()):
                inside = f"{INITDB_D}/{path.name}"
                if path.name.endswith(".sql"):
                    step([*psql, "--dbname", database, "-f", inside], env, user="postgres")
                elif path.name.endswith(".sh"):
                    step(["/bin/bash", inside], env, user="postgres")
                else:
                    log.write(f"ignoring {inside}\n".encode())
            step(["/bin/bash", script, "stop"], pg)
        step(["/bin/bash", script, "start"], {**pg, "PG_LISTEN": "*"})
        return PostmasterMain(container, f"{data}/postmaster.pid")
