# faults.sh: shared by the fault tests (tests/sh/test_faults_*.sh), sourced.
# Before sourcing: B (bin dir, absolute), T (temp dir). Provides:
#   fj_args I             jukebox-job arguments of test job I (seed I)
#   fj_refs N DIR         the N jobs through a shell pipe into DIR (the undisturbed run)
#   fj_submit N EP        sends the N jobs to EP (in the background; pids in fj_pids)
#   fj_wait N DIR SECS    waits until every run directory is in DIR (or SECS pass)
#   fj_reap               ends the submitters (after a grace period)
#   fj_compare N DIR REF  sets fj_lost (no run directory, or error.json) and fj_diff
#                         (a file that differs from the reference run), lists them
#   fj_refs_cached N      fj_refs into a cache shared by the fault tests (keyed by the
#                         binaries, models and job arguments); sets fj_ref to its folder
#   fj_compare_all N DIR REF  like fj_compare, over every file of every run directory
#                         (a missing or extra file differs too); also sets fj_dups (jobs
#                         with more than one run directory: DIR/fjI.1 ...)
#   fj_spool_jobs STATE   jobs held in the spools of a local-services state dir
#   fj_spools_drain STATE SECS  waits until they are empty (DONE removes them)
#   fj_stat EP KEY        a number from a control endpoint's status (KEY: a path such as
#                         out.stats.reassigned), -1 when it does not answer
#   fj_summary NAME JOBS FAULTS      the line scripts/faults-5x.sh adds up
#   fj_pick LIST...       one of the words, at random (RANDOM is seeded by the caller)
#   fj_alive PID          the process exists and is not a zombie
#   fj_free_port          a base port with 80 free ports above it
#   check NAME CMD        one check: evaluates CMD, prints ok/FAIL, counts pass/fail
#   fj_services_cleanup   EXIT trap of a local-services test (LS set): stops the
#                         submitters and every instance, removes T (kept with FAULTS_KEEP)
# Sourcing also seeds RANDOM from FAULTS_SEED (default: the time) into seed.
M=${M:-$PWD/models/default}
# The bounds of fj_wait and fj_spools_drain are for the plain build; a sanitizer build runs
# the stages several times slower (`make asan` sets JB_TEST_TIME_SCALE=4).
FJ_TIME_SCALE=${JB_TEST_TIME_SCALE:-1}
# Jobs long enough (about 1 s each through the pipeline here, in 8 windows per level,
# one sample at a time with -b 1) that a kill lands in the middle of one.
FJ_STAGE_ARGS="-b 1"
fj_args() {
    echo "--total-seconds 0.95 --seconds 0.95 --samples 4 --hop-fraction 0.125 --seed $1"
}
fj_refs() {
    local n=$1 dir=$2 i
    for i in $(seq 1 "$n"); do
        # shellcheck disable=SC2046
        "$B/jukebox-job" sample -q --id "fj$i" $(fj_args "$i") --vqvae "$M/vqvae.safetensors" |
            "$B/jukebox-prior-top" -q -t 1 $FJ_STAGE_ARGS -m "$M/prior_level_2.safetensors" |
            "$B/jukebox-upsampler-mid" -q -t 1 $FJ_STAGE_ARGS -m "$M/prior_level_1.safetensors" |
            "$B/jukebox-upsampler-bottom" -q -t 1 $FJ_STAGE_ARGS -m "$M/prior_level_0.safetensors" |
            "$B/jukebox-decoder" -q -t 1 -m "$M/vqvae.safetensors" --outdir "$dir"
    done
}
fj_refs_cached() {
    local n=$1 key i t
    key=$(cat "$B"/jukebox-job "$B"/jukebox-prior-top "$B"/jukebox-upsampler-mid \
              "$B"/jukebox-upsampler-bottom "$B"/jukebox-decoder "$M"/*.safetensors |
          md5sum | cut -c1-12)-$(echo "$(fj_args 0) $FJ_STAGE_ARGS" | md5sum | cut -c1-8)
    fj_ref=${TMPDIR:-/tmp}/jb_fj_refs.$key
    # Caches of other builds unused for 2 hours go (each is a few MB).
    find "${TMPDIR:-/tmp}" -maxdepth 1 -name 'jb_fj_refs.*' ! -name "jb_fj_refs.$key" \
        -mmin +120 -exec rm -rf {} + 2>/dev/null
    mkdir -p "$fj_ref" && touch "$fj_ref"
    for i in $(seq 1 "$n"); do
        [ -f "$fj_ref/fj$i/job.json" ] && continue
        t=$(mktemp -d "$fj_ref/.tmp.XXXXXX")
        # shellcheck disable=SC2046
        "$B/jukebox-job" sample -q --id "fj$i" $(fj_args "$i") --vqvae "$M/vqvae.safetensors" |
            "$B/jukebox-prior-top" -q -t 1 $FJ_STAGE_ARGS -m "$M/prior_level_2.safetensors" |
            "$B/jukebox-upsampler-mid" -q -t 1 $FJ_STAGE_ARGS -m "$M/prior_level_1.safetensors" |
            "$B/jukebox-upsampler-bottom" -q -t 1 $FJ_STAGE_ARGS -m "$M/prior_level_0.safetensors" |
            "$B/jukebox-decoder" -q -t 1 -m "$M/vqvae.safetensors" --outdir "$t"
        # Another test may have made it meanwhile: the first rename wins, both are equal.
        [ -f "$t/fj$i/job.json" ] && mv -T "$t/fj$i" "$fj_ref/fj$i" 2>/dev/null
        rm -rf "$t"
    done
}
fj_compare_all() {
    local n=$1 dir=$2 ref=$3 i f
    fj_lost=0 fj_diff=0 fj_dups=0
    for i in $(seq 1 "$n"); do
        if [ ! -d "$dir/fj$i" ] || [ -e "$dir/fj$i/error.json" ]; then
            fj_lost=$((fj_lost + 1)); echo "    lost: fj$i"; continue
        fi
        # timings.js (when each level's codes were complete) is the one file that varies.
        for f in $( (cd "$ref/fj$i" && find . -type f ! -name timings.js; cd "$dir/fj$i" && find . -type f ! -name timings.js) | sort -u); do
            if ! cmp -s "$dir/fj$i/$f" "$ref/fj$i/$f"; then
                fj_diff=$((fj_diff + 1)); echo "    differs: fj$i/${f#./}"; break
            fi
        done
    done
    for f in "$dir"/*; do
        [ -e "$f" ] || continue
        case "${f##*/}" in
            fj[0-9]|fj[0-9][0-9]) ;;
            *) fj_dups=$((fj_dups + 1)); echo "    another run directory: ${f##*/}" ;;
        esac
    done
}
fj_spool_jobs() { find "$1"/spool -mindepth 2 -maxdepth 2 -type d 2>/dev/null | wc -l; }
fj_spools_drain() {
    local end=$((SECONDS + $2 * FJ_TIME_SCALE))
    while [ "$(fj_spool_jobs "$1")" != 0 ] && [ $SECONDS -lt $end ]; do sleep 0.2; done
    [ "$(fj_spool_jobs "$1")" = 0 ] || find "$1"/spool -mindepth 2 -maxdepth 2 -type d | sed 's/^/    held: /'
}
fj_stat() {
    "$B/jukebox-status" --json --timeout 500 "$1" 2>/dev/null |
        python3 -c 'import json, sys
try:
    d = json.loads(sys.stdin.readline())
    for k in sys.argv[1].split("."): d = d[k]
    print(int(d))
except Exception:
    print(-1)' "$2"
}
fj_pids=()
fj_submit() {
    local n=$1 ep=$2 i
    for i in $(seq 1 "$n"); do
        # shellcheck disable=SC2046
        "$B/jukebox-job" sample -q --id "fj$i" $(fj_args "$i") --vqvae "$M/vqvae.safetensors" \
            --wait --heartbeat 200 --peer-timeout 1000 -o "$ep" & fj_pids+=($!)
    done
}
# fj_reap: the submitters (jukebox-job --wait) have a few seconds to see their jobs DONE;
# those still waiting then (a job that never completed) are stopped, so a test ends.
fj_reap() {
    local p i
    for i in $(seq 50); do
        local left=0
        for p in "${fj_pids[@]}"; do kill -0 "$p" 2>/dev/null && left=1; done
        [ $left = 0 ] && break
        sleep 0.2
    done
    for p in "${fj_pids[@]}"; do kill -TERM "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    fj_pids=()
}
fj_wait() {
    local n=$1 dir=$2 secs=$3 end i missing
    end=$((SECONDS + secs * FJ_TIME_SCALE))
    while [ $SECONDS -lt "$end" ]; do
        missing=0
        for i in $(seq 1 "$n"); do [ -d "$dir/fj$i" ] || missing=$((missing + 1)); done
        [ $missing = 0 ] && return 0
        sleep 0.3
    done
    return 1
}
fj_compare() {
    local n=$1 dir=$2 ref=$3 i f
    fj_lost=0 fj_diff=0
    for i in $(seq 1 "$n"); do
        if [ ! -d "$dir/fj$i" ] || [ -e "$dir/fj$i/error.json" ]; then
            fj_lost=$((fj_lost + 1)); echo "    lost: fj$i"; continue
        fi
        for f in codes.jbc level_0/sample_0.wav level_0/sample_2.wav level_1/sample_1.wav level_2/sample_0.wav; do
            if ! cmp -s "$dir/fj$i/$f" "$ref/fj$i/$f"; then
                fj_diff=$((fj_diff + 1)); echo "    differs: fj$i/$f"; break
            fi
        done
    done
}
fj_summary() {
    echo "faults: test=$1 jobs=$2 faults=$3 lost=$fj_lost differing=$fj_diff dups=${fj_dups:-0} held=${fj_held:-0}"
}
# fj_ctl STATE NAME: the control endpoint of an instance of a local-services state dir
fj_ctl() { awk -v n="$2" '$1 == "control" && $2 == n {print $3}' "$1/endpoints"; }
# fj_wait_busy STATE SECS NAME...: waits until every named instance holds a job
fj_wait_busy() {
    local state=$1 end=$((SECONDS + $2)) n all; shift 2
    while [ $SECONDS -lt $end ]; do
        all=1
        for n in "$@"; do [ "$(fj_jobs_of "$(fj_ctl "$state" "$n")")" -gt 0 ] || all=0; done
        [ $all = 1 ] && return 0
        sleep 0.1
    done
    return 1
}
# fj_wait_feeding STATE SECS PRODUCER NAME...: waits until the producer instance is in
# the middle of a job (in its jobs_in_flight) whose stream goes to one of the named
# instances (printed): killed then, that instance holds the job with its input incomplete.
fj_wait_feeding() {
    local state=$1 secs=$2 ep; shift 2
    ep=$(fj_ctl "$state" "$1"); shift
    # One poller (a status request every 50 ms): the window can be short.
    python3 - "$B/jukebox-status" "$ep" "$secs" "$@" <<'PY'
import json, subprocess, sys, time
status, ep, secs, names = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4:]
end = time.time() + secs
while time.time() < end:
    try:
        out = subprocess.run([status, "--json", "--timeout", "500", ep], capture_output=True,
                             text=True, timeout=5).stdout
        d = json.loads(out.splitlines()[0])
        busy = {j["id"] for j in d.get("jobs_in_flight", [])}
        fed = [j["peer"] for j in d["out"].get("jobs", [])
               if j["id"] in busy and j.get("peer") in names]
        if fed:
            print(fed[0])
            sys.exit(0)
    except Exception:
        pass
    time.sleep(0.05)
