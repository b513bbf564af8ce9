# check.sh: the one check helper of the shell tests (tests/sh/test_*.sh), sourced.
# Counters: pass, fail, skipped (set to 0 here). Provides:
#   check NAME CMD [ARG...]   one check: runs CMD ARG...; a lone CMD word is a condition
#                             string and is eval'd (check "x" '[ "$a" = 1 ]'). Prints
#                             "  ok   NAME" or "  FAIL NAME" and counts it.
#   check_status NAME STATUS  one check on an exit status already taken (0 passes).
#   ok NAME, bad NAME         count a pass / a failure by hand (same lines as check).
#   skip REASON               a part of the test that cannot run here: prints
#                             "  SKIP REASON" and counts it; tests/run_tests.sh adds the
#                             skips up, and with CI=true a skip fails the run (CI must run all).
#   check_summary NAME        prints "NAME: N passed, N failed[, N skipped]"; returns 0 only
#                             when nothing failed.
#   check_finish NAME         check_summary, then exits with its status.
#   check_relay FILE MIN      counts FILE's "ok NAME" / "FAIL NAME" lines (a python check
#                             script's output) as checks, prints its other lines indented,
#                             and checks that at least MIN of them ran.
pass=0; fail=0; skipped=0
ok() { echo "  ok   $1"; pass=$((pass + 1)); }
bad() { echo "  FAIL $1"; fail=$((fail + 1)); }
check() {
    local name=$1; shift
    if [ $# = 1 ]; then
        if eval "$1"; then ok "$name"; else bad "$name"; fi
    elif "$@"; then ok "$name"; else bad "$name"; fi
}
check_status() { if [ "$2" = 0 ]; then ok "$1"; else bad "$1"; fi; }
skip() { echo "  SKIP $1"; skipped=$((skipped + 1)); }
check_summary() {
    if [ "$skipped" != 0 ]; then echo "$1: $pass passed, $fail failed, $skipped skipped"
    else echo "$1: $pass passed, $fail failed"; fi
    [ "$fail" = 0 ]
}
check_finish() { check_summary "$1"; exit; }
check_relay() {
    local status name
    while read -r status name; do
        if [ "$status" = ok ]; then ok "$name"; else bad "$name"; fi
    done < <(sed -n 's/^\(ok\|FAIL\) \+/\1 /p' "$1")
    grep -v '^\(ok\|FAIL\) ' "$1" | sed 's/^/    /'
    check "the JSON checks ran" '[ "$(grep -c "^ok\|^FAIL" "'"$1"'")" -ge '"$2"' ]'
}
