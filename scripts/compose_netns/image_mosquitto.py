"""The eclipse-mosquitto image (eclipse-mosquitto:2, Alpine), with the
Mosquitto that scripts/mosquitto.sh runs (Debian's package). The container
runs what the image would: its ENTRYPOINT docker-entrypoint.sh
(eclipse/mosquitto, docker/2.0/docker-entrypoint.sh) hands /mosquitto to
the user `mosquitto` when it runs as root, then runs its CMD
`/usr/sbin/mosquitto -c /mosquitto/config/mosquitto.conf`; Mosquitto,
started as root, drops to that user itself. The image reads no environment
variable."""

from __future__ import annotations

import pwd
import shutil

from .images import BUSYBOX, Image, Layer, ProcessMain
from .project import ComposeError, Service

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ENTRYPOINT = """#!/bin/sh
set -e
# As the image's entrypoint: the broker's folders belong to its user.
if [ "$(id -u)" = '0' ]; then
    [ -d "/mosquitto" ] && chown -R mosquitto:mosquitto /mosquitto || true
fi
exec "$@"
"""
COMMAND = ["/usr/sbin/mosquitto", "-c", "/mosquitto/config/mosquitto.conf"]
# The image's own config, for a container without one mounted: a listener
# for local clients only, as Mosquitto 2 has without a config.
CONFIG = "persistence true\npersistence_location /mosquitto/data/\nlog_dest file /mosquitto/log/mosquitto.log\n"


class MosquittoImage(Image):
    path = PATH

    def __init__(self, reference: str) -> None:
        self.reference = reference

    def commands(self) -> dict[str, str]:
        commands = {name: f"/bin/{name}" for name in BUSYBOX}
        commands.update({"mosquitto": "/usr/sbin/mosquitto", "mosquitto_passwd": "/usr/bin/mosquitto_passwd",
                         "docker-entrypoint.sh": "/docker-entrypoint.sh"})
        return commands

    def problems(self, service: Service) -> list[str]:
        return [f"{service.name}: sets {name}, which the {self.reference} image does not read"
                for name in service.environment]

    def build(self, layer: Layer, service: Service, runtime) -> None:
        # Debian's package puts it where the image has it, /usr/sbin, and
        # the container sees the host's /usr.
        if shutil.which("mosquitto", path="/usr/sbin") is None:
            raise ComposeError(f"{service.name}: Mosquitto is not installed (scripts/setup.sh installs it)")
        try:
            uid = pwd.getpwnam("mosquitto").pw_uid
        except KeyError as error:
            raise ComposeError(f"{service.name}: no user `mosquitto` here (Debian's mosquitto package makes it)") from error
        layer.file("/docker-entrypoint.sh", ENTRYPOINT, mode=0o755)
        # As the image's Dockerfile makes them.
        for folder in ("/mosquitto/config", "/mosquitto/data", "/mosquitto/log"):
            layer.dir(folder, uid)
        layer.file("/mosquitto/config/mosquitto.conf", CONFIG, owner=uid)

    def start(self, container, service: Service, runtime):
        entrypoint = service.entrypoint if service.entrypoint is not None else ["/docker-entrypoint.sh"]
        command = service.command if service.command is not None else COMMAND
        argv = entrypoint + command
        return ProcessMain(container.process(argv, self.environment(container, service), stdout=runtime.log(service.name)))

    def environment(self, container, service: Service) -> dict[str, str]:
        return {"PATH": PATH, "HOSTNAME": container.hostname, "HOME": "/root", **service.environment}
