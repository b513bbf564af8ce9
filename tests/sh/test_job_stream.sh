#!/bin/bash
# test_job_stream.sh: the job stream of docs/wire.md section 8 through real stage
# processes on the tiny three-level golden model (tests/golden/pipeline_tiny):
#   - what each stage writes is a valid codes stream (jb_codes_load via
#     jukebox-codes: one job, codes in order per sample, one end per level whose
#     length matches the codes, the job's end last) with the levels done so far;
#   - continue: every level's prefix comes back unchanged (every sample, and the
#     picked one with --pick), and the levels grow;
#   - upsample: the top level is the saved one, the lower levels are complete;
#   - primed: the encoder's codes (through stdin) begin every level;
#   - a truncated codes file is refused before any stage starts.
# Env: BUILD (default build). Ends with "test_job_stream: N passed, N failed".
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
B=$BUILD/bin
M=tests/golden/pipeline_tiny
. tests/sh/lib/check.sh

for x in jukebox-encoder jukebox-job jukebox-prior-top jukebox-upsampler-mid jukebox-upsampler-bottom \
         jukebox-decoder jukebox-codes; do
    if [ ! -x "$B/$x" ]; then
        echo "  FAIL $B/$x not built"
        echo "test_job_stream: 0 passed, 1 failed"; exit 1
    fi
done
if [ ! -f "$M/prior_level_2.safetensors" ]; then
    echo "  FAIL $M missing"; echo "test_job_stream: 0 passed, 1 failed"; exit 1
fi
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
export PATH="$PWD/$B:$PATH"
len() { jukebox-codes info "$1" | sed -n "s/^level $2: \([0-9]*\) codes.*/\1/p"; }
# row FILE LEVEL SAMPLE [N]: the codes of one row (the first N), space-separated;
# "missing" when the file or row is not there (so two missing rows never match).
row() {
    local r
    r=$(jukebox-codes dump "$1" --level "$2" --sample "$3" 2>/dev/null | sed 's/^level [0-9]* sample [0-9]*://')
    [ -n "$r" ] || { echo "missing $1 $2 $3"; return; }
    if [ -n "${4:-}" ]; then echo $r | cut -d' ' -f1-"$4"; else echo $r; fi
}
stage() { "$B/jukebox-$1" -q --threads 1 --model "$M/prior_level_$2.safetensors"; }
job=(--vqvae "$M/vqvae.safetensors" --seconds 0.3 --total-seconds 0.9 --samples 2)

# ---- the stream after each stage
jukebox-job sample --id js1 "${job[@]}" > "$T/s0.jbc" 2>"$T/err"
check "producer stream is a codes stream" jukebox-codes info "$T/s0.jbc" >/dev/null
stage prior-top 2 < "$T/s0.jbc" > "$T/s1.jbc" 2>>"$T/err"
stage upsampler-mid 1 < "$T/s1.jbc" > "$T/s2.jbc" 2>>"$T/err"
stage upsampler-bottom 0 < "$T/s2.jbc" > "$T/s3.jbc" 2>>"$T/err"
for k in 1 2 3; do
    check "stage output $k loads as a codes stream" jukebox-codes info "$T/s$k.jbc" >/dev/null
done
l2=$(len "$T/s3.jbc" 2); l1=$(len "$T/s3.jbc" 1); l0=$(len "$T/s3.jbc" 0)
check "top stage: level 2 done, 1 and 0 empty ($(len "$T/s1.jbc" 2)/$(len "$T/s1.jbc" 1)/$(len "$T/s1.jbc" 0))" \
    test "$(len "$T/s1.jbc" 2)" -gt 0 -a "$(len "$T/s1.jbc" 1)" = 0 -a "$(len "$T/s1.jbc" 0)" = 0
check "mid stage: level 1 done ($(len "$T/s2.jbc" 1)), level 0 empty" \
    test "$(len "$T/s2.jbc" 1)" -gt 0 -a "$(len "$T/s2.jbc" 0)" = 0
check "bottom stage: hops 128/32/8 ($l2/$l1/$l0)" test "$l1" = $((l2 * 4)) -a "$l0" = $((l2 * 16))
check "stages forward the levels above unchanged" \
    test "$(row "$T/s1.jbc" 2 1)" = "$(row "$T/s3.jbc" 2 1)"

# ---- continue: prefixes kept, levels grow
mkdir -p "$T/runs"
pipelines/jukebox sample --models "$M" "${job[@]:2}" --threads 1 -q -o "$T/runs/a" 2>"$T/err"
check "sample run writes codes.jbc" test -f "$T/runs/a/codes.jbc"
pipelines/jukebox continue "$T/runs/a/codes.jbc" --models "$M" --seconds 0.6 \
    --total-seconds 0.9 --threads 1 -q -o "$T/runs/b" 2>>"$T/err"
