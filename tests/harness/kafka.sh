#!/usr/bin/env bash
# tests/harness/kafka.sh — run a REAL single-node Apache Kafka 4.x broker on
# loopback for CI (.ci/run), integration tests and developers.
#
# The broker runs in KRaft mode (one JVM that is both broker and controller,
# no ZooKeeper). Its jars (org.apache.kafka:kafka_2.13 + kafka-tools + a log4j2
# binding, see tests/harness/kafka/pom.xml) are fetched once from Maven Central
# with `mvn dependency:copy-dependencies` into
#   ${PRESCALE_CACHE:-$HOME/.cache/prescale}/kafka/<version>/libs
# and reused from there: once cached, nothing touches the network.
#
# Usage (from any directory):
#   eval "$(tests/harness/kafka.sh start)"   # sets KAFKA_BOOTSTRAP, KAFKA_HARNESS_DIR
#   tests/harness/kafka.sh topic NAME PARTITIONS
#   ... run tests against "$KAFKA_BOOTSTRAP" ...
#   tests/harness/kafka.sh stop
#
# Commands:
#   start        Fetch if needed, start the broker, wait until it serves metadata
#                requests, and print on stdout (and only there):
#                  export KAFKA_BOOTSTRAP=127.0.0.1:PORT
#                  export KAFKA_HARNESS_DIR=STATE_DIR
#                If a broker started earlier from the same state dir is still
#                running and healthy, it is REUSED (same port, its topics kept);
#                if it is running but unhealthy, or dead, it is stopped and its
#                state wiped before a fresh start. Use `restart` to force a fresh
#                broker.
#   stop         SIGTERM the broker, wait up to 30 s, then SIGKILL; remove the
#                state dir. Idempotent.
#   restart      stop, then start (a fresh broker: topics and data are gone).
#   stop-broker  Stop only the broker's JVM (SIGTERM, then SIGKILL after 30 s) and
#                KEEP the state dir: its data, topics, committed offsets and port
#                (for outage tests). Idempotent.
#   start-broker Start the broker again from a state dir that `stop-broker` left:
#                same port, cluster id and data; waits until it serves metadata
#                requests and prints the same export lines as `start`.
#   status       Say whether a broker is running (exit 0) or not (exit 1).
#   env          Print the export lines of the running broker (exit 1 if none).
#   fetch        Only download the jars into the cache (prints nothing on stdout).
#   classpath    Print the Java classpath of the cached jars (fetching if needed).
#   topic NAME PARTITIONS
#                Create topic NAME (replication factor 1) if it does not exist.
#   tool CLASS [ARGS...]
#                Run any Kafka tool main class from the same classpath, e.g.
#                  kafka.sh tool org.apache.kafka.tools.ConsoleProducer \
#                    --bootstrap-server "$KAFKA_BOOTSTRAP" --topic t
#
# Environment:
#   KAFKA_HARNESS_DIR      state dir (config, data, logs, pid)
#                          [${TMPDIR:-/tmp}/prescale-kafka]
#   PRESCALE_CACHE         cache root [$HOME/.cache/prescale]
#   KAFKA_HARNESS_VERSION  Kafka version [4.1.2]; another 4.x may need
#                          log4j.version in kafka/pom.xml adjusted
#   KAFKA_HARNESS_PORT, KAFKA_HARNESS_CONTROLLER_PORT
#                          fixed ports instead of free ones picked at random
#   KAFKA_HARNESS_TIMEOUT  seconds to wait for the broker to answer [90]
#   KAFKA_HARNESS_MAVEN_REPO  Maven local repository for the fetch
#                          [Maven's default, ~/.m2/repository]
#   KAFKA_HEAP_OPTS        broker heap [-Xmx512m -Xms256m]
#   KAFKA_HARNESS_JVM_OPTS extra broker JVM flags, split on spaces
#                          [-XX:TieredStopAtLevel=1: faster start; set it empty
#                          for full C2 JIT when measuring broker throughput]
#   JAVA_HOME              Java 17+ to use (else `java` on PATH)
#
# Readiness = the port accepts connections and a Kafka Metadata request is
# answered (kafka/metadata_probe.py; TopicCommand --list if python3 is absent).
#
# Files in the state dir: server.properties, data/ (log.dirs), logs/server.log
# (broker log, via kafka/broker-log4j2.xml), logs/kafka.out (JVM stdout/stderr),
# kafka.pid, bootstrap, version.
#
# Progress messages go to stderr; stdout carries only what callers consume.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
HARNESS_DIR="$SCRIPT_DIR/kafka"
POM="$HARNESS_DIR/pom.xml"

