#!/usr/bin/env bash
# Runs a real single-node Apache Kafka broker (KRaft, no ZooKeeper) on loopback
# without Docker, for the integration tests and for users who have no Docker.
#
#   scripts/kafka.sh fetch                   fetch the broker's jars into .cache/kafka/libs if needed
#   scripts/kafka.sh start                   fetch jars if needed, format, start, wait until it answers
#   scripts/kafka.sh stop                    SIGTERM, wait, SIGKILL after a deadline; data is kept
#   scripts/kafka.sh status                  exit 0 if the broker on BROKER_PORT answers
#   scripts/kafka.sh topic NAME PARTITIONS   create NAME (or grow it to PARTITIONS), idempotent
#
# Environment (BROKER_*, not KAFKA_*: the services pass every KAFKA_<PROPERTY>
# variable on to librdkafka, so a shared shell must not hold script settings there):
#   BROKER_PORT              client listener, default 9092
#   BROKER_CONTROLLER_PORT   KRaft controller listener, default BROKER_PORT+1 (9093)
#   BROKER_VERSION           broker version from Maven Central, default below (4.x only)
#   BROKER_HEAP_OPTS         broker JVM heap, default -Xmx512m
#   BROKER_SCRAM_USER, BROKER_SCRAM_PASSWORD
#                            both set: the client listener is SASL_PLAINTEXT with
#                            SCRAM-SHA-256 and this one user (set at format time,
#                            so use a fresh BROKER_PORT for it; tests do)
#   JAVA_HOME               optional; otherwise `java` from PATH (Java 17+)
#
# The broker jars come from Maven Central through `mvn dependency:copy-dependencies`
# (no other download site is needed), with a project-local Maven repository so
# the first fetch is paid once. Everything lives under $REPO/.cache (gitignored):
#   .cache/m2                     Maven's local repository
#   .cache/kafka/libs             the broker's classpath
#   .cache/kafka/data-$PORT       KRaft metadata + topic data of the instance on $PORT
#   .cache/kafka/kafka-$PORT.*    its config, pid file and log
# Several instances can run side by side: each BROKER_PORT gets its own files.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$REPO/.cache/kafka"
LIBS="$CACHE/libs"
M2="$REPO/.cache/m2"

# 4.x runs on the Java 17 installed here (brokers need 17+) and ships
# TopicCommand & co. in kafka-tools; the log4j2 config below assumes 4.x.
BROKER_VERSION="${BROKER_VERSION:-4.4.0}"
# kafka_2.13 4.x declares slf4j-api 1.7, which log4j-slf4j2-impl cannot bind
# to (the broker would log nothing): pin an slf4j 2 API next to the binding.
SLF4J_VERSION="2.0.17"
LOG4J_VERSION="2.25.3"
# Debian's Maven resolves the ancient 2.8 plugin by default; pin a modern one.
DEPENDENCY_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.8.1"

PORT="${BROKER_PORT:-9092}"
# Default the controller port from the client port so that setting BROKER_PORT
# alone is enough for a second instance (9092 -> 9093 as usual).
CONTROLLER_PORT="${BROKER_CONTROLLER_PORT:-$((PORT + 1))}"
BOOTSTRAP="127.0.0.1:$PORT"

DATA="$CACHE/data-$PORT"
CONF="$CACHE/kafka-$PORT.properties"
BROKER_LOG4J="$CACHE/log4j2-broker.properties"
TOOLS_LOG4J="$CACHE/log4j2-tools.properties"

SCRAM_USER="${BROKER_SCRAM_USER:-}"
SCRAM_PASSWORD="${BROKER_SCRAM_PASSWORD:-}"
if [[ -n "$SCRAM_USER" && -n "$SCRAM_PASSWORD" ]]; then
  CLIENT_LISTENER="SASL_PLAINTEXT"
else
  CLIENT_LISTENER="PLAINTEXT"
fi
# What a client needs to talk to the client listener (the Kafka tools).
CLIENT_CONF="$CACHE/client-$PORT.properties"

