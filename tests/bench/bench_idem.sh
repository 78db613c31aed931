#!/usr/bin/env bash
# Idempotency benchmark: what the Redis store costs end to end, and switchboard against an
# idiomatic Node consumer doing the same work. N persistent 314-byte events (unique Ids) are
# pre-published (pipelined confirms) to a fresh queue for each contender, then consumed by
#   off    switchboard run, prefetch 500, idempotency.store: none, a counting handler
#   on     the same with idempotency.store: redis (claim + done per message, pipelined)
#   node   Node.js: amqplib + ioredis, prefetch 500, per message JSON.parse, SET id NX PX,
#          ack (npm installs both into a temporary directory)
# and, when a Kafka broker is given (SB_TEST_KAFKA_BROKERS), the same off/on pair on one
# pre-produced 3-partition topic (kafka_off, kafka_on; one group each; the default
# concurrency, one message at a time per partition: the producer sets no keys).
# All Redis traffic goes to a private redis-server started here (no persistence), so the
# shared instance is neither loaded nor left with keys. Prints msgs/s (first to last
# message) and max RSS (/usr/bin/time) of each, and the ratios against the goals:
# on >= 80% of off; switchboard with idempotency >= 2x Node in <= 1/10 of its memory.
#
#   tests/bench/bench_idem.sh BUILD_DIR [N]        (default N = 200000)
#
# BUILD_DIR: a Release build without sanitizers. Environment: SB_TEST_AMQP_URL (default
# amqp://guest:guest@127.0.0.1:5672/%2f), SB_TEST_KAFKA_BROKERS (optional).
set -euo pipefail
build=$(cd "${1:?usage: bench_idem.sh BUILD_DIR [N]}" && pwd)
n=${2:-200000}
url=${SB_TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
brokers=${SB_TEST_KAFKA_BROKERS:-}
raw=$build/tests/bench/bench_amqp_raw
kraw=$build/tests/bench/bench_kafka_raw
noop=$build/tests/bench/bench_noop.so
kmod=$(find "$build/tests/bench" -name 'bench_kafka_mod*.so' | head -1)
sb=$build/core/switchboard
work=$(mktemp -d /tmp/bench-idem.XXXXXX)
tag=$$
redis_pid=
cleanup() {
    [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

# ---- a private redis-server -----------------------------------------------------------------
rport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
    --dir "$work" > "$work/redis.log" 2>&1 &
redis_pid=$!
for _ in $(seq 50); do redis-cli -p "$rport" ping > /dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p "$rport" ping > /dev/null
rurl=redis://127.0.0.1:$rport/0

# ---- the Node consumer ----------------------------------------------------------------------
mkdir -p "$work/node"
( cd "$work/node" && npm init -y > /dev/null &&
  npm install --silent --no-audit --no-fund amqplib@0 ioredis@5 > /dev/null )
cat > "$work/node/consume.js" <<'JS'
// The idiomatic consumer: prefetch 500, parse, claim the id with SET NX PX, ack.
const amqp = require('amqplib');
const Redis = require('ioredis');
const [url, queue, redisUrl, n] = process.argv.slice(2);
const N = Number(n);
(async () => {
  const redis = new Redis(redisUrl);
  const conn = await amqp.connect(url);
  const ch = await conn.createChannel();
  await ch.prefetch(500);
  let seen = 0, t0 = 0n, dups = 0;
  await ch.consume(queue, async (msg) => {
    const ev = JSON.parse(msg.content);
    if (seen === 0) t0 = process.hrtime.bigint();
    const ok = await redis.set(`node:idem:${ev.Id}`, '1', 'NX', 'PX', 604800000);
    if (ok === null) dups++;
    ch.ack(msg);
    if (++seen === N) {
      const s = Number(process.hrtime.bigint() - t0) / 1e9;
      console.error(`NODE_DONE ${N} ${s.toFixed(3)} ${Math.round((N - 1) / s)} dups=${dups}`);
      await ch.close(); await conn.close(); redis.disconnect();
      process.exit(0);
    }
  });
})().catch((e) => { console.error(e); process.exit(1); });
JS

# ---- RabbitMQ --------------------------------------------------------------------------------
prepare() { # prepare NAME: topology and N pre-published events
    ex=bench.idem.$1.x.$tag q=bench.idem.$1.q.$tag
    "$raw" setup "$url" "$ex" "$q"
    "$raw" publish "$url" "$ex" DataSync.Completed "$n"
}
cleanup_q() {
    "$raw" teardown "$url" "$ex" "$q" || true
    "$raw" teardown "$url" "$ex.dlx" "$q.dlq" > /dev/null 2>&1 || true
}
idem_yaml() { # idem_yaml on|off
    if [ "$1" = on ]; then
        echo "idempotency: {store: redis, redis: {url: \"$rurl\", prefix: \"sb:idem:$tag:\"}}"
    else
        echo "idempotency: {store: none}"
    fi
}
amqp_config() { # amqp_config on|off
    cat <<YAML
service: {name: bench-idem, shutdown_timeout: 30s}
admin: {listen: ""}
log: {level: warn, format: text}
transport:
  kind: amqp
  amqp: {url: "$url", exchange: $ex, queue: $q, prefetch: 500}
$(idem_yaml "$1")
handlers:
  - {name: count, module: $noop, config: {stop_after: $n}}
YAML
}
kafka_config() { # kafka_config on|off
    cat <<YAML
service: {name: bench-idem, shutdown_timeout: 30s}
admin: {listen: ""}
log: {level: warn, format: text}
transport:
  kind: kafka
  kafka: {brokers: "$brokers", group_id: bench-idem-$1-$tag, topics: [$ktopic],
          create_topics: false}
$(idem_yaml "$1")
handlers:
  - {name: count, module: $kmod, config: {n: $n, read: true}}
YAML
}

declare -A rate rss
run() { # run NAME: consume, fill rate[NAME] and rss[NAME]
    local name=$1 out=$work/$1.out
    case $name in
    off | on)
        amqp_config "$name" > "$work/$name.yaml"
        /usr/bin/time -f "RSS_KB %M" "$sb" run -c "$work/$name.yaml" 2> "$out" ;;
    node)
        /usr/bin/time -f "RSS_KB %M" node "$work/node/consume.js" "$url" "$q" "$rurl" "$n" \
            2> "$out" ;;
    kafka_off | kafka_on)
        kafka_config "${name#kafka_}" > "$work/$name.yaml"
        /usr/bin/time -f "RSS_KB %M" "$sb" run -c "$work/$name.yaml" > /dev/null 2> "$out" ;;
    esac
    rate[$name]=$(awk '/^(NOOP|NODE)_DONE/ {print $4} /rate=/ {sub(/.*rate=/, ""); print $1}' "$out" | tail -1)
    rss[$name]=$(awk '/^RSS_KB/ {print $2}' "$out")
    if [ -z "${rate[$name]}" ]; then echo "$name failed:"; cat "$out"; exit 1; fi
}

