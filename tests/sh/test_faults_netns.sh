#!/bin/bash
# test_faults_netns.sh (issue 5, fault test c): a multi-host run in network namespaces.
# Four "hosts", each a network namespace joined to a bridge by a veth pair:
#   A: the top prior;  B and C: a middle and a bottom upsampler each;  D: the decoder.
# Every stage serves its output; B's and C's middle upsamplers connect to A, both bottom
# upsamplers to both middles, the decoder to both bottoms (heartbeat 200 ms, peer
# timeout 1 s, spools). While 8 jobs run, the link of a random upsampler host is cut
# (its veth set down) for 3 s, twice, and restored. Every job completes with files
# identical to an undisturbed shell-pipe run.
# Skipped (with a message) only where the kernel refuses network namespaces.
# Prints: faults: test=netns jobs=N faults=N lost=N differing=N.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
B=$PWD/$BUILD/bin
T=$(mktemp -d /tmp/jb_faults_netns.XXXXXX)
. tests/sh/lib/faults.sh
id=$$
net=10.231.$((id % 250))
br=jbbr$id
spids=()
cleanup() {
    kill "${fj_pids[@]}" 2>/dev/null
    for p in "${spids[@]}"; do kill -KILL "$p" 2>/dev/null; done
    for h in A B C D; do ip netns del "jb$h$id" 2>/dev/null; ip link del "jbv$h$id" 2>/dev/null; done
    ip link del "$br" 2>/dev/null
    [ -n "${FAULTS_KEEP:-}" ] && echo "kept $T" || rm -rf "$T"
}
trap cleanup EXIT
N=8 CUTS=2

if ! out=$(ip netns add "jbA$id" 2>&1); then
    skip "the kernel refuses network namespaces here (ip netns add: $out)"
    check_finish test_faults_netns
fi
ip link add "$br" type bridge && ip link set "$br" up && ip addr add "$net.254/24" dev "$br" || {
    bad "cannot create a bridge"; check_finish test_faults_netns; }
k=0
for h in A B C D; do
    k=$((k + 1))
    [ $h = A ] || ip netns add "jb$h$id"
    ip link add "jbv$h$id" type veth peer name "jbn$h$id"
    ip link set "jbn$h$id" netns "jb$h$id"
    ip netns exec "jb$h$id" ip link set lo up
    ip netns exec "jb$h$id" ip addr add "$net.$k/24" dev "jbn$h$id"
    ip netns exec "jb$h$id" ip link set "jbn$h$id" up
    ip link set "jbv$h$id" master "$br" up
done
ip_of() { case $1 in A) echo "$net.1" ;; B) echo "$net.2" ;; C) echo "$net.3" ;; D) echo "$net.4" ;; esac; }
# Reachable: a connection to a closed port is refused at once (a cut link times out).
reach() { ip netns exec "jb$1$id" timeout 2 bash -c "echo > /dev/tcp/$(ip_of "$2")/9" 2>&1 | grep -q refused; }
check "the hosts reach each other over the bridge" "reach A D && reach B C"

fj_refs $N "$T/ref"
P=5555
common=(--threads 1 --heartbeat 200 --peer-timeout 1000)
spool=0; "$B/jukebox-prior-top" --help | grep -q -- --spool && spool=1
# start HOST NAME STAGE MODEL ARGS...: one instance in HOST's namespace, waits for READY
start() {
    local h=$1 n=$2 s=$3 m=$4; shift 4
    local sp=()
    [ $spool = 1 ] && { mkdir -p "$T/spool/$n"; sp=(--spool "$T/spool/$n"); }
    ip netns exec "jb$h$id" "$B/jukebox-launch" --log "$T/$n.log" --pidfile "$T/$n.pid" --timeout 60 -- \
        "$B/jukebox-$s" --model "$M/$m.safetensors" --name "$n" "${sp[@]}" "${common[@]}" "$@" \
        >/dev/null || return 1
    spids+=("$(cat "$T/$n.pid")")
}
tcp() { echo "tcp://$(ip_of "$1"):$2"; }
ok=0
start A top-A prior-top prior_level_2 $FJ_STAGE_ARGS --in "@$(tcp A $P)" --out "@$(tcp A $((P + 10)))" && ok=$((ok + 1))
for h in B C; do
    start $h mid-$h upsampler-mid prior_level_1 $FJ_STAGE_ARGS --in ">$(tcp A $((P + 10)))" \
        --out "@$(tcp $h $((P + 20)))" && ok=$((ok + 1))
    start $h bottom-$h upsampler-bottom prior_level_0 $FJ_STAGE_ARGS \
        --in ">$(tcp B $((P + 20))),>$(tcp C $((P + 20)))" --out "@$(tcp $h $((P + 30)))" && ok=$((ok + 1))
done
start D decoder-D decoder vqvae --in ">$(tcp B $((P + 30))),>$(tcp C $((P + 30)))" --outdir "$T/out" && ok=$((ok + 1))
check "six instances on four hosts ready ($ok of 6)" "[ $ok = 6 ]"
if [ $ok != 6 ]; then
    for f in "$T"/*.log; do echo "== $f"; tail -n 3 "$f"; done
    check_finish test_faults_netns
fi

fj_submit $N "$(tcp A $P)"
faults=0
for c in $(seq 1 $CUTS); do
    sleep "$((RANDOM % 2)).$((RANDOM % 9 + 1))"
    h=$(fj_pick B C)
    ip link set "jbv$h$id" down && faults=$((faults + 1))
    echo "  cut host $h at ${SECONDS}s for about 3.5 s"
    reach A $h && echo "  (host $h still reachable after the cut?)"
    sleep 1.5
    ip link set "jbv$h$id" up
done
fj_wait $N "$T/out" ${FAULTS_WAIT:-150}
fj_reap
fj_compare $N "$T/out" "$T/ref"
check "every job completed ($((N - fj_lost)) of $N)" "[ $fj_lost = 0 ]"
check "every output identical to the undisturbed run ($fj_diff differ)" "[ $fj_diff = 0 ]"
check "$faults link cuts injected" "[ $faults = $CUTS ]"
alive=0; for p in "${spids[@]}"; do fj_alive "$p" && alive=$((alive + 1)); done
check "every instance still running ($alive of 6)" "[ $alive = 6 ]"
fj_summary netns $N $faults
[ "$fail" = 0 ] || { for f in "$T"/*.log; do echo "== $f"; grep -E 'WARN|ERROR' "$f" | tail -n 5; done; }
check_summary test_faults_netns
