#!/usr/bin/env bash
# A throwaway RabbitMQ node with a TLS listener, for test_amqp_tls.
#
#   amqp_tls_node.sh start DIR NODE AMQP_PORT TLS_PORT DIST_PORT
#       makes a CA, a server certificate for localhost/127.0.0.1 signed by it and an
#       unrelated CA (DIR/ca.pem, DIR/other-ca.pem), starts node NODE@localhost with its
#       state in DIR, and waits until the TLS port answers (exit 0), or fails (exit 1)
#   amqp_tls_node.sh stop DIR NODE
#
# The Debian rabbitmq-server wrapper drops to the rabbitmq user, so DIR is handed to it.
set -euo pipefail
cmd=$1 dir=$2 node=$3
case "$cmd" in
start)
    amqp=$4 tls=$5 dist=$6
    mkdir -p "$dir/mnesia" "$dir/logs"
    cd "$dir"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 \
        -subj "/CN=switchboard-test-ca" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr \
        -subj "/CN=localhost" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > ext.cnf
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
        -out server.pem -days 2 -extfile ext.cnf 2>/dev/null
    openssl req -x509 -newkey rsa:2048 -nodes -keyout other.key -out other-ca.pem -days 2 \
        -subj "/CN=unrelated-ca" 2>/dev/null
    cat > rabbitmq.conf <<CONF
listeners.tcp.default = $amqp
listeners.ssl.default = $tls
ssl_options.cacertfile = $dir/ca.pem
ssl_options.certfile = $dir/server.pem
ssl_options.keyfile = $dir/server.key
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
CONF
    : > enabled_plugins
    chmod 755 "$dir" "$dir/mnesia" "$dir/logs"
    chmod 644 ./*.pem ./*.key rabbitmq.conf enabled_plugins
    if id rabbitmq >/dev/null 2>&1; then chown -R rabbitmq "$dir"; fi
    RABBITMQ_NODENAME="$node@localhost" RABBITMQ_NODE_PORT=$amqp RABBITMQ_DIST_PORT=$dist \
    RABBITMQ_MNESIA_BASE="$dir/mnesia" RABBITMQ_LOG_BASE="$dir/logs" \
    RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
    RABBITMQ_PID_FILE="$dir/mnesia/pid" rabbitmq-server -detached
    for _ in $(seq 1 120); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$tls") 2>/dev/null; then exit 0; fi
        sleep 0.5
    done
    echo "amqp_tls_node.sh: node $node did not open port $tls; log:" >&2
    tail -20 "$dir"/logs/*.log >&2 || true
    exit 1
    ;;
stop)
    rabbitmqctl -n "$node@localhost" stop >/dev/null 2>&1 || true
    ;;
esac
