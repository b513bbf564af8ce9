#!/bin/bash
# test_decoder_spool_void.sh (issue 18, the soak's differing output): a decoder restarted on
# a spool whose held messages lack their stream's start (no seq 0, so no record of which
# producer sent them) must not replay them: with the job's beginning missing they could even
# make a whole job without its job message (a run directory that differs from the real one).
# It voids them (says so, removes the job's spool) and takes the job again from seq 0.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
B=$PWD/$BUILD/bin
M=models/default
T=$(mktemp -d /tmp/jb_dec_void.XXXXXX)
. tests/sh/lib/check.sh
pids=()
cleanup() { for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done; { wait; } 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT
LINK=(--heartbeat 100 --peer-timeout 800)
read -r p3 p4 < <(python3 -c 'import socket
ss = [socket.socket() for _ in range(2)]
[s.bind(("127.0.0.1", 0)) for s in ss]
print(" ".join(str(s.getsockname()[1]) for s in ss))')
e3=tcp://127.0.0.1:$p3 nobody=tcp://127.0.0.1:$p4
sp=$T/spool

echo "-- a decoder killed -9 with part of a job spooled"
"$B/jukebox-decoder" -q -t 1 -m $M/vqvae.safetensors --name dec "${LINK[@]}" --spool "$sp" \
    --in ">$e3" --outdir "$T/out" 2>> "$T/dec.log" & P_DEC=$!; pids+=($P_DEC)
rm -f "$T/ready"
WATCH_READY=$T/ready SPOOL_FILE=in python3 tests/sh/lib/spool_watch.py "$sp" vj 0 3 $P_DEC KILL 60 & w=$!
for i in $(seq 1 500); do [ -e "$T/ready" ] && break; sleep 0.01; done
( "$B/jukebox-job" sample -q --id vj --total-seconds 0.99 --seconds 0.99 --samples 2 \
      --hop-fraction 0.5,0.25,0.0625 --seed 3 --vqvae $M/vqvae.safetensors |
  "$B/jukebox-prior-top" -q -t 1 -m $M/prior_level_2.safetensors |
  "$B/jukebox-upsampler-mid" -q -t 1 -m $M/prior_level_1.safetensors |
  exec "$B/jukebox-upsampler-bottom" -q -t 1 -m $M/prior_level_0.safetensors --name bot \
      "${LINK[@]}" --out "@$e3" ) 2> "$T/pipe.log" & P_PIPE=$!; pids+=($P_PIPE)
{ wait $w; } 2>/dev/null; killed=$?
{ wait $P_DEC; } 2>/dev/null
kill -KILL $P_PIPE 2>/dev/null; pkill -KILL -f -- "--name bot .*$e3" 2>/dev/null
check "killed -9 with the job's bottom codes partly spooled (watcher $killed)" \
    "[ $killed = 0 ] && [ -s '$sp/vj/in.jbc' ] && [ -s '$sp/vj/from' ]"

echo "-- restarted on that spool without the stream's start"
rm -f "$sp/vj/from"   # as when the message that records it (seq 0) was lost
"$B/jukebox-decoder" -t 1 -m $M/vqvae.safetensors --name dec "${LINK[@]}" --spool "$sp" \
    --in ">$nobody" --outdir "$T/out" 2> "$T/dec2.log" & P2=$!; pids+=($P2)
for i in $(seq 1 300); do
    grep -q "job=vj: the spool .* without their stream's start" "$T/dec2.log" && [ ! -e "$sp/vj" ] && break
    sleep 0.1
done
check "the held messages are void: said, naming the job and the spool" \
    "grep -q \"job=vj: the spool $sp holds [0-9]* message(s) without their stream's start\" '$T/dec2.log'"
check "the job's spool is removed" "[ ! -e '$sp/vj' ]"
check "nothing replayed: no 'resumed from the spool'" "! grep -q 'job=vj resumed' '$T/dec2.log'"
kill -TERM $P2; { wait $P2; } 2>/dev/null; rc=$?
check "no run directory or error record for the job (rc $rc on SIGTERM)" "[ $rc = 0 ] && [ ! -e '$T/out/vj' ]"
check_finish test_decoder_spool_void
