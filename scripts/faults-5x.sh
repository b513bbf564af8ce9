#!/bin/bash
# faults-5x.sh: the fault tests (tests/sh/test_faults_*.sh) ROUNDS times in a row
# (default 5), each with a fresh random seed; prints every run's figures and the sums:
# jobs run, faults injected, jobs lost (must be 0), outputs differing (must be 0).
#   scripts/faults-5x.sh [ROUNDS]       (BUILD as for make test; logs in $FAULTS_LOGS)
set -u
cd "$(dirname "$0")/.."
rounds=${1:-5}
logs=${FAULTS_LOGS:-$(mktemp -d /tmp/jb_faults5x.XXXXXX)}
mkdir -p "$logs"
jobs=0 faults=0 lost=0 differ=0 failed=0 runs=0
printf '%-6s %-10s %6s %7s %5s %10s %6s %s\n' round test jobs faults lost differing secs result
for r in $(seq 1 "$rounds"); do
    for t in tests/sh/test_faults_*.sh; do
        name=$(basename "$t" .sh)
        log=$logs/$name.$r.log
        start=$SECONDS
        bash "$t" > "$log" 2>&1; rc=$?
        line=$(grep -E '^faults: test=' "$log" | tail -n 1)
        get() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<<"$line"; }
        j=$(get jobs) f=$(get faults) l=$(get lost) d=$(get differing)
        if grep -q 'SKIP' "$log" && [ -z "$line" ]; then
            result="skipped: $(grep -m1 SKIP "$log" | sed 's/^ *//')"
        elif [ $rc = 0 ]; then result=ok
        else result="FAILED (rc $rc, $log)"; failed=$((failed + 1)); fi
        printf '%-6s %-10s %6s %7s %5s %10s %6s %s\n' "$r" "${name#*faults_}" "${j:--}" "${f:--}" \
            "${l:--}" "${d:--}" $((SECONDS - start)) "$result"
        jobs=$((jobs + ${j:-0})) faults=$((faults + ${f:-0}))
        lost=$((lost + ${l:-0})) differ=$((differ + ${d:-0})) runs=$((runs + 1))
    done
done
echo
echo "faults-5x: $rounds rounds, $runs test runs: jobs run $jobs, faults injected $faults," \
     "jobs lost $lost, outputs differing $differ, test runs failed $failed (logs: $logs)"
[ "$failed" = 0 ] && [ "$lost" = 0 ] && [ "$differ" = 0 ]
