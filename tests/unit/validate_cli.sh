#!/bin/sh
# Runs the real `switchboard validate` on the schema fixtures: exit statuses and output lines.
# usage: validate_cli.sh SWITCHBOARD_BINARY SOURCE_DIR
set -u
bin=$1
src=$2
schemas=$src/schemas
fx=$src/tests/unit/fixtures/schema
fails=0
out=$(mktemp)
trap 'rm -f "$out"' EXIT


# expect STATUS GREP-PATTERN -- ARGS...: runs the command, checks its status and output.
expect() {
    want=$1 pattern=$2
    shift 3
    "$bin" validate "$@" >"$out" 2>&1
    got=$?
    if [ "$got" -ne "$want" ]; then
        echo "FAIL: validate $* exited $got, want $want"; cat "$out"; fails=$((fails + 1))
    elif [ -n "$pattern" ] && ! grep -qF -- "$pattern" "$out"; then
        echo "FAIL: validate $*: output lacks: $pattern"; cat "$out"; fails=$((fails + 1))
    else
        echo "ok: validate $* -> $got"
    fi
}

dsc=$schemas/DataSyncCompletedEvent.schema.json
d=$fx/DataSyncCompletedEvent
expect 0 "$d/valid-7-digit-fraction.json: valid" -- --schema "$dsc" "$d/valid-7-digit-fraction.json"
expect 0 "valid-integral-real.json: valid" -- --schema "$dsc" "$d"/valid-*.json
expect 1 "$d/invalid-negative-records.json: /RecordsProcessed: -1 is less than the minimum 0" \
    -- --schema "$dsc" "$d/valid-7-digit-fraction.json" "$d/invalid-negative-records.json"
expect 1 "invalid-missing-jobid.json: (root): required property \"JobId\" is missing" \
    -- --schema "$dsc" "$d/invalid-missing-jobid.json"
expect 1 "/Email: \"not-an-email\" is not a valid email address" \
    -- --schema "$schemas/CustomerData.schema.json" "$fx/CustomerData/invalid-not-an-email.json"
expect 1 "not valid JSON" -- --schema "$dsc" "$fx/not-json.txt"
expect 64 "--schema FILE is required" -- "$d/valid-7-digit-fraction.json"
expect 64 "no event file" -- --schema "$dsc"
expect 78 "cannot load schema" -- --schema "$fx/not-json.txt" "$d/valid-7-digit-fraction.json"
expect 78 "cannot open schema" -- --schema "$schemas/Nope.schema.json" "$d/valid-7-digit-fraction.json"

# Every golden fixture through the command: valid ones exit 0, invalid ones 1 with the pointer.
for dir in "$fx"/*/; do
    ev=$(basename "$dir")
    for f in "$dir"*.json; do
        first=$(head -n 1 "${f%.json}.expect" | cut -f 1)
        if [ -s "${f%.json}.expect" ]; then
            [ -n "$first" ] || first="(root)"
            expect 1 "$f: $first: " -- --schema "$schemas/$ev.schema.json" "$f"
        else
            expect 0 "$f: valid" -- --schema "$schemas/$ev.schema.json" "$f"
        fi
    done
done

[ "$fails" -eq 0 ] || { echo "$fails failure(s)"; exit 1; }
echo "all ok"
