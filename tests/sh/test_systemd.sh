#!/bin/bash
# test_systemd.sh: the systemd template units and the stages' side of Type=notify.
#   - every unit in pipelines/systemd passes `systemd-analyze verify` (with the
#     executables of this build), silently;
#   - a stage started with NOTIFY_SOCKET sends READY=1 once its model is loaded and its
#     sockets are open, WATCHDOG=1 while it waits, STOPPING=1 and exit 0 on SIGTERM;
#   - every unit is set up for the reliable multi-instance layout: instance name, spool
#     (StateDirectory), control endpoint, heartbeat and peer timeout from its env file,
#     Restart=on-failure, Type=notify, a watchdog;
#   - with stages that have the reliable link: the four units' command lines (as systemd
#     would expand them, with loopback env files) run a whole pipeline whose output
#     equals a shell pipe's;
#   - make install puts the units in lib/systemd/system with the install's bindir.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
B=$PWD/$BUILD/bin
T=$(mktemp -d /tmp/jb_systemd.XXXXXX)
upids=()
trap 'kill $stage "${upids[@]}" 2>/dev/null; [ -n "${KEEP:-}" ] && echo "kept $T" || rm -rf "$T"' EXIT
. tests/sh/lib/check.sh

if command -v systemd-analyze >/dev/null; then
    for f in pipelines/systemd/*.service; do
        b=$(basename "$f")
        sed "s|@BINDIR@|$B|" "$f" > "$T/${b/@/@test}"
        out=$(cd "$T" && systemd-analyze verify --man=no "./${b/@/@test}" 2>&1); rc=$?
        check "$b: systemd-analyze verify is clean${out:+ ($out)}" "[ $rc = 0 ] && [ -z \"\$out\" ]"
    done
else
    check "systemd-analyze installed" false
fi

# The notify protocol, with a datagram socket standing in for systemd.
python3 - "$T/notify" > "$T/notes.txt" <<'PY' &
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1]); s.settimeout(0.5)
end = time.time() + 20
while time.time() < end:
    try:
        print(s.recv(4096).decode().replace("\n", " "), flush=True)
    except socket.timeout:
        pass
PY
listener=$!
for i in $(seq 50); do [ -S "$T/notify" ] && break; sleep 0.1; done
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
NOTIFY_SOCKET=$T/notify WATCHDOG_USEC=400000 "$B/jukebox-prior-top" -q -t 1 \
    -m models/default/prior_level_2.safetensors --in "tcp://127.0.0.1:$port" \
    --out "tcp://127.0.0.1:$((port + 1))" & stage=$!
sleep 2
kill -TERM $stage; wait $stage; rc=$?
sleep 0.7; kill $listener 2>/dev/null; wait $listener 2>/dev/null
check "READY=1 sent after loading" "grep -q 'READY=1' '$T/notes.txt'"
check "WATCHDOG=1 sent while waiting (at least twice in 2 s)" "[ \$(grep -c 'WATCHDOG=1' '$T/notes.txt') -ge 2 ]"
check "STOPPING=1 on SIGTERM" "grep -q 'STOPPING=1' '$T/notes.txt'"
check "SIGTERM: exit 0 (rc $rc)" "[ $rc = 0 ]"

echo "-- the units' settings for the reliable layout"
for f in pipelines/systemd/*.service; do
    b=$(basename "$f")
    ex=$(grep '^ExecStart=' "$f")
    check "$b: name, spool, control, heartbeat, peer timeout on the command line" \
        "(for o in name spool control heartbeat peer-timeout; do grep -q -- \"--\$o \\\${JUKEBOX_\$(echo \$o | tr a-z- A-Z_)}\" <<<\"\$ex\" || exit 1; done)"
    check "$b: Type=notify, Restart=on-failure, a watchdog, a StateDirectory for the spool" \
        "grep -q '^Type=notify' '$f' && grep -q '^Restart=on-failure' '$f' && grep -q '^WatchdogSec=[1-9]' '$f' && grep -q '^StateDirectory=jukebox/' '$f' && grep -q 'JUKEBOX_SPOOL=%S/jukebox/' '$f'"
done
check "example.env names every setting the units read" \
    "(for v in MODEL IN OUT DEVICE NAME SPOOL CONTROL HEARTBEAT PEER_TIMEOUT ARGS; do grep -q \"^#*JUKEBOX_\$v=\" pipelines/systemd/example.env || exit 1; done)"
# example.env is the middle upsampler on hostB of docs/operations.md's layout: its
# settings are that block's (the control port of its table, not the top prior's).
awk '/^# B: \/etc\/jukebox\/upsampler-mid-gpu0.env/{f=1; next} f && !/^JUKEBOX_/{exit} f' \
    docs/operations.md > "$T/ops-mid.env"
check "example.env sets what operations.md's upsampler-mid-gpu0.env sets ($(tr '\n' ' ' < "$T/ops-mid.env"))" \
    "[ \$(wc -l < '$T/ops-mid.env') -ge 5 ] && ! grep -qvxF -f <(grep '^JUKEBOX_' pipelines/systemd/example.env) '$T/ops-mid.env'"
# operations.md names each unit's TimeoutStopSec: every value the units have, and no other.
ts_units=$(grep -h '^TimeoutStopSec=' pipelines/systemd/*.service | sort -u)
ts_doc=$(grep -o 'TimeoutStopSec=[0-9]*' docs/operations.md | sort -u)
check "operations.md's TimeoutStopSec values are the units' (units: $(echo $ts_units), doc: $(echo $ts_doc))" \
    "[ -n \"\$ts_units\" ] && [ \"\$ts_units\" = \"\$ts_doc\" ]"

if "$B/jukebox-prior-top" --help | grep -q -- --peer-timeout && "$B/jukebox-prior-top" --help | grep -q -- --spool; then
    echo "-- a pipeline from the units' command lines (loopback)"
    M=$PWD/models/default
    # A base port below the ephemeral range whose P..P+15 are all free (a kernel-chosen
    # free port says nothing of its neighbours, which outgoing connections may hold).
    P=$(python3 - <<'PY'
import random, socket
for _ in range(200):
    base = random.randrange(20000, 30000)
    socks = []
    try:
        for k in range(16):
            s = socket.socket(); socks.append(s); s.bind(("127.0.0.1", base + k))
        print(base); break
    except OSError:
        pass
    finally:
        for s in socks: s.close()
PY
)
    ep() { echo "tcp://127.0.0.1:$1"; }
    mkenv() {   # stage model in out extra...
        { echo "JUKEBOX_MODEL=$M/$2.safetensors"; echo "JUKEBOX_IN=$3"; echo "JUKEBOX_OUT=$4"
          echo "JUKEBOX_CONTROL=@$(ep $((P + 10 + ${#upids[@]})))"; echo "JUKEBOX_HEARTBEAT=300"
          echo "JUKEBOX_PEER_TIMEOUT=2000"; echo "JUKEBOX_ARGS=--threads 1"
          echo "JUKEBOX_OUTDIR=$T/out"; } > "$T/$1-t.env"
    }
    mkdir -p "$T/state" "$T/run/jukebox" "$T/out"
    started=0
    # unit STAGE MODEL IN OUT: writes the env file, expands the unit, starts it
    unit() {
        local st=$1 argv
        mkenv "$st" "$2" "$3" "$4"
        mapfile -d '' argv < <(python3 tests/sh/lib/unit_cmd.py "pipelines/systemd/jukebox-$st@.service" \
            t "$T/$st-t.env" "$B" "$T/state" "$T/run")
        mkdir -p "$T/state/jukebox/$st-t"
        if "$B/jukebox-launch" --log "$T/$st.log" --pidfile "$T/$st.pid" --timeout 60 -- "${argv[@]}" >/dev/null; then
            started=$((started + 1))
        fi
        [ -f "$T/$st.pid" ] && upids+=("$(cat "$T/$st.pid")")
    }
    unit prior-top prior_level_2 "@$(ep $P)" "@$(ep $((P + 1)))"
    unit upsampler-mid prior_level_1 ">$(ep $((P + 1)))" "@$(ep $((P + 2)))"
    unit upsampler-bottom prior_level_0 ">$(ep $((P + 2)))" "@$(ep $((P + 3)))"
    unit decoder vqvae ">$(ep $((P + 3)))" -
    check "the four units' command lines start and send READY ($started of 4)" "[ $started = 4 ]"
    "$B/jukebox-job" sample -q --id unit1 --total-seconds 0.35 --seconds 0.3 --vqvae "$M/vqvae.safetensors" -o "$(ep $P)"
    for i in $(seq 300); do [ -f "$T/out/unit1/codes.jbc" ] && break; sleep 0.1; done
    "$B/jukebox-job" sample -q --id unit1 --total-seconds 0.35 --seconds 0.3 --vqvae "$M/vqvae.safetensors" |
        "$B/jukebox-prior-top" -q -t 1 -m "$M/prior_level_2.safetensors" |
        "$B/jukebox-upsampler-mid" -q -t 1 -m "$M/prior_level_1.safetensors" |
        "$B/jukebox-upsampler-bottom" -q -t 1 -m "$M/prior_level_0.safetensors" |
        "$B/jukebox-decoder" -q -t 1 -m "$M/vqvae.safetensors" --outdir "$T/ref"
    check "a job through them equals a shell pipe's" "cmp -s '$T/out/unit1/codes.jbc' '$T/ref/unit1/codes.jbc'"
    "$B/jukebox-status" "$(ep $((P + 10)))" "$(ep $((P + 13)))" > "$T/status.txt" 2>&1
    check "their control endpoints answer jukebox status" "grep -q '^prior-top: 1 instance' '$T/status.txt' && grep -q '^decoder: 1 instance' '$T/status.txt'"
    kill -TERM "${upids[@]}" 2>/dev/null
    for p in "${upids[@]}"; do for i in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done; done
else
    echo "-- (the stages have no reliable link or spool yet: the units' command lines are not run)"
fi

make -s install PREFIX=/usr/local DESTDIR="$T/root" BUILD="$BUILD" >/dev/null 2>&1
u=$T/root/usr/local/lib/systemd/system/jukebox-upsampler-mid@.service
check "make install: units in lib/systemd/system" "[ -f '$u' ] && [ -f '$T/root/usr/local/share/jukebox/pipelines/systemd/example.env' ]"
check "installed unit runs the installed executable" "grep -q 'ExecStart=/usr/local/bin/jukebox-upsampler-mid ' '$u'"
check_summary test_systemd
