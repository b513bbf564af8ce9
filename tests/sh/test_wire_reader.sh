#!/bin/bash
# test_wire_reader.sh: the receiving end of a job stream (docs/wire.md sections 3.1, 8.3,
# 8.4, 9) against frames written by hand (tests/sh/lib/jbx.py, independent of the C code):
#   - bombs: a message that claims more than its job can hold is refused before any
#     allocation (peak RSS of the decoder stays within a few MB of a normal run);
#   - a failed job gets exactly one error record and no later run directory;
#   - -o and --outdir read one set of rules: rows with sample0, the job end's rate and
#     audio_len, codes after a level's end, a stream cut in the middle of a job;
#   - exit codes: an input with no complete job, cut in a job, junk naming no job;
#   - a stage refuses the end of its own level's prefix when it does not match the prefix
#     held, and a job whose given codes were refused fails as a whole.
# Env: BUILD (default build). Ends with "test_wire_reader: N passed, N failed".
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
B=$BUILD/bin
M=tests/golden/pipeline_tiny
J=tests/sh/lib/jbx.py
pass=0; fail=0
ok()  { pass=$((pass + 1)); [ -n "${JB_TEST_VERBOSE:-}" ] && echo "  ok   $1"; return 0; }
bad() { fail=$((fail + 1)); echo "  FAIL $1"; }
check() { local name=$1; shift; if "$@"; then ok "$name"; else bad "$name"; fi; }
for x in jukebox-decoder jukebox-job jukebox-prior-top jukebox-codes; do
    if [ ! -x "$B/$x" ]; then
        echo "  FAIL $B/$x not built"; echo "test_wire_reader: 0 passed, 1 failed"; exit 1
    fi
done
T=$(mktemp -d /tmp/test_wire_reader.XXXXXX)
trap 'rm -rf "$T"' EXIT

# ---- frames
F() { python3 "$J" frame "$@"; }
# cds JOB LEVEL OFFSET COUNT BATCH [SAMPLE0] [extra JSON keys]: codes (i+offset) % 64
cds() {
    local job=$1 l=$2 o=$3 c=$4 b=$5 s0=${6:-} ex=${7:-} vals
    vals=$(python3 -c "print(','.join(str((t + $o) % 64) for r in range($b) for t in range($c)))")
    F "{\"type\":\"codes\",\"v\":1,\"job\":\"$job\",\"level\":$l,\"offset\":$o,\"count\":$c,\"batch\":$b${s0:+,\"sample0\":$s0},\"raw_len\":$((b * c * 4)),\"dtype\":\"i32\"$ex}" "codes:$vals"
}
endl() { F "{\"type\":\"end\",\"v\":1,\"job\":\"$1\",\"level\":$2${3:+,\"offset\":$3}}"; }
endj() { F "{\"type\":\"end\",\"v\":1,\"job\":\"$1\"${2:-}}"; }
# jobmsg ID SAMPLES SECONDS: the job message jukebox-job writes (the first frame)
jobmsg() {
    "$B/jukebox-job" sample --id "$1" --vqvae "$M/vqvae.safetensors" --seconds "$3" \
        --total-seconds "$3" --samples "$2" 2>/dev/null |
        python3 -c "import sys,struct; d=sys.stdin.buffer.read(); h,p=struct.unpack('<II',d[4:12]); sys.stdout.buffer.write(d[:16+h+p])"
}
# a whole job: every level, 16 tokens (4 at level 2... all levels the same count is fine)
wholejob() {   # ID SAMPLES [with job message: 1]
    local id=$1 n=$2
    [ "${3:-0}" = 1 ] && jobmsg "$id" "$n" 0.3
    for l in 2 1 0; do cds "$id" $l 0 16 "$n"; endl "$id" $l 16; done
    endj "$id"
}
dec() { "$B/jukebox-decoder" -q --threads 1 --model "$M/vqvae.safetensors" "$@"; }
# peak RSS in kB of the decoder reading FILE into --outdir DIR
peak() { /usr/bin/time -f %M -o "$T/rss" "$B/jukebox-decoder" -q --threads 1 \
             --model "$M/vqvae.safetensors" --outdir "$2" < "$1" 2>/dev/null; tail -n 1 "$T/rss"; }
