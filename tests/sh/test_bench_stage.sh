#!/bin/bash
# test_bench_stage.sh: `jukebox-bench stage` serves N concurrent jobs on one prior and reports
# the fields the README and docs/bench.md document:
#   - --model (the bundled bottom upsampler) --jobs 1,3 --json: exit 0, one object per case,
#     name "stage", every documented field; jobs 1 and 3 served in batches of 1 and 3;
#     positive tokens/s, ms_per_token = 1000 / tokens_per_s, fraction_of_bound =
#     bound_ms / ms_per_step, the bandwidth and the bound positive, peak RSS and first output
#     sensible; the bound the longer of memory_bound_ms (the model file's matrix weights in
#     bf16 + the f32 output projection / bandwidth_gbs) and compute_bound_ms (batch x 2 x
#     those weights / peak_gflops), both recomputed here from the file's header;
#   - the table: both read-bandwidth lines (the bound is the best of the two), a row per
#     case, the "3 jobs vs 1" comparison;
#   - --max-batch 2 serves 3 jobs in batches of 2;
#   - errors: an unknown option, a bad job list, bad --weights: exit 64; a missing model
#     file: exit 66; a file that is not a prior: exit 65;
#   - jukebox-bench_matmul --help: its usage, exit 0; an unknown option or a bad value: 64.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
B=$BUILD/bin
source tests/sh/lib/check.sh
T=$(mktemp -d /tmp/jb_bench_stage.XXXXXX)
trap 'rm -rf "$T"' EXIT
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
M=models/default/prior_level_0.safetensors

timeout 300 "$B/jukebox-bench" stage --model "$M" --jobs 1,3 --tokens 8 --reps 1 --threads 1 \
    --json > "$T/out.json" 2> "$T/err"
rc=$?
check "--model --jobs 1,3 --json: exit 0 (got $rc)" '[ $rc = 0 ]'
[ $rc = 0 ] || sed 's/^/    /' "$T/err"
python3 - "$T/out.json" "$M" > "$T/py" 2>&1 <<'PY'
import json, re, struct, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
# The matrices a step reads, from the model file's header: every layer's four products
# (bf16 in the benchmark: 2 bytes a weight) and the f32 output projection.
with open(sys.argv[2], "rb") as f:
    hdr = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
mat = re.compile(r"prior\.transformer\._attn_mods\.\d+\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.w$")
n_mat = sum(v["shape"][0] * v["shape"][1] for k, v in hdr.items() if mat.match(k))
n_out = hdr["prior.x_out.weight"]["shape"][0] * hdr["prior.x_out.weight"]["shape"][1]
step_bytes, row_flops = 2 * n_mat + 4 * n_out, 2 * (n_mat + n_out)
def ok(name, cond):
    print(("ok   " if cond else "FAIL ") + name)
ok("2 JSON objects, one per case (%d)" % len(lines), len(lines) == 2)
if len(lines) != 2:
    sys.exit()
fields = ["name", "config", "layers", "depth", "weights", "threads", "batch", "jobs",
          "tokens_per_s", "ms_per_token", "ms_per_step", "bound_ms", "fraction_of_bound",
          "peak_rss_mib", "first_output_s", "wall_tokens_per_s", "cpu_use", "cpu_ms_per_step",
          "bandwidth_gbs", "load_avg", "memory_bound_ms", "compute_bound_ms", "peak_gflops"]
