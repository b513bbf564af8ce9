#!/bin/bash
# test_front.sh: the front command (pipelines/jukebox) as a newcomer meets it (issue 14):
# threads on a shared host, Ctrl-C and kill, lyrics, defaults from the model, make install,
# seeds and output names, --print-spec, the progress display on a terminal, messages.
# Every wait is bounded; songs are 1 s of the bundled model.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
B=$PWD/$BUILD/bin
J=$PWD/pipelines/jukebox
M=$PWD/models/default
T=$(mktemp -d /tmp/jb_front.XXXXXX)
export TMPDIR=$T/tmp   # the front command's temporary directories: checked to be gone
mkdir -p "$TMPDIR"
source tests/sh/lib/faults.sh   # fj_free_port (sourced first: it sets pass/fail)
bg=()
cleanup() {
    local p
    [ -d "$T/ls" ] && pipelines/local-services.sh --state "$T/ls" stop >/dev/null 2>&1
    for p in "${bg[@]}"; do kill -KILL "$p" 2>/dev/null; done
    rm -rf "$T"
}
trap cleanup EXIT
pass=0; fail=0
check() { if eval "$2"; then echo "  ok   $1"; pass=$((pass + 1)); else echo "  FAIL $1"; fail=$((fail + 1)); fi; }
# until SECS CMD: evaluates CMD every 0.1 s until it holds (0) or SECS pass (1).
until_() {
    local end=$((SECONDS + $1)); shift
    while ! eval "$1"; do [ $SECONDS -ge $end ] && return 1; sleep 0.1; done
}
kids() { ps -o pid= --ppid "$1" 2>/dev/null | tr -d ' '; }
stage_kids() {   # the stage processes among the children of $1
    local p
    for p in $(kids "$1"); do
        case "$(cat "/proc/$p/comm" 2>/dev/null)" in jukebox-*) echo "$p" ;; esac
    done
}
alive_any() { local p; for p in "$@"; do [ -d "/proc/$p" ] && [ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" != Z ] && return 0; done; return 1; }
short=(--models "$M" --total-seconds 1 --seconds 1 --seed 3)
# A job long enough (tens of seconds here) that a signal lands in the middle of it.
long=(--models "$M" --total-seconds 10 --seconds 10 --samples 4 --seed 3)

echo "-- 8: --print-spec prints the spec and exits 0"
"$J" sample "${short[@]}" --print-spec > "$T/spec.json" 2>"$T/spec.err"; rc=$?
check "--print-spec: exit 0 (rc $rc), the spec on stdout" \
    "[ $rc = 0 ] && python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); assert j[\"total_seconds\"]==1' '$T/spec.json'"

echo "-- 4: defaults that fit the model"
"$J" sample --models "$M" --print-spec > "$T/d.json" 2>"$T/d.err"; rc=$?
check "no lengths given: the model's range gives them (rc $rc)" \
    "[ $rc = 0 ] && python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); assert j[\"total_seconds\"]==10 and j[\"sample_seconds\"]==10, j' '$T/d.json'"
sox -n -r 44100 -c 1 -b 16 "$T/tone6.wav" synth 6 sine 440 sine 660
"$J" primed "$T/tone6.wav" --models "$M" --print-spec > "$T/dp.json" 2>"$T/dp.err"; rc=$?
check "primed with defaults: a prompt shorter than the sample (rc $rc)" \
    "[ $rc = 0 ] && python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); assert 0 < j[\"prompt_seconds\"] < j[\"sample_seconds\"] <= 10, j' '$T/dp.json'"
"$J" sample --models "$M" --total-seconds 240 -o "$T/x240" 2>"$T/240.err"; rc=$?
check "an explicit --total-seconds out of range: exit 64 naming the option and the range" \
    "[ $rc = 64 ] && grep -q -- '--total-seconds' '$T/240.err' && grep -q '\[0, 11)' '$T/240.err' && [ ! -e '$T/x240' ]"

echo "-- 3: lyrics are never dropped silently"
printf 'caf\xe9 au lait\n' > "$T/latin1.txt"
head -c 200 /dev/urandom | tr -d '\n' > "$T/random.txt"; printf '\xff' >> "$T/random.txt"
printf 'one\0two\n' > "$T/nul.txt"
for f in latin1 random nul; do
    "$J" sample "${short[@]}" --lyrics-file "$T/$f.txt" -o "$T/ly_$f" 2>"$T/ly_$f.err"; rc=$?
    check "lyrics file $f: exit 65 with where (rc $rc)" \
        "[ $rc = 65 ] && grep -q '$T/$f.txt' '$T/ly_$f.err' && grep -q 'byte' '$T/ly_$f.err' && [ ! -e '$T/ly_$f' ]"
done
"$J" sample "${short[@]}" --lyrics-file "$T" -o "$T/ly_dir" 2>"$T/ly_dir.err"; rc=$?
check "--lyrics-file DIR: exit 66, 'is a directory' (rc $rc)" "[ $rc = 66 ] && grep -q 'directory' '$T/ly_dir.err'"

echo "-- 6, 7, 3a: the same seed in any OUTDIR; any directory name; lyrics the model ignores"
"$J" sample "${short[@]}" -q -o "$T/runs/a" 2>"$T/a.err"; rc1=$?
"$J" sample "${short[@]}" -o "$T/runs/other dir/b é" 2>"$T/b.err"; rc2=$?
check "runs done, OUTDIR with a space and an accent accepted (rc $rc1 $rc2)" \
    "[ $rc1 = 0 ] && [ $rc2 = 0 ] && [ -s '$T/runs/other dir/b é/index.html' ]"
check "the same seed and settings: the same codes in another OUTDIR" \
    "cmp -s '$T/runs/a/codes.jbc' '$T/runs/other dir/b é/codes.jbc'"
spec_id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$T/spec.json" 2>/dev/null)
check "--print-spec prints the id the run has ($spec_id): the spec the stages get" \
    "[ -n '$spec_id' ] && [ \"\$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[\"id\"])' '$T/runs/a/job.json')\" = '$spec_id' ]"
"$J" sample "${short[@]}" --lyrics "la la la" --id my-take.1 -o "$T/runs/c" 2>"$T/c.err"; rc=$?
check "--id is kept (rc $rc)" "[ $rc = 0 ] && grep -q '\"id\": *\"my-take.1\"' '$T/runs/c/job.json'"
check "lyrics with a lyrics model: no 'lyrics ignored' warning" "! grep -q 'lyrics ignored' '$T/c.err'"
# (the bundled model has lyrics since 2026-12-06: the golden tiny pipeline's has none)
"$J" sample --models "$PWD/tests/golden/pipeline_tiny" --artist-id 2=3 --total-seconds 0.19 \
    --seconds 0.15 --seed 3 --lyrics "la la la" -o "$T/runs/nl" 2>"$T/nl.err"; rc=$?
check "lyrics with a model without lyrics conditioning: one warning naming the model (rc $rc)" \
    "[ $rc = 0 ] && [ \$(grep -c 'lyrics ignored' '$T/nl.err') = 1 ] && grep 'lyrics ignored' '$T/nl.err' | grep -q prior_level_2"
check "no staging directory left beside the runs" "[ -z \"\$(ls -A '$T/runs' | grep '^\.')\" ]"

echo "-- 1: threads share the host; stages do not spin"
check "a stage's OpenMP threads sleep when idle by default (no spinning)" \
    "env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT OMP_DISPLAY_ENV=verbose '$B/jukebox-upsampler-mid' --help 2>&1 | grep -q \"GOMP_SPINCOUNT = '0'\""
check "  OMP_WAIT_POLICY=ACTIVE overrides it" \
    "OMP_WAIT_POLICY=ACTIVE OMP_DISPLAY_ENV=true '$B/jukebox-decoder' --help 2>&1 | grep -q \"OMP_WAIT_POLICY = 'ACTIVE'\""

echo "-- 1: pipelines/local-services.sh shares the cores among its instances"
P=$(fj_free_port)
LS=pipelines/local-services.sh
ls_ok=0
"$LS" --state "$T/ls" --models "$M" --base-port "$P" --top 1 --mid 1 --bottom 1 --decoders 1 \
    --no-spool --start-timeout 120 start > "$T/ls.out" 2>&1 && ls_ok=1
want_ls=$(( $(nproc) / 4 )); [ $want_ls -ge 1 ] || want_ls=1
check "local-services.sh: 4 instances started, each with --threads $want_ls (cores / 4)" \
    "[ $ls_ok = 1 ] && [ \$(grep -l -- '--threads $want_ls\b' '$T'/ls/cmd/* | wc -l) = 4 ]"
pas=0
for f in "$T"/ls/run/*.pid; do
    tr '\0' '\n' < "/proc/$(cat "$f")/environ" 2>/dev/null | grep -q '^OMP_WAIT_POLICY=PASSIVE$' && pas=$((pas + 1))
done
check "  and their idle threads sleep (OMP_WAIT_POLICY=PASSIVE in $pas of 4)" "[ $pas = 4 ]"
# --stages alone: the remote decoder writes the run, named by the job id; -o is not used.
"$J" sample "${short[@]}" --stages "$("$LS" --state "$T/ls" endpoint)" -o "$T/st_o" 2>"$T/st.err"; rc=$?
st_id=$(sed -n 's/.*job \(song-[0-9a-f]*\) sent to .*/\1/p' "$T/st.err")
check "--stages with -o: exit 0, says -o is not used, makes nothing there (rc $rc)" \
    "[ $rc = 0 ] && grep -q -- '-o $T/st_o is not used with --stages' '$T/st.err' && [ ! -e '$T/st_o' ]"
check "  the run is the services' out/<the job id it printed> (${st_id:-no id}), the id --print-spec gives" \
    "[ -n '$st_id' ] && [ '$st_id' = '$spec_id' ] && until_ 120 '[ -s \"$T/ls/out/$st_id/index.html\" ]'"
q_id=$("$J" sample "${short[@]}" --seed 11 -q --stages "$("$LS" --state "$T/ls" endpoint)" 2>"$T/stq.err"); rc=$?
check "--stages -q: the job id alone on stdout (${q_id:-nothing}), nothing on stderr (rc $rc)" \
    "[ $rc = 0 ] && [[ '$q_id' =~ ^song-[0-9a-f]+\$ ]] && [ ! -s '$T/stq.err' ]"
"$LS" --state "$T/ls" stop > /dev/null 2>&1
"$J" sample "${short[@]}" --listen tcp://127.0.0.1:9 -o "$T/li_o" 2>"$T/li.err"; rc=$?
check "--listen without --stages: exit 64, said (rc $rc)" \
    "[ $rc = 64 ] && grep -q 'works with --stages' '$T/li.err' && [ ! -e '$T/li_o' ]"

echo "-- 2: SIGINT (Ctrl-C), SIGTERM and SIGKILL of the front command"
want_threads=$(( $(nproc) / 4 )); [ $want_threads -ge 1 ] || want_threads=1
for sig in INT TERM; do
    # Its own process group, SIGINT not ignored (as in a terminal's foreground; a
    # background job of a script would start with SIGINT ignored).
    python3 -c 'import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL); os.setsid(); os.execv(sys.argv[1], sys.argv[1:])' \
        "$J" sample "${long[@]}" -o "$T/sig/$sig" > /dev/null 2>"$T/sig_$sig.err" &
    front=$!; bg+=($front)
    until_ 60 '[ "$(stage_kids $front | wc -l)" -ge 4 ]'
    st=($(stage_kids $front))
    if [ $sig = INT ]; then
        # the terminal's Ctrl-C: the whole foreground process group
        th=$(for p in "${st[@]}"; do tr '\0' ' ' < /proc/$p/cmdline; echo; done | grep -c -- "--threads $want_threads\b")
        check "each compute stage gets --threads $want_threads (cores / 4, at least 1): $th of 4" "[ $th -ge 4 ]"
        env_ok=$(for p in "${st[@]}"; do tr '\0' '\n' < /proc/$p/environ; done | grep -c '^OMP_WAIT_POLICY=PASSIVE$')
        check "  and a passive wait policy ($env_ok)" "[ $env_ok -ge 4 ]"
        until_ 30 'grep -q "tokens=" "$T/sig_$sig.err"'   # sampling has begun
        kill -INT -- -$front
        code=130
    else
        until_ 30 'grep -q "tokens=" "$T/sig_$sig.err"'
        kill -TERM $front   # the front command alone (e.g. a supervisor)
        code=143
    fi
    until_ 60 '! alive_any $front'; gone=$?
    wait $front; rc=$?
    check "SIG$sig: the front command exits $code in time (rc $rc)" "[ $gone = 0 ] && [ $rc = $code ]"
    check "  says it was interrupted and what was stopped and kept" \
        "grep -q 'interrupted by SIG$sig' '$T/sig_$sig.err' && grep -q 'prior-top' '$T/sig_$sig.err' && grep -q 'spool' '$T/sig_$sig.err'"
    check "  every stage has stopped" "until_ 30 '! alive_any ${st[*]}'"
    left=$(ls -A "$T/sig" "$TMPDIR" | grep -v ':$' | grep .)
    check "  no OUTDIR, no staging or temporary directory left: ${left:-none}" "[ -z '$left' ]"
    check "  no 'done' line" "! grep -q 'done:' '$T/sig_$sig.err'"
done
"$J" sample "${long[@]}" -o "$T/sig/KILL" > /dev/null 2>"$T/sig_KILL.err" &
front=$!; bg+=($front)
until_ 60 '[ "$(stage_kids $front | wc -l)" -ge 4 ]'
st=($(stage_kids $front))
until_ 30 'grep -q "tokens=" "$T/sig_KILL.err"'
kill -KILL $front; wait $front 2>/dev/null
check "SIGKILL of the front command: its stages stop too (within 30 s)" "until_ 30 '! alive_any ${st[*]}'"

echo "-- 9: progress on a terminal: one display; elsewhere one log line per event"
script -qfec "$J sample ${short[*]} -o $T/tty/run" /dev/null > "$T/tty.out" 2>&1 < /dev/null; rc=$?
check "on a terminal: a line per stage with the window, tokens/s and ETA, and the job's ETA (rc $rc)" \
    "[ $rc = 0 ] && grep -a -q 'prior-top.*window [0-9]* of [0-9]*.*tokens/s' '$T/tty.out' &&
     grep -a -q 'upsampler-bottom.*window' '$T/tty.out' && grep -a -q 'job song-.*ETA' '$T/tty.out'"
check "  no raw progress bar of a stage ([####....])" "! grep -a -q '\[#*\.\.*\]' '$T/tty.out'"
"$J" sample "${short[@]}" -o "$T/tty/plain" > "$T/plain.out" 2>&1; rc=$?
check "not a terminal: plain log lines, no cursor codes (rc $rc)" \
    "[ $rc = 0 ] && grep -q 'level=2 .*tokens=' '$T/plain.out' && ! grep -q $'\r' '$T/plain.out' && ! grep -q $'\033' '$T/plain.out'"

echo "-- 11: messages"
"$J" sample --models "$M" --seconds 100000 --total-seconds 100000 -o "$T/m1" 2>"$T/m1.err"; rc=$?
check "--seconds 100000: exit 64 naming the limit, not 'must be positive'" \
    "[ $rc = 64 ] && grep -q '86400' '$T/m1.err' && ! grep -q 'must be positive' '$T/m1.err'"
"$J" sample --models "$M" --samples 1000 -o "$T/m2" 2>"$T/m2.err"; rc=$?
check "--samples 1000: exit 64 giving the limit" "[ $rc = 64 ] && grep -q '256' '$T/m2.err'"
sox -n -r 44100 -c 1 -b 16 "$T/short.wav" synth 0.5 sine 440
"$J" primed "$T/short.wav" --models "$M" --prompt-seconds 0.8 --seconds 1 --total-seconds 1 \
    -o "$T/m3" 2>"$T/m3.err"; rc=$?
check "a short prompt: named as given, in seconds, not a temp file (rc $rc)" \
    "[ $rc = 65 ] && grep -q '$T/short.wav: the prompt is 0.[0-9]* s' '$T/m3.err' && ! grep -q 'prompt.jbc' '$T/m3.err'"
mkdir -p "$T/swapped"
ln -s "$M/vqvae.safetensors" "$M/prior_level_2.safetensors" "$T/swapped/"
ln -s "$M/prior_level_0.safetensors" "$T/swapped/prior_level_1.safetensors"
ln -s "$M/prior_level_1.safetensors" "$T/swapped/prior_level_0.safetensors"
"$J" sample --models "$T/swapped" "${short[@]:2}" -o "$T/m4" 2>"$T/m4.err"; rc=$?
check "swapped level files: exit 65 naming both files, before any work (rc $rc)" \
    "[ $rc = 65 ] && grep -q 'prior_level_1.safetensors' '$T/m4.err' && grep -q 'prior_level_0.safetensors' '$T/m4.err' && grep -q swapped '$T/m4.err'"
check "  jukebox-job --check 1=FILE catches it too" \
    "'$B/jukebox-job' sample --check 1='$M/prior_level_0.safetensors' --print-spec >/dev/null 2>&1; [ \$? = 65 ]"
: > "$T/afile"
"$J" sample "${short[@]}" -o "$T/afile/sub/run" 2>"$T/m5.err"; rc=$?
check "an OUTDIR under a file: exit 74, says which is a file (no raw mkdir text)" \
    "[ $rc = 74 ] && grep -q '$T/afile is a file' '$T/m5.err' && ! grep -q '^mkdir' '$T/m5.err'"
# The decoder checks its output before reading any input: the input here never ends.
( sleep 60 ) | "$B/jukebox-decoder" -m "$M/vqvae.safetensors" -o "$T/nodir/x.wav" 2>"$T/m6.err" &
dec=$!; bg+=($dec)
until_ 20 '! alive_any $dec'; gone=$?
wait $dec; rc=$?
check "decoder -o in a missing directory: exit 74 before any work (rc $rc)" \
    "[ $gone = 0 ] && [ $rc = 74 ] && grep -q '$T/nodir' '$T/m6.err'"

echo "-- 14: arguments: a missing value, an unknown option, a missing model directory"
for o in -o --out --models --threads --device --stages --listen --id --seconds --lyrics-file; do
    timeout 10 "$J" sample --seconds 2 $o > /dev/null 2>"$T/a.err"; rc=$?
    check "$o as the last argument: exit 64, '$o needs a value' (rc $rc)" \
        "[ $rc = 64 ] && grep -q -- '$o needs a value' '$T/a.err'"
done
timeout 10 "$J" sample --models "$M" --bogus-option -o "$T/bo" 2>"$T/a.err"; rc=$?
check "an unknown option: exit 64 naming it, not the argument after it (rc $rc)" \
    "[ $rc = 64 ] && grep -q \"unknown option '--bogus-option'\" '$T/a.err' && ! grep -q 'unexpected argument' '$T/a.err'"
timeout 10 "$J" sample --models "$T/nonexistent" -o "$T/nm" 2>"$T/a.err"; rc=$?
check "--models DIR that does not exist: exit 66 naming it (rc $rc)" "[ $rc = 66 ] && grep -q -- '--models $T/nonexistent' '$T/a.err'"
JUKEBOX_MODELS=$T/nope timeout 10 "$J" sample -o "$T/nm" 2>"$T/a.err"; rc=$?
check "JUKEBOX_MODELS that does not exist: exit 66 naming it (rc $rc)" "[ $rc = 66 ] && grep -q 'JUKEBOX_MODELS=$T/nope' '$T/a.err'"
timeout 10 "$J" sample --models "$M" --temp 200 -o "$T/nm" 2>"$T/a.err"; rc=$?
check "a job refused before it has an id: exit 64, no 'job song:' (rc $rc)" \
    "[ $rc = 64 ] && grep -q 'temperature 200' '$T/a.err' && ! grep -q 'job song' '$T/a.err'"

echo "-- 14: the demo's settings and its --help"
mkdir -p "$T/dh"
D=$PWD/pipelines/demo.sh
( cd "$T/dh" && timeout 20 "$D" --help ) > "$T/dh.out" 2>&1; rc=$?
check "demo --help: exit 0, its usage (the settings, where it writes), no run (rc $rc)" \
    "[ $rc = 0 ] && grep -q DEMO_LYRICS '$T/dh.out' && grep -q DEMO_OUT '$T/dh.out' && [ ! -e '$T/dh/demo-out' ]"
( cd "$T/dh" && timeout 20 "$D" --bogus ) > "$T/dh.out" 2>&1; rc=$?
check "demo with an argument: exit 64, no run (rc $rc)" "[ $rc = 64 ] && [ ! -e '$T/dh/demo-out' ]"
# DEMO_LYRICS alone: a real run (one 10 s song, ~25 s), its spec read back from job.json.
echo "la la" > "$T/my-lyrics.txt"
env -u DEMO_GENRE -u DEMO_ARTIST DEMO_LYRICS="$T/my-lyrics.txt" DEMO_OUT="$T/demo/out" \
    BUILD="$BUILD" pipelines/demo.sh > "$T/demo.lyr" 2>&1; rc=$?
check "DEMO_LYRICS alone: one song with those lyrics, jazz by Miles Harmon Trio (rc $rc)" \
    "[ $rc = 0 ] && [ \$(ls '$T/demo/out' | wc -l) = 1 ] && python3 -c 'import glob, json, sys
j = json.load(open(glob.glob(sys.argv[1] + \"/*/job.json\")[0]))
sys.exit((j[\"artist\"], j[\"genre\"], j[\"lyrics\"]) != (\"Miles Harmon Trio\", \"jazz\", \"la la\\n\"))' '$T/demo/out'"

echo "-- 14: the README's jukebox-job examples make jobs the bundled model takes"
# Each, as pasted (continued lines joined, up to its first pipe, without -o ENDPOINT, with
# --print-spec), then its spec checked against the top prior as the stage checks it.
awk '/^```sh/{f=1; next} /^```/{f=0} f' README.md | sed -e :a -e '/\\$/N; s/\\\n//; ta' |
    grep '^jukebox-job ' | sed -e 's/ *[|#].*//' -e 's/ -o .*//' -e 's/$/ --print-spec/' > "$T/jj.txt"
n=0
while IFS= read -r cmd; do
    n=$((n + 1))
    ( PATH=$B:$PATH; eval "$cmd" ) > "$T/jj$n.json" 2>/dev/null &&
        "$B/jukebox-job" sample --spec "$T/jj$n.json" --check "2=$M/prior_level_2.safetensors" \
            --print-spec > /dev/null 2>"$T/jj$n.err"; rc=$?
    check "README: $cmd (rc $rc)" "[ $rc = 0 ]"
done < "$T/jj.txt"
check "  the README has such examples ($n)" "[ $n -ge 2 ]"

echo "-- 5: make install: the bundled model, every installed command finds it"
make -s install PREFIX=/usr DESTDIR="$T/root" BUILD="$BUILD" >/dev/null 2>&1
check "the model under PREFIX/share/jukebox/models/default" \
    "cmp -s '$T/root/usr/share/jukebox/models/default/prior_level_2.safetensors' '$M/prior_level_2.safetensors'"
mkdir -p "$T/cwd"
( cd "$T/cwd" && env -u JUKEBOX_MODELS PATH="$T/root/usr/bin:/usr/bin:/bin" jukebox sample \
    --total-seconds 1 --seconds 1 -q -o song ) 2>"$T/inst.err"; rc=$?
check "the installed jukebox runs on its model from anywhere (rc $rc)" "[ $rc = 0 ] && [ -s '$T/cwd/song/level_0/sample_0.wav' ]"
( cd "$T/cwd" && env -u JUKEBOX_MODELS PATH="/usr/bin:/bin" \
    "$T/root/usr/share/jukebox/pipelines/jukebox" sample --total-seconds 1 --seconds 1 -q -o song2 ) 2>>"$T/inst.err"; rc=$?
check "  and its copy in share/jukebox/pipelines (rc $rc)" "[ $rc = 0 ] && [ -s '$T/cwd/song2/index.html' ]"
( cd "$T/cwd" && env -u JUKEBOX_MODELS PATH="/usr/bin:/bin" "$T/root/usr/bin/jukebox-demo" ) \
    > "$T/demo.out" 2>&1; rc=$?
check "the installed demo writes two songs where the user is, nothing in the install tree (rc $rc)" \
    "[ $rc = 0 ] && ls '$T'/cwd/demo-out/run-*/level_0/sample_1.wav >/dev/null 2>&1 &&
     [ -z \"\$(find '$T/root' -name 'demo-out*')\" ]"

echo "-- 13: the README a newcomer reads"
# Its first generation example, as pasted, from a checkout (here: links to this one).
first=$(awk '/^```sh/{f=1; next} /^```/{f=0} f && /jukebox sample/{print; exit}' README.md)
mkdir -p "$T/readme"
ln -s "$PWD/pipelines" "$PWD/models" "$PWD/$BUILD" "$T/readme/"
[ "$BUILD" = build ] || ln -s "$PWD/$BUILD" "$T/readme/build"
( cd "$T/readme" && eval "$first" ) > "$T/readme.out" 2>&1; rc=$?
outd=$(echo "$first" | sed -n 's/.*-o \([^ ]*\).*/\1/p')
check "the README's first example runs as pasted on the bundled model (rc $rc): $first" \
    "[ $rc = 0 ] && [ -n '$outd' ] && [ -s '$T/readme/$outd/index.html' ] && ! echo '$first' | grep -q -- '--models models/5b'"
check "  it says make test takes about 20 minutes on a busy machine and installs Chromium" \
    "grep -q 'about 20 minutes' README.md && grep -q 'Chromium' README.md && ! grep -q 'about five minutes' README.md"
check "  and that make demo makes two samples" "grep -q 'two 10-second samples' README.md"

echo "test_front: $pass passed, $fail failed"
[ "$fail" = 0 ]
