#!/bin/bash
# test_resume.sh: --spool on every stage; a job interrupted in the middle resumes from
# the last window each stage completed, and the run equals an undisturbed one byte for
# byte. The stages are a shell pipeline (named pipes, so that each pid is known); the
# restart is the same commands with the same spools and an empty job stream: nothing
# is submitted again.
#   (a) kill -9 of one stage (top, middle, bottom, decoder in turn) once its spool holds
#       windows of its level; the rest of the pipeline stops (broken pipes);
#   (b) the whole pipeline stopped with SIGTERM in the middle of a job;
#   (c) over the reliable link (tcp, one instance per stage, each with --name and a
#       spool): the top prior, then the middle upsampler, killed -9 once its spool holds
#       windows and restarted with the same command; the job (submitted once, acked by
#       the top) completes byte-identical and every spool is emptied by DONE;
#   then: a second instance on a spool in use is refused; a torn spool tail is cut off.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
B=$BUILD/bin
# The golden tiny pipeline's models: many windows a level (top n_ctx 32 codes). The bundled
# top prior (n_ctx 1024) takes a 1 s song in one window, too soon done to be interrupted.
M=tests/golden/pipeline_tiny
T=$(mktemp -d /tmp/jb_resume.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done; [ -n "${JB_KEEP:-}" ] || rm -rf "$T"; }
trap cleanup EXIT
. tests/sh/lib/check.sh

# 8 samples and a short hop: many windows per level, so a job lasts long enough to be
# interrupted in the middle (the demo model samples thousands of tokens a second).
JOB=(--total-seconds 0.99 --seconds 0.99 --samples 8 --hop-fraction 0.25,0.0625,0.03125)
"$B/jukebox-job" sample -q --id rj "${JOB[@]}" --seed 7 --vqvae $M/vqvae.safetensors > "$T/job.jbc"

