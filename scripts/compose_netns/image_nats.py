"""The nats image (nats:<version>-alpine), with the nats-server that
scripts/nats.sh builds. The container runs what the image would: its
ENTRYPOINT docker-entrypoint.sh (nats-io/nats-docker,
2.x/alpine3.22/docker-entrypoint.sh) puts `nats-server` in front of
arguments that start with `-`, so the compose file's command runs as
`nats-server <command>`; without a command, the image's CMD
`nats-server --config /etc/nats/nats-server.conf`."""

from __future__ import annotations

from .images import BUSYBOX, Image, Layer, ProcessMain
from .project import Service

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ENTRYPOINT = """#!/bin/sh
set -e
# As the image's entrypoint: flags alone mean flags for nats-server.
if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
    set -- nats-server "$@"
fi
exec "$@"
"""
# The image's /etc/nats/nats-server.conf, for a container run without a command.
CONFIG = "port: 4222\nmonitor_port: 8222\n"


class NatsImage(Image):
    path = PATH

    def __init__(self, reference: str) -> None:
        self.reference = reference

    def commands(self) -> dict[str, str]:
        commands = {name: f"/bin/{name}" for name in BUSYBOX}
        commands.update({"nats-server": "/usr/local/bin/nats-server",
                         "docker-entrypoint.sh": "/usr/local/bin/docker-entrypoint.sh"})
        return commands

    def problems(self, service: Service) -> list[str]:
        return [f"{service.name}: sets {name}, which the {self.reference} image does not read"
                for name in service.environment]

    def build(self, layer: Layer, service: Service, runtime) -> None:
        layer.symlink("/usr/local/bin/nats-server", str(runtime.nats_server))
        layer.file("/usr/local/bin/docker-entrypoint.sh", ENTRYPOINT, mode=0o755)
        layer.file("/etc/nats/nats-server.conf", CONFIG)

    def start(self, container, service: Service, runtime):
        if service.entrypoint is not None:
            argv = service.entrypoint + (service.command or [])
        else:
            command = service.command if service.command is not None else ["nats-server", "--config", "/etc/nats/nats-server.conf"]
            argv = ["docker-entrypoint.sh", *command]
        return ProcessMain(container.process(argv, self.environment(container, service), stdout=runtime.log(service.name)))

    def environment(self, container, service: Service) -> dict[str, str]:
        return {"PATH": PATH, "HOSTNAME": container.hostname, "HOME": "/root", **service.environment}
