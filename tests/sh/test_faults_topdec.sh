#!/bin/bash
# test_faults_topdec.sh (issue 18 B, D): 1 top prior, 2 middle and 2 bottom upsamplers
# and 1 decoder (pipelines/local-services.sh, loopback, spools, heartbeat 200 ms, peer
# timeout 1 s), each case on fresh services:
#   (a) the top prior and the decoder killed -9 at the same moment while both hold
#       jobs (the decoder in flight, the top prior in its spool until their DONE), and
#       restarted together with the same commands and spools;
#   (b) the top prior stopped with SIGTERM while it holds jobs (it must exit within
#       the stop grace), then restarted with the same command and spool.
# Every file of every run directory equals an undisturbed shell-pipe run, no job has a
# second run directory (J.1) nor an error record, and every spool is empty at the end.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
B=$PWD/$BUILD/bin
T=$(mktemp -d /tmp/jb_faults_topdec.XXXXXX)
LS=pipelines/local-services.sh
. tests/sh/lib/faults.sh
trap fj_services_cleanup EXIT
N=6
echo "-- seed $seed: $N jobs per case"
fj_refs_cached $N
lost=0 differ=0 dups=0 held=0 faults=0

# start_case NAME: services in $T/sNAME, jobs submitted; sets st
start_case() {
    local P rc
    st=$T/s$1
    P=$(fj_free_port)
    $LS --state "$st" --base-port "$P" --heartbeat 200 --peer-timeout 1000 \
        --stage-args "$FJ_STAGE_ARGS" start > "$T/start.$1" 2>&1; rc=$?
    check "($1) services started (rc $rc)" "[ $rc = 0 ]"
    [ $rc = 0 ] || { cat "$T/start.$1"; return 1; }
    fj_submit $N "$($LS --state "$st" endpoint)"
}
end_case() {
    local name=$1 f
    fj_wait $N "$st/out" 120
    fj_reap
    fj_compare_all $N "$st/out" "$fj_ref"
    check "($name) every job completed ($((N - fj_lost)) of $N)" "[ $fj_lost = 0 ]"
    check "($name) every file identical to the undisturbed run ($fj_diff differ)" "[ $fj_diff = 0 ]"
    check "($name) one run directory per job ($fj_dups more)" "[ $fj_dups = 0 ]"
    fj_spools_drain "$st" 15
    fj_held=$(fj_spool_jobs "$st")
    check "($name) every spool is empty at the end ($fj_held jobs held)" "[ $fj_held = 0 ]"
    lost=$((lost + fj_lost)) differ=$((differ + fj_diff)) dups=$((dups + fj_dups)) held=$((held + fj_held))
    if [ "$fail" != 0 ]; then
        for f in "$st"/log/*.log; do echo "== $f"; grep -E 'WARN|ERROR|cancel' "$f" | tail -n 12; done
    fi
    $LS --state "$st" --stop-timeout 5 stop > /dev/null 2>&1
    check "($name) no job failed at the decoder (its exit on SIGTERM)" \
        "! grep -q 'job(s) failed' '$st/log/decoder-0.log'"
}

echo "-- (a) kill -9 of the top prior and the decoder together"
if start_case a; then
    # Both killed with jobs in flight: the decoder holds jobs, and the top prior's spool
    # still holds them (a finished job's spool stays until its DONE comes back from the
    # decoder). Not "the top prior is still sampling": the tiny top prior is often through
    # its jobs before a status poll of a loaded machine gets an answer (seen on 2026-12-06
    # under four busy loops: top-0 0 jobs and decoder-0 6 at the first poll, 5 s in).
    top_spooled() { find "$st/spool/top-0" -mindepth 1 -maxdepth 1 -type d 2>/dev/null | wc -l; }
    end=$((SECONDS + 60)) held_a=0
    while [ $SECONDS -lt $end ]; do
        if [ "$(top_spooled)" -gt 0 ] && fj_wait_busy "$st" 1 decoder-0; then held_a=1; break; fi
        sleep 0.1
    done
    check "(a) the decoder holds jobs and the top prior's spool still holds them" "[ $held_a = 1 ]"
    fj_wait_busy "$st" 1 top-0 && echo "  the top prior is still sampling too"
    p1=$(cat "$st/run/top-0.pid") p2=$(cat "$st/run/decoder-0.pid")
    kill -KILL "$p1" "$p2"; faults=$((faults + 2))
    echo "  kill -9 top-0 (pid $p1) and decoder-0 (pid $p2) at ${SECONDS}s"
    fj_wait_dead "$p1" "$p2"
    $LS --state "$st" start top-0 decoder-0 > /dev/null 2>&1
    check "(a) both restarted" "[ $? = 0 ]"
    end_case a
fi

echo "-- (b) SIGTERM of the top prior, then its restart"
if start_case b; then
    fj_wait_busy "$st" 60 top-0
    check "(b) the top prior holds jobs" "[ $? = 0 ]"
    # Best when both middles hold jobs too (not always seen under load: the top prior
    # can be through its jobs first).
    fj_wait_busy "$st" 5 top-0 mid-0 mid-1 && echo "  the middles hold jobs too"
    p1=$(cat "$st/run/top-0.pid")
    kill -TERM "$p1"; faults=$((faults + 1))
    echo "  SIGTERM to top-0 (pid $p1) at ${SECONDS}s"
    for i in $(seq 200); do fj_alive "$p1" || break; sleep 0.05; done
    check "(b) the top prior stopped within 10 s" "! fj_alive $p1"
    check "(b) it stopped cleanly (exit 0: 'stopped by a signal', no ERROR in its log)" \
        "grep -q 'stopped by a signal' '$st/log/top-0.log' && ! grep -q ERROR '$st/log/top-0.log'"
    $LS --state "$st" start top-0 > /dev/null 2>&1
    check "(b) restarted" "[ $? = 0 ]"
    end_case b
fi
fj_lost=$lost fj_diff=$differ fj_dups=$dups fj_held=$held
fj_summary topdec $((2 * N)) $faults
echo "test_faults_topdec: $pass passed, $fail failed"
[ "$fail" = 0 ]
