#!/bin/bash
# soak-restart.sh: randomised fault soak of the reliable pipeline (issue 18; not part of
# make test). 2 top priors, 2 middle and 2 bottom upsamplers and 1 decoder as local
# services (pipelines/local-services.sh, loopback, spools, heartbeat 200 ms, peer
# timeout 1 s). Round after round a batch of jobs is submitted (jukebox-job --wait)
# and, while it runs, every 1-3 s a random instance of any stage gets a random fault:
#   kill    kill -9, restarted 0-2 s later with the same command, name and spool
#   stop    SIGSTOP for 0.5-4 s, then SIGCONT
#   term    SIGTERM (waits for the exit; kill -9 after 20 s), restarted at once
# Each round's outputs are compared, every file of every run directory, with an
# undisturbed shell-pipe run of the same jobs (made in the background meanwhile);
# then the spools must drain to empty and no job may have a second run directory.
#
#   scripts/soak-restart.sh [--minutes M] [--jobs K] [--seed S] [--dir DIR]
#
# Prints one line per round and the totals: rounds, jobs, faults of each kind, jobs
# lost, outputs differing, jobs with duplicate run directories, jobs left in spools.
# Exit 0 when all of those are 0, 1 otherwise. Work folder kept (--dir, default a
# temporary one, printed) for the logs.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
B=$PWD/$BUILD/bin
M=${M:-$PWD/models/default}
LS=pipelines/local-services.sh
minutes=30 K=6 seed=$(date +%s) T=""
while [ $# -gt 0 ]; do
    case "$1" in
        --minutes) minutes=$2; shift 2 ;;
        --jobs) K=$2; shift 2 ;;
        --seed) seed=$2; shift 2 ;;
        --dir) T=$2; shift 2 ;;
        -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "soak-restart.sh: unknown argument $1" >&2; exit 64 ;;
    esac