# start IN DIR [spool]: the four stages over named pipes, in the background; pids in
# P_TOP P_MID P_BOT P_DEC, logs in DIR/*.log, runs in DIR/out. The job stream IN goes
# in when `feed` is called (so that a watcher can be ready first).
start() {
    local in=$1 d=$2 sp=${3:-}
    mkdir -p "$d"
    rm -f "$d"/f0 "$d"/f1 "$d"/f2 "$d"/f3
    mkfifo "$d"/f0 "$d"/f1 "$d"/f2 "$d"/f3
    FEED_IN=$in FEED_D=$d
    local s2=() s1=() s0=() sd=()
    if [ -n "$sp" ]; then
        s2=(--spool "$sp/top"); s1=(--spool "$sp/mid"); s0=(--spool "$sp/bot"); sd=(--spool "$sp/dec")
    fi
    "$B/jukebox-prior-top" -t 1 -m $M/prior_level_2.safetensors "${s2[@]}" < "$d/f0" > "$d/f1" 2>> "$d/top.log" & P_TOP=$!
    "$B/jukebox-upsampler-mid" -t 1 -m $M/prior_level_1.safetensors "${s1[@]}" < "$d/f1" > "$d/f2" 2>> "$d/mid.log" & P_MID=$!
    "$B/jukebox-upsampler-bottom" -t 1 -m $M/prior_level_0.safetensors "${s0[@]}" < "$d/f2" > "$d/f3" 2>> "$d/bot.log" & P_BOT=$!
    "$B/jukebox-decoder" -t 1 -m $M/vqvae.safetensors --outdir "$d/out" "${sd[@]}" < "$d/f3" 2>> "$d/dec.log" & P_DEC=$!
    pids+=($P_TOP $P_MID $P_BOT $P_DEC)
}
feed() { cat "$FEED_IN" > "$FEED_D/f0"; }
# watch SPOOL LEVEL N PIDS SIGNAL: in the background, signals PIDS once the spool has N
# codes frames of LEVEL; feeds the job once it watches. Its status in WATCHED.
watch() {
    rm -f "$T/ready"
    WATCH_READY=$T/ready python3 tests/sh/lib/spool_watch.py "$1" rj "$2" "$3" "$4" "$5" 30 &
    local w=$!
    for i in $(seq 1 200); do [ -e "$T/ready" ] && break; sleep 0.01; done
    feed
    wait $w; WATCHED=$?
}
# wait_all: exit codes of the four in RC (top mid bot dec).
wait_all() {
    RC=""
    local p i
    for p in $P_TOP $P_MID $P_BOT $P_DEC; do
        for i in $(seq 1 600); do kill -0 $p 2>/dev/null || break; sleep 0.1; done
        kill -9 $p 2>/dev/null   # hung for a minute: a failure, not a hang of the test
        wait $p 2>/dev/null; RC="$RC $?"
    done
    RC=${RC# }
    pids=()
}
same_run() {   # same_run DIR: the run equals the reference, file by file
    local f n=0
    for f in codes.jbc job.json labels.json level_2/sample_0.wav level_1/sample_3.wav \
             level_0/sample_0.wav level_0/sample_7.wav; do
        cmp -s "$T/ref/out/rj/$f" "$1/rj/$f" || return 1
        n=$((n + 1))
    done
    [ $n = 7 ]
}
spool_empty() {   # only the lock files are left
    [ -z "$(find "$1" -mindepth 2 -maxdepth 2 ! -name lock 2>/dev/null)" ]
}
resumed_at() {   # resumed_at LOG: the window k of the "resumed at window k of n" line
    sed -n 's/.*resumed at window \([0-9]*\) of \([0-9]*\).*/\1/p' "$1" | head -1
}

echo "-- the undisturbed run (no spool)"
start "$T/job.jbc" "$T/ref"
feed
wait_all
check "reference run: every stage exits 0 ($RC)" '[ "$RC" = "0 0 0 0" ]'
check "reference run written" "[ -s '$T/ref/out/rj/level_0/sample_7.wav' ]"

echo "-- with --spool on every stage, undisturbed"
start "$T/job.jbc" "$T/plain" "$T/plain/sp"
feed
wait_all
check "spooled run: every stage exits 0 ($RC)" '[ "$RC" = "0 0 0 0" ]'
check "spooled run equals the reference" "same_run '$T/plain/out'"
check "every spool is empty afterwards" "spool_empty '$T/plain/sp'"

echo "-- (a) kill -9 of one stage in the middle of the job, restart without resubmitting"
# victim: name, spool, level whose windows to wait for (the decoder: the bottom codes
# it received), frames to wait for
for v in "top top 2 10" "mid mid 1 30" "bot bot 0 60" "dec dec 0 60"; do
    set -- $v
    name=$1; d=$T/kill_$name; sp=$d/sp
    start "$T/job.jbc" "$d" "$sp"
    case $name in top) victim=$P_TOP ;; mid) victim=$P_MID ;; bot) victim=$P_BOT ;; dec) victim=$P_DEC ;; esac
    if [ $name = dec ]; then   # the decoder spools its input: count in in.jbc
        watch_file=in
    else
        watch_file=out
    fi
    SPOOL_FILE=$watch_file watch "$sp/$2" "$3" "$4" $victim KILL
    killed=$WATCHED
    wait_all
    check "$name: killed in the middle of the job (watcher $killed; exits $RC)" \
        "[ $killed = 0 ] && [ ! -e '$d/out/rj' ]"
    first_rc=$RC
    start /dev/null "$d" "$sp"
    feed
    wait_all
    check "$name: restarted pipeline exits 0 ($RC; first run $first_rc)" '[ "$RC" = "0 0 0 0" ]'
    check "$name: the resumed run equals the reference byte for byte" "same_run '$d/out'"
    if [ $name != dec ]; then
        k=$(resumed_at "$d/$name.log")
        check "$name: its log says it resumed at window ${k:-?} > 0" "[ -n '$k' ] && [ '$k' -gt 0 ]"
    else
        check "dec: its log says the job was resumed from the spool" "grep -q 'resumed from the spool' '$d/dec.log'"
    fi
    check "$name: every spool is empty afterwards" "spool_empty '$sp'"
