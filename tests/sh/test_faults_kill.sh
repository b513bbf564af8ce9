#!/bin/bash
# test_faults_kill.sh (issue 5, fault test a): 8 jobs through 1 top prior, 2 middle and
# 2 bottom upsamplers and 1 decoder (pipelines/local-services.sh, loopback, heartbeat
# 200 ms, peer timeout 1 s). While they run, a random upsampler instance is killed with
# SIGKILL at a random moment, 4 times; its jobs must go to the spare instance. The dead
# one comes back later with an empty spool, as a fresh spare (so the next kill has a
# spare too). Every job completes and its files are byte-identical to an undisturbed
# shell-pipe run. Prints: faults: test=kill jobs=N faults=N lost=N differing=N.
# FAULTS_SEED picks the random moments (default: the time; printed to replay a failure).
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
B=$PWD/$BUILD/bin
T=$(mktemp -d /tmp/jb_faults_kill.XXXXXX)
LS=pipelines/local-services.sh
. tests/sh/lib/faults.sh
trap fj_services_cleanup EXIT
N=8 KILLS=4
echo "-- seed $seed: $N jobs, $KILLS kills of a random upsampler instance"

fj_refs $N "$T/ref"
P=$(fj_free_port)
$LS --state "$T/s" --base-port "$P" --mid 2 --bottom 2 --heartbeat 200 --peer-timeout 1000 \
    --stage-args "$FJ_STAGE_ARGS" start > "$T/start.txt" 2>&1; rc=$?
check "services started (rc $rc)" "[ $rc = 0 ]"
[ $rc = 0 ] || cat "$T/start.txt"
fj_submit $N "$($LS --state "$T/s" endpoint)"

faults=0 busy=0
for k in $(seq 1 $KILLS); do
    sleep "0.$((RANDOM % 9 + 1))"
    # A random upsampler instance; one that holds a job when there is one.
    victim=$(fj_busy_victim "$T/s" mid-0 mid-1 bottom-0 bottom-1)
    held=$(fj_jobs_of "$(awk -v n="$victim" '$2 == n {print $3}' "$T/s/endpoints")")
    pid=$(cat "$T/s/run/$victim.pid" 2>/dev/null)
    if [ -n "$pid" ] && fj_alive "$pid"; then
        kill -KILL "$pid"; faults=$((faults + 1))
        [ "$held" -gt 0 ] && busy=$((busy + 1))
        echo "  kill -9 $victim (pid $pid, $held jobs in flight) at ${SECONDS}s"
    fi
    # Past the peer timeout its jobs are with the spare; then it returns, fresh.
    sleep 1.2
    rm -rf "$T/s/spool/$victim"
    $LS --state "$T/s" start "$victim" > /dev/null 2>&1 || echo "  (restart of $victim failed)"
done
fj_wait $N "$T/s/out" 150
fj_reap
fj_compare $N "$T/s/out" "$T/ref"
check "every job completed ($((N - fj_lost)) of $N)" "[ $fj_lost = 0 ]"
check "every output identical to the undisturbed run ($fj_diff differ)" "[ $fj_diff = 0 ]"
check "$faults kills injected, $busy of them of an instance holding jobs" "[ $faults -ge 1 ] && [ $busy -ge 1 ]"
alive=0; for n in top-0 mid-0 mid-1 bottom-0 bottom-1 decoder-0; do fj_alive "$(cat "$T/s/run/$n.pid")" && alive=$((alive + 1)); done
check "every instance serving at the end ($alive of 6)" "[ $alive = 6 ]"
fj_summary kill $N $faults
[ "$fail" = 0 ] || { for f in "$T"/s/log/*.log; do echo "== $f"; grep -E 'WARN|ERROR' "$f" | tail -n 8; done; }
check_summary test_faults_kill