KAFKA_VERSION="${KAFKA_HARNESS_VERSION:-4.1.2}"
CACHE_ROOT="${PRESCALE_CACHE:-${HOME:-/root}/.cache/prescale}"
VERSION_DIR="$CACHE_ROOT/kafka/$KAFKA_VERSION"
LIBS="$VERSION_DIR/libs"
STATE_DIR="${KAFKA_HARNESS_DIR:-${TMPDIR:-/tmp}/prescale-kafka}"
STATE_DIR="${STATE_DIR%/}"
MARKER=".prescale-kafka-harness"
PID_FILE="$STATE_DIR/kafka.pid"
BOOTSTRAP_FILE="$STATE_DIR/bootstrap"
TIMEOUT="${KAFKA_HARNESS_TIMEOUT:-90}"
STOP_TIMEOUT=30
HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xmx512m -Xms256m}"
# C1-only JIT: the broker is up ~30% sooner and burns less CPU on a busy
# 2-core box; set KAFKA_HARNESS_JVM_OPTS= (empty) for full C2 peak speed.
EXTRA_JVM_OPTS="${KAFKA_HARNESS_JVM_OPTS--XX:TieredStopAtLevel=1}"

log() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

now() { date +%s; }

# ---------------------------------------------------------------- java / jars

JAVA=""
find_java() {
  [[ -n "$JAVA" ]] && return 0
  if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
    JAVA="$JAVA_HOME/bin/java"
  elif command -v java >/dev/null 2>&1; then
    JAVA="$(command -v java)"
  else
    die "java not found (Kafka 4.x needs Java 17+): install it or set JAVA_HOME"
  fi
  local line major
  line="$("$JAVA" -version 2>&1 | head -n 1)"
  major="$(sed -E 's/^[^"]*"([0-9]+)(\.[0-9]+)?.*/\1/' <<<"$line")"
  if [[ "$major" =~ ^[0-9]+$ ]] && ((major == 1 || major < 17)); then
    die "Kafka 4.x needs Java 17+, $JAVA is: $line"
  fi
}

# Download the broker and tools jars into $LIBS, once. The copy goes to a
# temporary directory that is renamed into place only when complete, under a
# lock, so an interrupted or concurrent fetch never leaves a half-filled libs/.
fetch() {
  [[ -f "$LIBS/kafka_2.13-$KAFKA_VERSION.jar" ]] && return 0
  command -v mvn >/dev/null 2>&1 || die "mvn not found: it is needed once to fetch Kafka $KAFKA_VERSION into $LIBS"
  [[ -f "$POM" ]] || die "missing $POM"
  mkdir -p "$VERSION_DIR"
  local lock_fd
  exec {lock_fd}>"$VERSION_DIR/.fetch.lock"
  if command -v flock >/dev/null 2>&1; then
    flock "$lock_fd"
  fi
  if [[ -f "$LIBS/kafka_2.13-$KAFKA_VERSION.jar" ]]; then
    exec {lock_fd}>&- # another process fetched it meanwhile
    return 0
  fi
  rm -rf "$VERSION_DIR"/libs.tmp.* # left by an interrupted fetch; we hold the lock
  local tmp start mvn_args=(-B -q -Dstyle.color=never -f "$POM" "-Dkafka.version=$KAFKA_VERSION")
  if [[ -n "${KAFKA_HARNESS_MAVEN_REPO:-}" ]]; then
    mvn_args+=("-Dmaven.repo.local=$KAFKA_HARNESS_MAVEN_REPO")
  fi
  tmp="$(mktemp -d "$VERSION_DIR/libs.tmp.XXXXXX")"
  start="$(now)"
  log "fetching Kafka $KAFKA_VERSION and its dependencies from Maven Central into $LIBS ..."
  if ! mvn "${mvn_args[@]}" dependency:copy-dependencies \
      "-DoutputDirectory=$tmp" -DincludeScope=runtime >"$tmp.mvn.log" 2>&1; then
    tail -n 40 "$tmp.mvn.log" >&2 || true
    rm -rf "$tmp" "$tmp.mvn.log"
    die "mvn could not fetch org.apache.kafka:kafka_2.13:$KAFKA_VERSION (output above)"
  fi
  rm -f "$tmp.mvn.log"
  if [[ ! -f "$tmp/kafka_2.13-$KAFKA_VERSION.jar" ]]; then
    rm -rf "$tmp"
    die "fetch finished but kafka_2.13-$KAFKA_VERSION.jar is not among the jars"
  fi
  rm -rf "$LIBS" # a leftover without the broker jar, if any
  mv -T "$tmp" "$LIBS"
  exec {lock_fd}>&-
  log "fetched $(find "$LIBS" -name '*.jar' | wc -l) jars ($(du -sh "$LIBS" | cut -f1)) in $(($(now) - start)) s"
}

