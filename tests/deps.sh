#!/usr/bin/env bash
# Installs with apt-get every Debian 12 package switchboard needs to build (and, with
# --test, to run its tests and services). Quiet and quick when everything is present.
set -euo pipefail
build_pkgs=(build-essential cmake ninja-build pkg-config
            librdkafka-dev librabbitmq-dev libjansson-dev libevent-dev libhiredis-dev
            libyaml-dev libssl-dev zlib1g-dev)
test_pkgs=(clang clang-format-14 libclang-rt-14-dev llvm libcmocka-dev
           redis-server redis-tools rabbitmq-server amqp-tools kcat
           maven bc prometheus)
pkgs=("${build_pkgs[@]}")
if [ "${1:-}" = "--test" ]; then
    pkgs+=("${test_pkgs[@]}")
    # The Kafka broker needs Java 17 or later; use the machine's if it has one.
    command -v java >/dev/null 2>&1 || pkgs+=(openjdk-17-jre-headless)
    # npm fetches the source of a newer librdkafka (tests/services/librdkafka.sh) and the
    # benchmarks' Node consumers; use the machine's if it has one.
    command -v npm >/dev/null 2>&1 || pkgs+=(npm)
fi

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps.sh: installing ${missing[*]}" >&2
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/sb-apt.log 2>&1; then
    $SUDO apt-get update -q >/tmp/sb-apt.log 2>&1
    $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >>/tmp/sb-apt.log 2>&1 \
        || { echo "deps.sh: apt-get failed, see /tmp/sb-apt.log" >&2; tail -20 /tmp/sb-apt.log >&2; exit 1; }
fi
