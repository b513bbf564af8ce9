#!/bin/bash
# test_systemd.sh: the systemd template units and the stages' side of Type=notify.
#   - every unit in pipelines/systemd passes `systemd-analyze verify` (with the
#     executables of this build), silently;
#   - a stage started with NOTIFY_SOCKET sends READY=1 once its model is loaded and its
#     sockets are open, WATCHDOG=1 while it waits, STOPPING=1 and exit 0 on SIGTERM;
#   - make install puts the units in lib/systemd/system with the install's bindir.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
B=$PWD/$BUILD/bin
T=$(mktemp -d /tmp/jb_systemd.XXXXXX)
trap 'kill $stage 2>/dev/null; rm -rf "$T"' EXIT
pass=0; fail=0
check() { if eval "$2"; then echo "  ok   $1"; pass=$((pass + 1)); else echo "  FAIL $1"; fail=$((fail + 1)); fi; }

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

make -s install PREFIX=/usr/local DESTDIR="$T/root" BUILD="$BUILD" >/dev/null 2>&1
u=$T/root/usr/local/lib/systemd/system/jukebox-upsampler-mid@.service
check "make install: units in lib/systemd/system" "[ -f '$u' ] && [ -f '$T/root/usr/local/share/jukebox/pipelines/systemd/example.env' ]"
check "installed unit runs the installed executable" "grep -q 'ExecStart=/usr/local/bin/jukebox-upsampler-mid ' '$u'"
echo "test_systemd: $pass passed, $fail failed"
[ "$fail" = 0 ]
