#!/usr/bin/env bash
# Kafka consume benchmark: N (default 1,000,000) 314-byte events in a 3-partition topic on a
# real broker, consumed from the beginning by (a) a raw librdkafka consumer (bench_kafka_raw,
# tuned, no parsing), (b) switchboard with a no-op handler, (c) switchboard reading 3 body
# fields, (d) Node kafkajs with JSON.parse + the same 3 reads. Each gets its own consumer
# group; msgs/s is first-to-last message (group join excluded); max RSS from /usr/bin/time.
#
#   tests/bench/bench_kafka.sh BUILD_DIR [N]
#
# BUILD_DIR: a Release build without sanitizers (figures from sanitizer builds are
# meaningless). Uses SB_TEST_KAFKA_BROKERS, or starts a broker with tests/services/kafka.sh.
# npm installs kafkajs into a temporary directory.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=$(cd "${1:?usage: bench_kafka.sh BUILD_DIR [N]}" && pwd)
n=${2:-1000000}
work=$(mktemp -d /tmp/sb-bench-kafka.XXXXXX)
started=
cleanup() {
    [ -n "$started" ] && "$root/tests/services/kafka.sh" stop "$work/kafka" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
if [ -z "${SB_TEST_KAFKA_BROKERS:-}" ]; then
    "$root/tests/services/kafka.sh" start "$work/kafka" >&2
    started=1
    # shellcheck disable=SC1091
    . "$work/kafka/env"
fi
brokers=$SB_TEST_KAFKA_BROKERS
topic=sb-bench-$$-$RANDOM
raw=$build/tests/bench/bench_kafka_raw
mod=$(find "$build/tests/bench" -name 'bench_kafka_mod*.so' | head -1)
sb=$build/core/switchboard

echo "producing $n events to $topic on $brokers" >&2
"$raw" produce "$brokers" "$topic" "$n"

measure() { # name command...: prints "name rate rss_kb"
    local name=$1; shift
    local out="$work/$name.out"
    /usr/bin/time -f "maxrss_kb=%M" "$@" > "$out" 2>&1 || { cat "$out" >&2; echo "$name failed" >&2; exit 1; }
    local rate rss
    rate=$(sed -n 's/.*rate=\([0-9]*\).*/\1/p' "$out" | tail -1)
    rss=$(sed -n 's/.*maxrss_kb=\([0-9]*\).*/\1/p' "$out" | tail -1)
    echo "$name $rate $rss"
}

sbcfg() { # read(true|false) -> config path
    local cfg="$work/sb-$1.yaml"
    cat > "$cfg" <<YAML
service: {name: bench, shutdown_timeout: 10s}
log: {level: warn, format: text}
transport:
  kind: kafka
  kafka:
    brokers: "$brokers"
    group_id: bench-sb-$1-$$
    topics: [$topic]
    create_topics: false
handlers:
  - name: count
    module: $mod
    config: {n: $n, read: $1}
idempotency: {store: none}
admin: {listen: ""}
YAML
    echo "$cfg"
}

mkdir -p "$work/node"
( cd "$work/node" && npm init -y >/dev/null && npm install --silent --no-audit --no-fund kafkajs@2 >/dev/null )
cat > "$work/node/consume.js" <<'JS'
const { Kafka, logLevel } = require('kafkajs');
const [brokers, topic, group, n] = process.argv.slice(2);
const N = Number(n);
const kafka = new Kafka({ clientId: 'bench', brokers: brokers.split(','), logLevel: logLevel.NOTHING });
const consumer = kafka.consumer({ groupId: group, maxBytes: 10485760 });
let seen = 0, t0 = 0, sink = 0;
(async () => {
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({
    eachBatch: async ({ batch, resolveOffset, heartbeat }) => {
      for (const m of batch.messages) {
        if (seen++ === 0) t0 = process.hrtime.bigint();
        const e = JSON.parse(m.value);
        sink += e.JobId.length + e.SourceSystem.length + e.RecordsProcessed;
        resolveOffset(m.offset);
        if (seen === N) {
          const s = Number(process.hrtime.bigint() - t0) / 1e9;
          console.log(`events=${N} seconds=${s.toFixed(3)} rate=${Math.round(N / s)}`);
          process.exit(0);
        }
      }
      await heartbeat();
    },
  });
})();
JS

results=$work/results
{
    measure raw "$raw" "$brokers" "$topic" "bench-raw-$$" "$n"
    measure sb_noop "$sb" run -c "$(sbcfg false)"
    measure sb_read3 "$sb" run -c "$(sbcfg true)"
    measure kafkajs node "$work/node/consume.js" "$brokers" "$topic" "bench-js-$$" "$n"
} | tee "$results"

awk -v n="$n" '
{ rate[$1] = $2; rss[$1] = $3 }
END {
    printf "\n%d events of 314 bytes, 3 partitions\n", n
    printf "%-10s %12s %12s\n", "consumer", "msgs/s", "max RSS MB"
    split("raw sb_noop sb_read3 kafkajs", order, " ")
    for (i = 1; i <= 4; i++) { k = order[i]; printf "%-10s %12d %12.1f\n", k, rate[k], rss[k] / 1024 }
    printf "(b) switchboard no-op / (a) raw     = %.2f (goal >= 0.80)\n", rate["sb_noop"] / rate["raw"]
    printf "(c) switchboard 3 reads / (d) kafkajs = %.2f (goal >= 1.5)\n", rate["sb_read3"] / rate["kafkajs"]
    printf "switchboard max RSS %.1f MB (goal < 64 MB)\n", (rss["sb_noop"] > rss["sb_read3"] ? rss["sb_noop"] : rss["sb_read3"]) / 1024
}' "$results"
