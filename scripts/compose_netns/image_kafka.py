"""The apache/kafka image, run from the project's own jars (scripts/kafka.sh
fetch). Its start follows the image's scripts in the apache/kafka
repository, step by step:

- docker/resources/common-scripts/configureDefaults: CLUSTER_ID gets the
  image's fixed default when unset;
- docker/resources/common-scripts/configure: KRaft checks (a controller-only
  node must not advertise listeners), KAFKA_LISTENERS derived from
  KAFKA_ADVERTISED_LISTENERS when unset; SSL and SASL listeners need files
  this emulation does not have, so they are refused;
- docker/jvm/launch: `kafka.docker.KafkaDockerWrapper setup` writes
  /opt/kafka/config/server.properties from the KAFKA_* variables and formats
  the log directory ("already formatted" is fine), then kafka-server-start.sh
  runs the broker on that file.

The wrapper is not re-implemented: core/src/main/scala/kafka/docker/
KafkaDockerWrapper.scala ships in kafka_2.13's jar, and runs here on the
service's environment exactly as in the image. Each KAFKA_<NAME> becomes a
property by its rule (drop KAFKA_, lower case, `_` -> `.`, `___` -> `-`,
`__` -> `_`). Kafka ignores a property it does not know, so a misspelt
variable would only show as a broker wired wrongly; here every property the
wrapper wrote must be a documented broker setting (the list
`kafka.server.KafkaConfig` prints), or the service fails naming the
variable."""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

from .images import BUSYBOX, Image, Layer, ProcessMain, StartError
from .project import Service
from .sandbox import BindMount

HOME = "/opt/kafka"
USER, UID = "appuser", 1000  # `adduser -D appuser` in the image's Dockerfile
PATH = "/opt/java/openjdk/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_CLUSTER_ID = "5L6g3nShT-eMCtK--X86sw"  # configureDefaults
# The wrapper leaves these to the JVM and scripts (its ExcludeServerPropsEnv).
NOT_PROPERTIES = {
    "KAFKA_VERSION", "KAFKA_HEAP_OPTS", "KAFKA_LOG4J_OPTS", "KAFKA_OPTS", "KAFKA_JMX_OPTS",
    "KAFKA_JVM_PERFORMANCE_OPTS", "KAFKA_GC_LOG_OPTS", "KAFKA_LOG4J_ROOT_LOGLEVEL", "KAFKA_LOG4J_LOGGERS",
    "KAFKA_TOOLS_LOG4J_LOGLEVEL", "KAFKA_JMX_HOSTNAME",
}
# Per-listener overrides are not in the documented list by name.
PROPERTY_PREFIXES = ("listener.name.",)
# The distribution's bin/ scripts this emulation runs, and the class each runs.
SCRIPTS = {
    "kafka-broker-api-versions.sh": "org.apache.kafka.tools.BrokerApiVersionsCommand",
    "kafka-topics.sh": "org.apache.kafka.tools.TopicCommand",
    "kafka-console-consumer.sh": "org.apache.kafka.tools.consumer.ConsoleConsumer",
    "kafka-console-producer.sh": "org.apache.kafka.tools.ConsoleProducer",
    "kafka-consumer-groups.sh": "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
    "kafka-configs.sh": "org.apache.kafka.tools.ConfigCommand",
    "kafka-metadata-quorum.sh": "org.apache.kafka.tools.MetadataQuorumCommand",
    "kafka-cluster.sh": "org.apache.kafka.tools.ClusterTool",
    "kafka-get-offsets.sh": "org.apache.kafka.tools.GetOffsetShell",
    "kafka-storage.sh": "kafka.tools.StorageTool",
}
LOG4J2 = """Configuration:
  Appenders:
    Console:
      name: {name}
      target: {target}
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: {level}
      AppenderRef:
        - ref: {name}
"""


