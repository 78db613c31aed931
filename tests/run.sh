#!/usr/bin/env bash
# The test command: installs what is missing, brings up RabbitMQ, Redis and a real Apache
# Kafka broker, builds from scratch with -Werror and ASan+UBSan (clang, libFuzzer targets),
# runs every test through ctest, and stops whatever it started, also on failure or Ctrl-C.
#
#   tests/run.sh               everything
#   tests/run.sh -L unit       extra arguments go to ctest (e.g. -L integration, -R kafka)
#
# Environment: SB_BUILD_DIR (default build/ci), SB_NO_CLEAN=1 keeps an existing build dir,
# SB_CTEST_TIMEOUT (seconds for the whole ctest run, default 1200).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${SB_BUILD_DIR:-$root/build/ci}
state=$(mktemp -d /tmp/sb-test.XXXXXX)
t_start=$SECONDS
say() { printf '\n== %s (%ds)\n' "$*" $((SECONDS - t_start)); }

kafka_pid= rdkafka_pid=
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$kafka_pid" ]; then kill "$kafka_pid" 2>/dev/null || true; wait "$kafka_pid" 2>/dev/null || true; fi
    if [ -n "$rdkafka_pid" ]; then kill "$rdkafka_pid" 2>/dev/null || true; wait "$rdkafka_pid" 2>/dev/null || true; fi
    "$root/tests/services/kafka.sh" stop "$state/kafka" || true
    "$root/tests/services/services.sh" down "$state/svc" || true
    rm -rf "$state"
    say "done, exit $rc"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "dependencies"
"$root/tests/deps.sh" --test

say "services"
"$root/tests/services/services.sh" up "$state/svc"
# The broker starts, and librdkafka 2.12.0 (for test_kafka_security's SCRAM cases) builds,
# while switchboard builds.
"$root/tests/services/kafka.sh" start "$state/kafka" > "$state/kafka.log" 2>&1 &
kafka_pid=$!
"$root/tests/services/librdkafka.sh" build > "$state/rdkafka.dir" 2> "$state/rdkafka.log" &
rdkafka_pid=$!

say "configure and build ($build)"
[ "${SB_NO_CLEAN:-}" = 1 ] || rm -rf "$build" "$build-gcc"
cmake -S "$root" -B "$build" -G Ninja \
      -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang \
      -DSB_WERROR=ON -DSB_SANITIZE=address,undefined -DSB_FUZZ=ON -DSB_BUILD_TESTS=ON > "$state/configure.log" \
    || { cat "$state/configure.log"; exit 1; }
cmake --build "$build" -j "$(nproc)"

say "gcc -Werror compile check (the quickstart compiler)"
cmake -S "$root" -B "$build-gcc" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_COMPILER=gcc \
      -DSB_WERROR=ON -DSB_BUILD_TESTS=OFF > "$state/configure-gcc.log" \
    || { cat "$state/configure-gcc.log"; exit 1; }
cmake --build "$build-gcc" -j "$(nproc)" > "$state/build-gcc.log" 2>&1 \
    || { grep -E "error|warning" "$state/build-gcc.log" | head -40; exit 1; }

say "librdkafka 2.12.0"
if ! wait "$rdkafka_pid"; then rdkafka_pid=; cat "$state/rdkafka.log"; echo "building librdkafka 2.12.0 failed" >&2; exit 1; fi
rdkafka_pid=
cat "$state/rdkafka.log"
export SB_TEST_RDKAFKA_LIBDIR=$(cat "$state/rdkafka.dir")

say "Kafka broker"
if ! wait "$kafka_pid"; then kafka_pid=; cat "$state/kafka.log"; echo "Kafka broker failed to start" >&2; exit 1; fi
kafka_pid=
cat "$state/kafka.log"
set -a
# shellcheck disable=SC1091
. "$state/kafka/env"
set +a
export SB_TEST_AMQP_URL=${SB_TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672}
export SB_TEST_REDIS_URL=${SB_TEST_REDIS_URL:-redis://127.0.0.1:6379}
export SB_TEST_REQUIRE_ALL=1
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

say "tests"
cd "$build"
timeout -k 10 "${SB_CTEST_TIMEOUT:-1200}" \
    ctest --output-on-failure --timeout 300 -j 2 "$@"
