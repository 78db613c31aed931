#!/usr/bin/env bash
# Quick start: installs the build dependencies if missing (Debian 12, apt-get), builds
# switchboard in build/quickstart, and runs the main job on the embedded default.
# Nothing outside the build folder is touched except the apt packages.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${SB_BUILD_DIR:-$root/build/quickstart}

"$root/tests/deps.sh"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSB_BUILD_TESTS=OFF > /dev/null
cmake --build "$build" -j "$(nproc)"

bin="$build/core/switchboard"
echo
# The demo finds the event schemas next to its build; a build dir elsewhere
# (SB_BUILD_DIR) is pointed at the source tree's.
export SWITCHBOARD_SCHEMAS_DIR=${SWITCHBOARD_SCHEMAS_DIR:-$root/schemas}
exec "$bin" demo "$@"
