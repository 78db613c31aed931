#!/usr/bin/env bash
# Makes sure Redis and RabbitMQ answer on loopback.
#
#   services.sh up STATE_DIR     use the running ones; start those that are not running and
#                                note them in STATE_DIR/started
#   services.sh down STATE_DIR   stop only what `up` started (by PID or the service's own
#                                stop command), leaving pre-existing services untouched
set -euo pipefail
cmd=${1:?usage: services.sh up|down STATE_DIR}
state=${2:?usage: services.sh up|down STATE_DIR}
log() { echo "services.sh: $*" >&2; }

tcp_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
    local secs=$1 what=$2; shift 2
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then log "$what did not come up within ${secs}s"; return 1; fi
        sleep 0.5
    done
}

redis_ok() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]; }
rabbit_ok() { tcp_open 5672 && rabbitmq-diagnostics -q check_port_listener 5672 >/dev/null 2>&1; }

up() {
    mkdir -p "$state"
    : > "$state/started"
    if redis_ok; then
        log "Redis: using the one running on 127.0.0.1:6379"
    else
        log "Redis: not running, starting it"
        mkdir -p "$state/redis"
        redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
            --dir "$state/redis" --pidfile "$state/redis/redis.pid" \
            --logfile "$state/redis/redis.log"
        wait_for 30 Redis redis_ok
        echo redis >> "$state/started"
    fi
    if tcp_open 5672; then
        log "RabbitMQ: using the one running on 127.0.0.1:5672"
    else
        log "RabbitMQ: not running, starting it"
        rabbitmq-server -detached
        wait_for 120 RabbitMQ rabbit_ok
        echo rabbitmq >> "$state/started"
    fi
}

down() {
    [ -f "$state/started" ] || return 0
    if grep -qx redis "$state/started"; then
        log "Redis: stopping the instance this run started"
        kill "$(cat "$state/redis/redis.pid")" 2>/dev/null || true
    fi
    if grep -qx rabbitmq "$state/started"; then
        log "RabbitMQ: stopping the node this run started"
        rabbitmqctl stop >/dev/null 2>&1 || true
    fi
    rm -f "$state/started"
}

case "$cmd" in
    up) up ;;
    down) down ;;
    *) log "unknown command $cmd"; exit 2 ;;
esac
