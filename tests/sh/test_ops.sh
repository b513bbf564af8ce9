#!/bin/bash
# test_ops.sh: the operator's tools.
#   - jukebox-launch returns once a stage has sent READY=1, and reports a command
#     that dies before;
#   - pipelines/local-services.sh starts every stage as a service (pid files, logs,
#     endpoints), a job sent to it gives the same files as a shell pipe, start is
#     idempotent, restart replaces one instance, stop ends them all;
#   - jukebox status / jukebox-status: a reply from a stand-in stage (tests/sh/lib/zmtp.py,
#     ZMTP written by hand) is printed as a table; unreachable endpoints are listed and
#     give exit 69; with the reliable link, the real services answer.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
B=$PWD/$BUILD/bin
M=models/default
T=$(mktemp -d /tmp/jb_ops.XXXXXX)
LS=pipelines/local-services.sh
cleanup() { $LS --state "$T/s" stop >/dev/null 2>&1; rm -rf "$T"; }
trap cleanup EXIT
. tests/sh/lib/check.sh
. scripts/lib/ports.sh
free_port() { jb_free_base_port; }   # a base port with 80 free ports above it
alive() { [ -d "/proc/$1" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }

echo "-- jukebox-launch"
port=$(free_port)
pid=$("$B/jukebox-launch" --log "$T/l.log" --pidfile "$T/l.pid" --timeout 60 -- \
      "$B/jukebox-prior-top" -t 1 -m $M/prior_level_2.safetensors --in "tcp://127.0.0.1:$port" \
      --out "tcp://127.0.0.1:$((port + 1))"); rc=$?
check "a stage is ready: exit 0, pid printed and in the pid file (rc $rc)" \
    "[ $rc = 0 ] && [ \"\$pid\" = \"\$(cat '$T/l.pid')\" ] && alive '$pid'"
check "its log holds the stage's messages" "grep -q 'ready' '$T/l.log'"
kill -TERM "$pid"; for i in $(seq 50); do alive "$pid" || break; sleep 0.1; done
check "it ends on SIGTERM" "! alive '$pid'"
"$B/jukebox-launch" --log "$T/l2.log" --pidfile "$T/l2.pid" --timeout 60 -- \
    "$B/jukebox-prior-top" -m /nonexistent.safetensors 2>"$T/l2.err"; rc=$?
check "a stage that exits before READY: exit 69, its status reported (rc $rc)" \
    "[ $rc = 69 ] && grep -q 'status 66' '$T/l2.err' && [ ! -e '$T/l2.pid' ]"
"$B/jukebox-launch" --log "$T/l3.log" --pidfile "$T/l3.pid" --timeout 0.5 -- sleep 30; rc=$?
check "no READY within --timeout: exit 75, left running (rc $rc)" "[ $rc = 75 ] && alive \$(cat '$T/l3.pid')"
kill "$(cat "$T/l3.pid")"
"$B/jukebox-launch" --log "$T/l4.log" --pidfile "$T/l4.pid" --timeout 60 -- "$T/no/such/cmd" 2>"$T/l4.err"; rc=$?
check "a command that cannot be started: exit 71 as --help says, named, no pid file (rc $rc)" \
    "[ $rc = 71 ] && grep -q 'cannot run $T/no/such/cmd' '$T/l4.err' && [ ! -e '$T/l4.pid' ] &&
     '$B/jukebox-launch' --help | grep -q '71 cannot create the socket or start the command'"

echo "-- local-services.sh"
P=$(free_port)
link=0; "$B/jukebox-prior-top" --help | grep -q -- --peer-timeout && link=1
if [ $link = 1 ]; then n=2; else n=1; fi
$LS --state "$T/s" --base-port "$P" --mid $n --bottom $n --heartbeat 300 --peer-timeout 1500 start > "$T/start.txt" 2>&1; rc=$?
check "start: every instance ready (rc $rc)" \
    "[ $rc = 0 ] && [ \$(grep -c ': ready' '$T/start.txt') = $((2 + 2 * n)) ]"
check "pid files, logs, endpoints file" \
    "[ -s '$T/s/run/top-0.pid' ] && [ -s '$T/s/log/decoder-0.log' ] && grep -q '^jobs tcp://127.0.0.1:$P' '$T/s/endpoints'"
if [ $link = 1 ]; then
    # start returns once the links are up: right away, the top prior has both middles and
    # each middle both bottoms as live consumers (else a job sent now goes to one alone).
    "$B/jukebox-status" --json "$(awk '$2 == "top-0" {print $3}' "$T/s/endpoints")" \
        "$(awk '$2 == "mid-1" {print $3}' "$T/s/endpoints")" > "$T/linked.json"
    check "start: returns with every link up (top-0 sees mid-0 and mid-1, mid-1 both bottoms)" \
        "python3 -c 'import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
live = [sorted(p[\"name\"] for p in r[\"out\"][\"peers\"] if p[\"alive\"]) for r in rows]
sys.exit(live != [[\"mid-0\", \"mid-1\"], [\"bottom-0\", \"bottom-1\"]])' '$T/linked.json'"
    "$B/jukebox-status" --wait-linked 5 --state "$T/s"; rc=$?
    check "jukebox-status --wait-linked: every link up, exit 0 (rc $rc)" "[ $rc = 0 ]"
fi
before=$(cat "$T/s/run/mid-0.pid")
$LS --state "$T/s" start > "$T/start2.txt" 2>&1; rc=$?
check "start again: nothing new started (rc $rc)" \
    "[ $rc = 0 ] && [ \$(grep -c 'already running' '$T/start2.txt') = $((2 + 2 * n)) ] && [ \$(cat '$T/s/run/mid-0.pid') = $before ]"
ep=$($LS --state "$T/s" endpoint)
check "endpoint: the top prior's input" "[ '$ep' = 'tcp://127.0.0.1:$P' ]"
"$B/jukebox-job" sample -q --id ls1 --total-seconds 0.35 --seconds 0.3 --samples 2 \
    --vqvae $M/vqvae.safetensors -o "$ep"
for i in $(seq 300); do [ -f "$T/s/out/ls1/index.html" ] && break; sleep 0.1; done
"$B/jukebox-job" sample -q --id ls1 --total-seconds 0.35 --seconds 0.3 --samples 2 \
    --vqvae $M/vqvae.safetensors |
    "$B/jukebox-prior-top" -q -t 1 -m $M/prior_level_2.safetensors |
    "$B/jukebox-upsampler-mid" -q -t 1 -m $M/prior_level_1.safetensors |
    "$B/jukebox-upsampler-bottom" -q -t 1 -m $M/prior_level_0.safetensors |
    "$B/jukebox-decoder" -q -t 1 -m $M/vqvae.safetensors --outdir "$T/ref"
for f in codes.jbc level_0/sample_1.wav; do
    check "a job through the services: $f identical to a shell pipe's" "cmp -s '$T/s/out/ls1/$f' '$T/ref/ls1/$f'"
done
if [ $link = 1 ]; then
    # The status of a stage that went idle (operations.md "Status"): the minute's tokens/s
    # counts every window of the job (one window's job read 0 before), a refused job is not
    # left "in flight", and the last error's age grows while nothing happens.
    top_ctl=$(awk '$2 == "top-0" {print $3}' "$T/s/endpoints")
    "$B/jukebox-status" --json "$top_ctl" > "$T/st1.json"
    check "status: top-0 counts the job's tokens in its minute's rate" \
        "python3 -c 'import json, sys
o = json.load(open(sys.argv[1]))
sys.exit(not (o[\"tokens_total\"] > 0 and o[\"tokens_per_s\"] > 0 and
              o[\"tokens_per_s\"] * 60 >= o[\"tokens_total\"] - 1e-6))' '$T/st1.json'"
    "$B/jukebox-job" sample -q --id toolong --total-seconds 30 --seconds 0.3 -o "$ep"
    st_ok() {   # the refused job gone from the jobs in flight, its error aged >= 1 s
        "$B/jukebox-status" --json "$top_ctl" > "$T/st2.json" 2>/dev/null &&
            python3 -c 'import json, sys
o = json.load(open(sys.argv[1])); e = o.get("last_error") or {}
sys.exit(not (o["jobs_in_flight"] == [] and "toolong" in e.get("text", "") and
              e.get("ago_s", 0) >= 1.0))' "$T/st2.json"
    }
    for i in $(seq 100); do st_ok && break; sleep 0.1; done
    check "status: a refused job leaves no job in flight, its error ages ($(cat "$T/st2.json" | head -c 300))" st_ok
fi
$LS --state "$T/s" restart mid-0 > "$T/restart.txt" 2>&1; rc=$?
check "restart mid-0: a new process, the others untouched (rc $rc)" \
    "[ $rc = 0 ] && [ \$(cat '$T/s/run/mid-0.pid') != $before ] && ! alive $before && grep -q 'mid-0: ready' '$T/restart.txt'"
if [ $link = 1 ]; then
    # A stage that does not answer: named, exit 69, within the time asked.
    kill -STOP "$(cat "$T/s/run/bottom-1.pid")"
    s0=$SECONDS
    "$B/jukebox-status" --wait-linked 1 --timeout 300 --state "$T/s" 2> "$T/wl.txt"; rc=$?
    kill -CONT "$(cat "$T/s/run/bottom-1.pid")"
    check "--wait-linked with bottom-1 stopped: exit 69 naming its endpoint, bounded (rc $rc, $((SECONDS - s0)) s for 1 s asked)" \
        "[ $rc = 69 ] && grep -q 'not wired' '$T/wl.txt' && grep -q ':$((P + 61)): no answer' '$T/wl.txt' && [ $((SECONDS - s0)) -le 10 ]"
fi
$LS --state "$T/s" status > "$T/status.txt" 2>&1; rc=$?
check "status: every instance running (rc $rc)" "[ $rc = 0 ] && [ \$(grep -c ': running' '$T/status.txt') = $((2 + 2 * n)) ]"
if [ $link = 1 ]; then
    check "status: jukebox status of every stage" \
        "grep -q '^prior-top: 1 instance' '$T/status.txt' && grep -q '^upsampler-mid: 2 instances' '$T/status.txt' && grep -q '^decoder: 1 instance' '$T/status.txt'"
    pipelines/jukebox status --state "$T/s" > "$T/js.txt"; rc=$?
    check "jukebox status --state: the same (rc $rc)" "[ $rc = 0 ] && grep -q '^upsampler-bottom: 2 instances' '$T/js.txt'"
fi
check "--mid 3 while running with other settings is refused" \
    "! $LS --state '$T/s' --mid 3 status >/dev/null 2>&1"
pids=$(cat "$T"/s/run/*.pid)
$LS --state "$T/s" stop > "$T/stop.txt" 2>&1; rc=$?
dead=1; for p in $pids; do alive "$p" && dead=0; done
check "stop: every process ended, pid files gone (rc $rc)" "[ $rc = 0 ] && [ $dead = 1 ] && ! ls '$T'/s/run/*.pid >/dev/null 2>&1"
$LS --state "$T/s" stop >/dev/null 2>&1; rc=$?
check "stop again: nothing to do, exit 0" "[ $rc = 0 ]"
$LS --state "$T/s" status >/dev/null 2>&1; rc=$?
check "status of stopped services: exit 69" "[ $rc = 69 ]"
if [ $link = 0 ]; then
    $LS --state "$T/s2" --base-port "$P" --mid 2 start >/dev/null 2>&1; rc=$?
    check "without the reliable link, two instances of a stage are refused (rc $rc)" "[ $rc = 64 ]"
fi

make -s install PREFIX=/usr DESTDIR="$T/root" BUILD="$BUILD" >/dev/null 2>&1
I=$T/root/usr
check "make install: local-services.sh, jukebox-launch, jukebox-status" \
    "[ -x '$I/share/jukebox/pipelines/local-services.sh' ] && [ -x '$I/bin/jukebox-launch' ] && [ -x '$I/bin/jukebox-status' ]"
"$I/share/jukebox/pipelines/local-services.sh" --state "$T/inst" --models "$PWD/$M" --base-port "$P" \
    --mid 1 --bottom 1 start > "$T/inst.txt" 2>&1; rc=$?
check "the installed local-services.sh runs the installed stages (rc $rc)" \
    "[ $rc = 0 ] && grep -q '$I/bin/jukebox-upsampler-mid' '$T/inst/cmd/mid-0'"
"$I/share/jukebox/pipelines/local-services.sh" --state "$T/inst" stop >/dev/null 2>&1

echo "-- jukebox status"
sp=$(free_port)
info='{"stage":"upsampler-mid","instance":"mid-1","level":1,"pid":4242,"uptime_s":3725,
"jobs":[{"id":"song7","window":3,"windows":9}],"queue":2,"backlog":5,"tokens_per_s":123.4,
"last_error":{"time":"2026-11-22T08:00:00Z","text":"job bad: refused"},
"peers":[{"name":"top-0","role":"producer","credit":0,"last_seen_ms":120}]}'
python3 tests/sh/lib/zmtp.py status-server "$sp" "$info" > "$T/server.txt" 2>&1 & srv=$!
sleep 0.5
pipelines/jukebox status --peers --timeout 3000 "tcp://127.0.0.1:$sp" "tcp://127.0.0.1:$((sp + 1))" > "$T/st.txt"; rc=$?
wait $srv
check "the request is a status message without info, with an empty payload part" "grep -q 'request ok' '$T/server.txt'"
check "exit 69: one endpoint did not answer (rc $rc)" "[ $rc = 69 ]"
check "summary line per stage" "grep -q '^upsampler-mid: 1 instance, 1 job in flight, queue 2, 123.4 tokens/s' '$T/st.txt'"
check "instance row: name, pid, uptime, queue, backlog, tokens/s, job window, last error" \
    "grep -qE '^  mid-1 +4242 +1h02m +2 +5 +123.4 +song7 3/9 +2026-11-22T08:00:00Z job bad: refused' '$T/st.txt'"
check "peers listed with --peers" "grep -qE 'peer top-0 +producer +credit 0 +last seen 120 ms ago' '$T/st.txt'"
check "the silent endpoint is listed" "grep -q 'unreachable: tcp://127.0.0.1:$((sp + 1)) (no answer' '$T/st.txt'"
python3 tests/sh/lib/zmtp.py status-server "$sp" '{"stage":"decoder","instance":"d0","pid":7}' >/dev/null 2>&1 & srv=$!
sleep 0.5
"$B/jukebox-status" --json "tcp://127.0.0.1:$sp" > "$T/sj.txt"; rc=$?
wait $srv
check "--json: the reply with its endpoint (rc $rc)" \
    "[ $rc = 0 ] && python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d[\"instance\"]==\"d0\" and d[\"endpoint\"].endswith(\"$sp\")' '$T/sj.txt'"
# A stage's --control reply: its own keys on top, each link's status under "in" / "out".
python3 tests/sh/lib/zmtp.py status-server "$sp" '{"stage":"upsampler-bottom","level":0,"pid":77,
"jobs_in_flight":[{"id":"a","window":2,"windows":8}],"tokens_per_s":55.5,
"in":{"instance":"bottom-0","uptime_s":12.5,"queue":3,"backlog":0,"last_error":{"text":"bad peer","ago_ms":4000},
"peers":[{"name":"mid-0","role":"producer","alive":true,"credit":0,"last_seen_ms":100}]},
"out":{"instance":"bottom-0","backlog":7,"peers":[{"name":"decoder-0","role":"consumer","alive":false,"credit":16,"last_seen_ms":9000}]}}' >/dev/null 2>&1 & srv=$!
sleep 0.5
"$B/jukebox-status" --peers "tcp://127.0.0.1:$sp" > "$T/sc.txt"; rc=$?
wait $srv
check "a control reply: instance, uptime, queue from the input link, backlog from the output (rc $rc)" \
    "[ $rc = 0 ] && grep -qE '^  bottom-0 +77 +12s +3 +7 +55.5 +a 2/8 +4s ago: bad peer' '$T/sc.txt'"
check "a control reply: the peers of both links, a dead one marked" \
    "grep -qE 'in:  peer mid-0 +producer' '$T/sc.txt' && grep -qE 'out: peer decoder-0 .*\(dead\)' '$T/sc.txt'"
"$B/jukebox-status" --help > "$T/sh.txt"; rc=$?
check "--help: exit 0; --peers in the usage line, the peers said to need it (rc $rc)" \
    "[ $rc = 0 ] && sed -n '1,2p' '$T/sh.txt' | grep -q -- '--peers' && ! grep -q \"then each instance's peers\" '$T/sh.txt'"
"$B/jukebox-status" --state "$T/none" >/dev/null 2>&1; rc=$?
check "no endpoints and no state: exit 64" "[ $rc = 64 ]"

check_summary test_ops