sys.exit(1)
PY
}
# fj_wait_dead PID...: until each process is gone (bounded: 5 s)
fj_wait_dead() {
    local p i
    for p in "$@"; do for i in $(seq 100); do fj_alive "$p" || break; sleep 0.05; done; done
}
# fj_jobs_of ENDPOINT: jobs in flight at a stage instance (its control endpoint), or -1.
# A 2 s answer timeout: on a loaded machine a 500 ms one missed busy instances (a twins run
# failed its "both hold jobs" precondition while the logs showed both holding jobs).
fj_jobs_of() {
    "$B/jukebox-status" --json --timeout 2000 "$1" 2>/dev/null |
        python3 -c 'import json, sys
try:
    d = json.loads(sys.stdin.readline()); print(len(d.get("jobs_in_flight", d.get("jobs", []))))
except Exception:
    print(-1)'
}
# fj_busy_victim STATE NAME...: a random one of the instances holding a job (asked at
# their control endpoints, from local-services.sh's endpoints file); any if none does
fj_busy_victim() {
    local state=$1 eps=() n busy; shift
    for n in "$@"; do eps+=("$(awk -v n="$n" '$1 == "control" && $2 == n {print $3}' "$state/endpoints")"); done
    mapfile -t busy < <("$B/jukebox-status" --json --timeout 500 "${eps[@]}" 2>/dev/null |
        python3 -c 'import json, sys
for line in sys.stdin:
    d = json.loads(line)
    if len(d.get("jobs_in_flight", d.get("jobs", []))) > 0:
        print(d.get("instance") or d.get("in", {}).get("instance", ""))')
    if [ ${#busy[@]} -gt 0 ]; then fj_pick "${busy[@]}"; else fj_pick "$@"; fi
}
fj_pick() { local a=("$@"); echo "${a[RANDOM % ${#a[@]}]}"; }
fj_alive() { [ -d "/proc/$1" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
fj_free_port() { jb_free_base_port; }   # scripts/lib/ports.sh

. tests/sh/lib/check.sh   # check, ok, bad, skip, check_summary
. scripts/lib/ports.sh    # jb_free_base_port
seed=${FAULTS_SEED:-$(date +%s%N | cut -c10-16)}
seed=$((10#$seed))   # decimal even with leading zeros (RANDOM=0368023 is an octal error)
RANDOM=$seed
fj_services_cleanup() {
    kill "${fj_pids[@]}" 2>/dev/null
    local s   # every services state of the test: $T/s, or $T/s<case> per case
    for s in "$T"/s*; do [ -d "$s" ] && $LS --state "$s" --stop-timeout 5 stop >/dev/null 2>&1; done
    [ -n "${FAULTS_KEEP:-}" ] && echo "kept $T" || rm -rf "$T"
}