done
[ -n "$T" ] || T=$(mktemp -d /tmp/jb_soak.XXXXXX)
mkdir -p "$T"
RANDOM=$((10#$seed))
st=$T/s
STAGE_ARGS="-b 1"
job_args() { echo "--total-seconds 0.95 --seconds 0.95 --samples 2 --hop-fraction 0.125 --seed $1"; }
names=(top-0 top-1 mid-0 mid-1 bottom-0 bottom-1 decoder-0)
alive() { [ -n "$1" ] && [ -d "/proc/$1" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
pid_of() { cat "$st/run/$1.pid" 2>/dev/null; }
stopped_pid=""
cleanup() {
    [ -n "$stopped_pid" ] && kill -CONT "$stopped_pid" 2>/dev/null
    kill "${subs[@]}" 2>/dev/null
    $LS --state "$st" --stop-timeout 10 stop > /dev/null 2>&1
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "soak-restart: seed $seed, $minutes min, $K jobs per round, work folder $T"
. scripts/lib/ports.sh
P=$(jb_free_base_port)
$LS --state "$st" --base-port "$P" --top 2 --mid 2 --bottom 2 --heartbeat 200 \
    --peer-timeout 1000 --stage-args "$STAGE_ARGS" start > "$T/start.txt" 2>&1 ||
    { cat "$T/start.txt"; exit 69; }
ep=$($LS --state "$st" endpoint)

# refs ROUND: the round's jobs through a shell pipe (the undisturbed run)
refs() {
    local r=$1 i
    for i in $(seq 1 "$K"); do
        # shellcheck disable=SC2046
        "$B/jukebox-job" sample -q --id "r${r}j$i" $(job_args $((r * 100 + i))) --vqvae "$M/vqvae.safetensors" |
            "$B/jukebox-prior-top" -q -t 1 $STAGE_ARGS -m "$M/prior_level_2.safetensors" |
            "$B/jukebox-upsampler-mid" -q -t 1 $STAGE_ARGS -m "$M/prior_level_1.safetensors" |
            "$B/jukebox-upsampler-bottom" -q -t 1 $STAGE_ARGS -m "$M/prior_level_0.safetensors" |
            "$B/jukebox-decoder" -q -t 1 -m "$M/vqvae.safetensors" --outdir "$T/ref"
    done
}
restart() {   # up to 5 tries (a port can take a moment to be free again)
    local k
    for k in 1 2 3 4 5; do
        $LS --state "$st" start "$1" > /dev/null 2>&1 && return 0
        echo "    (start of $1 failed, try $k)"; sleep 1
    done
    return 1
}
wait_gone() {   # pid secs
    local i
    for i in $(seq $(($2 * 20))); do alive "$1" || return 0; sleep 0.05; done
    return 1
}
fault() {   # one fault of a random kind on a random instance
    local n=${names[RANDOM % ${#names[@]}]} kind p
    kind=$(echo kill stop term | tr ' ' '\n' | sed -n "$((RANDOM % 3 + 1))p")
    p=$(pid_of "$n")
    alive "$p" || { restart "$n"; return; }
    case $kind in
        kill) kill -KILL "$p"; wait_gone "$p" 5; sleep "$((RANDOM % 3)).$((RANDOM % 10))"; restart "$n"; n_kill=$((n_kill + 1)) ;;
        stop) kill -STOP "$p"; stopped_pid=$p; sleep "$((RANDOM % 4)).$((RANDOM % 10 + 5))"
              kill -CONT "$p"; stopped_pid=""; n_stop=$((n_stop + 1)) ;;
        term) kill -TERM "$p"; wait_gone "$p" 20 || kill -KILL "$p"; wait_gone "$p" 5; restart "$n"
              n_term=$((n_term + 1)) ;;
    esac
    echo "    $(date -u +%T) $kind $n (pid $p)" >> "$T/faults.log"
}
missing() {   # jobs of round $1 without a run directory
    local i k=0
    for i in $(seq 1 "$K"); do [ -d "$st/out/r$1j$i" ] || k=$((k + 1)); done
    echo $k
}
spool_jobs() { find "$st/spool" -mindepth 2 -maxdepth 2 -type d 2>/dev/null | wc -l; }

n_kill=0 n_stop=0 n_term=0 rounds=0 jobs=0 lost=0 differ=0 dups=0 held=0
end=$((SECONDS + minutes * 60))
printf '%-6s %5s %6s %5s %5s %5s %5s %5s %6s\n' round jobs faults lost diff dups held secs elapsed
while [ $SECONDS -lt $end ]; do
    r=$((rounds + 1)) t0=$SECONDS f0=$((n_kill + n_stop + n_term))
    refs "$r" > "$T/ref.$r.log" 2>&1 & refpid=$!
    subs=()
    for i in $(seq 1 "$K"); do
        # shellcheck disable=SC2046
        "$B/jukebox-job" sample -q --id "r${r}j$i" $(job_args $((r * 100 + i))) --vqvae "$M/vqvae.safetensors" \
            --wait --timeout 600000 --heartbeat 200 --peer-timeout 1000 -o "$ep" >> "$T/submit.log" 2>&1 & subs+=($!)
    done
    # Faults while the round's jobs run (at most 240 s).
    while [ "$(missing "$r")" -gt 0 ] && [ $((SECONDS - t0)) -lt 240 ]; do
        sleep "$((RANDOM % 2 + 1)).$((RANDOM % 10))"
        fault
    done
    for n in "${names[@]}"; do alive "$(pid_of "$n")" || restart "$n"; done
    # Then without faults: every job must come out, and the spools drain.
    t1=$SECONDS
    while [ "$(missing "$r")" -gt 0 ] && [ $((SECONDS - t1)) -lt 180 ]; do sleep 0.5; done
    t1=$SECONDS
    while [ "$(spool_jobs)" -gt 0 ] && [ $((SECONDS - t1)) -lt 60 ]; do sleep 0.5; done
    for p in "${subs[@]}"; do kill -TERM "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    wait "$refpid"
    rl=0 rd=0 rdup=0
    for i in $(seq 1 "$K"); do
        d=$st/out/r${r}j$i ref=$T/ref/r${r}j$i
        if [ ! -d "$d" ] || [ -e "$d/error.json" ]; then rl=$((rl + 1)); echo "    round $r: lost r${r}j$i"; continue; fi
        for f in $( (cd "$ref" && find . -type f ! -name timings.js; cd "$d" && find . -type f ! -name timings.js) | sort -u); do
            cmp -s "$d/$f" "$ref/$f" || { rd=$((rd + 1)); echo "    round $r: r${r}j$i/${f#./} differs"; break; }
        done
    done
    for f in "$st"/out/*; do
        [ -e "$f" ] || continue
        case "${f##*/}" in
            r*j[0-9]|r*j[0-9][0-9]) ;;
            *) rdup=$((rdup + 1)); echo "    round $r: extra run directory ${f##*/}"
               mkdir -p "$T/extra"; mv "$f" "$T/extra/" ;;   # counted once
        esac
    done
    rh=$(spool_jobs)
    [ "$rh" -gt 0 ] && find "$st/spool" -mindepth 2 -maxdepth 2 -type d | sed "s/^/    round $r: held /"
    mkdir -p "$T/done/$r"
    for i in $(seq 1 "$K"); do [ -d "$st/out/r${r}j$i" ] && mv "$st/out/r${r}j$i" "$T/done/$r/"; done
    rm -rf "$T/ref"
    rounds=$r jobs=$((jobs + K)) lost=$((lost + rl)) differ=$((differ + rd)) dups=$((dups + rdup)) held=$((held + rh))
    printf '%-6s %5s %6s %5s %5s %5s %5s %5s %6s\n' "$r" "$K" $((n_kill + n_stop + n_term - f0)) "$rl" "$rd" "$rdup" "$rh" \
        $((SECONDS - t0)) "${SECONDS}s"
    # A stage that failed leaves its log: stop there (the folder is kept).
    [ $((rl + rd + rdup + rh)) -gt 0 ] && [ -n "${SOAK_STOP_ON_FAIL:-}" ] && break
done
echo "soak-restart totals: rounds $rounds, jobs $jobs, faults $((n_kill + n_stop + n_term)) (kill -9 + restart $n_kill," \
     "SIGSTOP/SIGCONT $n_stop, SIGTERM + restart $n_term), jobs lost $lost, outputs differing $differ," \
     "jobs with duplicate run directories $dups, jobs left in spools $held (seed $seed, logs $T)"
[ $((lost + differ + dups + held)) = 0 ]
