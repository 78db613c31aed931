#!/usr/bin/env bash
# RabbitMQ consumer benchmark: N persistent 314-byte events are pre-published (pipelined
# confirms) to a fresh queue for each contender, then consumed by
#   (a) raw     bench_amqp_raw: rabbitmq-c, prefetch 500, basic.ack multiple every 100
#   (b) noop    switchboard run, prefetch 500, a no-op handler (bench_noop.so)
#   (c) record  switchboard run, prefetch 500, the built-in `record` handler (+ the counter)
# on the same broker in the same run. Prints msgs/s (first to last message) and max RSS
# (/usr/bin/time) of each, and the ratios to raw. Use a Release build without sanitizers:
#
#   tests/bench/bench_amqp.sh BUILD_DIR [N]        (default N = 200000)
#
# Environment: SB_TEST_AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/%2f).
set -euo pipefail
build=${1:?usage: bench_amqp.sh BUILD_DIR [N]}
n=${2:-200000}
url=${SB_TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
raw=$build/tests/bench/bench_amqp_raw
noop=$build/tests/bench/bench_noop.so
sb=$build/core/switchboard
work=$(mktemp -d /tmp/bench-amqp.XXXXXX)
trap 'rm -rf "$work"' EXIT
tag=$$

prepare() { # prepare NAME -> exchange/queue names, topology, pre-published events
    ex=bench.$1.x.$tag q=bench.$1.q.$tag
    "$raw" setup "$url" "$ex" "$q"
    "$raw" publish "$url" "$ex" DataSync.Completed "$n"
}

cleanup_q() {
    "$raw" teardown "$url" "$ex" "$q" || true
    "$raw" teardown "$url" "$ex.dlx" "$q.dlq" >/dev/null 2>&1 || true
}

sb_config() { # sb_config WITH_RECORD
    cat <<YAML
service: {name: bench-amqp, shutdown_timeout: 30s}
admin: {listen: ""}
log: {level: warn, format: text}
transport:
  kind: amqp
  amqp: {url: "$url", exchange: $ex, queue: $q, prefetch: 500}
idempotency: {store: none}
handlers:
YAML
    if [ "$1" = 1 ]; then
        echo "  - {name: rec, module: record, bind: [\"#\"], config: {path: $work/ledger.jsonl}}"
    fi
    echo "  - {name: count, module: $noop, config: {stop_after: $n}}"
}

declare -A rate rss
run() { # run NAME: consume, fill rate[NAME] and rss[NAME]
    local name=$1 out=$work/$1.out
    case $name in
    raw) /usr/bin/time -f "RSS_KB %M" "$raw" consume "$url" "$q" "$n" 2> "$out" ;;
    noop | record)
        sb_config "$([ "$name" = record ] && echo 1 || echo 0)" > "$work/$name.yaml"
        rm -f "$work/ledger.jsonl"
        /usr/bin/time -f "RSS_KB %M" "$sb" run -c "$work/$name.yaml" 2> "$out" ;;
    esac
    rate[$name]=$(awk '/^(RAW|NOOP)_DONE/ {print $4}' "$out")
    rss[$name]=$(awk '/^RSS_KB/ {print $2}' "$out")
    if [ -z "${rate[$name]}" ]; then echo "$name failed:"; cat "$out"; exit 1; fi
}

for c in raw noop record; do
    echo "== $c: publishing $n events"
    prepare "$c"
    echo "== $c: consuming"
    run "$c"
    cleanup_q
done

printf '\n%-8s %12s %10s %10s\n' contender "msgs/s" "max RSS" "vs raw"
for c in raw noop record; do
    printf '%-8s %12.0f %8.1f MB %9.1f%%\n' "$c" "${rate[$c]}" "$(echo "${rss[$c]} / 1024" | bc -l)" \
        "$(echo "100 * ${rate[$c]} / ${rate[raw]}" | bc -l)"
done
echo "(N = $n persistent 314-byte events; CPUs shared with whatever else runs: $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg))"