for o in lines:
    missing = [f for f in fields if f not in o]
    ok("jobs %s: every documented field (missing: %s)" % (o.get("jobs"), missing), not missing)
    if missing:
        continue
    j = o["jobs"]
    ok("jobs %d: name stage, weights bf16 (the default), threads 1, 4 of 4 layers" % j,
       o["name"] == "stage" and o["weights"] == "bf16" and o["threads"] == 1 and
       o["layers"] == o["depth"] == 4)
    ok("jobs %d: tokens/s %.1f > 0, ms/token = 1000 / tokens/s" % (j, o["tokens_per_s"]),
       o["tokens_per_s"] > 0 and abs(o["ms_per_token"] * o["tokens_per_s"] - 1000) < 0.01)
    ok("jobs %d: bound %.4f ms > 0, bandwidth %.1f GB/s > 0, fraction = bound / ms a step" %
       (j, o["bound_ms"], o["bandwidth_gbs"]),
       o["bound_ms"] > 0 and o["bandwidth_gbs"] > 0 and
       abs(o["fraction_of_bound"] - o["bound_ms"] / o["ms_per_step"]) < 1e-4 * o["fraction_of_bound"])
    mem = 1e3 * step_bytes / (o["bandwidth_gbs"] * 1e9)
    fma = 1e3 * o["batch"] * row_flops / (o["peak_gflops"] * 1e9)
    ok("jobs %d: memory bound %.5f ms = %d bytes / %.2f GB/s (%.5f)" %
       (j, o["memory_bound_ms"], step_bytes, o["bandwidth_gbs"], mem),
       abs(o["memory_bound_ms"] - mem) < 1e-3 * mem)
    ok("jobs %d: compute bound %.5f ms = %d x %d FLOP / %.1f GFLOP/s (%.5f)" %
       (j, o["compute_bound_ms"], o["batch"], row_flops, o["peak_gflops"], fma),
       o["peak_gflops"] > 0 and abs(o["compute_bound_ms"] - fma) < 1e-3 * fma)
    ok("jobs %d: the bound %.5f ms is the longer of the two" % (j, o["bound_ms"]),
       abs(o["bound_ms"] - max(mem, fma)) < 1e-3 * max(mem, fma))
    # the stage's memory: the 0.7 MB model and 3 jobs; not the bandwidth probe's 512 MiB
    ok("jobs %d: peak RSS %.1f MiB in (1, 256), first output %.3g s > 0, CPU use %.2f > 0" %
       (j, o["peak_rss_mib"], o["first_output_s"], o["cpu_use"]),
       1 < o["peak_rss_mib"] < 256 and o["first_output_s"] > 0 and o["cpu_use"] > 0)
    ok("jobs %d: bound_tokens_per_s %.1f = batch / bound; omp_wait '%s'" %
       (j, o["bound_tokens_per_s"], o["omp_wait"]),
       abs(o["bound_tokens_per_s"] - 1e3 * o["batch"] / o["bound_ms"]) <
       1e-4 * o["bound_tokens_per_s"] and o["omp_wait"].startswith("PASSIVE"))
ok("jobs 1 and 3, in batches of 1 and 3",
   [(o["jobs"], o["batch"]) for o in lines] == [(1, 1), (3, 3)])
ok("one bandwidth and one FMA peak for both cases",
   lines[0]["bandwidth_gbs"] == lines[1]["bandwidth_gbs"] and
   lines[0]["peak_gflops"] == lines[1]["peak_gflops"])
PY
check_relay "$T/py" 20

timeout 300 "$B/jukebox-bench" stage --model "$M" --jobs 1,3 --tokens 8 --reps 1 --threads 1 \
    --max-batch 2 > "$T/table" 2> "$T/err"
rc=$?
check "table, --max-batch 2: exit 0 (got $rc)" '[ $rc = 0 ]'
check "table: the bandwidth before the runs" 'grep -q "^read bandwidth at start: .* GB/s$" "$T/table"'
check "table: the bandwidth after them, the bound the best of the two" \
    'grep -q "^read bandwidth at end: .*; the bound: the best of the two, [0-9.]* GB/s$" "$T/table"'
check "table: 1 job in a batch of 1, 3 jobs in batches of 2" \
    'grep -Eq "^ +1 +1 +[0-9.]+ " "$T/table" && grep -Eq "^ +3 +2 +[0-9.]+ " "$T/table"'
check "table: the comparison of 3 jobs with 1" 'grep -q "^3 jobs vs 1: [0-9.]*x the tokens/s" "$T/table"'
check "table: the FMA peak before and after, the bound the best of the two" \
    'grep -q "^FMA peak at start: [0-9.]* GFLOP/s (1 threads, " "$T/table" &&
     grep -q "^FMA peak at end: .*; the bound: the best of the two, [0-9.]* GFLOP/s$" "$T/table"'
check "table: what the bounds allow 3 jobs against 1" \
    'grep -q "^the bounds allow at most [0-9.]*x on this machine" "$T/table"'
check "table: which bound each row meets (bw or FMA)" \
    'grep -Eq "^ +1 +1 +[0-9.]+ +[0-9.]+ +[0-9.]+ +[0-9.]+ +(bw|FMA) " "$T/table"'

