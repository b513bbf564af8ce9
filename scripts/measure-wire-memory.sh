#!/bin/bash
# measure-wire-memory.sh: peak RSS (VmHWM, via GNU time) of each stage and the decoder fed
# the largest messages the wire allows (docs/wire.md 3.1): 8 codes messages of 4 Mi codes
# (16 MiB decompressed each, LZ4 blocks of zeros) of a job without a job message, (a) over
# a pipe, (b) over the link from a producer that uses all the credit the consumer gives
# (build/tests/test_jb_link_bytes --produce). Also each process idle (an empty input) and
# the decoder fed a 1 GiB claim (the spec's largest before issue 13). Tiny golden models.
# Prints a table in kB. Env: BUILD (default build).
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
B=$BUILD/bin
M=tests/golden/pipeline_tiny
J=tests/sh/lib/jbx.py
T=$(mktemp -d /tmp/wire_mem.XXXXXX)
trap 'rm -rf "$T"' EXIT
for i in $(seq 0 7); do
    python3 "$J" frame "{\"type\":\"codes\",\"v\":1,\"job\":\"flood\",\"level\":2,\"offset\":$((i * 4194304)),\"count\":4194304,\"batch\":1,\"raw_len\":16777216,\"dtype\":\"i32\"}" zeros:16777216
done > "$T/big.jbc"
python3 "$J" frame '{"type":"end","v":1,"job":"flood"}' >> "$T/big.jbc"
python3 "$J" frame '{"type":"codes","v":1,"job":"g","level":0,"offset":0,"count":268435456,"batch":1,"raw_len":1073741824,"dtype":"i32"}' zeros:1073741824 > "$T/gib.jbc"
cmd() {   # NAME: the command line of one process reading stdin or --in $IN
    case $1 in
    prior-top) echo "$B/jukebox-prior-top --threads 1 --model $M/prior_level_2.safetensors";;
    upsampler-mid) echo "$B/jukebox-upsampler-mid --threads 1 --model $M/prior_level_1.safetensors";;
    upsampler-bottom) echo "$B/jukebox-upsampler-bottom --threads 1 --model $M/prior_level_0.safetensors";;
    decoder) echo "$B/jukebox-decoder --threads 1 --model $M/vqvae.safetensors --outdir $T/out";;
    esac
}
rss() { /usr/bin/time -f %M -o "$T/rss" "$@" >/dev/null 2>"$T/log"; tail -n 1 "$T/rss"; }
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
printf "%-18s %10s %10s %12s %12s\n" process idle_kB pipe_kB link_kB gib_claim_kB
for p in prior-top upsampler-mid upsampler-bottom decoder; do
    idle=$(rss $(cmd $p) < /dev/null)
    pipe=$(rss $(cmd $p) < "$T/big.jbc")
    gib=-
    [ $p = decoder ] && gib=$(rss $(cmd $p) < "$T/gib.jbc")
    P=$(port)
    out=""
    [ $p != decoder ] && out="--out -"
    /usr/bin/time -f %M -o "$T/rss" $(cmd $p) --in "@tcp://127.0.0.1:$P" $out >/dev/null 2>"$T/log" &
    pid=$!
    "$BUILD/tests/test_jb_link_bytes" --produce ">tcp://127.0.0.1:$P" 8
    sleep 1
    child=$(cat /proc/$pid/task/$pid/children 2>/dev/null)   # the process time runs
    [ -n "$child" ] && kill -TERM $child 2>/dev/null
    wait $pid 2>/dev/null
    link=$(tail -n 1 "$T/rss")
    printf "%-18s %10s %10s %12s %12s\n" $p "$idle" "$pipe" "$link" "$gib"
done
