#!/usr/bin/env bash
# House style: every tracked C source is formatted with the repository's .clang-format.
# usage: format_check.sh SOURCE_DIR   (skips, exit 77, outside a git checkout)
set -u
src=$1
cd "$src" || exit 1
fmt=$(command -v clang-format-14 || command -v clang-format) || { echo "clang-format not installed"; exit 1; }
git rev-parse --git-dir >/dev/null 2>&1 || { echo "SKIP: not a git checkout"; exit 77; }
bad=0
while IFS= read -r f; do
    if ! "$fmt" --dry-run -Werror "$f" >/dev/null 2>&1; then
        echo "not formatted: $f (run: $fmt -i $f)"
        bad=1
    fi
done < <(git ls-files '*.c' '*.h')
[ $bad -eq 0 ] && echo "ok: all C sources formatted"
exit $bad
