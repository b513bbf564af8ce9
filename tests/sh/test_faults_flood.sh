#!/bin/bash
# test_faults_flood.sh (issue 5, fault test d): while 8 jobs run through 1 top prior,
# 2 middle, 2 bottom upsamplers and 1 decoder (pipelines/local-services.sh, loopback),
# every endpoint they listen on (the top prior's input, every output, every control
# endpoint) gets a stream of bad traffic from tests/sh/lib/zmtp.py: random bytes,
# ZMTP greetings cut off or with a bad signature or version, the wrong socket type,
# frames cut off or with an absurd size, and, after a correct handshake as an unknown
# peer: headers that are not MessagePack, a MessagePack array, an unknown type, three
# parts, codes whose payload does not decompress, an ack of a job nobody sent.
# The stages keep serving, every job completes with files identical to an undisturbed
# shell-pipe run, and each message-level rejection is logged (a WARN line naming the peer).
# Prints: faults: test=flood jobs=N faults=N lost=N differing=N.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
B=$PWD/$BUILD/bin
T=$(mktemp -d /tmp/jb_faults_flood.XXXXXX)
LS=pipelines/local-services.sh
. tests/sh/lib/faults.sh
cleanup() { kill "${flooder:-}" 2>/dev/null; fj_services_cleanup; }
trap cleanup EXIT
N=8

fj_refs $N "$T/ref"
P=$(fj_free_port)
$LS --state "$T/s" --base-port "$P" --mid 2 --bottom 2 --heartbeat 200 --peer-timeout 1000 \
    --stage-args "$FJ_STAGE_ARGS" start > "$T/start.txt" 2>&1; rc=$?
check "services started (rc $rc)" "[ $rc = 0 ]"
[ $rc = 0 ] || cat "$T/start.txt"
# Every port the services listen on: top input P, outputs P+10, P+20.., P+30..; controls.
eps="127.0.0.1:$P,127.0.0.1:$((P + 10)),127.0.0.1:$((P + 20)),127.0.0.1:$((P + 21)),127.0.0.1:$((P + 30)),127.0.0.1:$((P + 31))"
for c in 40 50 51 60 61 70; do
    ss -ltn "sport = :$((P + c))" | grep -q LISTEN && eps+=",127.0.0.1:$((P + c))"
done
echo "-- seed $seed: flooding $(tr , '\n' <<<"$eps" | wc -l) endpoints while $N jobs run"
python3 tests/sh/lib/zmtp.py flood "$eps" 12 "$seed" "$T/flood.log" > "$T/flood.count" 2>"$T/flood.err" &
flooder=$!
sleep 1
fj_submit $N "$($LS --state "$T/s" endpoint)"
wait $flooder; flooder=""
faults=$(cat "$T/flood.count" 2>/dev/null || echo 0)
fj_wait $N "$T/s/out" 150
fj_reap
fj_compare $N "$T/s/out" "$T/ref"
check "$faults bad connections or messages sent" "[ ${faults:-0} -ge 50 ]"
check "every job completed ($((N - fj_lost)) of $N)" "[ $fj_lost = 0 ]"
check "every output identical to the undisturbed run ($fj_diff differ)" "[ $fj_diff = 0 ]"
alive=0; for n in top-0 mid-0 mid-1 bottom-0 bottom-1 decoder-0; do fj_alive "$(cat "$T/s/run/$n.pid")" && alive=$((alive + 1)); done
check "every instance still running ($alive of 6)" "[ $alive = 6 ]"
# Message-level faults (after a correct handshake) must each leave a log line.
msg_faults=$(grep -cE ' (garbage-header|bad-msgpack-type|unknown-type|three-parts|codes-bad-payload|unknown-peer-ack)$' "$T/flood.log")
logged=$(cat "$T"/s/log/*.log | grep -ciE 'WARN.*(reject|drop|bad|unknown|malformed|refus)')
check "each of the $msg_faults message-level faults logged ($logged rejection lines)" "[ $logged -ge $msg_faults ]"
echo "  by kind: $(awk '{print $2}' "$T/flood.log" | sort | uniq -c | awk '{printf "%s %s, ", $2, $1}')"
# Still serving after the flood: one more job, through the same services (0.3 s: the
# bundled upsamplers take songs of at least one context, 0.28 s at level 1).
"$B/jukebox-job" sample -q --id after --total-seconds 0.35 --seconds 0.3 --vqvae "$M/vqvae.safetensors" \
    -o "$($LS --state "$T/s" endpoint)"
for i in $(seq 200); do [ -d "$T/s/out/after" ] && break; sleep 0.1; done
check "a job after the flood completes" "[ -f '$T/s/out/after/codes.jbc' ]"
fj_summary flood $N "${faults:-0}"
[ "$fail" = 0 ] || { for f in "$T"/s/log/*.log; do echo "== $f"; grep -E 'WARN|ERROR' "$f" | tail -n 5; done; }
check_summary test_faults_flood
