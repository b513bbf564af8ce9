#!/bin/bash
# test_faults_restart.sh (issue 5, fault test b): 8 jobs through one instance of every
# stage (pipelines/local-services.sh, loopback, spools, heartbeat 200 ms, peer timeout
# 1 s): no spare anywhere. A random instance (top prior, upsamplers or decoder) is killed
# with SIGKILL at a random moment, 5 times, and started again at once with the same
# command, name and spool. Every job completes and its files are byte-identical to an
# undisturbed shell-pipe run. Prints: faults: test=restart jobs=N faults=N lost=N differing=N.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
B=$PWD/$BUILD/bin
T=$(mktemp -d /tmp/jb_faults_restart.XXXXXX)
LS=pipelines/local-services.sh
. tests/sh/lib/faults.sh
trap fj_services_cleanup EXIT
N=8 KILLS=5
echo "-- seed $seed: $N jobs, $KILLS kills of a random instance, each restarted with its spool"

fj_refs $N "$T/ref"
P=$(fj_free_port)
$LS --state "$T/s" --base-port "$P" --top 1 --mid 1 --bottom 1 --heartbeat 200 --peer-timeout 1000 \
    --stage-args "$FJ_STAGE_ARGS" start > "$T/start.txt" 2>&1; rc=$?
check "services started (rc $rc)" "[ $rc = 0 ]"
[ $rc = 0 ] || cat "$T/start.txt"
fj_submit $N "$($LS --state "$T/s" endpoint)"

faults=0 restarted=0
for k in $(seq 1 $KILLS); do
    sleep "$((RANDOM % 2)).$((RANDOM % 9 + 1))"
    victim=$(fj_pick top-0 mid-0 bottom-0 decoder-0)
    pid=$(cat "$T/s/run/$victim.pid" 2>/dev/null)
    if [ -n "$pid" ] && fj_alive "$pid"; then
        kill -KILL "$pid"; faults=$((faults + 1))
        echo "  kill -9 $victim (pid $pid) at ${SECONDS}s"
    fi
    for i in $(seq 50); do fj_alive "$pid" || break; sleep 0.05; done
    $LS --state "$T/s" start "$victim" > /dev/null 2>&1 && restarted=$((restarted + 1))
done
fj_wait $N "$T/s/out" 150
fj_reap
fj_compare $N "$T/s/out" "$T/ref"
check "every job completed ($((N - fj_lost)) of $N)" "[ $fj_lost = 0 ]"
check "every output identical to the undisturbed run ($fj_diff differ)" "[ $fj_diff = 0 ]"
check "$faults kills, each instance restarted ($restarted)" "[ $faults -ge 1 ] && [ $restarted = $KILLS ]"
# A lost DONE is probed after the peer timeout (1 s), one hop at a time: 15 s is ample.
fj_spools_drain "$T/s" 15   # (names what is still held)
fj_held=$(fj_spool_jobs "$T/s")
check "no job left in the spools once every job is done ($fj_held)" "[ $fj_held = 0 ]"
fj_summary restart $N $faults
[ "$fail" = 0 ] || { for f in "$T"/s/log/*.log; do echo "== $f"; grep -E 'WARN|ERROR' "$f" | tail -n 8; done; }
check_summary test_faults_restart
