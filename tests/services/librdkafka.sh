#!/usr/bin/env bash
# Builds a newer librdkafka (2.12.0) beside Debian 12's 2.0.2, for the tests that prove
# switchboard on a fixed librdkafka (SCRAM against Kafka 4 brokers needs 2.6.1 or later,
# librdkafka#4895). switchboard is built against the system library and runs unchanged on
# this one: same soname (librdkafka.so.1), same ABI; LD_LIBRARY_PATH selects it.
#
#   librdkafka.sh build     fetch, build (about 30 s on 2 cores) and cache the shared library;
#                           print the directory that holds librdkafka.so.1
#
# The source is the copy of librdkafka that the node-rdkafka npm package ships (deps/librdkafka),
# fetched with `npm pack` from the npm registry and checked against its published SHA-1. The
# library is cached in ~/.cache/switchboard/librdkafka-<version> (SB_RDKAFKA_CACHE overrides the
# parent directory), so later runs neither fetch nor build.
set -euo pipefail

version=2.12.0
npm_pkg=node-rdkafka@3.6.1 # ships librdkafka $version
npm_sha1=164357f08ff23a4722e89bfb3b2b09481c1e8cc1
hex_version=0x020c00ff # RD_KAFKA_VERSION of $version
cache=${SB_RDKAFKA_CACHE:-$HOME/.cache/switchboard}/librdkafka-$version

log() { echo "librdkafka.sh: $*" >&2; }

build() {
    if [ -f "$cache/.complete" ]; then echo "$cache/lib"; return 0; fi
    command -v npm >/dev/null || { log "npm is needed to fetch the source (tests/deps.sh --test installs it)"; return 1; }
    local work; work=$(mktemp -d /tmp/sb-rdkafka.XXXXXX)
    # shellcheck disable=SC2064
    trap "rm -rf '$work'" RETURN
    log "fetching librdkafka $version (npm $npm_pkg) and building it"
    (cd "$work" && npm pack --silent "$npm_pkg" > pack.out 2> pack.err) \
        || { cat "$work/pack.err" >&2; log "npm pack $npm_pkg failed"; return 1; }
    local tgz; tgz=$(ls "$work"/*.tgz)
    local sum; sum=$(sha1sum "$tgz" | cut -d' ' -f1)
    [ "$sum" = "$npm_sha1" ] || { log "$tgz: SHA-1 $sum, expected $npm_sha1"; return 1; }
    tar -xzf "$tgz" -C "$work" package/deps/librdkafka
    local src=$work/package/deps/librdkafka
    grep -q "define RD_KAFKA_VERSION $hex_version" "$src/src/rdkafka.h" \
        || { log "the package does not hold librdkafka $version"; return 1; }
    # Only what the tests use: SSL, SASL PLAIN/SCRAM, zlib; no GSSAPI, OIDC (curl), zstd.
    (cd "$src" && ./configure --disable-gssapi --disable-curl --disable-zstd --disable-lz4-ext \
        && make -C src -j "$(nproc)" librdkafka.so.1) > "$work/build.log" 2>&1 \
        || { tail -30 "$work/build.log" >&2; log "build failed"; return 1; }
    mkdir -p "$cache"
    rm -rf "$cache/lib"
    mkdir "$cache/lib"
    cp "$src/src/librdkafka.so.1" "$cache/lib/"
    touch "$cache/.complete"
    echo "$cache/lib"
}

case ${1:-} in
    build) build ;;
    *) echo "usage: librdkafka.sh build" >&2; exit 2 ;;
esac
