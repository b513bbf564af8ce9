#!/bin/bash
# test_pipeline.sh: the stages as real processes, over a shell pipe and over ZeroMQ.
#   - the golden pipeline cases (ancestral and primed, with and without lyrics) are
#     reproduced exactly, one process per stage, through a shell pipe;
#   - the same job over tcp loopback (each stage its own process) gives identical files;
#   - continue and upsample from a saved codes file;
#   - bad job specs and garbage input give clear errors, and a stage keeps serving;
#   - the run page loads in headless Chromium.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
B=$BUILD/bin
G=tests/golden
T=$(mktemp -d /tmp/jb_pipeline.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$T"; }
trap cleanup EXIT
. tests/sh/lib/check.sh

golden_args() { mapfile -d '' ARGS < <(python3 tests/sh/lib/golden_job.py args "$1" "$2"); }
codes_of() { "$B/jukebox-codes" dump "$1" -l "$2" -s "${3:-0}" | cut -d: -f2 | sed 's/^ //'; }
golden_codes() { python3 tests/sh/lib/golden_job.py codes "$1" "$2" "$3"; }

# stages CASE ROOT [decoder args]: the four stages of a golden case as one shell pipe from stdin
stages() {
    local c=$1 root=$2
    "$B/jukebox-prior-top" -q -t 1 -m "$c/prior_level_2.safetensors" |
        "$B/jukebox-upsampler-mid" -q -t 1 -m "$c/prior_level_1.safetensors" |
        "$B/jukebox-upsampler-bottom" -q -t 1 -m "$c/prior_level_0.safetensors" |
        "$B/jukebox-decoder" -q -t 1 -m "$c/vqvae.safetensors" --outdir "$root"
}

echo "-- golden cases through a shell pipe (ancestral)"
for case in pipeline_tiny pipeline_tiny_lyrics; do
    C=$G/$case
    for s in 0 1; do
        golden_args "$C" "$s"
        id=${case}_$s
        "$B/jukebox-job" sample -q --id "$id" "${ARGS[@]}" --vqvae "$C/vqvae.safetensors" |
            stages "$C" "$T/pipe"
        st=("${PIPESTATUS[@]}")
        check "$id: every process exits 0 (${st[*]})" '[ "${st[*]}" = "0 0" ]'
        for l in 2 1 0; do
            check "$id: level $l codes equal the reference" \
                '[ "$(codes_of "$T/pipe/$id/codes.jbc" $l)" = "$(golden_codes "$C" $s zs.$l)" ]'
        done
        for l in 2 1 0; do
            check "$id: level_$l/sample_0.wav written" "[ -s '$T/pipe/$id/level_$l/sample_0.wav' ]"
        done
        check "$id: index.html, job.json, labels.json" \
            "[ -s '$T/pipe/$id/index.html' ] && [ -s '$T/pipe/$id/job.json' ] && [ -s '$T/pipe/$id/labels.json' ]"
    done
done
check "lyrics model: alignment picture and lyrics in labels.json" \
    "[ -s '$T/pipe/pipeline_tiny_lyrics_0/align_0.png' ] && grep -q '\"lyrics\"' '$T/pipe/pipeline_tiny_lyrics_0/labels.json'"
check "no partial run directories left" "! ls -a '$T/pipe' | grep -q partial"

echo "-- primed: the prompt audio through jukebox-encoder"
for case in pipeline_tiny pipeline_tiny_lyrics; do
    C=$G/$case
    plen=$(python3 tests/sh/lib/golden_job.py float "$C" prompt_length)
    for s in 0 1; do
        golden_args "$C" "$s"
        id=${case}_primed_$s
        python3 tests/sh/lib/golden_job.py wav "$C" prompt_audio "$s" "$T/prompt_$s.wav"
        "$B/jukebox-encoder" -q -m "$C/vqvae.safetensors" --job "$id" "$T/prompt_$s.wav" > "$T/prompt_$s.jbc"
        for l in 2 1 0; do
            check "$id: encoded prompt, level $l, equals the reference's" \
                '[ "$(codes_of "$T/prompt_$s.jbc" $l)" = "$(golden_codes "$C" $s primed.prompt_zs.$l)" ]'
        done
        "$B/jukebox-job" primed -q --id "$id" "${ARGS[@]}" --vqvae "$C/vqvae.safetensors" \
            --prompt "$T/prompt_$s.jbc" --prompt-seconds "$(python3 -c "print(repr($plen/44100))")" |
            stages "$C" "$T/pipe"
        for l in 2 1 0; do
            check "$id: level $l codes equal the reference" \
                '[ "$(codes_of "$T/pipe/$id/codes.jbc" $l)" = "$(golden_codes "$C" $s primed.zs.$l)" ]'
        done
    done
done

echo "-- the same job over ZeroMQ, each stage its own process"
C=$G/pipeline_tiny_lyrics
golden_args "$C" 0
ports=($(python3 -c 'import socket
ss=[socket.socket() for _ in range(4)]
[s.bind(("127.0.0.1",0)) for s in ss]
print(" ".join(str(s.getsockname()[1]) for s in ss))'))
ep() { echo "tcp://127.0.0.1:${ports[$1]}"; }
"$B/jukebox-decoder" -q -t 1 -m "$C/vqvae.safetensors" --in "$(ep 3)" --outdir "$T/zmq" --jobs 1 & dec=$!
"$B/jukebox-upsampler-bottom" -q -t 1 -m "$C/prior_level_0.safetensors" --in "$(ep 2)" --out "$(ep 3)" & p0=$!
"$B/jukebox-upsampler-mid" -q -t 1 -m "$C/prior_level_1.safetensors" --in "$(ep 1)" --out "$(ep 2)" & p1=$!
"$B/jukebox-prior-top" -q -t 1 -m "$C/prior_level_2.safetensors" --in "$(ep 0)" --out "$(ep 1)" & p2=$!
pids+=($dec $p0 $p1 $p2)
"$B/jukebox-job" sample -q --id pipeline_tiny_lyrics_0 "${ARGS[@]}" --vqvae "$C/vqvae.safetensors" -o "$(ep 0)"
check "jukebox-job sends over tcp" '[ $? = 0 ]'
for i in $(seq 1 300); do kill -0 $dec 2>/dev/null || break; sleep 0.1; done
wait $dec; rc=$?
check "decoder collected the job and exited 0 (rc $rc)" '[ $rc = 0 ]'
for f in codes.jbc level_0/sample_0.wav level_1/sample_0.wav level_2/sample_0.wav align_0.png labels.json; do
    check "zmq run: $f identical to the shell-pipe run" "cmp -s '$T/zmq/pipeline_tiny_lyrics_0/$f' '$T/pipe/pipeline_tiny_lyrics_0/$f'"
done

echo "-- a bad job and garbage while the stages keep serving (over ZeroMQ)"
"$B/jukebox-decoder" -q -t 1 -m "$C/vqvae.safetensors" --in "$(ep 3)" --outdir "$T/zmq2" --jobs 2 & dec=$!
pids+=($dec)
# A job the top prior must refuse: total length outside the model's [0.05, 1) s.
"$B/jukebox-job" sample -q --id refused --total-seconds 5 --seconds 0.16 -o "$(ep 0)"
# Garbage frames straight at the top prior's socket: a message that is not MessagePack.
python3 - "${ports[0]}" <<'PY'
import socket, struct, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
# ZMTP 3.0 greeting + READY for a DEALER socket (what connects to a link's ROUTER),
# then a two-part message of junk: the link drops it and logs why.
s.sendall(b"\xff" + b"\0" * 8 + b"\x7f" + b"\x03\x00" + b"NULL" + b"\0" * 16 + b"\x00" + b"\0" * 31)
s.recv(64)
ready = b"\x05READY\x0bSocket-Type\x00\x00\x00\x06DEALER"
s.sendall(b"\x04" + bytes([len(ready)]) + ready)
s.sendall(b"\x01\x05junk!" + b"\x00\x03xyz")
s.close()
PY
golden_args "$C" 1
"$B/jukebox-job" sample -q --id after_garbage "${ARGS[@]}" --vqvae "$C/vqvae.safetensors" -o "$(ep 0)"
for i in $(seq 1 300); do kill -0 $dec 2>/dev/null || break; sleep 0.1; done
wait $dec; rc=$?
check "decoder exits 65: one of its two jobs failed (rc $rc)" '[ $rc = 65 ]'
check "the refused job left an error record naming the range" \
    "grep -q 'outside this model' '$T/zmq2/refused/error.json'"
check "the next job completed and equals the reference" \
    '[ "$(codes_of "$T/zmq2/after_garbage/codes.jbc" 0)" = "$(golden_codes "$C" 1 zs.0)" ]'
kill -TERM $p0 $p1 $p2 2>/dev/null
for p in $p0 $p1 $p2; do wait $p; r=$?; check "stage $p stops with exit 0 on SIGTERM (rc $r)" '[ $r = 0 ]'; done
pids=()

echo "-- continue and upsample from a saved codes file"
C=$G/pipeline_tiny
golden_args "$C" 0
saved=$T/pipe/pipeline_tiny_0/codes.jbc
# upsample: the saved top codes, the lower levels sampled again: greedy gives the same.
"$B/jukebox-job" upsample -q --id up --codes "$saved" | stages "$C" "$T/more"
for l in 2 1 0; do
    check "upsample: level $l equals the original run" \
        '[ "$(codes_of "$T/more/up/codes.jbc" $l)" = "$(codes_of "$saved" $l)" ]'
done
# continue: a longer song; the saved codes are its beginning.
"$B/jukebox-job" continue -q --id cont --codes "$saved" --total-seconds 0.5 --seconds 0.3 | stages "$C" "$T/more"
check "continue: run written" "[ -s '$T/more/cont/codes.jbc' ]"
for l in 2 1 0; do
    old=$(codes_of "$saved" $l); new=$(codes_of "$T/more/cont/codes.jbc" $l)
    check "continue: level $l starts with the saved codes and is longer" \
        '[ "${new#"$old"}" != "$new" ] && [ ${#new} -gt ${#old} ]'
done
check "continue --pick 1 of a 1-sample file is refused (exit 64)" \
    '"$B/jukebox-job" continue -q --codes "$saved" --pick 1 --seconds 0.3 --total-seconds 0.5 >/dev/null 2>&1; [ $? = 64 ]'
check "continue without a longer --seconds is refused" \
    '! "$B/jukebox-job" continue -q --codes "$saved" >/dev/null 2>&1'

echo "-- bad specs are refused before any work"
check "unknown mode: exit 64" '"$B/jukebox-job" remix >/dev/null 2>&1; [ $? = 64 ]'
check "temperature 0: exit 64" '"$B/jukebox-job" sample --temp 0 >/dev/null 2>&1; [ $? = 64 ]'
check "primed without a prompt: exit 64" '"$B/jukebox-job" primed >/dev/null 2>&1; [ $? = 64 ]'
check "a prompt shorter than one top token: exit 64" \
    '"$B/jukebox-job" primed --prompt "$T/prompt_0.jbc" --prompt-seconds 0.001 --seconds 0.1 >/dev/null 2>&1; [ $? = 64 ]'
# Codes of another VQ-VAE (vqvae_tiny: a codebook of 32, the pipeline's has 64).
"$B/jukebox-encoder" -q -m tests/golden/vqvae_tiny/model.safetensors --job other "$T/prompt_0.wav" > "$T/other.jbc"
"$B/jukebox-job" upsample -q --id other --total-seconds 0.19 --codes "$T/other.jbc" | stages "$C" "$T/more"
check "codes of another model: the job is refused with a codebook message" \
    "grep -q 'codebook' '$T/more/other/error.json'"
head -c 3000 /dev/urandom > "$T/garbage"
"$B/jukebox-prior-top" -q -m "$C/prior_level_2.safetensors" < "$T/garbage" > "$T/out.jbc" 2> "$T/err.txt"; rc=$?
check "garbage on a stage's stdin: exit 65 with a message naming the input (rc $rc)" \
    "[ $rc = 65 ] && grep -q 'input' '$T/err.txt'"

echo "-- the page in headless Chromium"
if command -v chromium >/dev/null; then
    page=$T/pipe/pipeline_tiny_lyrics_0/index.html
    timeout 60 chromium --headless --no-sandbox --disable-gpu --user-data-dir="$T/chrome" \
        --virtual-time-budget=2000 --dump-dom "file://$page" > "$T/dom.html" 2>/dev/null
    check "page loads; audio element with a source" "grep -q '<audio[^>]*src=\"level_0/sample_0.wav\"' '$T/dom.html'"
    check "page: lyric spans" "[ \$(grep -o '<span' '$T/dom.html' | wc -l) -ge 60 ]"
    timeout 60 chromium --headless --no-sandbox --disable-gpu --user-data-dir="$T/chrome" \
        --window-size=1024,900 --screenshot="$T/shot.png" "file://$page" >/dev/null 2>&1
    check "page screenshot taken" "[ -s '$T/shot.png' ]"
    [ -n "${JB_KEEP_SCREENSHOT:-}" ] && cp "$T/shot.png" "$JB_KEEP_SCREENSHOT"
else
    bad "chromium not installed (scripts/deps.sh test installs it)"
fi

echo "-- the front command, every mode, on the bundled model"
# (songs of 1-2 s: the trained default model's top window is 0.74 s)
J=pipelines/jukebox
M=models/default
export PATH="$PWD/$B:$PATH"
$J sample --models $M --total-seconds 2 --seconds 1 --samples 2 -q -o "$T/front/s" 2>"$T/front.err"
check "jukebox sample: run with 2 samples" "[ -s '$T/front/s/level_0/sample_1.wav' ] && [ -s '$T/front/s/index.html' ]"
$J primed "$T/prompt_0.wav" --models $M --prompt-seconds 0.05 --seconds 1 --total-seconds 2 -q -o "$T/front/p"
check "jukebox primed: run written" "[ -s '$T/front/p/codes.jbc' ]"
"$B/jukebox-encoder" -q -m $M/vqvae.safetensors "$T/prompt_0.wav" > "$T/prompt_default.jbc"
check "jukebox primed: the prompt's top codes start the song" \
    '[ "$(codes_of "$T/front/p/codes.jbc" 2 | cut -d" " -f1-2)" = "$(codes_of "$T/prompt_default.jbc" 2 | cut -d" " -f1-2)" ]'
# A song shorter than one top window, primed: one partial window up to the song's length
# (172 top codes for 0.5 s), the prompt's 86 codes kept at its start.
sox -n -r 44100 -c 1 -b 16 "$T/tone.wav" synth 1 sine 440 sine 660
"$B/jukebox-encoder" -q -m $M/vqvae.safetensors "$T/tone.wav" > "$T/tone.jbc"
$J primed "$T/tone.wav" --models $M --prompt-seconds 0.25 --seconds 0.5 --total-seconds 0.5 -q \
    -o "$T/front/ps" 2>"$T/front_ps.err"; rc=$?
check "jukebox primed, a song shorter than one window: done (rc $rc)" "[ $rc = 0 ] && [ -s '$T/front/ps/level_0/sample_0.wav' ]"
check "  172 top codes, the first 86 the prompt's" \
    '[ "$(codes_of "$T/front/ps/codes.jbc" 2 | wc -w)" = 172 ] &&
     [ "$(codes_of "$T/front/ps/codes.jbc" 2 | cut -d" " -f1-86)" = "$(codes_of "$T/tone.jbc" 2 | cut -d" " -f1-86)" ]'
$J continue "$T/front/ps/codes.jbc" --models $M --seconds 0.7 --total-seconds 0.7 -q -o "$T/front/cs" 2>>"$T/front_ps.err"; rc=$?
check "jukebox continue of it, still shorter than one window: done (rc $rc)" \
    '[ $rc = 0 ] && [ "$(codes_of "$T/front/cs/codes.jbc" 2 | cut -d" " -f1-172)" = "$(codes_of "$T/front/ps/codes.jbc" 2)" ]'
$J continue "$T/front/s/codes.jbc" --pick 1 --models $M --seconds 1.5 --total-seconds 2 -q -o "$T/front/c"
check "jukebox continue --pick 1: one sample, longer" \
    "[ -s '$T/front/c/level_0/sample_0.wav' ] && [ ! -e '$T/front/c/level_0/sample_1.wav' ]"
$J upsample "$T/front/c/codes.jbc" --models $M -q -o "$T/front/u"
check "jukebox upsample: same top codes" '[ "$(codes_of "$T/front/u/codes.jbc" 2)" = "$(codes_of "$T/front/c/codes.jbc" 2)" ]'
$J sample --models $M --total-seconds 30 -q -o "$T/front/bad" 2>"$T/bad.err"; rc=$?
check "a job out of the model's range is refused before any work (exit 64)" \
    "[ $rc = 64 ] && [ ! -e '$T/front/bad' ] && grep -q 'outside this model' '$T/bad.err'"
$J sample --models $M -q -o "$T/front/s" 2>/dev/null; rc=$?
check "an existing output directory is refused" "[ $rc = 64 ]"
$J remix -o "$T/x" 2>/dev/null; check "unknown mode: exit 64" "[ $? = 64 ]"
check "--help documents every mode" "$J --help | grep -q upsample"
# Stages already listening: the front sends the job and collects the outputs.
ports=($(python3 -c 'import socket
ss=[socket.socket() for _ in range(4)]
[s.bind(("127.0.0.1",0)) for s in ss]
print(" ".join(str(s.getsockname()[1]) for s in ss))'))
"$B/jukebox-upsampler-bottom" -q -t 1 -m $M/prior_level_0.safetensors --in "$(ep 2)" --out "$(ep 3)" & p0=$!
"$B/jukebox-upsampler-mid" -q -t 1 -m $M/prior_level_1.safetensors --in "$(ep 1)" --out "$(ep 2)" & p1=$!
"$B/jukebox-prior-top" -q -t 1 -m $M/prior_level_2.safetensors --in "$(ep 0)" --out "$(ep 1)" & p2=$!
pids+=($p0 $p1 $p2)
timeout 120 $J sample --models $M --total-seconds 2 --seconds 1 --samples 2 -q \
    --stages "$(ep 0)" --listen "$(ep 3)" -o "$T/front/net/s"; rc=$?
check "jukebox --stages/--listen: the run comes back (rc $rc)" "[ $rc = 0 ] && [ -s '$T/front/net/s/index.html' ]"
# Same job id and seed: the same codes, wherever they were computed.
check "networked run equals the local one" 'cmp -s "$T/front/net/s/codes.jbc" "$T/front/s/codes.jbc"'
# The same job again: the top prior answers DONE (it made it) and nothing comes back; the
# front command says so at once instead of waiting for ever.
timeout 120 $J sample --models $M --total-seconds 2 --seconds 1 --samples 2 -q \
    --stages "$(ep 0)" --listen "$(ep 3)" -o "$T/front/net/again" 2> "$T/again.err"; rc=$?
check "jukebox --stages/--listen, the same job again: exit 64, said (rc $rc)" \
    "[ $rc = 64 ] && grep -q 'was made before by the stages' '$T/again.err' && [ ! -e '$T/front/net/again' ]"
kill -TERM $p0 $p1 $p2 2>/dev/null; wait $p0 $p1 $p2 2>/dev/null; pids=()

"$B/jukebox-encoder" -q -m tests/golden/vqvae_tiny/model.safetensors "$T/prompt_0.wav" > "$T/other2.jbc"
$J upsample "$T/other2.jbc" --models $M --total-seconds 2 -q -o "$T/front/other" 2>"$T/other.err"; rc=$?
check "codes of another model are refused before any work (exit 64)" \
    "[ $rc = 64 ] && [ ! -e '$T/front/other' ] && grep -q 'another model' '$T/other.err'"

echo "-- make install"
make -s install PREFIX=/usr DESTDIR="$T/root" BUILD="$BUILD" >/dev/null 2>&1
check "make install: executables, jukebox command, pipelines" \
    "[ -x '$T/root/usr/bin/jukebox-prior-top' ] && [ -x '$T/root/usr/bin/jukebox' ] && [ -f '$T/root/usr/share/jukebox/pipelines/jukebox' ]"
check "installed jukebox finds its stages" "'$T/root/usr/bin/jukebox' --help >/dev/null"

check_summary test_pipeline
