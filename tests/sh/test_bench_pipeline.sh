#!/bin/bash
# test_bench_pipeline.sh: `jukebox-bench pipeline` runs the real stage executables on the
# bundled model and reports what they did (docs/bench.md):
#   - --jobs 2 --seconds 2 --json: exit 0, one object per stage (top, mid, bottom, decoder)
#     and a summary; positive tokens/s and busy seconds; each stage's tokens a job are its
#     codes for 2 s of audio (hops 128, 32, 8 at 44.1 kHz); first audio after submission and
#     no later than the job's end; the balance lines name all four stages; one bottleneck;
#   - the table (no --json) names the bottleneck, the balance and the time to first audio;
#     --logs DIR keeps each stage's log with the per-job lines the figures come from;
#   - an unknown option and a bad number exit 64; a missing model directory, a model file
#     missing from it, exit 66; a length the model refuses exits 64 with jukebox-job's reason;
#     a stage that fails (--weights nonsense) gives its exit status, name and last lines;
#     --timeout stops the stages and exits 70.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
B=$BUILD/bin
source tests/sh/lib/check.sh
T=$(mktemp -d /tmp/jb_bench_pipeline.XXXXXX)
trap 'rm -rf "$T"' EXIT
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

# The run is bounded by --timeout (the tool stops the stages itself), and by timeout(1).
timeout 300 "$B/jukebox-bench" pipeline --jobs 2 --seconds 2 --threads 1 --json --timeout 240 \
    --tmp "$T" > "$T/out.json" 2> "$T/err"
rc=$?
check "--jobs 2 --seconds 2 --json: exit 0 (got $rc)" '[ $rc = 0 ]'
[ $rc = 0 ] || sed 's/^/    /' "$T/err"
check "the run's temporary directory is removed" '[ -z "$(ls "$T" | grep jb_bench_pipeline)" ]'
python3 - "$T/out.json" > "$T/py" 2>&1 <<'EOF'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def ok(name, cond):
    print(("ok   " if cond else "FAIL ") + name)
stages = ["prior-top", "upsampler-mid", "upsampler-bottom", "decoder"]
ok("5 JSON objects: one per stage and a summary (%d)" % len(lines), len(lines) == 5)
if len(lines) != 5:
    sys.exit()
ok("stages in order, then 'all'", [o["stage"] for o in lines] == stages + ["all"])
ok("every object is name=pipeline, jobs=2, seconds=2, threads=1",
   all(o["name"] == "pipeline" and o["jobs"] == 2 and o["seconds"] == 2 and o["threads"] == 1
       for o in lines))
want = {"prior-top": 689, "upsampler-mid": 2756, "upsampler-bottom": 11024, "decoder": 11024}
for o in lines[:4]:
    s = o["stage"]
    ok("%s: tokens/s %.1f > 0, busy %.3f s > 0, cpu %.3f s > 0, ms/token consistent" %
       (s, o["tokens_per_s"], o["busy_s"], o["cpu_s"]),
       o["tokens_per_s"] > 0 and o["busy_s"] > 0 and o["cpu_s"] > 0 and
       abs(o["ms_per_token"] * o["tokens_per_s"] - 1000) < 0.5)
    ok("%s: %d tokens a job (2 s of codes: %d)" % (s, o["tokens"], want[s]),
       o["tokens"] == want[s])
    ok("%s: tokens/s = tokens / busy" % s,
       abs(o["tokens"] / o["busy_s"] - o["tokens_per_s"]) < 0.01 * o["tokens_per_s"] + 1)
    ok("%s: peak RSS %.1f MiB in (1, 4096)" % (s, o["peak_rss_mib"]), 1 < o["peak_rss_mib"] < 4096)
    ok("%s: instances >= 1" % s, o["instances"] >= 1 and o["instances_cpu"] >= 1)
ok("shares sum to 1", abs(sum(o["share"] for o in lines[:4]) - 1) < 0.01)
ok("exactly one stage is the bottleneck, the summary names it",
   [o["stage"] for o in lines[:4] if o["bottleneck"] is True] == [lines[4]["bottleneck"]])
a = lines[4]
for key in ("balance", "balance_cpu"):
    ok("%s names the four stages: %s" % (key, a[key]),
       all(w in a[key] for w in (" top", " mid", " bottom", " decoder")) and a[key].count(":") == 3)
ok("summary instances match the stages'", a["instances"] == [o["instances"] for o in lines[:4]])
d = lines[3]
for j, (f, e) in enumerate(zip(a["first_output_s_each"], a["job_s_each"])):
    ok("job %d: first audio %.3f s > 0 and <= its end %.3f s" % (j, f, e), 0 < f <= e)
ok("first_output_s %.3f is the mean, in the decoder's object too" % a["first_output_s"],
   abs(a["first_output_s"] - sum(a["first_output_s_each"]) / 2) < 0.002 and
   abs(d["first_output_s"] - a["first_output_s"]) < 0.002)
ok("0 < first_output_fraction %.3f <= 1" % a["first_output_fraction"],
   0 < a["first_output_fraction"] <= 1)
ok("wall_s %.3f is the last job's end" % a["wall_s"], abs(a["wall_s"] - max(a["job_s_each"])) < 0.002)
EOF
check_relay "$T/py" 20