if [[ -n "${JAVA_HOME:-}" ]]; then JAVA="$JAVA_HOME/bin/java"; else JAVA="java"; fi

# shellcheck source-path=SCRIPTDIR source=lib/daemon.sh
source "$REPO/scripts/lib/daemon.sh"
DAEMON_PORT="$PORT"
DAEMON_FILES="$CACHE/kafka-$PORT"
DAEMON_DATA="$DATA"
DAEMON_MARK="$CONF"
DAEMON_NOUN=broker
DAEMON_PROGRAM=broker
DAEMON_KIND="an answering Kafka broker"
DAEMON_FOREIGN="a broker"
DAEMON_BANNER="Kafka $BROKER_VERSION, $BOOTSTRAP"
DAEMON_START_DEADLINE=90
DAEMON_POLL=0.5 # each probe runs kcat (or a JVM)
# BROKER_HEAP_OPTS may hold several flags.
read -ra heap_opts <<<"${BROKER_HEAP_OPTS:--Xmx512m}"
DAEMON_COMMAND=("$JAVA" "${heap_opts[@]}" -XX:+UseG1GC
  -Djava.awt.headless=true
  -Dlog4j2.configurationFile="$BROKER_LOG4J"
  -cp "$LIBS/*" kafka.Kafka "$CONF")
daemon_settings


# ---------------------------------------------------------------- jars