contenders="off on node"
for c in off on node; do
    echo "== $c: publishing $n events"
    prepare "$c"
    echo "== $c: consuming"
    run "$c"
    cleanup_q
done
if [ -n "$brokers" ] && [ -x "$kraw" ] && [ -n "$kmod" ]; then
    ktopic=sb-bench-idem-$tag-$RANDOM
    echo "== kafka: producing $n events to $ktopic"
    "$kraw" produce "$brokers" "$ktopic" "$n"
    for c in kafka_off kafka_on; do
        echo "== $c: consuming"
        run "$c"
    done
    contenders="$contenders kafka_off kafka_on"
fi

mb() { echo "$1 / 1024" | bc -l; }
printf '\n%-10s %12s %10s\n' contender "msgs/s" "max RSS"
for c in $contenders; do
    printf '%-10s %12.0f %7.1f MB\n' "$c" "${rate[$c]}" "$(mb "${rss[$c]}")"
done
echo
printf 'RabbitMQ: on / off          = %5.1f%%  (goal >= 80%%)\n' \
    "$(echo "100 * ${rate[on]} / ${rate[off]}" | bc -l)"
printf 'RabbitMQ: on / node (rate)  = %5.2fx  (goal >= 2x)\n' \
    "$(echo "${rate[on]} / ${rate[node]}" | bc -l)"
printf 'RabbitMQ: on / node (RSS)   = %5.3f   (goal <= 0.100)\n' \
    "$(echo "${rss[on]} / ${rss[node]}" | bc -l)"
if [ -n "${rate[kafka_on]:-}" ]; then
    printf 'Kafka:    on / off          = %5.1f%%  (goal >= 80%%)\n' \
        "$(echo "100 * ${rate[kafka_on]} / ${rate[kafka_off]}" | bc -l)"
fi
echo "(N = $n persistent 314-byte events, unique Ids; Redis: a private redis-server;" \
     "$(nproc) cores shared with whatever else runs, load $(cut -d' ' -f1-3 /proc/loadavg))"