# The table, and the stages' logs kept.
mkdir "$T/logs"
# (without OMP_WAIT_POLICY: the header says how the stages' threads wait, not this process's)
timeout 300 env -u OMP_WAIT_POLICY "$B/jukebox-bench" pipeline --jobs 1 --seconds 2 --threads 1 \
    --timeout 240 --tmp "$T" --logs "$T/logs" > "$T/table" 2> "$T/err"
rc=$?
for s in prior-top upsampler-mid upsampler-bottom; do
    check "--logs: $s.log has the job's done line, stamped" \
        'grep -q "^ *[0-9.]* .* $s INFO job=bench-0 level=[0-2] done tokens=[0-9]* busy=" "$T/logs/$s.log"'
done
check "--logs: lines before the submission are stamped negative (the stages' ready lines)" \
    'awk "/ ready/ {n++; if (\$1 !~ /^-/) bad = 1} END {exit !(n >= 1 && !bad)}" "$T/logs/prior-top.log"'
check "--logs: decoder.log has the first audio and written lines" \
    'grep -q "job=bench-0 first audio decoded" "$T/logs/decoder.log" &&
     grep -q "job=bench-0 written to .* codes=11024 busy=" "$T/logs/decoder.log"'
"$B/jukebox-bench" pipeline --logs "$T/nodir" > /dev/null 2> "$T/err"; rc2=$?
check "--logs to a missing directory: exit 73 (got $rc2)" '[ $rc2 = 73 ] && grep -q "nodir" "$T/err"'
check "table: exit 0 (got $rc)" '[ $rc = 0 ]'
check "table: the header says the stages' threads wait PASSIVE (their default)" \
    'grep -q "^machine: .*OpenMP threads wait: PASSIVE (the stages. default" "$T/table"'
for s in prior-top upsampler-mid upsampler-bottom decoder; do
    check "table: a row for $s" 'grep -q "^$s " "$T/table"'
done
check "table: the bottleneck" 'grep -q "^bottleneck: upsampler-\|^bottleneck: prior-top\|^bottleneck: decoder" "$T/table"'
check "table: the balance" 'grep -q "^balance: [0-9]* top : [0-9]* mid : [0-9]* bottom : [0-9]* decoder" "$T/table"'
check "table: the time to first audio" 'grep -q "^first audio: [0-9.]* s after submission, [0-9]*% of" "$T/table"'

# A relative --tmp: the stages' notify socket is made absolute (libsystemd takes no other)
mkdir -p "$T/rel"
(cd "$T" && timeout 120 "$OLDPWD/$B/jukebox-bench" pipeline --models "$OLDPWD/models/default" \
    --jobs 1 --seconds 1 --threads 1 --timeout 60 --tmp rel > /dev/null 2> "$T/rel.err"); rc=$?
check "--tmp rel (a relative directory): exit 0, not a wait for READY until --timeout (got $rc)" \
    '[ $rc = 0 ] && [ -z "$(ls "$T/rel")" ]'

# Errors.
"$B/jukebox-bench" pipeline --bogus > /dev/null 2> "$T/err"; rc=$?
check "an unknown option: exit 64 (got $rc), named" '[ $rc = 64 ] && grep -q "unknown option .--bogus" "$T/err"'
"$B/jukebox-bench" pipeline --jobs x > /dev/null 2> "$T/err"; rc=$?
check "--jobs x: exit 64 (got $rc)" '[ $rc = 64 ] && grep -q "jobs x" "$T/err"'
"$B/jukebox-bench" pipeline --jobs 2 --seconds 2 --models "$T/none" > /dev/null 2> "$T/err"; rc=$?
check "a missing model directory: exit 66 (got $rc), named" '[ $rc = 66 ] && grep -q "$T/none" "$T/err"'
mkdir "$T/half"
cp models/default/vqvae.safetensors models/default/prior_level_2.safetensors "$T/half/"
"$B/jukebox-bench" pipeline --models "$T/half" > /dev/null 2> "$T/err"; rc=$?
check "a model directory without prior_level_1: exit 66 (got $rc), named" \
    '[ $rc = 66 ] && grep -q "prior_level_1.safetensors: missing" "$T/err"'
timeout 120 "$B/jukebox-bench" pipeline --weights nonsense --seconds 2 --tmp "$T" > /dev/null \
    2> "$T/err"; rc=$?
check "a stage that fails (--weights nonsense): its exit status 64 (got $rc), name, last lines" \
    '[ $rc = 64 ] && grep -q "prior-top failed (exit 64)" "$T/err" &&
     grep -q "weights nonsense: expected" "$T/err"'
timeout 60 "$B/jukebox-bench" pipeline --seconds 60 --tmp "$T" > /dev/null 2> "$T/err"; rc=$?
check "--seconds 60 on the bundled model (it takes < 11 s): exit 64 (got $rc) with the reason" \
    '[ $rc = 64 ] && grep -q "outside this model.s range" "$T/err"'
timeout 120 "$B/jukebox-bench" pipeline --seconds 10 --jobs 1 --threads 1 --timeout 0.5 \
    --tmp "$T" > /dev/null 2> "$T/err"; rc=$?
check "--timeout 0.5: the stages are stopped, exit 70 (got $rc), said" \
    '[ $rc = 70 ] && grep -q "not done after 0.5 s" "$T/err" && ! grep -q "failed (" "$T/err"'
check "nothing left behind by the refused and stopped runs" '[ -z "$(ls "$T" | grep jb_bench_pipeline)" ]'
check_finish test_bench_pipeline