done

echo "-- (b) the whole pipeline stopped with SIGTERM in the middle of a job"
d=$T/term; sp=$d/sp
start "$T/job.jbc" "$d" "$sp"
watch "$sp/bot" 0 60 "$P_TOP,$P_MID,$P_BOT,$P_DEC" TERM
signalled=$WATCHED
wait_all
check "SIGTERM in the middle of the job (watcher $signalled): every stage exits 0 ($RC)" \
    "[ $signalled = 0 ] && [ '$RC' = '0 0 0 0' ] && [ ! -e '$d/out/rj' ]"
check "the job is still in the spools" "[ -s '$sp/bot/rj/in.jbc' ]"
start /dev/null "$d" "$sp"
feed
wait_all
check "restarted pipeline exits 0 ($RC)" '[ "$RC" = "0 0 0 0" ]'
check "the resumed run equals the reference byte for byte" "same_run '$d/out'"
k=$(resumed_at "$d/bot.log")
check "bottom resumed at window ${k:-?} > 0" "[ -n '$k' ] && [ '$k' -gt 0 ]"
check "every spool is empty afterwards" "spool_empty '$sp'"

echo "-- (c) over the reliable link (tcp): one instance killed -9 and restarted with the same command"
LINK=(--heartbeat 100 --peer-timeout 800)
for victim in top mid; do
    d=$T/link_$victim; sp=$d/sp; mkdir -p "$d"
    ports=($(python3 -c 'import socket
ss=[socket.socket() for _ in range(4)]
[s.bind(("127.0.0.1",0)) for s in ss]
print(" ".join(str(s.getsockname()[1]) for s in ss))'))
    e0=tcp://127.0.0.1:${ports[0]} e1=tcp://127.0.0.1:${ports[1]}
    e2=tcp://127.0.0.1:${ports[2]} e3=tcp://127.0.0.1:${ports[3]}
    top_cmd() { exec "$B/jukebox-prior-top" -t 1 -m $M/prior_level_2.safetensors --name top "${LINK[@]}" \
        --spool "$sp/top" --in "@$e0" --out "@$e1" 2>> "$d/top.log"; }
    mid_cmd() { exec "$B/jukebox-upsampler-mid" -t 1 -m $M/prior_level_1.safetensors --name mid "${LINK[@]}" \
        --spool "$sp/mid" --in ">$e1" --out "@$e2" 2>> "$d/mid.log"; }
    "$B/jukebox-decoder" -t 1 -m $M/vqvae.safetensors --name dec "${LINK[@]}" --spool "$sp/dec" \
        --in ">$e3" --outdir "$d/out" --jobs 1 2>> "$d/dec.log" & P_DEC=$!
    "$B/jukebox-upsampler-bottom" -t 1 -m $M/prior_level_0.safetensors --name bot "${LINK[@]}" \
        --spool "$sp/bot" --in ">$e2" --out "@$e3" 2>> "$d/bot.log" & P_BOT=$!
    mid_cmd & P_MID=$!
    top_cmd & P_TOP=$!
    pids+=($P_DEC $P_BOT $P_MID $P_TOP)
    [ $victim = top ] && { vp=$P_TOP; lvl=2; n=10; } || { vp=$P_MID; lvl=1; n=30; }
    rm -f "$T/ready"
    WATCH_READY=$T/ready python3 tests/sh/lib/spool_watch.py "$sp/$victim" rj $lvl $n $vp KILL 30 & w=$!
    for i in $(seq 1 200); do [ -e "$T/ready" ] && break; sleep 0.01; done
    "$B/jukebox-job" sample -q --id rj "${JOB[@]}" --seed 7 --vqvae $M/vqvae.safetensors -o "$e0" \
        --timeout 20000 "${LINK[@]}"
    jrc=$?
    wait $w; killed=$?
    wait $vp 2>/dev/null
    check "link, $victim: job acked (rc $jrc), $victim killed -9 in the middle of it (watcher $killed)" \
        "[ $jrc = 0 ] && [ $killed = 0 ]"
    if [ $victim = top ]; then top_cmd & P_TOP=$!; else mid_cmd & P_MID=$!; fi
    pids+=($P_TOP $P_MID)
    for i in $(seq 1 600); do kill -0 $P_DEC 2>/dev/null || break; sleep 0.1; done
    wait $P_DEC; rc=$?
    check "link, $victim: the decoder wrote the job and exited 0 (rc $rc)" "[ $rc = 0 ]"
    check "link, $victim: the run equals the reference byte for byte" "same_run '$d/out'"
    k=$(resumed_at "$d/$victim.log")
    check "link, $victim: restarted, it resumed at window ${k:-?} > 0" "[ -n '$k' ] && [ '$k' -gt 0 ]"
    for i in $(seq 1 50); do spool_empty "$sp" && break; sleep 0.1; done
    check "link, $victim: every spool is empty once DONE came back" "spool_empty '$sp'"
    kill -TERM $P_TOP $P_MID $P_BOT 2>/dev/null
    for p in $P_TOP $P_MID $P_BOT; do wait $p 2>/dev/null; done
    pids=()
done

echo "-- a spool in use; a torn tail"
mkdir -p "$T/busy"
mkfifo "$T/busy/in"
"$B/jukebox-prior-top" -q -t 1 -m $M/prior_level_2.safetensors --spool "$T/busy/sp" < "$T/busy/in" > /dev/null & holder=$!
pids+=($holder)
exec 9> "$T/busy/in"   # keeps the holder waiting for input
for i in $(seq 1 100); do [ -s "$T/busy/sp/lock" ] && break; sleep 0.05; done
"$B/jukebox-prior-top" -t 1 -m $M/prior_level_2.safetensors --spool "$T/busy/sp" < /dev/null > /dev/null 2> "$T/busy/err"; rc=$?
check "a second instance on the same spool is refused (exit $rc), naming the holder" \
    "[ $rc = 69 ] && grep -q 'in use by another instance (pid $holder)' '$T/busy/err'"
exec 9>&-
wait $holder
# A torn tail: the middle stage's out.jbc ends in the middle of a frame.
d=$T/torn; sp=$d/sp
start "$T/job.jbc" "$d" "$sp"
watch "$sp/mid" 1 30 $P_MID KILL
wait_all
# A write the kill cut short: the start of a frame (never sent: sending follows the fsync).
head -c 40 "$sp/mid/rj/out.jbc" >> "$sp/mid/rj/out.jbc"
start /dev/null "$d" "$sp"
feed
wait_all
check "a torn spool tail is cut off with a warning and the run completes ($RC)" \
    "[ '$RC' = '0 0 0 0' ] && grep -q 'cut off at byte' '$d/mid.log' && same_run '$d/out'"

# Restarted on another job under the same id (another seed): what upstream resends
# differs from the spool; the job ends with an error record instead of mixing the two.
d=$T/other; mkdir -p "$d"
for seed in 7 8; do
    "$B/jukebox-job" sample -q --id rj "${JOB[@]}" --seed $seed --vqvae $M/vqvae.safetensors |
        "$B/jukebox-prior-top" -q -t 1 -m $M/prior_level_2.safetensors > "$d/top_$seed.jbc"
done
"$B/jukebox-upsampler-mid" -t 1 -m $M/prior_level_1.safetensors --spool "$d/sp" \
    < "$d/top_7.jbc" > "$d/mid1.jbc" 2> "$d/mid1.log" & p=$!
pids+=($p)
rm -f "$T/ready"
python3 tests/sh/lib/spool_watch.py "$d/sp" rj 1 30 $p KILL 30; killed=$?
wait $p 2>/dev/null
"$B/jukebox-upsampler-mid" -t 1 -m $M/prior_level_1.safetensors --spool "$d/sp" \
    < "$d/top_8.jbc" > "$d/mid2.jbc" 2> "$d/mid2.log"; rc=$?
check "another job under a spooled job's id is refused, not mixed in (watcher $killed, rc $rc)" \
    "[ $killed = 0 ] && [ $rc = 0 ] && grep -q 'differs from the one in the spool' '$d/mid2.log'"

# A continue job: the middle upsampler's own level has a prefix (the saved codes), which
# it forwards as it comes and does not send again; restarted after windows of its own,
# it counts the prefix and those windows as done, and its output equals an undisturbed run.
echo "-- (d) a continue job: the middle upsampler killed -9 after its prefix and some windows"
d=$T/cont; mkdir -p "$d"
"$B/jukebox-job" sample -q --id half "${JOB[@]}" --seconds 0.5 --seed 3 \
    --vqvae $M/vqvae.safetensors | "$B/jukebox-prior-top" -q -t 1 -m $M/prior_level_2.safetensors |
    "$B/jukebox-upsampler-mid" -q -t 1 -m $M/prior_level_1.safetensors |
    "$B/jukebox-upsampler-bottom" -q -t 1 -m $M/prior_level_0.safetensors |
    "$B/jukebox-decoder" -q -t 1 -m $M/vqvae.safetensors --outdir "$d/half"
"$B/jukebox-job" continue -q --id rj --codes "$d/half/half/codes.jbc" "${JOB[@]}" --seed 9 \
    --vqvae $M/vqvae.safetensors |
    "$B/jukebox-prior-top" -q -t 1 -m $M/prior_level_2.safetensors > "$d/top.jbc"
"$B/jukebox-upsampler-mid" -q -t 1 -m $M/prior_level_1.safetensors < "$d/top.jbc" > "$d/ref.jbc"
"$B/jukebox-upsampler-mid" -t 1 -m $M/prior_level_1.safetensors --spool "$d/sp" \
    < "$d/top.jbc" > "$d/mid1.jbc" 2> "$d/mid1.log" & p=$!
pids+=($p)
python3 tests/sh/lib/spool_watch.py "$d/sp" rj 1 12 $p KILL 30; killed=$?
wait $p 2>/dev/null
"$B/jukebox-upsampler-mid" -t 1 -m $M/prior_level_1.safetensors --spool "$d/sp" \
    < "$d/top.jbc" > "$d/mid2.jbc" 2> "$d/mid2.log"; rc=$?
k=$(resumed_at "$d/mid2.log")
n_pre=$(python3 tests/sh/lib/jbx.py list < "$d/top.jbc" | awk '$1 == "codes" && $3 == 1' | wc -l)
n_ref=$(python3 tests/sh/lib/jbx.py list < "$d/ref.jbc" | awk '$1 == "codes" && $3 == 1' | wc -l)
check "continue: killed after windows (watcher $killed), restarted exits 0 ($rc)" \
    "[ $killed = 0 ] && [ $rc = 0 ]"
check "continue: the level-1 prefix passes once ($n_pre prefix messages, $n_ref in the output)" \
    "[ $n_pre -ge 1 ] && [ $((n_ref - n_pre)) -ge 2 ] && \
     [ \$(python3 tests/sh/lib/jbx.py list < '$d/ref.jbc' | awk '\$1 == \"codes\" && \$3 == 1 && \$4 == 0' | wc -l) = 1 ]"
check "continue: resumed at window ${k:-?} > 0, the spooled codes all used" \
    "[ -n '$k' ] && [ '$k' -gt 0 ] && ! grep -q 'not usable' '$d/mid2.log'"
check "continue: the resumed output's codes equal the undisturbed run's" \
    "cmp -s <('$B/jukebox-codes' dump '$d/ref.jbc') <('$B/jukebox-codes' dump '$d/mid2.jbc')"
check "continue: the spool is empty afterwards" "spool_empty '$d/sp'"

echo "test_resume: $SECONDS s"
check_summary test_resume
