#!/usr/bin/env bash
# Runs a real single-node Apache Kafka broker (KRaft, combined broker+controller) on loopback.
#
#   kafka.sh start STATE_DIR   fetch the broker (Maven, cached), format a fresh log dir,
#                              start it on free ports, wait until it answers a metadata
#                              request, write STATE_DIR/env (SB_TEST_KAFKA_BROKERS=...)
#   kafka.sh stop STATE_DIR    stop the broker started there (by PID) and remove its data
#
# Besides the PLAINTEXT listener every test uses, the same broker has (for
# tests/integration/test_kafka_security.c):
#   SASL_PLAINTEXT  mechanisms PLAIN (user sbtplain / sbt-plain-pw-Q7x2, from the listener's
#                   JAAS config) and SCRAM-SHA-256 + SCRAM-SHA-512 (user sbtscram /
#                   sbt-scram-pw-K9m4, both written into the metadata log at format time)
#                   -> SB_TEST_KAFKA_SASL_BROKERS
#   SSL             server certificate signed by a throw-away CA made with openssl at each
#                   start (PEM files, no client authentication)
#                   -> SB_TEST_KAFKA_SSL_BROKERS, SB_TEST_KAFKA_SSL_CA (the CA's PEM file)
# When those two listeners do not answer, the variables are left out of the env file (and a
# warning printed) rather than failing the start: the PLAINTEXT suite does not need them.
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

# Test-only credentials of the SASL listener (also in tests/integration/test_kafka_security.c).
plain_user=sbtplain plain_pass=sbt-plain-pw-Q7x2
scram_user=sbtscram scram_pass=sbt-scram-pw-K9m4

# A CA and a broker certificate for 127.0.0.1 signed by it, both EC P-256 (key generation
# in milliseconds). The broker reads its key and chain from one PEM file (PKCS#8 key).
make_certs() {
    local d=$1
    rm -rf "$d"; mkdir -p "$d"
    (
        cd "$d"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 365 \
            -subj "/CN=switchboard test CA" -keyout ca.key -out ca.pem \
            -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -subj "/CN=127.0.0.1" -keyout broker.key -out broker.csr
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' > broker.ext
        openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 365 \
            -extfile broker.ext -out broker.pem
        cat broker.key broker.pem > broker-keystore.pem
        rm -f ca.key broker.csr broker.ext ca.srl
    ) > "$d/openssl.log" 2>&1
}

# True when the SASL (PLAIN) and SSL listeners answer a metadata request. Not SCRAM: kcat's
# librdkafka (< 2.6.1) builds a client-final-message that Kafka 4 rejects (librdkafka#4895).
secure_answers() {
    kcat -b "127.0.0.1:$1" -L -m 2 -X security.protocol=sasl_plaintext -X sasl.mechanisms=PLAIN \
         -X sasl.username="$plain_user" -X sasl.password="$plain_pass" >/dev/null 2>&1 &&
    kcat -b "127.0.0.1:$2" -L -m 2 -X security.protocol=ssl -X ssl.ca.location="$3" \
         >/dev/null 2>&1
}

start() {
    fetch
    mkdir -p "$state"
    local port cport sport tport
    port=$(pick_port); cport=$(pick_port)
    while [ "$cport" = "$port" ]; do cport=$(pick_port); done
    sport=$(pick_port)
    while [ "$sport" = "$port" ] || [ "$sport" = "$cport" ]; do sport=$(pick_port); done
    tport=$(pick_port)
    while [ "$tport" = "$port" ] || [ "$tport" = "$cport" ] || [ "$tport" = "$sport" ]; do
        tport=$(pick_port)
    done
    mkdir -p "$state/data" "$state/logs"
    local certs=$state/certs
    make_certs "$certs" || { log "openssl failed:"; cat "$certs/openssl.log" >&2; return 1; }
    cat > "$state/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport,SASL_PLAINTEXT://127.0.0.1:$sport,SSL://127.0.0.1:$tport
advertised.listeners=PLAINTEXT://127.0.0.1:$port,SASL_PLAINTEXT://127.0.0.1:$sport,SSL://127.0.0.1:$tport
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL
listener.name.sasl_plaintext.sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$plain_user="$plain_pass";
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.ssl.ssl.keystore.type=PEM
listener.name.ssl.ssl.keystore.location=$certs/broker-keystore.pem
listener.name.ssl.ssl.client.auth=none
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
        -c "$state/server.properties" \
        --add-scram "SCRAM-SHA-256=[name=$scram_user,password=$scram_pass]" \
        --add-scram "SCRAM-SHA-512=[name=$scram_user,password=$scram_pass]" \
        > "$state/logs/format.log" 2>&1
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
    # All listeners open together; this normally passes at the first try.
    local secure=1 sdeadline=$((SECONDS + 20))
    until secure_answers "$sport" "$tport" "$certs/ca.pem"; do
        if [ $SECONDS -ge $sdeadline ]; then secure=0; break; fi
        sleep 0.3
    done
    local t1; t1=$(date +%s.%N)
    echo "SB_TEST_KAFKA_BROKERS=127.0.0.1:$port" > "$state/env"
    if [ "$secure" = 1 ]; then
        {
            echo "SB_TEST_KAFKA_SASL_BROKERS=127.0.0.1:$sport"
            echo "SB_TEST_KAFKA_SSL_BROKERS=127.0.0.1:$tport"
            echo "SB_TEST_KAFKA_SSL_CA=$certs/ca.pem"
        } >> "$state/env"
        log "SASL_PLAINTEXT on 127.0.0.1:$sport, SSL on 127.0.0.1:$tport (CA $certs/ca.pem)"
    else
        log "WARNING: the SASL/SSL listeners (127.0.0.1:$sport, :$tport) did not answer; their variables are not set"
    fi
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
    rm -rf "$state/data" "$state/certs"
}

case "$cmd" in
    start) start ;;
    stop) stop ;;
    *) log "unknown command $cmd"; exit 2 ;;
esac