dirs() { (cd "$1" 2>/dev/null && ls -d */ 2>/dev/null | tr -d / | sort | tr '\n' ' '); }

# ---- 1. bombs: refused before any allocation
wholejob ok1 1 1 > "$T/ok.jbc"
base=$(peak "$T/ok.jbc" "$T/r0")
check "baseline job written" test -f "$T/r0/ok1/codes.jbc"
# (a) a known 0.3 s job (1664 bottom tokens, padded to the top hop) claiming 4 Mi codes (16 MiB) in one message
{ jobmsg kb 1 0.3
  F '{"type":"codes","v":1,"job":"kb","level":0,"offset":0,"count":4194304,"batch":1,"raw_len":16777216,"dtype":"i32"}' zeros:16777216
  endj kb; } > "$T/bomb1.jbc"
rss=$(peak "$T/bomb1.jbc" "$T/r1"); rc=$?
check "bomb for a known job: one error record, nothing else ($(dirs "$T/r1"))" \
    test "$(dirs "$T/r1")" = "kb " -a -f "$T/r1/kb/error.json"
check "bomb for a known job: refused by what the job holds" grep -q "holds 1664 tokens" "$T/r1/kb/error.json"
check "bomb for a known job: peak RSS $rss kB vs $base kB for a normal job (+8 MB at most)" \
    test "$rss" -lt $((base + 8192))
# (b) the spec's largest claim before: 2^28 codes (1 GiB) in a 4 MB frame, unknown job
{ F '{"type":"codes","v":1,"job":"ub","level":0,"offset":0,"count":268435456,"batch":1,"raw_len":1073741824,"dtype":"i32"}' zeros:16777216
  endj ub; } > "$T/bomb2.jbc"
rss=$(peak "$T/bomb2.jbc" "$T/r2")
check "1 GiB claim: refused from the header, one error record" test "$(dirs "$T/r2")" = "ub "
check "1 GiB claim: peak RSS $rss kB (+8 MB at most)" \
    test "$rss" -lt $((base + 8192))
# (c) samples past the job's count
{ jobmsg ks 1 0.3; cds ks 2 0 4 1 3; endj ks; } > "$T/bomb3.jbc"
dec --outdir "$T/r3" < "$T/bomb3.jbc" 2>/dev/null
check "codes for sample 3 of a 1-sample job: refused" grep -q "the job has 1" "$T/r3/ks/error.json"

# ---- 2. a failed job: one error record, later messages dropped (8.3)
{ wholejob good 1; cds A 2 0 4 1; cds A 2 9 4 1; cds A 2 4 4 1; endl A 2 8
  for l in 1 0; do cds A $l 0 16 1; endl A $l 16; done; endj A; } > "$T/fail.jbc"
dec --outdir "$T/r4" < "$T/fail.jbc" 2>"$T/err4"; rc=$?
check "bad codes of A: A/error.json and the good job, no A.1 ($(dirs "$T/r4"))" \
    test "$(dirs "$T/r4")" = "A good "
check "bad codes of A: exit 65 (got $rc)" test "$rc" = 65
{ F '{"type":"error","v":1,"job":"E","code":65,"msg":"stage 2 refused it"}'
  for l in 2 1 0; do cds E $l 0 16 1; endl E $l 16; done; endj E; } > "$T/uperr.jbc"
dec --outdir "$T/r5" < "$T/uperr.jbc" 2>/dev/null
check "upstream error then codes: one error record ($(dirs "$T/r5"))" test "$(dirs "$T/r5")" = "E "
check "upstream error: its reason kept" grep -q "stage 2 refused it" "$T/r5/E/error.json"

