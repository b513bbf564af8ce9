#!/bin/bash
# measure-stall.sh: upstream memory under a stalled decoder (issue 5, point 3).
#
#   scripts/measure-stall.sh [--stall S] [--jobs N] [--samples N]
#
# Runs the networked pipeline (pipelines/local-services.sh, one instance per stage,
# loopback, bundled model) twice on the same jobs: once undisturbed, once with the
# decoder stopped (SIGSTOP) from before the first job until S seconds later (default 35),
# then resumed (SIGCONT). Every 0.2 s it reads VmRSS and VmHWM of the top prior and both
# upsamplers from /proc. Prints per stage: the peak (VmHWM) with and without the stall,
# and the largest VmRSS while the decoder was stopped; then checks that every job
# completed after the stall with the same codes as the undisturbed run.
# Bounded queues mean the stall holds the stages back instead of filling their memory;
# the jobs are submitted with a long --timeout, since back-pressure reaches jukebox-job
# too (by default it gives up after 10 s without an acknowledgement).
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
B=$PWD/$BUILD/bin
M=$PWD/models/default
LS=pipelines/local-services.sh
stall=35 jobs=6 samples=8
while [ $# -gt 0 ]; do
    case "$1" in
        --stall) stall=$2; shift 2 ;;
        --jobs) jobs=$2; shift 2 ;;
        --samples) samples=$2; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "measure-stall.sh: unknown option $1" >&2; exit 64 ;;
    esac
done
T=$(mktemp -d /tmp/jb_stall.XXXXXX)
trap '$LS --state "$T/s" --stop-timeout 5 stop >/dev/null 2>&1; kill -CONT "${dec:-0}" 2>/dev/null; rm -rf "$T"' EXIT
. scripts/lib/ports.sh
port=$(jb_free_base_port)
job_args() { echo "--total-seconds 0.95 --seconds 0.95 --samples $samples --hop-fraction 0.125 --seed $1"; }
kib() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status" 2>/dev/null; }

# run NAME STALL_SECONDS: one run; writes $T/NAME.peak (stage hwm maxrss) and NAME.out/
run() {
    local name=$1 st=$2 i n p
    rm -rf "$T/s"
    $LS --state "$T/s" --base-port "$port" --top 1 --mid 1 --bottom 1 --stage-args "-b 4" \
        --outdir "$T/$name.out" start >/dev/null || { echo "measure-stall.sh: services failed to start" >&2; exit 69; }
    declare -A pid=() maxrss=()
    for n in top-0 mid-0 bottom-0 decoder-0; do pid[$n]=$(cat "$T/s/run/$n.pid"); maxrss[$n]=0; done
    dec=${pid[decoder-0]}
    [ "$st" -gt 0 ] && kill -STOP "$dec"
    local t0=$SECONDS
    for i in $(seq 1 "$jobs"); do
        # shellcheck disable=SC2046
        "$B/jukebox-job" sample -q --id "stall$i" $(job_args "$i") --vqvae "$M/vqvae.safetensors" \
            --timeout 600000 -o "$($LS --state "$T/s" endpoint)" &
    done
    local resumed=0
    while :; do
        for n in top-0 mid-0 bottom-0; do
            r=$(kib "${pid[$n]}" VmRSS)
            [ -n "$r" ] && [ "$r" -gt "${maxrss[$n]}" ] && [ $resumed = 0 ] && maxrss[$n]=$r
        done
        if [ "$st" -gt 0 ] && [ $resumed = 0 ] && [ $((SECONDS - t0)) -ge "$st" ]; then
            kill -CONT "$dec"; resumed=1
            echo "  decoder resumed after $((SECONDS - t0)) s"
        fi
        local done=0
        for i in $(seq 1 "$jobs"); do [ -d "$T/$name.out/stall$i" ] && done=$((done + 1)); done
        if [ $done = "$jobs" ] || [ $((SECONDS - t0)) -gt $((st + 300)) ]; then break; fi
        sleep 0.2
    done
    echo "  $name: $done of $jobs jobs done in $((SECONDS - t0)) s"
    : > "$T/$name.peak"
    for n in top-0 mid-0 bottom-0; do
        echo "$n $(kib "${pid[$n]}" VmHWM) ${maxrss[$n]}" >> "$T/$name.peak"
    done
    wait
    $LS --state "$T/s" stop >/dev/null
}

echo "-- undisturbed: $jobs jobs of $samples samples"
run calm 0
echo "-- decoder stopped for $stall s"
run stalled "$stall"
echo
printf '%-18s %16s %16s %22s\n' stage "VmHWM calm (MiB)" "VmHWM stall (MiB)" "max VmRSS stalled (MiB)"
while read -r n hwm _; do
    read -r _ shwm srss < <(grep "^$n " "$T/stalled.peak")
    awk -v n="$n" -v a="$hwm" -v b="$shwm" -v c="$srss" \
        'BEGIN { printf "%-18s %16.1f %16.1f %22.1f\n", n, a / 1024, b / 1024, c / 1024 }'
done < "$T/calm.peak"
same=0
for i in $(seq 1 "$jobs"); do cmp -s "$T/calm.out/stall$i/codes.jbc" "$T/stalled.out/stall$i/codes.jbc" && same=$((same + 1)); done
echo "jobs completed after the stall with the undisturbed run's codes: $same of $jobs"
[ "$same" = "$jobs" ]
