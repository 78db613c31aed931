#!/bin/sh
# Runs the real `switchboard demo` on an embedded broker and checks that it finishes on its
# own with status 0 and a consistent summary: every published event received, dead letters
# by reason (schema and rejected among them), duplicates skipped.
# usage: test_demo.sh SWITCHBOARD_BINARY kafka|memory
set -u
bin=$1
broker=$2
out=$(mktemp)
# The demo keeps its ledger for the user (the summary names it); the test removes it.
cleanup() {
    dir=$(sed -n 's|^ *ledger  *\(/.*/switchboard-demo-[^/]*\)/ledger[.]jsonl$|\1|p' "$out" | head -n 1)
    [ -n "$dir" ] && rm -rf "$dir"
    rm -f "$out"
}
trap cleanup EXIT
fails=0

fail() {
    echo "FAIL: $*"
    fails=$((fails + 1))
}

# num PATTERN: the first number after the line's label (a fixed string at its start,
# leading spaces ignored), empty when the line is missing.
num() {
    sed -n "s/^ *$1 *\([0-9][0-9]*\).*/\1/p" "$out" | head -n 1
}

# positive NAME VALUE
positive() {
    if [ -z "$2" ]; then
        fail "summary line missing: $1"
    elif [ "$2" -le 0 ]; then
        fail "$1 is $2, want > 0"
    fi
}

"$bin" demo --events 200 --admin 127.0.0.1:0 --broker "$broker" --timeout 90 >"$out" 2>&1
rc=$?
cat "$out"
[ "$rc" -eq 0 ] || fail "switchboard demo --broker $broker exited $rc, want 0"

case $broker in
kafka) grep -q "through librdkafka's mock cluster" "$out" || fail "not on the mock cluster" ;;
memory) grep -q "through the embedded in-memory broker" "$out" || fail "not in memory" ;;
esac
grep -q "admin endpoints: http://127.0.0.1:[1-9]" "$out" || fail "no admin endpoints line"

published=$(num "published by the demo")
received=$(num "received (deliveries)")
retried=$(num "retried")
dead=$(num "dead-lettered")
followups=$(num "follow-ups published")
dlq=$(num "dead-letter queue")
[ "$published" = 200 ] || fail "published by the demo: '$published', want 200"
positive "received" "$received"
positive "duplicates skipped" "$(num "duplicates skipped")"
positive "handled" "$(num "handled")"
positive "dead-lettered" "$dead"
positive "dead-lettered by reason schema" "$(num "schema")"
positive "dead-lettered by reason rejected" "$(num "rejected")"
positive "follow-ups published" "$followups"
[ "$dlq" = "$dead" ] || fail "dead-letter queue '$dlq' != dead-lettered '$dead'"
if [ -n "$received" ] && [ -n "$retried" ] && [ -n "$followups" ] &&
    [ "$received" -lt $((200 + retried + followups)) ]; then
    fail "received $received < published 200 + retried $retried + follow-ups $followups"
fi
by_reason=0
for r in decode schema unroutable rejected max-attempts timeout crashed; do
    v=$(sed -n "s/^    $r  *\([0-9][0-9]*\)\$/\1/p" "$out")
    by_reason=$((by_reason + ${v:-0}))
done
[ "$by_reason" = "$dead" ] || fail "reasons add up to $by_reason, dead-lettered is '$dead'"

if [ "$fails" -ne 0 ]; then
    echo "$fails check(s) failed"
    exit 1
fi
echo "ok: switchboard demo --broker $broker"