# JVM options for short-lived tools: small heap, fast start-up, warnings only.
TOOL_JVM_OPTS=(
  -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true
  "-Dlog4j2.configurationFile=$HARNESS_DIR/tools-log4j2.xml"
)

# Run a Kafka tool main class with the cached jars; logs (warnings) on stderr.
run_tool() {
  find_java
  fetch
  "$JAVA" "${TOOL_JVM_OPTS[@]}" -cp "$LIBS/*" "$@"
}

# ------------------------------------------------------------------- helpers

port_open() { # port -> 0 if something accepts connections on 127.0.0.1:port
  # shellcheck disable=SC2016 # $1 is expanded by the inner shell
  timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

pick_port() { # prints a free loopback port, different from $1 if given
  local port tries=0
  while ((tries++ < 50)); do
    if command -v python3 >/dev/null 2>&1; then
      port="$(python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')"
    else
      port=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
    fi
    [[ "$port" == "${1:-}" ]] && continue
    port_open "$port" && continue
    printf '%s\n' "$port"
    return 0
  done
  die "could not find a free loopback port"
}

# Random Kafka cluster id: 16 random bytes, base64url without padding (what
# `kafka-storage random-uuid` prints; like Kafka, never starting with '-').
random_cluster_id() {
  local id
  while :; do
    id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
    [[ "$id" != -* ]] && break
  done
  printf '%s\n' "$id"
}

broker_pid() { # prints the pid of our running broker, or fails
  local pid
  [[ -f "$PID_FILE" ]] || return 1
  pid="$(<"$PID_FILE")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # Guard against a recycled pid: it must be a kafka.Kafka JVM on our config.
  if [[ -r "/proc/$pid/cmdline" ]]; then
    local cmd
    cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline")"
    [[ "$cmd" == *kafka.Kafka*"$STATE_DIR/server.properties"* ]] || return 1
  fi
  printf '%s\n' "$pid"
}

bootstrap() { [[ -f "$BOOTSTRAP_FILE" ]] && cat "$BOOTSTRAP_FILE"; }

print_env() {
  printf 'export KAFKA_BOOTSTRAP=%q\n' "$(bootstrap)"
  printf 'export KAFKA_HARNESS_DIR=%q\n' "$STATE_DIR"
}

# The broker answers a Metadata request: with kafka/metadata_probe.py (no JVM,
# ~50 ms) when python3 is there, else with the real TopicCommand (~1.5 s).
metadata_ok() {
  local bs
  bs="$(bootstrap)" || return 1
  if command -v python3 >/dev/null 2>&1; then
    python3 "$HARNESS_DIR/metadata_probe.py" "${bs%:*}" "${bs##*:}" 5 2>/dev/null
  else
    find_java
    timeout 30 "$JAVA" "${TOOL_JVM_OPTS[@]}" -cp "$LIBS/*" \
      org.apache.kafka.tools.TopicCommand --bootstrap-server "$bs" --list >/dev/null 2>&1
  fi
}

broker_healthy() {
  local bs
  bs="$(bootstrap)" || return 1
  port_open "${bs##*:}" && metadata_ok
}

# Refuse to touch a directory that this script did not create.
check_state_dir() {
  [[ -n "$STATE_DIR" && "$STATE_DIR" != "/" ]] || die "refusing to use '$STATE_DIR' as state dir"
  if [[ -d "$STATE_DIR" && ! -f "$STATE_DIR/$MARKER" ]] &&
    [[ -n "$(ls -A "$STATE_DIR" 2>/dev/null)" ]]; then
    die "$STATE_DIR exists, is not empty and was not made by kafka.sh; set KAFKA_HARNESS_DIR elsewhere"
  fi
}

# Serialise start/stop on one state dir (e.g. test processes starting the
# harness concurrently): the second waits, then finds a healthy broker to reuse.
STATE_LOCK_FD=""
with_state_lock() { # run "$@" holding a lock beside the state dir
  check_state_dir
  mkdir -p "$(dirname "$STATE_DIR")"
  exec {STATE_LOCK_FD}>"$STATE_DIR.lock"
  if command -v flock >/dev/null 2>&1; then
    flock "$STATE_LOCK_FD"
  fi
  "$@"
  exec {STATE_LOCK_FD}>&-
  STATE_LOCK_FD=""
}

# ------------------------------------------------------------------ commands

# Stops the broker's JVM, keeping the state dir.
stop_jvm() {
  check_state_dir
  local pid waited=0
  if pid="$(broker_pid)"; then
    log "stopping broker (pid $pid) ..."
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null && ((waited < STOP_TIMEOUT * 10)); do
      sleep 0.1
      waited=$((waited + 1))
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "broker still alive after ${STOP_TIMEOUT} s, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      waited=0
      while kill -0 "$pid" 2>/dev/null && ((waited++ < 100)); do sleep 0.1; done
    fi
    log "broker stopped"
  fi
}

do_stop() {
  stop_jvm
  if [[ -d "$STATE_DIR" ]]; then
    rm -rf "$STATE_DIR"
  fi
}

write_config() { # broker_port controller_port
  local p="$1" c="$2"
  cat >"$STATE_DIR/server.properties" <<EOF
# Written by tests/harness/kafka.sh: single-node KRaft broker+controller.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$c
listeners=PLAINTEXT://127.0.0.1:$p,CONTROLLER://127.0.0.1:$c
advertised.listeners=PLAINTEXT://127.0.0.1:$p,CONTROLLER://127.0.0.1:$c
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$STATE_DIR/data
num.network.threads=2
num.io.threads=4
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=true
delete.topic.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.segment.bytes=16777216
log.retention.hours=24
log.retention.check.interval.ms=300000
EOF
}

do_start() {
  local pid
  if pid="$(broker_pid)"; then
    if broker_healthy; then
      log "reusing the broker already running from $STATE_DIR (pid $pid) at $(bootstrap)"
      print_env
      return 0
    fi
    log "broker in $STATE_DIR (pid $pid) is not healthy; replacing it"
  fi
  do_stop

  find_java
  fetch

  local t0 port cport
  t0="$(now)"
  port="${KAFKA_HARNESS_PORT:-$(pick_port)}"
  cport="${KAFKA_HARNESS_CONTROLLER_PORT:-$(pick_port "$port")}"
  [[ "$port" != "$cport" ]] || die "broker and controller ports must differ ($port)"

  mkdir -p "$STATE_DIR/data" "$STATE_DIR/logs"
  : >"$STATE_DIR/$MARKER"
  printf '%s\n' "$KAFKA_VERSION" >"$STATE_DIR/version"
  write_config "$port" "$cport"

  local cluster_id
  cluster_id="$(random_cluster_id)"
  log "formatting storage (cluster id $cluster_id) ..."
  if ! run_tool kafka.tools.StorageTool format --ignore-formatted \
      -t "$cluster_id" -c "$STATE_DIR/server.properties" \
      >"$STATE_DIR/logs/format.log" 2>&1; then
    cat "$STATE_DIR/logs/format.log" >&2
    die "kafka.tools.StorageTool format failed"
  fi

  log "starting Kafka $KAFKA_VERSION on 127.0.0.1:$port (controller :$cport), state in $STATE_DIR ..."
  launch_and_wait "$port" "$t0"
}

# Starts the JVM on the state dir's server.properties and waits until the
# broker on 127.0.0.1:$1 answers; $2 is when the start began (for the log).
launch_and_wait() {
  local port="$1" t0="$2" pid
  local -a heap extra
  read -r -a heap <<<"$HEAP_OPTS"
  read -r -a extra <<<"$EXTRA_JVM_OPTS"
  local -a cmd=(
    "$JAVA" "${heap[@]}"
    -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20
    -XX:+ExplicitGCInvokesConcurrent -XX:+HeapDumpOnOutOfMemoryError
    "-XX:HeapDumpPath=$STATE_DIR/logs"
    -Djava.awt.headless=true
    "-Dkafka.logs.dir=$STATE_DIR/logs"
    "-Dlog4j2.configurationFile=$HARNESS_DIR/broker-log4j2.xml"
    "${extra[@]}"
    -cp "$LIBS/*"
    kafka.Kafka "$STATE_DIR/server.properties"
  )
  # The shell writes its own pid and then becomes the JVM, so the pid file holds
  # the JVM's pid. It is detached (new session, no stdin/stdout of ours), so
  # `eval "$(kafka.sh start)"` returns and Ctrl-C in the caller leaves it be.
  local -a detach=()
  command -v setsid >/dev/null 2>&1 && detach=(setsid)
  # The lock fd is closed for it: the broker must not hold the lock.
  # shellcheck disable=SC2016 # $$, $1 and $@ belong to the inner shell
  "${detach[@]}" bash -c 'echo "$$" >"$1"; shift; exec "$@"' _ "$PID_FILE" "${cmd[@]}" \
    </dev/null >>"$STATE_DIR/logs/kafka.out" 2>&1 {STATE_LOCK_FD}>&- &
  printf '127.0.0.1:%s\n' "$port" >"$BOOTSTRAP_FILE"

  local deadline=$(($(now) + TIMEOUT)) ready=""
  while (($(now) < deadline)); do
    if [[ -s "$PID_FILE" ]] && ! broker_pid >/dev/null; then
      break # the JVM exited
    fi
    if port_open "$port" && metadata_ok; then
      ready=1
      break
    fi
    sleep 0.25
  done
  if [[ -z "$ready" ]]; then
    if broker_pid >/dev/null; then
      log "error: broker did not answer on 127.0.0.1:$port within ${TIMEOUT} s"
    else
      log "error: broker exited during start-up"
    fi
    if grep -qE '\] (ERROR|FATAL) ' "$STATE_DIR/logs/server.log" 2>/dev/null; then
      log "---- first errors in $STATE_DIR/logs/server.log ----"
      grep -E '\] (ERROR|FATAL) ' "$STATE_DIR/logs/server.log" | head -n 5 >&2 || true
    fi
    log "---- tail of $STATE_DIR/logs/server.log ----"
    tail -n 40 "$STATE_DIR/logs/server.log" >&2 2>/dev/null || true
    log "---- tail of $STATE_DIR/logs/kafka.out ----"
    tail -n 20 "$STATE_DIR/logs/kafka.out" >&2 2>/dev/null || true
    log "state dir kept for inspection; run '$0 stop' to remove it"
    if pid="$(broker_pid)"; then kill -KILL "$pid" 2>/dev/null || true; fi
    exit 1
  fi
  log "broker ready at 127.0.0.1:$port (pid $(<"$PID_FILE"), $(($(now) - t0)) s)"
  print_env
}

do_start_broker() {
  check_state_dir
  local pid port
  if pid="$(broker_pid)"; then
    log "the broker in $STATE_DIR is already running (pid $pid)"
    print_env
    return 0
  fi
  [[ -f "$STATE_DIR/server.properties" && -d "$STATE_DIR/data" && -f "$BOOTSTRAP_FILE" ]] ||
    die "no stopped broker in $STATE_DIR to start again (use 'start' for a new one)"
  find_java
  fetch
  port="$(bootstrap)"
  port="${port##*:}"
  if port_open "$port"; then
    die "port $port of the stopped broker is taken by another process"
  fi
  log "starting the broker again on 127.0.0.1:$port from $STATE_DIR ..."
  rm -f "$PID_FILE" # the stopped JVM's: the wait below must see the new one
  launch_and_wait "$port" "$(now)"
}

do_status() {
  local pid
  if pid="$(broker_pid)"; then
    printf 'running: pid %s, bootstrap %s, Kafka %s, state %s\n' \
      "$pid" "$(bootstrap)" "$(cat "$STATE_DIR/version" 2>/dev/null || echo '?')" "$STATE_DIR"
    return 0
  fi
  printf 'not running (state dir %s)\n' "$STATE_DIR"
  return 1
}

do_topic() {
  [[ $# -eq 2 && "$2" =~ ^[0-9]+$ ]] || die "usage: $0 topic NAME PARTITIONS"
  broker_pid >/dev/null || die "no broker running from $STATE_DIR (run '$0 start')"
  run_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$(bootstrap)" \
    --create --if-not-exists --topic "$1" --partitions "$2" --replication-factor 1 >&2
  log "topic $1 ready ($2 partitions)"
}

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
}

COMMAND="${1:-}"
[[ $# -gt 0 ]] && shift
case "$COMMAND" in
  start) with_state_lock do_start ;;
  stop) with_state_lock do_stop ;;
  restart) with_state_lock do_stop && with_state_lock do_start ;;
  stop-broker) with_state_lock stop_jvm ;;
  start-broker) with_state_lock do_start_broker ;;
  status) do_status ;;
  env) broker_pid >/dev/null || die "no broker running from $STATE_DIR"; print_env ;;
  fetch) find_java; fetch ;;
  classpath) fetch; printf '%s\n' "$LIBS/*" ;;
  topic) do_topic "$@" ;;
  tool)
    [[ $# -ge 1 ]] || die "usage: $0 tool MAIN_CLASS [ARGS...]"
    run_tool "$@"
    ;;
  -h | --help | help) usage ;;
  *)
    usage
    exit 2
    ;;
esac