# ---- 3. rows with sample0, no job message: one job of two samples, both modes (8.4)
rows() {   # ID: two samples, one row per message
    for l in 2 1 0; do cds "$1" $l 0 16 1 0; cds "$1" $l 0 16 1 1; endl "$1" $l 16; done
    endj "$1" "${2:-}"
}
rows R > "$T/rows.jbc"
dec --outdir "$T/r6" < "$T/rows.jbc" 2>"$T/err6"; rc=$?
check "one row a message, no job message: one run directory ($(dirs "$T/r6")), exit $rc" \
    test "$(dirs "$T/r6")" = "R " -a "$rc" = 0 -a -f "$T/r6/R/codes.jbc"
check "... of two samples" grep -q "^samples: 2" <("$B/jukebox-codes" info "$T/r6/R/codes.jbc")
dec -o "$T/o6_{sample}.wav" < "$T/rows.jbc" 2>"$T/err"; rc=$?
check "-o reads the same stream: two files, exit $rc ($(tail -n1 "$T/err"))" \
    test "$rc" = 0 -a -f "$T/o6_0.wav" -a -f "$T/o6_1.wav"
{ jobmsg R2 2 0.3; rows R2; } > "$T/rows2.jbc"
dec -o "$T/o7_{sample}.wav" < "$T/rows2.jbc" 2>"$T/err"; rc=$?
check "-o with the job message too: two files, exit $rc" test "$rc" = 0 -a -f "$T/o7_1.wav"
# the job's end carries rate and audio_len: the audio is cut to it (16 codes = 128 samples)
rows L ',"rate":44100,"audio_len":100' > "$T/alen.jbc"
dec -o "$T/o8_{sample}.wav" < "$T/alen.jbc" 2>/dev/null
frames=$(python3 -c "import wave; print(wave.open('$T/o8_0.wav').getnframes())" 2>/dev/null)
check "-o: audio_len on the job's end cuts the audio to 100 frames (got $frames)" test "$frames" = 100
rows L2 ',"rate":22050' > "$T/rate.jbc"
dec -o "$T/o9.wav" < "$T/rate.jbc" 2>"$T/err"; rc=$?
check "-o: rate 22050 on the job's end refused for a 44100 Hz model (exit $rc)" \
    test "$rc" = 65 -a ! -f "$T/o9_0.wav"

# ---- 4. codes after a level's end: refused by both modes (8.2)
{ cds X 2 0 16 1; endl X 2 16; endl X 1; cds X 1 0 16 1; cds X 0 0 16 1; endl X 0 16; endj X; } \
    > "$T/late.jbc"
dec --outdir "$T/r10" < "$T/late.jbc" 2>/dev/null; rc=$?
check "--outdir: level-1 codes after end(1) fail the job (exit $rc)" \
    test "$rc" = 65 -a -f "$T/r10/X/error.json"
check "--outdir: ... saying why" grep -q "after the level's end" "$T/r10/X/error.json"
dec -o "$T/o10.wav" < "$T/late.jbc" 2>/dev/null; rc=$?
check "-o: the same stream refused (exit $rc)" test "$rc" = 65 -a ! -e "$T/o10.wav"

# ---- 5. a stream cut at a frame boundary in the middle of a job
{ cds C 2 0 16 1; endl C 2 16; cds C 1 0 16 1; endl C 1 16; cds C 0 0 8 1; } > "$T/cut.jbc"
dec -o "$T/o11.wav" < "$T/cut.jbc" 2>"$T/err"; rc=$?
check "-o: a job cut in the middle is an error, exit 69 (got $rc), nothing written" \
    test "$rc" = 69 -a ! -e "$T/o11.wav"
dec -o "$T/o12.wav" --level 1 < "$T/cut.jbc" 2>/dev/null; rc=$?
check "-o --level 1: the level asked for is complete: written (exit $rc)" \
    test "$rc" = 0 -a -f "$T/o12.wav"
dec --outdir "$T/r13" < "$T/cut.jbc" 2>"$T/err"; rc=$?
check "--outdir: a job cut in the middle: exit 69 (got $rc), error record with code 69" \
    test "$rc" = 69 -a -f "$T/r13/C/error.json"