# Errors.
"$B/jukebox-bench" stage --bogus > /dev/null 2> "$T/err"; rc=$?
check "an unknown option: exit 64 (got $rc), named" '[ $rc = 64 ] && grep -q "bogus" "$T/err"'
"$B/jukebox-bench" stage --jobs 1,x > /dev/null 2> "$T/err"; rc=$?
check "--jobs 1,x: exit 64 (got $rc)" '[ $rc = 64 ] && grep -q "jobs 1,x" "$T/err"'
"$B/jukebox-bench" stage --model "$M" --weights int4 > /dev/null 2> "$T/err"; rc=$?
check "--weights int4: exit 64 (got $rc), the choices named" '[ $rc = 64 ] && grep -q "int8" "$T/err"'
"$B/jukebox-bench" stage --model "$T/none.safetensors" > /dev/null 2> "$T/err"; rc=$?
check "a missing model file: exit 66 (got $rc), named" '[ $rc = 66 ] && grep -q "none.safetensors" "$T/err"'
"$B/jukebox-bench" stage --config vqvae --layers 1 > /dev/null 2> "$T/err"; rc=$?
check "--config vqvae (not a prior): exit 64 (got $rc)" '[ $rc = 64 ] && grep -q "not a prior" "$T/err"'
"$B/jukebox-bench" stage --model "$M" --jobs 1,1,1,1,1,1,1,1,2 > /dev/null 2> "$T/err"; rc=$?
check "--jobs with 9 cases: exit 64 (got $rc), not 8 measured" '[ $rc = 64 ] && grep -q "at most 8" "$T/err"'
for a in "--config nosuch" "--weights xyz" "--layers abc" "--reps 0"; do
    "$B/jukebox-bench" prior $a > /dev/null 2> "$T/err"; rc=$?
    check "prior $a: exit 64 (got $rc), nothing measured" '[ $rc = 64 ]'
done
"$B/jukebox-bench" vqvae --threads abc > /dev/null 2> "$T/err"; rc=$?
check "vqvae --threads abc: exit 64 (got $rc)" '[ $rc = 64 ]'
# A model path with a quote: the JSON stays JSON
cp "$M" "$T/it\"s.safetensors"
timeout 300 "$B/jukebox-bench" stage --model "$T/it\"s.safetensors" --jobs 1 --tokens 4 --reps 1 \
    --threads 1 --json > "$T/q.json" 2>/dev/null; rc=$?
check "a model path with a quote: --json is JSON, its config the path (rc $rc)" \
    "[ $rc = 0 ] && python3 -c 'import json, sys; o = json.loads(open(sys.argv[1]).readline()); sys.exit(o[\"config\"] != sys.argv[2])' '$T/q.json' '$T/it\"s.safetensors'"
head -c 100 /dev/urandom > "$T/junk.safetensors"
"$B/jukebox-bench" stage --model "$T/junk.safetensors" > /dev/null 2> "$T/err"; rc=$?
check "a file that is not a model: exit 65 (got $rc), named" '[ $rc = 65 ] && grep -q "junk.safetensors" "$T/err"'

# jukebox-bench_matmul (the matmul figures beside it): its help, and values it refuses
# (each one would otherwise be measured as something else; no case runs here).
"$B/jukebox-bench_matmul" --help > "$T/out" 2> "$T/err"; rc=$?
check "bench_matmul --help: exit 0 (got $rc), the usage on stdout" \
    '[ $rc = 0 ] && grep -q "^usage: jukebox-bench_matmul" "$T/out" && grep -q -- "--dtypes" "$T/out" && [ ! -s "$T/err" ]'
for a in "--bogus" "--reps abc" "--reps 0" "--reps" "--layout packd" "--config 7b" "--threads 4" "--dtypes f32,int4"; do
    timeout 30 "$B/jukebox-bench_matmul" $a > "$T/out" 2> "$T/err"; rc=$?
    check "bench_matmul $a: exit 64 (got $rc), named, nothing measured" \
        '[ $rc = 64 ] && grep -q -- "${a%% *}" "$T/err" && [ ! -s "$T/out" ]'
done
check_finish test_bench_stage
