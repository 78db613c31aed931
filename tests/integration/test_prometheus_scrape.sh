#!/bin/sh
# A real Prometheus server (Debian's /usr/bin/prometheus) scrapes `switchboard run` on the
# in-memory broker (it idles, so it stays up for as long as the test needs) every second;
# the test waits until the target is up, then queries through the HTTP API: the target's
# `up` is 1, switchboard_broker_connected is 1, process_start_time_seconds is > 0, and the
# process_cpu_seconds_total and switchboard_messages_received_total counters are present
# (an idle consumer receives nothing and may have used less CPU than the 10 ms resolution).
# Everything it starts is stopped by PID; exit 77 (skipped) without prometheus or curl.
# usage: test_prometheus_scrape.sh SWITCHBOARD_BINARY SOURCE_DIR
set -u
bin=$1
src=$2
prom=${PROMETHEUS:-/usr/bin/prometheus}
[ -x "$prom" ] || { echo "skip: no $prom"; exit 77; }
command -v curl >/dev/null 2>&1 || { echo "skip: no curl"; exit 77; }

tmp=$(mktemp -d)
sb_pid=
prom_pid=
cleanup() {
    [ -n "$prom_pid" ] && kill "$prom_pid" 2>/dev/null && wait "$prom_pid" 2>/dev/null
    [ -n "$sb_pid" ] && kill "$sb_pid" 2>/dev/null && wait "$sb_pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

fail() {
    echo "FAIL: $*"
    echo "--- switchboard log"
    tail -n 20 "$tmp/sb.log" 2>/dev/null
    echo "--- prometheus log"
    tail -n 20 "$tmp/prom.log" 2>/dev/null
    exit 1
}

# free_port: a loopback TCP port nobody listens on (checked with ss when available).
free_port() {
    while :; do
        p=$(( (($$ * 7919) + $(date +%N | sed 's/^0*//;s/^$/0/')) % 20000 + 30000 ))
        if command -v ss >/dev/null 2>&1; then
            ss -ltnH "sport = :$p" 2>/dev/null | grep -q . && continue
        fi
        echo "$p"
        return
    done
}

sb_port=$(free_port)
prom_port=$(free_port)
[ "$sb_port" != "$prom_port" ] || prom_port=$((prom_port + 1))

cat >"$tmp/sb.yaml" <<EOF
service:
  name: prom-scrape-test
log:
  level: info
  format: text
transport:
  kind: memory
intake:
  id_strategy: strict
schemas:
  dir: $src/schemas
handlers:
  - name: log-everything
    module: log
    bind: ["#"]
idempotency:
  store: memory
admin:
  listen: 127.0.0.1:$sb_port
EOF

cat >"$tmp/prom.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: switchboard
    scrape_interval: 1s
    scrape_timeout: 900ms
    static_configs:
      - targets: ["127.0.0.1:$sb_port"]
EOF

"$bin" run -c "$tmp/sb.yaml" >"$tmp/sb.log" 2>&1 &
sb_pid=$!

# The admin endpoint answers first (so Prometheus' first scrape already succeeds).
i=0
until curl -fsS "http://127.0.0.1:$sb_port/healthz" >/dev/null 2>&1; do
    i=$((i + 1))
    [ "$i" -le 100 ] || fail "switchboard admin endpoint did not come up on port $sb_port"
    kill -0 "$sb_pid" 2>/dev/null || fail "switchboard run exited"
    sleep 0.1
done

"$prom" --config.file="$tmp/prom.yml" --storage.tsdb.path="$tmp/data" \
    --web.listen-address="127.0.0.1:$prom_port" >"$tmp/prom.log" 2>&1 &
prom_pid=$!

api="http://127.0.0.1:$prom_port/api/v1"

# Wait until the target reports health "up" (first scrape done).
i=0
until curl -fsS "$api/targets" 2>/dev/null | grep -q '"health":"up"'; do
    i=$((i + 1))
    [ "$i" -le 300 ] || fail "the switchboard target never became up: $(curl -sS "$api/targets" 2>&1)"
    kill -0 "$prom_pid" 2>/dev/null || fail "prometheus exited"
    kill -0 "$sb_pid" 2>/dev/null || fail "switchboard run exited"
    sleep 0.2
done

# value QUERY: the first sample's value of an instant query ("" when no result).
value() {
    curl -fsS -G "$api/query" --data-urlencode "query=$1" 2>/dev/null |
        sed -n 's/.*"value":\[[0-9.e+]*,"\([^"]*\)"\].*/\1/p' | head -n 1
}

# gt0 VALUE: true when VALUE is a number > 0.
gt0() {
    awk -v v="$1" 'BEGIN { exit !(v != "" && v + 0 > 0) }'
}

# The scraped series become queryable right after the first scrape; allow a few seconds.
check() {
    up=$(value 'up{job="switchboard"}')
    connected=$(value 'switchboard_broker_connected{job="switchboard"}')
    start=$(value 'process_start_time_seconds{job="switchboard"}')
    cpu=$(value 'process_cpu_seconds_total{job="switchboard"}')
    received=$(value 'switchboard_messages_received_total{job="switchboard",transport="memory"}')
    [ "$up" = 1 ] && [ "$connected" = 1 ] && gt0 "$start" && [ -n "$cpu" ] && [ -n "$received" ]
}
i=0
until check; do
    i=$((i + 1))
    [ "$i" -le 50 ] || fail "queries: up='$up' switchboard_broker_connected='$connected'" \
        "process_start_time_seconds='$start' process_cpu_seconds_total='$cpu'" \
        "switchboard_messages_received_total='$received'"
    sleep 0.2
done

echo "ok: prometheus scraped switchboard: up=$up switchboard_broker_connected=$connected" \
    "process_start_time_seconds=$start process_cpu_seconds_total=$cpu" \
    "switchboard_messages_received_total=$received"
exit 0