check "--outdir: ... its code is 69" grep -q '"code": *69' "$T/r13/C/error.json"
python3 "$J" cut $(( $(stat -c %s "$T/cut.jbc") - 5 )) < "$T/cut.jbc" > "$T/cutframe.jbc"
dec --outdir "$T/r14" < "$T/cutframe.jbc" 2>/dev/null; rc=$?
check "--outdir: cut inside a frame: exit 65 (got $rc), an error record for the open job" \
    test "$rc" = 65 -a -f "$T/r14/C/error.json"

# ---- 6. exit codes of --outdir (issue: upstream died at start-up)
dec --outdir "$T/r15" < /dev/null 2>"$T/err"; rc=$?
check "--outdir: an empty input is not success: exit 65 (got $rc)" test "$rc" = 65
check "--outdir: ... and says so" grep -q "before any complete job" "$T/err"
{ wholejob J1 1; F '{"type":"codes","v":1}'; } > "$T/junk.jbc"
dec --outdir "$T/r16" < "$T/junk.jbc" 2>"$T/err"; rc=$?
check "--outdir: junk naming no job after a good job: written, exit 65 (got $rc)" \
    test "$rc" = 65 -a -f "$T/r16/J1/codes.jbc"
dec -o "$T/o16.wav" < "$T/junk.jbc" 2>"$T/err"; rc=$?
check "-o: the same: written, exit 65 (got $rc), not counted as a failed job" \
    test "$rc" = 65 -a -f "$T/o16.wav" -a "$(grep -c 'jobs failed' "$T/err")" = 0

# ---- 7. a stage checks the end of its own level's prefix (wire.md 8.2)
"$B/jukebox-job" sample --id P --vqvae "$M/vqvae.safetensors" --seconds 0.3 --total-seconds 0.9 \
    > "$T/prod.jbc" 2>/dev/null
# the producer's stream with end(2) claiming a 5-token prefix that never came
python3 - "$T/prod.jbc" "$T/prod5.jbc" "$J" <<'PY'
import struct, sys, importlib.util
spec = importlib.util.spec_from_file_location("jbx", sys.argv[3]); jbx = importlib.util.module_from_spec(spec)
spec.loader.exec_module(jbx)
d = open(sys.argv[1], "rb").read(); out = b""; i = 0; n = 0
while i < len(d):
    h, p = struct.unpack("<II", d[i + 4:i + 12]); f = d[i:i + 16 + h + p]
    out += jbx.frame(jbx.mp_map({"type": "end", "v": 1, "job": "P", "level": 2, "offset": 5})) if n == 1 else f
    i += 16 + h + p; n += 1
open(sys.argv[2], "wb").write(out)
PY
"$B/jukebox-prior-top" -q --threads 1 --model "$M/prior_level_2.safetensors" < "$T/prod5.jbc" \
    2>"$T/err" | dec --outdir "$T/r17" 2>/dev/null
check "prior-top: end(2, offset 5) without the prefix fails the job ($(dirs "$T/r17"))" \
    test -f "$T/r17/P/error.json" -a ! -f "$T/r17/P/codes.jbc"
check "prior-top: ... saying why" grep -q "prefix of level 2" "$T/r17/P/error.json"

# a prefix codes message of level 2 the stage must refuse (raw_len + 4, as a damaged
# codes file of an upsample gives): the job fails instead of sampling a new top level
python3 - "$T/prod.jbc" "$T/prodbad.jbc" "$J" <<'PY'
import struct, sys, importlib.util
spec = importlib.util.spec_from_file_location("jbx", sys.argv[3]); jbx = importlib.util.module_from_spec(spec)
spec.loader.exec_module(jbx)
d = open(sys.argv[1], "rb").read(); out = b""; i = 0; n = 0
while i < len(d):
    h, p = struct.unpack("<II", d[i + 4:i + 12]); f = d[i:i + 16 + h + p]
    if n == 1:
        vals = struct.pack("<16i", *range(16))
        out += jbx.frame(jbx.mp_map({"type": "codes", "v": 1, "job": "P", "level": 2, "offset": 0,
                                     "count": 16, "batch": 1, "raw_len": 68, "dtype": "i32"}),
                         jbx.lz4_literals(vals))
        f = jbx.frame(jbx.mp_map({"type": "end", "v": 1, "job": "P", "level": 2, "offset": 16}))
    out += f
    i += 16 + h + p; n += 1