fetch_jars() {
  # Already fetched for this version? The marker is written last, so a half
  # finished fetch (interrupted mvn) is redone instead of trusted.
  [[ -f "$LIBS/.version" && "$(cat "$LIBS/.version")" == "$BROKER_VERSION" ]] && return 0
  command -v mvn >/dev/null || die "mvn (Maven) is needed to fetch the Kafka jars"
  mkdir -p "$CACHE"

  # Tests may start several instances at once; only one of them should fetch.
  exec 9>"$CACHE/.fetch.lock"
  flock 9
  if [[ -f "$LIBS/.version" && "$(cat "$LIBS/.version")" == "$BROKER_VERSION" ]]; then
    exec 9>&-
    return 0
  fi

  log "fetching Kafka $BROKER_VERSION jars from Maven Central (first run only)..."
  local t0=$SECONDS
  cat >"$CACHE/pom.xml" <<EOF
<!-- Generated by scripts/kafka.sh: the classpath of a standalone Kafka broker. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.kafka-sh</groupId>
  <artifactId>kafka-broker-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <!-- the broker itself: kafka.Kafka, kafka.tools.StorageTool -->
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$BROKER_VERSION</version></dependency>
    <!-- TopicCommand, BrokerApiVersionsCommand, console producer/consumer -->
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$BROKER_VERSION</version></dependency>
    <!-- logging backend; Kafka 4 logs through slf4j to log4j2 -->
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>$SLF4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$LOG4J_VERSION</version></dependency>
  </dependencies>
</project>
EOF
  # Copy into a fresh directory and swap it in, so an old classpath never
  # mixes with a new one (two kafka-clients versions would be a mess).
  # Maven's output goes to a file and is shown only on failure: even with -q,
  # Debian's Maven 3.8 prints stray ANSI reset codes.
  rm -rf "$LIBS.tmp"
  if ! mvn -q -B -f "$CACHE/pom.xml" -Dmaven.repo.local="$M2" \
    "$DEPENDENCY_PLUGIN:copy-dependencies" \
    -DincludeScope=runtime -DoutputDirectory="$LIBS.tmp" >"$CACHE/mvn.log" 2>&1; then
    cat "$CACHE/mvn.log" >&2
    rm -rf "$LIBS.tmp"
    die "mvn could not fetch org.apache.kafka:kafka_2.13:$BROKER_VERSION (see above)"
  fi
  rm -rf "$LIBS"
  mv "$LIBS.tmp" "$LIBS"
  echo "$BROKER_VERSION" >"$LIBS/.version"
  local jars=("$LIBS"/*.jar)
  log "fetched ${#jars[@]} jars in $((SECONDS - t0)) s"
  exec 9>&-
}

write_log4j_configs() {
  # The broker logs INFO to stdout, which start() sends to the log file.
  cat >"$BROKER_LOG4J" <<'EOF'
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
# request logging and state changes are very chatty and not useful in tests
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
EOF
  # Admin tools only say something when it matters, on stderr.
  cat >"$TOOLS_LOG4J" <<'EOF'
status = warn
appender.err.type = Console
appender.err.name = ERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = ERR
EOF
}

# Run a Kafka command-line class (TopicCommand, StorageTool, ...) on our classpath.
# Tiered compilation level 1 and a small heap make these short-lived JVMs start faster.
kafka_tool() {
  "$JAVA" -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
    -Dlog4j2.configurationFile="$TOOLS_LOG4J" \
    -cp "$LIBS/*" "$@"
}

# ---------------------------------------------------------------- config

write_server_properties() {
  cat >"$CONF" <<EOF
# Generated by scripts/kafka.sh; rewritten on every start.
# One JVM is both the KRaft controller and the broker: no ZooKeeper, no second node.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$CONTROLLER_PORT
controller.listener.names=CONTROLLER
listeners=$CLIENT_LISTENER://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
# Clients must be told 127.0.0.1, not the host name, or they would try to
# reconnect to an address this broker does not listen on.
advertised.listeners=$CLIENT_LISTENER://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
inter.broker.listener.name=$CLIENT_LISTENER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,$CLIENT_LISTENER:$CLIENT_LISTENER
log.dirs=$DATA

# A single node can only hold one replica of anything, including the internal topics.
num.partitions=1
default.replication.factor=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Fewer internal partitions than the defaults (50) make the first consumer
# group and the first transaction noticeably faster on a test broker.
offsets.topic.num.partitions=1
transaction.state.log.num.partitions=1

auto.create.topics.enable=true
# Consumers in tests should get their partitions at once, not after 3 s.
group.initial.rebalance.delay.ms=0
EOF
  : >"$CLIENT_CONF"
  if [[ "$CLIENT_LISTENER" == SASL_PLAINTEXT ]]; then
    cat >>"$CONF" <<EOF

# SCRAM-SHA-256 on the client listener; the user is created at format time.
sasl.enabled.mechanisms=SCRAM-SHA-256
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-256
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$SCRAM_USER" password="$SCRAM_PASSWORD";
EOF
    cat >"$CLIENT_CONF" <<EOF
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-256
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$SCRAM_USER" password="$SCRAM_PASSWORD";
EOF
  fi
}

format_storage() {
  # meta.properties is what StorageTool writes; its presence means "formatted",
  # and formatting again would fail (or, forced, lose the data).
  if [[ -f "$DATA/meta.properties" ]]; then
    # --standalone recorded the controller endpoint in the metadata log; a
    # different controller port would leave the node unable to find its quorum.
    local recorded
    recorded="$(cat "$DATA/.controller-port" 2>/dev/null || echo "$CONTROLLER_PORT")"
    [[ "$recorded" == "$CONTROLLER_PORT" ]] ||
      die "$DATA was formatted for controller port $recorded, not $CONTROLLER_PORT; set BROKER_CONTROLLER_PORT=$recorded or delete $DATA"
    return 0
  fi
  local cluster_id
  cluster_id="$(kafka_tool kafka.tools.StorageTool random-uuid)"
  log "formatting $DATA (cluster id $cluster_id)"
  # --standalone makes this node the sole voter of a dynamic KRaft quorum,
  # which is what kafka-storage.sh format --standalone does for a dev box.
  local scram=()
  if [[ "$CLIENT_LISTENER" == SASL_PLAINTEXT ]]; then
    scram=(--add-scram "SCRAM-SHA-256=[name=$SCRAM_USER,password=$SCRAM_PASSWORD]")
  fi
  kafka_tool kafka.tools.StorageTool format --standalone \
    --cluster-id "$cluster_id" --config "$CONF" "${scram[@]}" >/dev/null
  echo "$CONTROLLER_PORT" >"$DATA/.controller-port"
}

# ---------------------------------------------------------------- probes

# A Kafka broker answers a metadata request on the port. This is the real
# readiness test: the port opens some time before the broker serves requests.
daemon_answers() {
  daemon_port_open "$PORT" || return 1
  # Debian's kcat (librdkafka 2.x of the distribution) fails SCRAM against
  # this broker while the services' bundled librdkafka and the Java client
  # succeed, so a SASL broker is probed with the Java tool.
  if [[ "$CLIENT_LISTENER" == PLAINTEXT ]] && command -v kcat >/dev/null; then
    # Much faster than a JVM when available; optional.
    timeout 10 kcat -L -b "$BOOTSTRAP" -m 5 >/dev/null 2>&1
  else
    local sasl=()
    if [[ "$CLIENT_LISTENER" == SASL_PLAINTEXT ]]; then sasl=(--command-config "$CLIENT_CONF"); fi
    timeout 30 "$JAVA" -Xmx128m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
      -Dlog4j2.configurationFile="$TOOLS_LOG4J" -cp "$LIBS/*" \
      org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" --list "${sasl[@]}" \
      >/dev/null 2>&1
  fi
}

daemon_log_tail() {
  if [[ -f "$DAEMON_LOGFILE" ]]; then
    log "last lines of $DAEMON_LOGFILE:"
    tail -n 40 "$DAEMON_LOGFILE" >&2
  fi
}

# What a first start needs: a free controller port, the config, a
# formatted log dir.
daemon_prepare() {
  daemon_port_open "$CONTROLLER_PORT" && die "controller port $CONTROLLER_PORT is already in use; set BROKER_CONTROLLER_PORT"
  write_server_properties
  mkdir -p "$DATA"
  format_storage
}

# ---------------------------------------------------------------- commands

cmd_start() {
  command -v "$JAVA" >/dev/null || die "java (17+) is needed; install a JDK or set JAVA_HOME"
  mkdir -p "$CACHE"
  fetch_jars
  write_log4j_configs
  daemon_start
}

cmd_topic() {
  local name="$1" partitions="$2"
  [[ "$partitions" =~ ^[1-9][0-9]*$ ]] || die "PARTITIONS must be a positive integer, got '$partitions'"
  [[ -f "$LIBS/.version" ]] || die "no Kafka jars yet; run 'scripts/kafka.sh start' first"
  daemon_port_open "$PORT" || die "no broker on $BOOTSTRAP; run 'scripts/kafka.sh start' first"
  write_log4j_configs
  local topic_cmd=(kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP")

  "${topic_cmd[@]}" --create --if-not-exists --topic "$name" \
    --partitions "$partitions" --replication-factor 1 >/dev/null

  # --if-not-exists leaves an existing topic alone, but the topic may have
  # been auto-created (num.partitions=1) by a producer that ran first; grow
  # it so callers really get the partitions they asked for.
  local current
  current="$("${topic_cmd[@]}" --describe --topic "$name" |
    sed -n 's/.*PartitionCount:[[:space:]]*\([0-9]*\).*/\1/p' | head -n 1)"
  [[ -n "$current" ]] || die "could not read the partition count of topic $name"
  if ((current < partitions)); then
    log "topic $name has $current partitions; increasing to $partitions"
    "${topic_cmd[@]}" --alter --topic "$name" --partitions "$partitions" >/dev/null
    current="$partitions"
  fi
  echo "topic $name: $current partitions on $BOOTSTRAP"
}

usage() {
  sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

case "${1:-}" in
fetch) fetch_jars ;;
start) cmd_start ;;
# SIGTERM runs Kafka's shutdown hook: it flushes logs and writes a clean
# shutdown marker, so the next start skips log recovery.
stop) daemon_stop ;;
status) daemon_status ;;
topic)
  [[ $# -eq 3 ]] || usage
  cmd_topic "$2" "$3"
  ;;
*) usage ;;
esac