check "continue run writes codes.jbc" test -f "$T/runs/b/codes.jbc"
for l in 2 1 0; do
    n=$(len "$T/runs/a/codes.jbc" $l)
    check "continue: level $l grows ($n -> $(len "$T/runs/b/codes.jbc" $l))" \
        test "$(len "$T/runs/b/codes.jbc" $l)" -gt "$n"
    for s in 0 1; do
        check "continue: level $l sample $s prefix of $n codes unchanged" \
            test "$(row "$T/runs/a/codes.jbc" $l $s)" = "$(row "$T/runs/b/codes.jbc" $l $s "$n")"
    done
done
pipelines/jukebox continue "$T/runs/a/codes.jbc" --pick 1 --samples 1 --models "$M" \
    --seconds 0.6 --total-seconds 0.9 --threads 1 -q -o "$T/runs/c" 2>>"$T/err"
# (the untrained tiny model's top level is nearly deterministic; its bottom
# level tells the samples apart)
n=$(len "$T/runs/a/codes.jbc" 0)
check "the two saved samples differ at level 0 (so the pick below tells them apart)" \
    test "$(row "$T/runs/a/codes.jbc" 0 0)" != "$(row "$T/runs/a/codes.jbc" 0 1)"
check "continue --pick 1: sample 1's codes go on" \
    test "$(row "$T/runs/a/codes.jbc" 0 1)" = "$(row "$T/runs/c/codes.jbc" 0 0 "$n")"

# ---- upsample: the saved top level, new lower levels
pipelines/jukebox upsample "$T/runs/a/codes.jbc" --models "$M" --seconds 0.3 \
    --total-seconds 0.9 --threads 1 -q -o "$T/runs/d" 2>>"$T/err"
check "upsample: top codes are the saved ones" \
    test -f "$T/runs/d/codes.jbc" -a "$(row "$T/runs/a/codes.jbc" 2 0)" = "$(row "$T/runs/d/codes.jbc" 2 0)"
check "upsample: levels 1 and 0 complete" \
    test "$(len "$T/runs/d/codes.jbc" 1)" = "$l1" -a "$(len "$T/runs/d/codes.jbc" 0)" = "$l0"

# ---- primed: the encoder's codes through jukebox-job --prompt - (stdin) and the
# stages; every level starts with the prompt's codes
if command -v sox >/dev/null; then
    sox -n -r 44100 -c 1 "$T/p.wav" synth 1 sine 440 2>/dev/null
    jukebox-encoder -q --model "$M/vqvae.safetensors" --job px "$T/p.wav" > "$T/enc.jbc"
    jukebox-encoder -q --model "$M/vqvae.safetensors" --job px "$T/p.wav" |
        jukebox-job primed --id px --vqvae "$M/vqvae.safetensors" --prompt - \
            --prompt-seconds 0.2 --seconds 0.5 --total-seconds 0.9 2>>"$T/err" |
        stage prior-top 2 2>>"$T/err" | stage upsampler-mid 1 2>>"$T/err" |
        stage upsampler-bottom 0 > "$T/primed.jbc" 2>>"$T/err"
    check "primed pipeline with the prompt on stdin (${PIPESTATUS[*]})" \
        jukebox-codes info "$T/primed.jbc" >/dev/null
    for l in 2 1 0; do
        n=$(( (8820 / 128) * 128 / (l == 2 ? 128 : l == 1 ? 32 : 8) ))   # 0.2 s, top-hop aligned
        check "primed: level $l starts with the prompt's $n codes" \
            test "$(row "$T/enc.jbc" $l 0 "$n")" = "$(row "$T/primed.jbc" $l 0 "$n")"
    done
else
    skip "primed case: sox not installed (scripts/deps.sh test installs it)"
fi

# ---- a truncated codes file is refused, naming it
head -c 300 "$T/runs/a/codes.jbc" > "$T/cut.jbc"
pipelines/jukebox continue "$T/cut.jbc" --models "$M" --seconds 0.6 --total-seconds 0.9 \
    -q -o "$T/runs/e" 2>"$T/cut.err"; rc=$?
check "truncated codes file refused (exit $rc)" test "$rc" != 0
check "the message names the file and a byte offset: $(head -c 200 "$T/cut.err")" \
    grep -q "cut.jbc.*byte" "$T/cut.err"
check "no output directory for the refused job" test ! -e "$T/runs/e/codes.jbc"

if [ "$fail" != 0 ]; then echo "stage messages:"; tail -n 20 "$T/err"; fi
check_summary test_job_stream
