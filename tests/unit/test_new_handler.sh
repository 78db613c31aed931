#!/bin/sh
# Runs the real `switchboard new-handler`: the skeleton's files exist, NAME is substituted
# everywhere (no @PLACEHOLDER@ left), the module source compiles with -Werror against the
# tree's headers, and bad names (64) and an existing non-empty folder (73) are refused
# without writing anything. The full out-of-tree build of a skeleton is another test.
# usage: test_new_handler.sh SWITCHBOARD_BINARY [C_COMPILER INCLUDE_DIR...]
set -u
bin=$1
shift
cc=${1:-}
[ $# -gt 0 ] && shift
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# expect_exit STATUS PATTERN ARGS...: runs `new-handler ARGS`, checks status and output.
expect_exit() {
    want=$1 pattern=$2
    shift 2
    "$bin" new-handler "$@" >"$work/out" 2>&1
    got=$?
    if [ "$got" -ne "$want" ]; then
        fail "new-handler $* exited $got, want $want"; cat "$work/out"
    elif ! grep -qF -- "$pattern" "$work/out"; then
        fail "new-handler $*: output lacks: $pattern"; cat "$work/out"
    else
        echo "ok: new-handler $* -> $got"
    fi
}

# 1. A skeleton in the default folder (NAME) and one with --dir.
name=order_audit
(cd "$work" && "$bin" new-handler "$name" >"$work/out" 2>&1) || { fail "new-handler $name"; cat "$work/out"; }
expect_exit 0 "created" inventory_sync --dir "$work/custom dir"
for d in "$work/$name:$name" "$work/custom dir:inventory_sync"; do
    dir=${d%%:*} n=${d##*:}
    for f in "$n.c" "test_$n.c" CMakeLists.txt README.md .gitignore; do
        [ -s "$dir/$f" ] || fail "$dir/$f missing or empty"
    done
    if grep -n '@[A-Z_]*@' "$dir"/* "$dir"/.gitignore; then
        fail "$dir: unsubstituted placeholder"
    fi
    grep -q "SB_MODULE_DEFINE(${n}_module)" "$dir/$n.c" || fail "$n.c: no SB_MODULE_DEFINE(${n}_module)"
    grep -q "\.name = \"$n\"" "$dir/$n.c" || fail "$n.c: module not named $n"
    grep -q "sb_test_new(MODULE_PATH" "$dir/test_$n.c" || fail "test_$n.c: no harness use"
    grep -q "sb_add_handler($n $n.c)" "$dir/CMakeLists.txt" || fail "CMakeLists.txt: no sb_add_handler($n $n.c)"
    grep -q "project($n C)" "$dir/CMakeLists.txt" || fail "CMakeLists.txt: project is not $n"
    grep -q 'MODULE_PATH="$<TARGET_FILE:'"$n"'>"' "$dir/CMakeLists.txt" || fail "CMakeLists.txt: no MODULE_PATH"
    grep -q "add_test(NAME test_$n" "$dir/CMakeLists.txt" || fail "CMakeLists.txt: no add_test"
    grep -q "find_package(switchboard" "$dir/CMakeLists.txt" || fail "CMakeLists.txt: no find_package"
    grep -q "^# $n\$" "$dir/README.md" || fail "README.md: title is not $n"
done

# 2. The generated sources compile cleanly (headers of this tree; no link).
if [ -n "$cc" ]; then
    incs=""
    for i in "$@"; do incs="$incs -I$i"; done
    # shellcheck disable=SC2086
    "$cc" -std=c11 -pedantic -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
        -Werror -fPIC -fsyntax-only $incs "$work/$name/$name.c" || fail "$name.c does not compile"
    # shellcheck disable=SC2086
    "$cc" -std=c11 -pedantic -Wall -Wextra -Wshadow -Werror -DMODULE_PATH='"x.so"' \
        -fsyntax-only $incs "$work/$name/test_$name.c" || fail "test_$name.c does not compile"
fi

# 3. Refusals: nothing may be written.
before=$(ls -A "$work" | wc -l)
expect_exit 64 "invalid name \"9lives\"" 9lives --dir "$work/a"
expect_exit 64 "invalid name \"my-handler\"" my-handler --dir "$work/b"
expect_exit 64 "invalid name \"test\"" test --dir "$work/c"
expect_exit 64 "invalid name \"\"" "" --dir "$work/d"
expect_exit 64 "no NAME given"
expect_exit 64 "unknown option" ok_name --frobnicate
expect_exit 64 "needs a folder" ok_name --dir
expect_exit 73 "already exists and is not empty" "$name" --dir "$work/$name"
after=$(ls -A "$work" | wc -l)
[ "$before" -eq "$after" ] || fail "a refused command wrote something in $work"
[ "$(ls -A "$work/$name" | wc -l)" -eq 5 ] || fail "the existing folder was changed"

# 4. An existing empty folder is fine.
mkdir "$work/empty"
expect_exit 0 "created" etl_watch --dir "$work/empty"
[ -s "$work/empty/etl_watch.c" ] || fail "empty folder not filled"

[ "$fails" -eq 0 ] || { echo "$fails failure(s)"; exit 1; }
echo "all ok"
