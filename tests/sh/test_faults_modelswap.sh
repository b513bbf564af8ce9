#!/bin/bash
# test_faults_modelswap.sh (issue 18 C): a stage killed -9 in the middle of a job and
# restarted on its spool with another model file of the same level (other weights)
# must refuse (exit 64, naming the spool, the job and both model identities) and leave
# the spool as it was, instead of resuming the job with the other model's codes; the
# same command with the right model then resumes it. One instance of each stage
# (pipelines/local-services.sh, loopback, spools, heartbeat 200 ms, peer timeout 1 s).
# Every file of every run directory equals an undisturbed shell-pipe run, one run
# directory per job, every spool empty at the end.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
B=$PWD/$BUILD/bin
T=$(mktemp -d /tmp/jb_faults_modelswap.XXXXXX)
LS=pipelines/local-services.sh
. tests/sh/lib/faults.sh
trap fj_services_cleanup EXIT
N=4
echo "-- seed $seed: $N jobs; the middle upsampler restarted with another level-1 model"
fj_refs_cached $N
# The other model: the same file with every weight scaled by 1.25 (same level, same
# shapes and size, other codes).
python3 - "$M/prior_level_1.safetensors" "$T/other_level_1.safetensors" <<'PY'
import json, struct, sys, array
raw = open(sys.argv[1], 'rb').read()
n = struct.unpack('<Q', raw[:8])[0]
head = json.loads(raw[8:8 + n])
data = bytearray(raw[8 + n:])
for k, v in head.items():
    if k == '__metadata__' or v['dtype'] != 'F32':
        continue
    a, b = v['data_offsets']
    x = array.array('f'); x.frombytes(bytes(data[a:b]))
    data[a:b] = array.array('f', [f * 1.25 for f in x]).tobytes()
open(sys.argv[2], 'wb').write(raw[:8 + n] + bytes(data))
PY
check "another level-1 model of the same size" \
    "[ \$(stat -c %s '$T/other_level_1.safetensors') = \$(stat -c %s '$M/prior_level_1.safetensors') ] && ! cmp -s '$T/other_level_1.safetensors' '$M/prior_level_1.safetensors'"

st=$T/s
P=$(fj_free_port)
$LS --state "$st" --base-port "$P" --mid 1 --bottom 1 --heartbeat 200 --peer-timeout 1000 \
    --stage-args "$FJ_STAGE_ARGS" start > "$T/start.txt" 2>&1; rc=$?
check "services started (rc $rc)" "[ $rc = 0 ]"
[ $rc = 0 ] || cat "$T/start.txt"
fj_submit $N "$($LS --state "$st" endpoint)"
# Until the middle upsampler has finished (and so spooled) a window of a job, then kill -9.
windowed() {
    "$B/jukebox-status" --json --timeout 500 "$(fj_ctl "$st" mid-0)" 2>/dev/null | python3 -c 'import json, sys
try:
    d = json.loads(sys.stdin.readline())
    print([j["id"] for j in d.get("jobs_in_flight", []) if j.get("window", 0) >= 1][0])
except Exception:
    pass'
}
job=""
for i in $(seq 600); do job=$(windowed); [ -n "$job" ] && break; sleep 0.1; done
check "the middle upsampler's spool holds windows of a job ($job)" "[ -n '$job' ]"
pid=$(cat "$st/run/mid-0.pid")
kill -KILL "$pid"
echo "  kill -9 mid-0 (pid $pid) at ${SECONDS}s, holding $job"
fj_wait_dead "$pid"
before=$(cd "$st/spool/mid-0" && find . -type f ! -name lock -printf '%p %s\n' | sort | md5sum)
# The same command with the other model file.
other=$(sed "s|$M/prior_level_1.safetensors|$T/other_level_1.safetensors|" "$st/cmd/mid-0")
timeout 120 bash -c "$other" > "$T/other.log" 2>&1; rc=$?
check "with another model on its spool the stage refuses: exit 64 (rc $rc)" "[ $rc = 64 ]"
# It names the spool and a job it holds (the first one found with another identity).
named=$(sed -n 's/.* job \([^ ]*\) was made with another model.*/\1/p' "$T/other.log" | head -n 1)
check "it says why, naming the spool and a job held there (${named:-none})" \
    "grep -q 'spool/mid-0' '$T/other.log' && [ -n '$named' ] && [ -d '$st/spool/mid-0/$named' ]"
[ "$fail" = 0 ] || tail -n 5 "$T/other.log"
after=$(cd "$st/spool/mid-0" && find . -type f ! -name lock -printf '%p %s\n' | sort | md5sum)
check "its spool is left as it was" "[ '$before' = '$after' ]"
$LS --state "$st" start mid-0 > /dev/null 2>&1
check "restarted with its own model" "[ $? = 0 ]"
fj_wait $N "$st/out" 120
fj_reap
fj_compare_all $N "$st/out" "$fj_ref"
check "every job completed ($((N - fj_lost)) of $N)" "[ $fj_lost = 0 ]"
check "every file identical to the undisturbed run ($fj_diff differ)" "[ $fj_diff = 0 ]"
check "one run directory per job ($fj_dups more)" "[ $fj_dups = 0 ]"
check "the job resumed where its spool was (log: resumed at window k > 0)" \
    "grep -q 'job=$job level=1 resumed at window [1-9]' '$st/log/mid-0.log'"
fj_spools_drain "$st" 15
fj_held=$(fj_spool_jobs "$st")
check "every spool is empty at the end ($fj_held jobs held)" "[ $fj_held = 0 ]"
[ "$fail" = 0 ] || { for f in "$st"/log/*.log; do echo "== $f"; grep -E 'WARN|ERROR' "$f" | tail -n 8; done; }
fj_summary modelswap $N 1
echo "test_faults_modelswap: $pass passed, $fail failed"
[ "$fail" = 0 ]
