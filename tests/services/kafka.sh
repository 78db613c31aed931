#!/usr/bin/env bash
# Runs a real single-node Apache Kafka broker (KRaft, combined broker+controller) on loopback.
#
#   kafka.sh start STATE_DIR   fetch the broker (Maven, cached), format a fresh log dir,
#                              start it on free ports, wait until it answers a metadata
#                              request, write STATE_DIR/env (SB_TEST_KAFKA_BROKERS=...)
#   kafka.sh stop STATE_DIR    stop the broker started there (by PID) and remove its data
#
# The jars come from tests/services/kafka/pom.xml through Maven Central (cached in ~/.m2) and
# are copied once per version into ~/.cache/switchboard/kafka-<version>, so later runs start
# without Maven at all.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cmd=${1:?usage: kafka.sh start|stop STATE_DIR}
state=${2:?usage: kafka.sh start|stop STATE_DIR}
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/kafka/pom.xml")
cache=${SB_KAFKA_CACHE:-$HOME/.cache/switchboard}/kafka-$version

log() { echo "kafka.sh: $*" >&2; }

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pick_port() {
    local p i
    for i in $(seq 1 200); do
        p=$((20000 + RANDOM % 30000))
        if port_free "$p"; then echo "$p"; return 0; fi
    done
    log "no free port found"; return 1
}

fetch() {
    if [ -f "$cache/.complete" ]; then return 0; fi
    log "fetching Apache Kafka $version with Maven (cached in ~/.m2)"
    local work; work=$(mktemp -d)
    cp "$here/kafka/pom.xml" "$work/"
    (cd "$work" && mvn -q -B package) >&2
    mkdir -p "$cache"
    rm -rf "$cache/libs"
    mv "$work/target/kafka-libs" "$cache/libs"
    rm -rf "$work"
    touch "$cache/.complete"
}

start() {
    fetch
    mkdir -p "$state"
    local port cport
    port=$(pick_port); cport=$(pick_port)
    while [ "$cport" = "$port" ]; do cport=$(pick_port); done
    mkdir -p "$state/data" "$state/logs"
    cat > "$state/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$state/data
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.flush.interval.messages=9223372036854775807
PROPS
    local java=(java -Xms256m -Xmx768m -XX:+UseG1GC -XX:TieredStopAtLevel=1
                -Dlog4j2.configurationFile="$here/kafka/log4j2.properties"
                -Dkafka.logs.dir="$state/logs" -cp "$cache/libs/*")
    local t0 cluster_id
    t0=$(date +%s.%N)
    cluster_id=$("${java[@]}" kafka.tools.StorageTool random-uuid)
    "${java[@]}" kafka.tools.StorageTool format -t "$cluster_id" \
        -c "$state/server.properties" > "$state/logs/format.log" 2>&1
    # The JIT tier limit above makes the broker start faster; it is plenty for tests.
    nohup "${java[@]}" kafka.Kafka "$state/server.properties" \
        > "$state/logs/stdout.log" 2>&1 &
    echo $! > "$state/pid"
    local deadline=$((SECONDS + 120))
    until kcat -b "127.0.0.1:$port" -L -m 2 >/dev/null 2>&1; do
        if ! kill -0 "$(cat "$state/pid")" 2>/dev/null; then
            log "broker exited during start-up:"; tail -30 "$state/logs/stdout.log" "$state/logs/broker.log" >&2 || true
            return 1
        fi
        if [ $SECONDS -ge $deadline ]; then log "broker did not answer within 120 s"; return 1; fi
        sleep 0.3
    done
    local t1; t1=$(date +%s.%N)
    echo "SB_TEST_KAFKA_BROKERS=127.0.0.1:$port" > "$state/env"
    log "Apache Kafka $version up on 127.0.0.1:$port (pid $(cat "$state/pid")) in $(echo "$t1 - $t0" | bc 2>/dev/null || awk "BEGIN{print $t1-$t0}") s"
}

stop() {
    [ -f "$state/pid" ] || return 0
    local pid; pid=$(cat "$state/pid")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$state/pid"
    rm -rf "$state/data"
}

case "$cmd" in
    start) start ;;
    stop) stop ;;
    *) log "unknown command $cmd"; exit 2 ;;
esac
