#!/bin/bash
# test_scaleout.sh: several instances per stage over the reliable link (tcp loopback,
# docs/reliability.md), on the bundled toy models:
#   - 1 top prior, 2 middle and 2 bottom upsamplers, 1 decoder; every stage serves its
#     output and the instances below connect to all instances above;
#   - 8 jobs submitted with jukebox-job: every job completes, both instances of each
#     upsampler got work, outputs byte-identical to the same jobs through a shell pipe;
#   - again, with one bottom upsampler killed (kill -9) as soon as it has a job: its
#     twin finishes its jobs, outputs still identical;
#   - again with SIGTERM instead: bottom-a hands its unfinished jobs back (RELEASE) and
#     exits 0; outputs still identical.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
B=$BUILD/bin
M=models/default
T=$(mktemp -d /tmp/jb_scaleout.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done; wait 2>/dev/null; [ -n "${JB_KEEP:-}" ] && echo "kept $T" || rm -rf "$T"; }
trap cleanup EXIT
. tests/sh/lib/check.sh

N=8
LINK=(--heartbeat 100 --peer-timeout 800)
job() {   # job I [extra args]: the spec of job I
    local i=$1; shift
    "$B/jukebox-job" sample -q --id "sj$i" --seed "$i" --samples 2 --total-seconds 0.9 \
        --seconds 0.8 --vqvae $M/vqvae.safetensors "$@"
}

echo "-- reference: the $N jobs through a shell pipe"
start=$SECONDS
for i in $(seq 1 $N); do job "$i"; done |
    "$B/jukebox-prior-top" -q -t 1 -m $M/prior_level_2.safetensors |
    "$B/jukebox-upsampler-mid" -q -t 1 -m $M/prior_level_1.safetensors |
    "$B/jukebox-upsampler-bottom" -q -t 1 -m $M/prior_level_0.safetensors |
    "$B/jukebox-decoder" -q -t 1 -m $M/vqvae.safetensors --outdir "$T/ref"
check "shell pipe: $N run directories" "[ \$(ls '$T/ref' | wc -l) = $N ]"