open(sys.argv[2], "wb").write(out)
PY
"$B/jukebox-prior-top" -q --threads 1 --model "$M/prior_level_2.safetensors" < "$T/prodbad.jbc" \
    2>"$T/err" | dec --outdir "$T/r18" 2>/dev/null
check "prior-top: a refused prefix message fails the job ($(dirs "$T/r18"))" \
    test -f "$T/r18/P/error.json" -a ! -f "$T/r18/P/codes.jbc"
check "prior-top: ... naming the refused message" grep -q "was refused" "$T/r18/P/error.json"

# ---- 8. what a stage does with a job it cannot take, and what it sends (wire.md 3, 8.2, 8.3)
pt() { "$B/jukebox-prior-top" -q --threads 1 --model "$M/prior_level_2.safetensors"; }
# (a) a job message whose spec is not JSON: refused as a message, the job fails downstream
{ F '{"type":"job","v":1,"job":"S1","spec":"{not json"}'; endl S1 2; endl S1 1; endl S1 0
  endj S1; } > "$T/badspec.jbc"
pt < "$T/badspec.jbc" 2>/dev/null | dec --outdir "$T/r19" 2>/dev/null; rc=$?
check "stage: a job message it cannot read fails the job downstream ($(dirs "$T/r19")), exit $rc" \
    test "$(dirs "$T/r19")" = "S1 " -a -f "$T/r19/S1/error.json" -a "$rc" = 65
check "stage: ... naming the refused job message" grep -q "job message was refused" "$T/r19/S1/error.json"
# (b) codes and ends of a job with no job message (encoder output): the job fails, not dropped
{ for l in 2 1 0; do cds N1 $l 0 16 1; endl N1 $l 16; done; endj N1; } > "$T/nojob.jbc"
pt < "$T/nojob.jbc" 2>/dev/null | dec --outdir "$T/r20" 2>/dev/null; rc=$?
check "stage: codes without the job's job message fail the job ($(dirs "$T/r20")), exit $rc" \
    test -f "$T/r20/N1/error.json" -a "$rc" = 65
check "stage: ... saying why" grep -q "without the job's job message" "$T/r20/N1/error.json"
# (c) an upsample job: the given top level is forwarded once, not sent again at offset 0
"$B/jukebox-job" sample --id U0 --vqvae "$M/vqvae.safetensors" --seconds 0.3 --total-seconds 0.3 \
    --samples 2 --top-k 1 2>/dev/null | pt 2>/dev/null |
    "$B/jukebox-upsampler-mid" -q --threads 1 --model "$M/prior_level_1.safetensors" 2>/dev/null |
    "$B/jukebox-upsampler-bottom" -q --threads 1 --model "$M/prior_level_0.safetensors" 2>/dev/null |
    dec --outdir "$T/r21" 2>/dev/null
"$B/jukebox-job" upsample --id U1 --codes "$T/r21/U0/codes.jbc" 2>/dev/null > "$T/up.jbc"
pt < "$T/up.jbc" 2>/dev/null |
    "$B/jukebox-upsampler-mid" -q --threads 1 --model "$M/prior_level_1.safetensors" 2>/dev/null \
    > "$T/up1.jbc"
n_in=$(python3 "$J" list < "$T/up.jbc" | awk '$1 == "codes" && $3 == 2' | wc -l)
n_out=$(python3 "$J" list < "$T/up1.jbc" | awk '$1 == "codes" && $3 == 2' | wc -l)
check "stages: the top level of an upsample passes once ($n_in codes messages in, $n_out out)" \
    test "$n_in" -ge 1 -a "$n_in" = "$n_out"
