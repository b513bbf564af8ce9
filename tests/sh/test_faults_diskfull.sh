#!/bin/bash
# test_faults_diskfull.sh (issue 18 E): a bottom upsampler whose spool lies on a nearly
# full file system (a 1 MiB tmpfs mounted on its spool directory; without mount
# permission, a file size limit, ulimit -f, instead). One instance of each stage
# (pipelines/local-services.sh, loopback, heartbeat 200 ms, peer timeout 1 s), 4 jobs.
# The bottom upsampler runs several times, each time with less room left than its
# jobs need (from nothing to ~100 KiB, so that the write that fails is in turn the
# lock, a job's notes, its in.jbc and its out.jbc). Each time it must either exit 74
# with a message naming the spool file and the error, or keep running and refuse the
# input it cannot spool (not acked; then stopped with SIGTERM: exit 0) — never crash.
# Then, with room again, every job completes: every file identical to an undisturbed
# shell-pipe run, one run directory per job, every spool empty at the end.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
B=$PWD/$BUILD/bin
T=$(mktemp -d /tmp/jb_faults_diskfull.XXXXXX)
LS=pipelines/local-services.sh
. tests/sh/lib/faults.sh
st=$T/s
sp=$st/spool/bottom-0
mounted=0
cleanup() {
    kill "${fj_pids[@]}" 2>/dev/null
    [ -n "${bpid:-}" ] && kill -KILL "$bpid" 2>/dev/null
    $LS --state "$st" --stop-timeout 5 stop >/dev/null 2>&1
    [ $mounted = 1 ] && umount "$sp" 2>/dev/null
    [ -n "${FAULTS_KEEP:-}" ] && echo "kept $T" || rm -rf "$T"
}
trap cleanup EXIT
N=4
fj_refs_cached $N
mkdir -p "$sp"
if mount -t tmpfs -o size=1m jb_faults_diskfull "$sp" 2>/dev/null; then
    mounted=1
    echo "-- seed $seed: $N jobs; the bottom upsampler's spool on a 1 MiB tmpfs"
else
    echo "-- seed $seed: $N jobs; the bottom upsampler under a file size limit (no mount here)"
fi
P=$(fj_free_port)
$LS --state "$st" --base-port "$P" --mid 1 --bottom 1 --heartbeat 200 --peer-timeout 1000 \
    --stage-args "$FJ_STAGE_ARGS" start > "$T/start.txt" 2>&1; rc=$?
check "services started (rc $rc)" "[ $rc = 0 ]"
[ $rc = 0 ] || cat "$T/start.txt"
$LS --state "$st" stop bottom-0 > /dev/null 2>&1
fj_submit $N "$($LS --state "$st" endpoint)"
cmd=$(cat "$st/cmd/bottom-0")
log=$st/log/bottom-0.log

# room ROOM_KIB: leaves that much free on the tmpfs (a filler file), or sets the file
# size limit to it (then each spool file may grow to ROOM_KIB).
room() {
    rm -f "$sp/filler"
    if [ $mounted = 1 ]; then
        local avail; avail=$(df --output=avail -B1 "$sp" | tail -n 1)
        [ "$avail" -gt $(($1 * 1024)) ] && head -c $((avail - $1 * 1024)) /dev/zero > "$sp/filler" 2>/dev/null
        limit=unlimited
    else
        limit=$(($1 > 0 ? $1 : 1))
    fi
}
crashes=0 rounds=0
for kib in 0 4 12 30 60 100; do
    room "$kib"
    [ "$kib" = 0 ] && rm -f "$sp/lock"   # so that the first write is the lock's own
    rounds=$((rounds + 1))
    mark=$(wc -l < "$log")
    ( ulimit -f "$limit"; exec bash -c "exec $cmd" ) >> "$log" 2>&1 & bpid=$!
    # Until it exits, or says it cannot spool an input (then it keeps serving what it
    # holds and is stopped here with SIGTERM). A spool error it cannot go on after
    # (ERROR) ends the process by itself.
    end=$((SECONDS + 60))
    while fj_alive "$bpid" && [ $SECONDS -lt $end ] &&
          ! tail -n +"$mark" "$log" | grep -qE 'No space left|File too large'; do sleep 0.1; done
    if tail -n +"$mark" "$log" | grep -E 'No space left|File too large' | grep -q ERROR; then
        for i in $(seq 400); do fj_alive "$bpid" || break; sleep 0.05; done
    fi
    if fj_alive "$bpid"; then
        kill -TERM "$bpid"
        for i in $(seq 200); do fj_alive "$bpid" || break; sleep 0.05; done
    fi
    wait "$bpid"; rc=$?; bpid=""
    [ $rc -ge 128 ] && crashes=$((crashes + 1))
    why=$(tail -n +"$mark" "$log" | grep -E 'No space left|File too large' | head -n 1)
    echo "  room ${kib} KiB: exit $rc; ${why:-(no spool error)}"
    check "room ${kib} KiB: exit 74 or (refusing input, stopped) 0, never a crash (rc $rc)" \
        "[ $rc = 74 ] || [ $rc = 0 ]"
    check "room ${kib} KiB: the spool error names the spool file" \
        "echo \"\$why\" | grep -q 'spool/bottom-0'"
    [ $rc = 74 ] && check "room ${kib} KiB: exit 74 is explained in the log" \
        "tail -n +$mark '$log' | grep -E 'ERROR' | grep -qE 'No space left|File too large|spool'"
done
rm -f "$sp/filler"
$LS --state "$st" start bottom-0 > /dev/null 2>&1
check "with room again, restarted" "[ $? = 0 ]"
fj_wait $N "$st/out" 120
fj_reap
fj_compare_all $N "$st/out" "$fj_ref"
check "every job completed ($((N - fj_lost)) of $N)" "[ $fj_lost = 0 ]"
check "every file identical to the undisturbed run ($fj_diff differ)" "[ $fj_diff = 0 ]"
check "one run directory per job ($fj_dups more)" "[ $fj_dups = 0 ]"
fj_spools_drain "$st" 15
fj_held=$(fj_spool_jobs "$st")
check "every spool is empty at the end ($fj_held jobs held)" "[ $fj_held = 0 ]"
[ "$fail" = 0 ] || { for f in "$st"/log/*.log; do echo "== $f"; grep -E 'WARN|ERROR' "$f" | tail -n 8; done; }
fj_summary diskfull $N $rounds
echo "test_faults_diskfull: $pass passed, $fail failed"
[ "$fail" = 0 ]