def property_name(variable: str) -> str:
    """The property KafkaDockerWrapper.getServerConfigsFromEnv makes of a variable."""
    return (
        variable.replace("KAFKA_", "", 1).lower().replace("_", ".").replace("...", "-").replace("..", "_")
    )


@cache
def broker_settings(libs: Path) -> frozenset[str]:
    """The broker settings Kafka documents (kafka.server.KafkaConfig's main
    prints them as the docs' HTML)."""
    out = subprocess.run(
        ["java", "-cp", f"{libs}/*", "kafka.server.KafkaConfig"], capture_output=True, text=True, check=True
    ).stdout
    names = frozenset(re.findall(r'id="brokerconfigs_([^"]+)"', out))
    if len(names) < 100:
        raise RuntimeError(f"kafka.server.KafkaConfig listed only {len(names)} settings")
    return names


class KafkaImage(Image):
    path = PATH
    user = USER

    def __init__(self, reference: str) -> None:
        self.reference = reference

    def commands(self) -> dict[str, str]:
        commands = {name: f"/bin/{name}" for name in BUSYBOX}
        commands.update(bash="/bin/bash", java="/opt/java/openjdk/bin/java")
        # Not on PATH: named by their full path.
        commands.update({f"{HOME}/bin/{name}": f"{HOME}/bin/{name}" for name in SCRIPTS})
        commands.update({f"{HOME}/bin/{n}": f"{HOME}/bin/{n}" for n in ("kafka-run-class.sh", "kafka-server-start.sh")})
        return commands

    def problems(self, service: Service) -> list[str]:
        return [
            f"{service.name}: sets {name}, which the {self.reference} image does not read "
            "(it reads KAFKA_* and CLUSTER_ID)"
            for name in service.environment
            if not name.startswith("KAFKA_") and name != "CLUSTER_ID"
        ]

    def mounts(self, service: Service, runtime) -> list[BindMount]:
        return [BindMount(runtime.kafka_libs, f"{HOME}/libs", read_only=True)]

    def build(self, layer: Layer, service: Service, runtime) -> None:
        layer.user(USER, UID, f"/home/{USER}")
        layer.dir(f"/home/{USER}", UID)
        java_home = Path(shutil.which("java") or "java").resolve().parent.parent
        layer.symlink("/opt/java/openjdk", str(java_home))
        for folder in (f"{HOME}/config", "/mnt/shared/config", "/var/lib/kafka/data", "/etc/kafka/secrets", "/etc/kafka/docker"):
            layer.dir(folder, UID)
        # The image's defaults (/etc/kafka/docker): server.properties is used
        # only when no KAFKA_* variable is set; logs go to the console.
        layer.file("/etc/kafka/docker/server.properties",
                   "process.roles=broker,controller\nnode.id=1\n"
                   "controller.quorum.voters=1@localhost:9093\n"
                   "listeners=PLAINTEXT://:9092,CONTROLLER://:9093\n"
                   "controller.listener.names=CONTROLLER\n", owner=UID)
        # The logging configurations, in the image's defaults and where the
        # distribution keeps them (config/, which the wrapper runs with).
        for folder in ("/etc/kafka/docker", f"{HOME}/config"):
            layer.file(f"{folder}/log4j2.yaml", LOG4J2.format(name="STDOUT", target="SYSTEM_OUT", level="INFO"), owner=UID)
            layer.file(f"{folder}/tools-log4j2.yaml", LOG4J2.format(name="STDERR", target="SYSTEM_ERR", level="WARN"), owner=UID)
        # Stand-ins for the distribution's scripts: the same defaults
        # (kafka-run-class.sh: 256 MB heap, tools' logging; the broker:
        # kafka-server-start.sh's 1 GB heap), the project's jars.
        layer.file(f"{HOME}/bin/kafka-run-class.sh",
                   "#!/bin/sh\n"
                   f'exec /opt/java/openjdk/bin/java ${{KAFKA_HEAP_OPTS:--Xmx256M}} '
                   f'${{KAFKA_LOG4J_OPTS:--Dlog4j2.configurationFile={HOME}/config/tools-log4j2.yaml}} '
                   f'${{KAFKA_OPTS:-}} -cp "{HOME}/libs/*" "$@"\n', mode=0o755, owner=UID)
        layer.file(f"{HOME}/bin/kafka-server-start.sh",
                   "#!/bin/sh\n"
                   'export KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xmx1G -Xms1G}"\n'
                   f'export KAFKA_LOG4J_OPTS="${{KAFKA_LOG4J_OPTS:--Dlog4j2.configurationFile={HOME}/config/log4j2.yaml}}"\n'
                   f'exec {HOME}/bin/kafka-run-class.sh kafka.Kafka "$@"\n', mode=0o755, owner=UID)
        for name, main in SCRIPTS.items():
            layer.file(f"{HOME}/bin/{name}", f'#!/bin/sh\nexec {HOME}/bin/kafka-run-class.sh {main} "$@"\n', mode=0o755, owner=UID)

    def environment(self, container, service: Service) -> dict[str, str]:
        env = {"PATH": PATH, "JAVA_HOME": "/opt/java/openjdk", "HOSTNAME": container.hostname,
               "HOME": f"/home/{USER}", **service.environment}
        # configureDefaults
        if not env.get("CLUSTER_ID"):
            env["CLUSTER_ID"] = DEFAULT_CLUSTER_ID
        # configure
        roles = env.get("KAFKA_PROCESS_ROLES", "")
        advertised = env.get("KAFKA_ADVERTISED_LISTENERS", "")
        if roles == "controller" and advertised:
            raise StartError(f"{service.name}: KAFKA_ADVERTISED_LISTENERS is not supported on a KRaft controller")
        if not env.get("KAFKA_LISTENERS") and roles != "controller" and advertised:
            env["KAFKA_LISTENERS"] = re.sub(r"://[^:]*:", "://0.0.0.0:", advertised)
        if "SSL://" in advertised or re.search(r"SASL_.*://", advertised):
            raise StartError(f"{service.name}: SSL and SASL listeners need secrets files this emulation does not provide")
        return env

    def start(self, container, service: Service, runtime):
        env = self.environment(container, service)
        log = runtime.log(service.name)
        status, output = container.run(
            [f"{HOME}/bin/kafka-run-class.sh", "kafka.docker.KafkaDockerWrapper", "setup",
             "--default-configs-dir", "/etc/kafka/docker", "--mounted-configs-dir", "/mnt/shared/config",
             "--final-configs-dir", f"{HOME}/config"],
            env, timeout=180, user=USER)
        log.write(output.encode())
        log.flush()
        if status != 0 and "already formatted" not in output.lower():
            last = output.strip().splitlines()[-1:] or ["no output"]
            raise StartError(f"{service.name}: the image's setup (KafkaDockerWrapper) failed: {last[0]}")
        self._check_properties(container, service, env, runtime)
        proc = container.process([f"{HOME}/bin/kafka-server-start.sh", f"{HOME}/config/server.properties"],
                                 env, user=USER, stdout=log)
        return ProcessMain(proc)

    def _check_properties(self, container, service: Service, env: dict[str, str], runtime) -> None:
        written = container.path(f"{HOME}/config/server.properties").read_text()
        keys = [line.split("=", 1)[0].strip() for line in written.splitlines() if "=" in line and not line.startswith("#")]
        known = broker_settings(runtime.kafka_libs)
        variables = {property_name(v): v for v in env if v.startswith("KAFKA_") and v not in NOT_PROPERTIES}
        unknown = [k for k in keys if k not in known and not k.startswith(PROPERTY_PREFIXES)]
        if unknown:
            raise StartError("; ".join(
                f"{service.name}: {variables.get(k, '?')} becomes `{k}` in server.properties, which is not a Kafka broker setting"
                for k in unknown))