n_mid=$(python3 "$J" list < "$T/up1.jbc" | awk '$1 == "codes" && $3 == 1' | wc -l)
check "stages: ... and the middle level is sampled ($n_mid messages)" test "$n_mid" -ge 1
# (d) a run directory's codes.jbc says its audio length, also when nothing is cut (wire.md 5)
check "codes.jbc: the audio length is given (0.3 s: 13184 samples after the top hop)" \
    grep -q "^audio length: 13184 samples" <("$B/jukebox-codes" info "$T/r21/U0/codes.jbc")
# (e) the decoder checks a spec as the stages do
{ F '{"type":"job","v":1,"job":"Z1","spec":"{\"id\":\"Z1\",\"n_samples\":0}"}'
  for l in 2 1 0; do cds Z1 $l 0 16 1; endl Z1 $l 16; done; endj Z1; } > "$T/zero.jbc"
dec --outdir "$T/r22" < "$T/zero.jbc" 2>/dev/null; rc=$?
check "decoder: a spec of 0 samples fails its job (exit $rc)" \
    test "$rc" = 65 -a -f "$T/r22/Z1/error.json" -a ! -f "$T/r22/Z1/codes.jbc"
check "decoder: ... saying why" grep -q "n_samples 0 outside" "$T/r22/Z1/error.json"
{ F '{"type":"job","v":1,"job":"Z2","spec":"{\"id\":\"other\"}"}'; wholejob Z2 1; } > "$T/zid.jbc"
dec --outdir "$T/r23" < "$T/zid.jbc" 2>/dev/null; rc=$?
check "decoder: a spec whose id is another's fails its job (exit $rc)" \
    test "$rc" = 65 -a -f "$T/r23/Z2/error.json"
# (f) jukebox-codes: a file with only the job's end holds no codes
endj E1 > "$T/onlyend.jbc"
"$B/jukebox-codes" info "$T/onlyend.jbc" >/dev/null 2>"$T/err"; rc=$?
check "jukebox-codes: a file with only an end is refused, exit 65 (got $rc)" \
    test "$rc" = 65 && grep -q "not a codes file" "$T/err"
# (g) --outdir whose parent is missing: an output that cannot be written, 74 (8.5)
dec --outdir "$T/no/such/root" < "$T/ok.jbc" 2>/dev/null; rc=$?
check "--outdir under a missing directory: exit 74 (got $rc)" test "$rc" = 74
# (h) a stale partial run under a root whose name has a quote (it was removed through a
# shell): removed, and the run written
mkdir -p "$T/it's/.ok1.partial/sub" && touch "$T/it's/.ok1.partial/sub/x.wav"
dec --outdir "$T/it's" < "$T/ok.jbc" 2>/dev/null; rc=$?
check "--outdir with a quote in its name: the stale partial run removed, written (exit $rc)" \
    test "$rc" = 0 -a -f "$T/it's/ok1/codes.jbc" -a ! -e "$T/it's/.ok1.partial"
# (i) jukebox-job: ids and seeds out of range are refused, not cut
"$B/jukebox-job" sample --id "$(printf 'a%.0s' $(seq 64))" >/dev/null 2>&1; rc=$?
check "jukebox-job --id of 64 bytes: exit 64 (got $rc)" test "$rc" = 64
"$B/jukebox-job" sample --seed 18446744073709551616 >/dev/null 2>&1; rc=$?
check "jukebox-job --seed 2^64: exit 64 (got $rc)" test "$rc" = 64
"$B/jukebox-job" sample --seed 18446744073709551615 --id s 2>/dev/null | python3 "$J" list > "$T/l"
check "jukebox-job --seed 2^64 - 1: taken" grep -q "^job" "$T/l"

echo "test_wire_reader: $pass passed, $fail failed"
[ "$fail" = 0 ]
