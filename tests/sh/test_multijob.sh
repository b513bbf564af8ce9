#!/bin/bash
# test_multijob.sh: a stage serving many jobs advances them in one batch (--max-batch), and
# every job's codes are byte-identical to the same job served one at a time.
#   - six jobs (own ids, seeds, sample counts, temperatures, labels) through the golden tiny
#     pipeline's top prior once; the middle and bottom upsamplers then serve them from a
#     file twice: --max-batch 1 (each window alone) and --max-batch 8 (the jobs whose windows
#     can share a step, together);
#   - the second run did batch several jobs (its debug log says so);
#   - one window a step: new jobs' first windows go ahead of the older jobs' windows, never
#     two in a row while an older job can move (the order of the stages' output);
#   - every level of every sample of every job is identical in the two runs.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
B=$BUILD/bin
C=tests/golden/pipeline_tiny
T=$(mktemp -d /tmp/jb_multijob.XXXXXX)
trap 'rm -rf "$T"' EXIT
pass=0; fail=0
ok() { echo "  ok   $1"; pass=$((pass + 1)); }
bad() { echo "  FAIL $1"; fail=$((fail + 1)); }
check() { if eval "$2"; then ok "$1"; else bad "$1"; fi; }
codes_of() { "$B/jukebox-codes" dump "$1" -l "$2" -s "${3:-0}" | cut -d: -f2 | sed 's/^ //'; }

mapfile -d '' ARGS < <(python3 tests/sh/lib/golden_job.py args "$C" 0)
samples=(1 2 1 1 2 1)
temps=(0.99 1.0 0.9 0.99 0.95 1.0)
: > "$T/jobs.jbc"
for i in 0 1 2 3 4 5; do
    # the golden sample's lengths and labels; random sampling (top-k 0), own seed and settings
    "$B/jukebox-job" sample -q "${ARGS[@]}" --id "mj$i" --seed $((7 + i)) --top-k 0 \
        --temp "${temps[$i]}" --samples "${samples[$i]}" --max-batch 2 \
        --vqvae "$C/vqvae.safetensors" >> "$T/jobs.jbc"
done
check "six job streams written" '[ -s "$T/jobs.jbc" ]'
"$B/jukebox-prior-top" -q -t 1 -m "$C/prior_level_2.safetensors" < "$T/jobs.jbc" > "$T/top.jbc"
check "top prior: exit 0" '[ $? = 0 ]'

# serve MAXB OUT: the upsamplers from files (every job's input there at once), then the decoder
serve() {
    local mb=$1 out=$2
    "$B/jukebox-upsampler-mid" -v -t 1 --max-batch "$mb" -m "$C/prior_level_1.safetensors" \
        < "$T/top.jbc" > "$T/mid_$mb.jbc" 2> "$T/mid_$mb.log" &&
    "$B/jukebox-upsampler-bottom" -v -t 1 --max-batch "$mb" -m "$C/prior_level_0.safetensors" \
        < "$T/mid_$mb.jbc" > "$T/bot_$mb.jbc" 2> "$T/bot_$mb.log" &&
    "$B/jukebox-decoder" -q -t 1 -m "$C/vqvae.safetensors" --outdir "$out" < "$T/bot_$mb.jbc"
}
serve 1 "$T/alone"
check "one job at a time: every stage exits 0" '[ $? = 0 ]'
serve 8 "$T/batched"
check "many jobs in one step: every stage exits 0" '[ $? = 0 ]'
check "--max-batch 1 never batched" '! grep -q "one batch of" "$T/mid_1.log" "$T/bot_1.log"'
# The order a stage took the windows in (--max-batch 1: one job's window a step): a new job's
# first window goes before the older jobs' windows, but never two first windows in a row
# while a job already started at that level can still move (new jobs would stall it).
# Prints the first violation, else "ok N": N first windows went ahead of an older job's.
order_check() {   # FILE LEVEL
    python3 tests/sh/lib/jbx.py list < "$1" | python3 -c '
import sys
level = sys.argv[1]
started, ended, prev_first, ahead = [], set(), None, 0
for line in sys.stdin:
    t, job, lev, off, _ = line.split()
    if lev != level:
        continue
    if t == "end":
        ended.add(job)
    elif t == "codes" and off == "0" and job not in started:
        waiting = [j for j in started if j not in ended]
        if prev_first is not None and waiting:
            print("%s first window right after %s first window, %s waiting" % (job, prev_first, waiting))
            sys.exit(1)
        ahead += bool(waiting)
        started.append(job)
        prev_first = job
    elif t == "codes":
        prev_first = None
print("ok %d" % ahead)' "$2"
}
mo=$(order_check "$T/mid_1.jbc" 1)
check "middle upsampler: new jobs' first windows interleave with the older jobs' windows ($mo)" \
    '[ "${mo#ok }" != "$mo" ] && [ "${mo#ok }" -ge 2 ]'
bo=$(order_check "$T/bot_1.jbc" 0)
check "bottom upsampler: the same ($bo)" '[ "${bo#ok }" != "$bo" ]'
check "middle upsampler ran several jobs in one batch ($(grep -c 'one batch of' "$T/mid_8.log") batches)" \
    'grep -q "one batch of [2-9] jobs" "$T/mid_8.log"'
check "bottom upsampler ran several jobs in one batch ($(grep -c 'one batch of' "$T/bot_8.log") batches)" \
    'grep -q "one batch of [2-9] jobs" "$T/bot_8.log"'
for i in 0 1 2 3 4 5; do
    for ((s = 0; s < ${samples[$i]}; s++)); do
        for l in 2 1 0; do
            a=$(codes_of "$T/alone/mj$i/codes.jbc" $l $s)
            b=$(codes_of "$T/batched/mj$i/codes.jbc" $l $s)
            check "mj$i sample $s level $l: codes identical batched and alone (${#a} chars)" \
                '[ -n "$a" ] && [ "$a" = "$b" ]'
        done
    done
done
# Different jobs got different codes (the comparison above is not between empty or equal runs).
check "jobs differ from each other" \
    '[ "$(codes_of "$T/alone/mj0/codes.jbc" 0)" != "$(codes_of "$T/alone/mj2/codes.jbc" 0)" ]'
echo "test_multijob: $pass passed, $fail failed"
[ "$fail" = 0 ]
