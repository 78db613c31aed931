#!/usr/bin/env bash
# Proves an installed switchboard serves handler authors outside the tree:
#   1. cmake --install the build into a temporary prefix;
#   2. build tests/outoftree/example with find_package(switchboard) and sb_add_handler();
#   3. build a program with pkg-config switchboard;
#   4. the installed `switchboard module check` loads the module and lists its handler;
#   5. the example's harness test (switchboard/testing.h) runs against the installed library;
#   6. `switchboard new-handler` writes a skeleton that builds out of tree and passes its test.
# usage: run.sh BUILD_DIR EXAMPLE_SRC C_COMPILER [SANITIZE_FLAGS]
set -euo pipefail
build=$1 src=$2 cc=$3 san=${4:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix

cmake --install "$build" --prefix "$prefix" > "$work/install.log"
test -f "$prefix/include/switchboard/handler.h"
test -f "$prefix/lib/cmake/switchboard/switchboardConfig.cmake"
test -f "$prefix/lib/pkgconfig/switchboard.pc"
test -x "$prefix/bin/switchboard"

cmake -S "$src" -B "$work/build" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_C_COMPILER="$cc" \
      -DCMAKE_C_FLAGS="$san" -DCMAKE_EXE_LINKER_FLAGS="$san" > "$work/configure.log"
cmake --build "$work/build" > "$work/build.log"

# The module exports exactly one symbol: its entry point.
exported=$(nm -D --defined-only "$work/build/example_handler.so" | awk '$2 == "T" {print $3}')
[ "$exported" = "sb_module_init" ] || { echo "unexpected exports: $exported"; exit 1; }

LD_LIBRARY_PATH="$prefix/lib" "$work/build/print_version"

PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --exists switchboard
cat > "$work/pc.c" <<'C'
#include <switchboard/switchboard.h>
int main(void) { return sb_version() == SB_VERSION_NUM ? 0 : 1; }
C
# shellcheck disable=SC2046
"$cc" $san -o "$work/pc" "$work/pc.c" $(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --cflags --libs switchboard)
LD_LIBRARY_PATH="$prefix/lib" "$work/pc"

out=$("$prefix/bin/switchboard" module check "$work/build/example_handler.so")
echo "$out"
grep -q "module example 0.0.1" <<< "$out"
grep -q "handler datasync pattern DataSyncCompletedEvent" <<< "$out"
echo "ok: out-of-tree handler module built and loaded"

# The example's own test, through the installed harness and library.
(cd "$work/build" && LD_LIBRARY_PATH="$prefix/lib" ctest --output-on-failure)
echo "ok: out-of-tree harness test passed"

# The skeleton `switchboard new-handler` writes (the README's example) builds and its test
# passes, against the installed prefix only.
"$prefix/bin/switchboard" new-handler my_handler --dir "$work/scaffold"
for f in my_handler.c test_my_handler.c CMakeLists.txt; do
    test -f "$work/scaffold/$f" || { echo "new-handler did not write $f"; exit 1; }
done
cmake -S "$work/scaffold" -B "$work/scaffold-build" -DCMAKE_PREFIX_PATH="$prefix" \
      -DCMAKE_C_COMPILER="$cc" -DCMAKE_C_FLAGS="$san" -DCMAKE_EXE_LINKER_FLAGS="$san" \
      > "$work/scaffold-configure.log" 2>&1 || { cat "$work/scaffold-configure.log"; exit 1; }
cmake --build "$work/scaffold-build" > "$work/scaffold-build.log" 2>&1 ||
    { cat "$work/scaffold-build.log"; exit 1; }
(cd "$work/scaffold-build" && LD_LIBRARY_PATH="$prefix/lib" ctest --output-on-failure)
out=$("$prefix/bin/switchboard" module check "$work/scaffold-build/my_handler.so")
grep -q "module my_handler" <<< "$out" || { echo "$out"; exit 1; }
echo "ok: new-handler scaffold built out of tree and its test passed"