# run NAME [SIG]: the networked pipeline; with SIG (KILL or TERM), bottom-a gets it as soon
# as it has accepted a job. Sets dec (decoder pid) and the stage pids.
run() {
    local name=$1 kill_one=${2:-}
    local L=$T/$name/log
    mkdir -p "$L"
    ports=($(python3 -c 'import socket
ss=[socket.socket() for _ in range(6)]
[s.bind(("127.0.0.1",0)) for s in ss]
print(" ".join(str(s.getsockname()[1]) for s in ss))'))
    local p0=tcp://127.0.0.1:${ports[0]} p1=tcp://127.0.0.1:${ports[1]}
    local p2a=tcp://127.0.0.1:${ports[2]} p2b=tcp://127.0.0.1:${ports[3]}
    local p3a=tcp://127.0.0.1:${ports[4]} p3b=tcp://127.0.0.1:${ports[5]}
    "$B/jukebox-decoder" -t 1 -m $M/vqvae.safetensors --name dec "${LINK[@]}" \
        --in ">$p3a,>$p3b" --outdir "$T/$name/out" --jobs $N 2>"$L/dec.log" & dec=$!
    start_bottom_a() {
        "$B/jukebox-upsampler-bottom" -t 1 -m $M/prior_level_0.safetensors --name bottom-a \
            "${LINK[@]}" --in ">$p2a,>$p2b" --out "@$p3a" 2>>"$L/bottom-a.log" & b0a=$!
    }
    start_bottom_a
    "$B/jukebox-upsampler-bottom" -t 1 -m $M/prior_level_0.safetensors --name bottom-b \
        "${LINK[@]}" --in ">$p2a,>$p2b" --out "@$p3b" 2>"$L/bottom-b.log" & b0b=$!
    "$B/jukebox-upsampler-mid" -t 1 -m $M/prior_level_1.safetensors --name mid-a \
        "${LINK[@]}" --in ">$p1" --out "@$p2a" 2>"$L/mid-a.log" & b1a=$!
    "$B/jukebox-upsampler-mid" -t 1 -m $M/prior_level_1.safetensors --name mid-b \
        "${LINK[@]}" --in ">$p1" --out "@$p2b" 2>"$L/mid-b.log" & b1b=$!
    "$B/jukebox-prior-top" -t 1 -m $M/prior_level_2.safetensors --name top "${LINK[@]}" \
        --in "@$p0" --out "@$p1" 2>"$L/top.log" & b2=$!
    pids+=($dec $b0a $b0b $b1a $b1b $b2)
    # Every link up before the jobs go in: the toy top prior finishes a job in a few ms,
    # so a middle instance that joins a moment after its twin would find all 8 jobs
    # already handed out (what the checks below test is sharing, not joining speed).
    local w links_up=0
    for w in $(seq 1 200); do
        grep -q "consumer mid-a " "$L/top.log" && grep -q "consumer mid-b " "$L/top.log" &&
            grep -q "consumer bottom-a " "$L/mid-a.log" && grep -q "consumer bottom-b " "$L/mid-a.log" &&
            grep -q "consumer bottom-a " "$L/mid-b.log" && grep -q "consumer bottom-b " "$L/mid-b.log" &&
            grep -q "consumer dec " "$L/bottom-a.log" && grep -q "consumer dec " "$L/bottom-b.log" &&
            { links_up=1; break; }
        sleep 0.05
    done
    check "$name: every stage instance joined its producers within 10 s" "[ $links_up = 1 ]"
    local rcs=""
    for i in $(seq 1 $((N - 1))); do
        job "$i" -o "$p0" --timeout 20000 "${LINK[@]}"; rcs="$rcs$?"
    done
    if [ -z "$kill_one" ]; then   # the last one waits for DONE: its run is written by then
        job $N -o "$p0" --timeout 20000 --wait "${LINK[@]}"; rcs="$rcs$?"
        check "$name: jukebox-job --wait returns once the run directory is written" \
            "[ -s '$T/$name/out/sj$N/codes.jbc' ]"
    else
        job $N -o "$p0" --timeout 20000 "${LINK[@]}"; rcs="$rcs$?"
    fi
    check "$name: jukebox-job: every job acknowledged (exit codes $rcs)" "[ '$rcs' = '$(printf '0%.0s' $(seq 1 $N))' ]"
    if [ -n "$kill_one" ]; then
        for i in $(seq 1 200); do grep -q "accepted" "$L/bottom-a.log" && break; sleep 0.02; done
        local sig=$kill_one
        [ $sig = RESTART ] && sig=KILL
        kill -$sig $b0a
        wait $b0a 2>/dev/null; local krc=$?
        check "$name: bottom-a got SIG$sig with a job in hand (rc $krc)" \
            "grep -q accepted '$L/bottom-a.log' && { [ $sig = KILL ] || [ $krc = 0 ]; }"
        if [ $kill_one = RESTART ]; then   # the same command again: it rejoins
            start_bottom_a
            pids+=($b0a)
        fi
    fi
    for i in $(seq 1 600); do kill -0 $dec 2>/dev/null || break; sleep 0.1; done
    wait $dec; local rc=$?
    check "$name: the decoder wrote $N jobs and exited 0 (rc $rc)" "[ $rc = 0 ]"
    local same=0
    for i in $(seq 1 $N); do
        local d=sj$i f ok_i=1
        for f in codes.jbc level_0/sample_0.wav level_0/sample_1.wav level_2/sample_1.wav; do
            cmp -s "$T/$name/out/$d/$f" "$T/ref/$d/$f" || ok_i=0
        done
        same=$((same + ok_i))
    done
    check "$name: $same/$N jobs byte-identical to the shell pipe (codes, audio)" "[ $same = $N ]"
    check "$name: no other run directory (nothing written twice)" "[ \$(ls '$T/$name/out' | wc -l) = $N ]"
}

echo "-- jukebox-job with no stage listening"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
t0=$SECONDS
job 1 -o "tcp://127.0.0.1:$port" --timeout 700 2>"$T/nobody.err"; rc=$?
check "exit 69 when no stage answers (rc $rc, $((SECONDS - t0)) s)" "[ $rc = 69 ] && [ $((SECONDS - t0)) -le 5 ]"
check "and says so: $(head -c 120 "$T/nobody.err")" "grep -q 'no stage answered' '$T/nobody.err'"

echo "-- one endpoint, two instances; the decoder's control reply; a message of 1 part"
# ipc://: ZeroMQ would replace a live instance's socket file; the second instance is refused
# as over tcp (exit 69), and the first stays reachable.
"$B/jukebox-decoder" -t 1 -m $M/vqvae.safetensors "${LINK[@]}" --in "ipc://$T/d.sock" \
    --control "ipc://$T/dctl.sock" --outdir "$T/ipc_out" --name dec-a 2> "$T/deca.log" & da=$!
pids+=($da)
for i in $(seq 200); do [ -S "$T/dctl.sock" ] && break; sleep 0.05; done
timeout 30 "$B/jukebox-decoder" -t 1 -m $M/vqvae.safetensors "${LINK[@]}" --in "ipc://$T/d.sock" \
    --outdir "$T/ipc_out2" --name dec-b 2> "$T/decb.log"; rc=$?
check "a second decoder on a live ipc:// endpoint: exit 69, said (rc $rc)" \
    "[ $rc = 69 ] && grep -q 'in use' '$T/decb.log'"
"$B/jukebox-status" --json "ipc://$T/dctl.sock" > "$T/dctl.json" 2>/dev/null; rc=$?
check "the decoder's control reply: its keys, its input link nested as in (rc $rc)" \
    "python3 -c 'import json, sys
o = json.load(open(sys.argv[1]))
sys.exit(not (o[\"stage\"] == \"decoder\" and o[\"in\"][\"instance\"] == \"dec-a\" and
              \"bad\" in o[\"in\"][\"stats\"]))' '$T/dctl.json'"
job 1 -o "ipc://$T/d.sock" --timeout 5000 --wait "${LINK[@]}"; rc=$?
check "the first decoder still takes a job (rc $rc)" "[ $rc = 0 ] && [ \$(ls '$T/ipc_out' | wc -l) = 1 ]"
kill -TERM $da; wait $da; pids=()
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$B/jukebox-decoder" -t 1 -m $M/vqvae.safetensors "${LINK[@]}" --in "tcp://127.0.0.1:$port" \
    --outdir "$T/p1_out" 2> "$T/p1.log" & d=$!
pids+=($d)
for i in $(seq 100); do python3 tests/sh/lib/zmtp.py parts "127.0.0.1:$port" odd-peer-7 1 2>/dev/null && break; sleep 0.1; done
for i in $(seq 100); do grep -q 'part from odd-peer-7' "$T/p1.log" && break; sleep 0.1; done
check "a message of 1 part: dropped with a WARN naming the peer's routing id" \
    "grep -q 'a message of 1 part from odd-peer-7.* dropped' '$T/p1.log'"
kill -TERM $d; wait $d; pids=()

echo "-- $N jobs through 1 top, 2 middle, 2 bottom, 1 decoder (tcp loopback)"
run scale
L=$T/scale/log
for s in mid-a mid-b bottom-a bottom-b; do
    n=$(grep -c "accepted" "$L/$s.log")
    check "scale: $s got work ($n job(s))" "[ $n -ge 1 ]"
done
n=$(grep -ch "level=0 done" "$L/bottom-a.log" "$L/bottom-b.log" | paste -sd+ | bc)
check "scale: the bottom instances finished $n jobs between them ($N)" "[ $n = $N ]"
# SIGTERM: every stage exits 0 (nothing unfinished: nothing to hand back).
kill -TERM $b0a $b0b $b1a $b1b $b2
for p in $b0a $b0b $b1a $b1b $b2; do wait $p; r=$?; check "scale: stage $p exits 0 on SIGTERM (rc $r)" "[ $r = 0 ]"; done
pids=()

echo "-- a job sent again to a decoder (with a spool) whose run directory already has it: DONE at once"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$B/jukebox-decoder" -q -t 1 -m $M/vqvae.safetensors "${LINK[@]}" --in "tcp://127.0.0.1:$port" \
    --outdir "$T/scale/out" --spool "$T/dspool" & d=$!
pids+=($d)
job 1 -o "tcp://127.0.0.1:$port" --timeout 5000 --wait "${LINK[@]}"; rc=$?
check "jukebox-job --wait gets DONE for an already written job (rc $rc)" "[ $rc = 0 ]"
check "and nothing is written again" "[ \$(ls '$T/scale/out' | wc -l) = $N ]"
# The resent job is answered, not held: a restarted decoder forgot its DONE, and a
# spool entry made for the resend would stay there for ever (CI, stop 25).
check "and the decoder's spool keeps nothing of it ($(ls "$T/dspool" | grep -vc '^lock$'))" \
    "[ \$(ls '$T/dspool' | grep -vc '^lock\$') = 0 ]"
kill -TERM $d; wait $d; rc=$?
check "the decoder exits 0 on SIGTERM (rc $rc)" "[ $rc = 0 ]"
pids=()

echo "-- the same with bottom-a killed -9 in the middle"
run kill9 KILL
L=$T/kill9/log
# Every job bottom-a accepted and did not finish was finished by bottom-b.
left=0; redone=0
for id in $(grep -o 'job=[^ ]* level=0 accepted' "$L/bottom-a.log" | cut -d' ' -f1 | cut -d= -f2); do
    grep -q "job=$id level=0 done" "$L/bottom-a.log" && continue
    left=$((left + 1))
    grep -q "job=$id level=0 done" "$L/bottom-b.log" && redone=$((redone + 1))
done
check "kill9: bottom-b finished the $left job(s) bottom-a left unfinished ($redone)" "[ $redone = $left ]"
check "kill9: a middle upsampler saw bottom-a die and moved its jobs" \
    "grep -q 'bottom-a is gone; the job goes to another one' '$L/mid-a.log' '$L/mid-b.log'"
kill -TERM $b0b $b1a $b1b $b2
for p in $b0b $b1a $b1b $b2; do wait $p; r=$?; check "kill9: stage $p exits 0 on SIGTERM (rc $r)" "[ $r = 0 ]"; done
pids=()
echo "-- the same with bottom-a killed -9 and restarted at once with the same command"
run restart RESTART
L=$T/restart/log
check "restart: bottom-a rejoined (the decoder saw a new run of it)" \
    "grep -q 'bottom-a restarted' '$L/dec.log'"
kill -TERM $b0a $b0b $b1a $b1b $b2
for p in $b0a $b0b $b1a $b1b $b2; do wait $p; r=$?; check "restart: stage $p exits 0 on SIGTERM (rc $r)" "[ $r = 0 ]"; done
pids=()

echo "-- the same with bottom-a stopped by SIGTERM in the middle (hand-back)"
run term TERM
L=$T/term/log
n=$(grep -o 'handed back [0-9]*' "$L/bottom-a.log" | grep -o '[0-9]*$')
check "term: bottom-a handed back ${n:-0} unfinished job(s) and exited 0" "grep -q 'stopped by a signal' '$L/bottom-a.log'"
if [ "${n:-0}" -gt 0 ]; then
    check "term: its producers reassigned them at once (RELEASE)" "grep -q 'handed back by bottom-a' '$L/mid-a.log' '$L/mid-b.log'"
fi
kill -TERM $b0b $b1a $b1b $b2
for p in $b0b $b1a $b1b $b2; do wait $p; r=$?; check "term: stage $p exits 0 on SIGTERM (rc $r)" "[ $r = 0 ]"; done
pids=()
echo "test_scaleout: $((SECONDS - start)) s"
check_summary test_scaleout
