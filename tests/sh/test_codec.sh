#!/bin/bash
# test_codec.sh: jukebox-encoder and jukebox-decoder as a user runs them, on real recordings
# (speech from espeak-ng, a chord from sox): round trips through files, --in/--out and a
# pipe, lengths and rates of the outputs (soxi), level choice, padding trimmed back, and
# the failures: exit codes and no partial output left behind.
# Env: BUILD (default build). Ends with "test_codec: N passed, N failed".
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
ENC=$BUILD/bin/jukebox-encoder
DEC=$BUILD/bin/jukebox-decoder
REAL=tests/golden/vqvae_real_shape/model.safetensors
TINY=tests/golden/vqvae_tiny/model.safetensors
PRIOR=tests/golden/prior_top_5b_tiny/model.safetensors
. tests/sh/lib/check.sh
# expect_rc NAME WANT CMD...: runs CMD (stdout to $T/last.out), checks the exit code
expect_rc() {
    local name=$1 want=$2; shift 2
    "$@" >"$T/last.out" 2>"$T/last.err"; local rc=$?
    if [ "$rc" = "$want" ]; then ok "$name (exit $rc)"
    else bad "$name: exit $rc, want $want; stderr: $(tail -n 2 "$T/last.err")"; fi
}
no_tmp() { ! ls "$T" | grep -q '\.tmp\.'; }
samples() { soxi -s "$1" 2>/dev/null; }
rate() { soxi -r "$1" 2>/dev/null; }

for x in "$ENC" "$DEC"; do
    if [ ! -x "$x" ]; then echo "missing $x (run make)"; echo "test_codec: 0 passed, 1 failed"; exit 1; fi
done
for t in espeak-ng sox soxi; do
    if ! command -v $t >/dev/null; then
        echo "$t not installed (scripts/deps.sh test installs it)"
        echo "test_codec: 0 passed, 1 failed"; exit 1
    fi
done
T=$(mktemp -d /tmp/test_codec.XXXXXX)
trap 'rm -rf "$T"' EXIT
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

# ---- recordings
espeak-ng -w "$T/speech_raw.wav" 'hello, jukebox' 2>/dev/null
# 37 samples of silence at the end: the length at 44.1 kHz is then never a multiple of 128
sox "$T/speech_raw.wav" "$T/speech.wav" pad 0 37s 2>/dev/null
sox -n -r 48000 -c 2 "$T/chord.flac" synth 0.5 pluck C4 pluck E4 pluck G4 gain -3 2>/dev/null
check "espeak-ng made speech.wav" test -s "$T/speech.wav"
check "sox made a stereo 48 kHz FLAC chord" test "$(soxi -c "$T/chord.flac")" = 2
n_speech=$(samples "$T/speech.wav"); r_speech=$(rate "$T/speech.wav")
want_speech=$(( (n_speech * 44100 + r_speech / 2) / r_speech ))   # round(n * 44100 / r)
check "speech length $want_speech at 44.1 kHz is not a multiple of 128 (padding is used)" \
    test $((want_speech % 128)) != 0

# ---- round trip through files, real-shape model (all three levels)
expect_rc "encode speech to a codes file (--out)" 0 "$ENC" -m "$REAL" -t 1 -q "$T/speech.wav" -o "$T/speech.jbc"
check "codes file written" test -s "$T/speech.jbc"
check "codes file starts with the frame magic JBX1" test "$(head -c 4 "$T/speech.jbc")" = JBX1
expect_rc "decode codes file (--in) to WAV" 0 "$DEC" -m "$REAL" -t 1 -q --in "$T/speech.jbc" -o "$T/speech_out.wav"
check "decoded WAV is 44100 Hz" test "$(rate "$T/speech_out.wav")" = 44100
check "decoded WAV is mono" test "$(soxi -c "$T/speech_out.wav")" = 1
check "decoded WAV has the input's length ($want_speech samples, padding trimmed)" \
    test "$(samples "$T/speech_out.wav")" = "$want_speech"
check "decoded WAV is 16-bit PCM" test "$(soxi -b "$T/speech_out.wav")" = 16
rms=$(sox "$T/speech_out.wav" -n stat 2>&1 | awk '/RMS +amplitude/ {print $3}')
check "decoded audio is not silent (RMS $rms)" awk -v r="$rms" 'BEGIN { exit !(r > 1e-4) }'
no_tmp_ok=1; ls "$T" | grep -q '\.tmp\.' && no_tmp_ok=0
check "no temporary files left after success" test $no_tmp_ok = 1

# every level of the same codes file
for L in 2 1; do
    expect_rc "decode --level $L" 0 "$DEC" -m "$REAL" -t 1 -q --level $L -o "$T/speech_l$L.flac" < "$T/speech.jbc"
    check "level $L output is FLAC at 44100 Hz" test "$(soxi -t "$T/speech_l$L.flac")" = flac -a "$(rate "$T/speech_l$L.flac")" = 44100
    check "level $L output has $want_speech samples" test "$(samples "$T/speech_l$L.flac")" = "$want_speech"
done
expect_rc "decode --float" 0 "$DEC" -m "$REAL" -t 1 -q --level 2 --float -i "$T/speech.jbc" -o "$T/speech_f.wav"
check "--float writes 32-bit float WAV" test "$(soxi -e "$T/speech_f.wav" 2>/dev/null)" = "Floating Point PCM"

# ---- a pipe: stereo 48 kHz FLAC chord -> top codes only -> top decoder
"$ENC" -m "$REAL" -t 1 -q --levels 2 "$T/chord.flac" | "$DEC" -m "$REAL" -t 1 -q -o "$T/chord.wav"
st=("${PIPESTATUS[@]}")
check "encoder | decoder pipe exits 0 0 (got ${st[*]})" test "${st[*]}" = "0 0"
check "pipe output: 0.5 s at 48 kHz -> 22050 samples at 44100 Hz" \
    test "$(samples "$T/chord.wav")" = 22050 -a "$(rate "$T/chord.wav")" = 44100
expect_rc "--level 0 of a top-only stream is refused" 65 \
    bash -c "'$ENC' -m '$REAL' -t 1 -q --levels 2 '$T/chord.flac' | '$DEC' -m '$REAL' -q --level 0 -o '$T/none.wav'"
check "... and writes no file" test ! -e "$T/none.wav"

# ---- audio on stdin, audio out on stdout (tiny model: fast)
expect_rc "encode audio from stdin (-)" 0 bash -c "'$ENC' -m '$TINY' -q - < '$T/speech.wav' > '$T/tiny.jbc'"
expect_rc "decode WAV to stdout (-o -)" 0 bash -c "'$DEC' -m '$TINY' -q -o - < '$T/tiny.jbc' > '$T/stdout.wav'"
check "WAV from stdout has $want_speech samples" test "$(samples "$T/stdout.wav")" = "$want_speech"

# ---- long input in chunks: --window 4096 (the tiny model's context needs 3968) cuts the
# 1.5 s of speech into ~23 overlapping chunks per level; results equal the one-pass run
expect_rc "encode with --window 4096 (chunked)" 0 "$ENC" -m "$TINY" -q --window 4096 -j stdin "$T/speech.wav" -o "$T/tiny_w.jbc"
check "chunked encode gives the same codes file as one pass" cmp -s "$T/tiny.jbc" "$T/tiny_w.jbc"
"$DEC" -m "$TINY" -q --float -i "$T/tiny.jbc" -o "$T/one.wav"
expect_rc "decode with --window 4096 (chunked)" 0 "$DEC" -m "$TINY" -q --float --window 4096 -i "$T/tiny.jbc" -o "$T/chunked.wav"
maxdiff=$(sox -m -v 1 "$T/one.wav" -v -1 "$T/chunked.wav" -n stat 2>&1 | awk '/Maximum amplitude/ {print $3}')
check "chunked decode equals one pass (max diff $maxdiff <= 1e-4)" awk -v d="$maxdiff" 'BEGIN { exit !(d != "" && d <= 1e-4) }'
expect_rc "--window below the model's context is refused" 64 "$DEC" -m "$TINY" --window 3967 -i "$T/tiny.jbc" -o "$T/x.wav"

# ---- over ZeroMQ (ipc): the decoder binds and serves until SIGTERM
"$DEC" -m "$TINY" -q --in "ipc://$T/codes.sock" -o "$T/zmq_{job}.wav" 2>"$T/zmq.err" & dpid=$!
expect_rc "encoder sends to ipc://" 0 "$ENC" -m "$TINY" -q "$T/speech.wav" --out "ipc://$T/codes.sock"
for _ in $(seq 100); do [ -e "$T/zmq_speech.wav" ] && break; sleep 0.1; done
check "decoder serving on ipc:// wrote the job ($want_speech samples)" test "$(samples "$T/zmq_speech.wav")" = "$want_speech"
kill -TERM $dpid; wait $dpid; rc=$?
check "SIGTERM stops the serving decoder with exit 0 (got $rc)" test $rc = 0
# a job cut short on a pipe that stays open: SIGTERM drops it, nothing is written
mkfifo "$T/fifo"
"$DEC" -m "$TINY" --in "$T/fifo" -o "$T/cut_{job}.wav" 2>"$T/fifo.err" & dpid=$!
( head -c $(( $(stat -c %s "$T/tiny.jbc") - 30 )) "$T/tiny.jbc"; sleep 3 ) > "$T/fifo" & wpid=$!
sleep 1; kill -TERM $dpid; wait $dpid; rc=$?
check "SIGTERM with an unfinished job: exit 0 (got $rc), no output" test $rc = 0 -a ! -e "$T/cut_stdin.wav"
check "... and the decoder says it dropped the job" grep -q "1 unfinished job(s) dropped" "$T/fifo.err"
kill $wpid 2>/dev/null; wait $wpid 2>/dev/null

# ---- several jobs in one stream
"$ENC" -m "$TINY" -q -j first "$T/speech.wav" > "$T/a.jbc"
"$ENC" -m "$TINY" -q -j second "$T/chord.flac" > "$T/b.jbc"
expect_rc "two jobs, -o '{job}_{level}.wav'" 0 bash -c "cat '$T/a.jbc' '$T/b.jbc' | '$DEC' -m '$TINY' -q -o '$T/{job}_{level}.wav'"
check "both jobs written" test -s "$T/first_0.wav" -a -s "$T/second_0.wav"
check "second job has its own length" test "$(samples "$T/second_0.wav")" = 22050
expect_rc "two jobs into one file name is refused" 64 bash -c "cat '$T/a.jbc' '$T/b.jbc' | '$DEC' -m '$TINY' -q -o '$T/same.wav'"
check "... the first job was still written" test "$(samples "$T/same.wav")" = "$want_speech"

# ---- failures: exit codes, nothing left behind
expect_rc "missing audio file" 66 "$ENC" -m "$TINY" "$T/nope.wav" -o "$T/x.jbc"
check "... no codes file" test ! -e "$T/x.jbc"
expect_rc "missing model file (encoder)" 66 "$ENC" -m "$T/nope.safetensors" "$T/speech.wav" -o "$T/x.jbc"
expect_rc "missing model file (decoder)" 66 "$DEC" -m "$T/nope.safetensors" -i "$T/tiny.jbc" -o "$T/x.wav"
expect_rc "missing codes file" 66 "$DEC" -m "$TINY" -i "$T/nope.jbc" -o "$T/x.wav"
head -c 20000 /dev/urandom > "$T/noise.wav"
expect_rc "corrupt audio (random bytes)" 65 "$ENC" -m "$TINY" "$T/noise.wav" -o "$T/x.jbc"
check "... no codes file" test ! -e "$T/x.jbc"
head -c $(( $(stat -c %s "$T/speech.wav") / 2 )) "$T/speech.wav" > "$T/half.wav"
expect_rc "truncated WAV" 65 "$ENC" -m "$TINY" "$T/half.wav" -o "$T/x.jbc"
: > "$T/empty.wav"
expect_rc "empty audio file" 65 "$ENC" -m "$TINY" "$T/empty.wav" -o "$T/x.jbc"
sox -n -r 44100 -c 1 "$T/zero.wav" trim 0 0 2>/dev/null
expect_rc "zero-length audio" 65 "$ENC" -m "$TINY" "$T/zero.wav" -o "$T/x.jbc"
check "no codes file after any of these" test ! -e "$T/x.jbc"
head -c 5000 /dev/urandom > "$T/garbage.jbc"
expect_rc "garbage codes file" 65 "$DEC" -m "$TINY" -i "$T/garbage.jbc" -o "$T/x.wav"
check "... no audio file" test ! -e "$T/x.wav"
head -c $(( $(stat -c %s "$T/speech.jbc") - 100 )) "$T/speech.jbc" > "$T/cut.jbc"
expect_rc "truncated codes file" 65 "$DEC" -m "$REAL" -i "$T/cut.jbc" -o "$T/x.wav"
check "... no audio file" test ! -e "$T/x.wav"
expect_rc "codes of another model (codebook 32 vs 2048)" 65 "$DEC" -m "$REAL" -i "$T/tiny.jbc" -o "$T/x.wav"
: > "$T/nothing.jbc"
expect_rc "empty codes stream" 65 "$DEC" -m "$TINY" -i "$T/nothing.jbc" -o "$T/x.wav"
expect_rc "a prior model is not a VQ-VAE (encoder)" 65 "$ENC" -m "$PRIOR" "$T/speech.wav" -o "$T/x.jbc"
expect_rc "a prior model is not a VQ-VAE (decoder)" 65 "$DEC" -m "$PRIOR" -i "$T/tiny.jbc" -o "$T/x.wav"
expect_rc "a WAV file given as the model" 65 "$ENC" -m "$T/speech.wav" "$T/speech.wav" -o "$T/x.jbc"
check "no audio or codes file after any of these" test ! -e "$T/x.wav" -a ! -e "$T/x.jbc"
expect_rc "unknown encoder option" 64 "$ENC" --bogus
expect_rc "unknown decoder option" 64 "$DEC" --bogus
expect_rc "encoder without --model" 64 "$ENC" "$T/speech.wav" -o "$T/x.jbc"
expect_rc "decoder without -o" 64 "$DEC" -m "$TINY" -i "$T/tiny.jbc"
expect_rc "--levels 3 on a 3-level model" 64 "$ENC" -m "$TINY" --levels 0,3 "$T/speech.wav" -o "$T/x.jbc"
expect_rc "--levels 1,1" 64 "$ENC" -m "$TINY" --levels 1,1 "$T/speech.wav" -o "$T/x.jbc"
expect_rc "--threads 0" 64 "$ENC" -m "$TINY" --threads 0 "$T/speech.wav" -o "$T/x.jbc"
expect_rc "bad --job" 64 "$ENC" -m "$TINY" --job 'a b' "$T/speech.wav" -o "$T/x.jbc"
expect_rc "decoder -o with an unknown extension" 64 "$DEC" -m "$TINY" -i "$T/tiny.jbc" -o "$T/x.mp4"
expect_rc "decoder --level 9" 64 "$DEC" -m "$TINY" --level 9 -i "$T/tiny.jbc" -o "$T/x.wav"
expect_rc "encoder: stdout is a full disk" 74 bash -c "'$ENC' -m '$TINY' -q '$T/speech.wav' > /dev/full"
"$ENC" -m "$TINY" -q "$T/speech.wav" 2>/dev/null | true; rc=${PIPESTATUS[0]}
check "encoder: the reader of the pipe is gone -> exit 69 (got $rc)" test "$rc" = 69
expect_rc "decoder: output directory missing" 74 "$DEC" -m "$TINY" -i "$T/tiny.jbc" -o "$T/nodir/x.wav"
expect_rc "encoder: output directory missing" 74 "$ENC" -m "$TINY" -q "$T/speech.wav" -o "$T/nodir/x.jbc"
mkdir -p "$T/adir"
expect_rc "decoder: a directory as its input (not there: 66)" 66 "$DEC" -m "$TINY" -i "$T/adir" -o "$T/x.wav"
expect_rc "jukebox-codes: a directory (66)" 66 "${ENC%/*}/jukebox-codes" info "$T/adir"
check "no temporary files left after the failures" no_tmp
check "nothing left behind at all" test ! -e "$T/x.wav" -a ! -e "$T/x.jbc" -a ! -e "$T/x.mp4"

# ---- --help
expect_rc "encoder --help" 0 "$ENC" --help
for o in --in --out --model --levels --job --threads --window --quiet --verbose --help \
         "Exit codes" "Padding" 64 65 66 69 70 74; do
    grep -q -- "$o" "$T/last.out" || bad "encoder --help does not mention $o"
done
expect_rc "decoder --help" 0 "$DEC" --help
for o in --in --out --model --level --float --flac --threads --window --quiet --verbose \
         --help "Exit codes" "pads" 64 65 66 69 70 74 "{job}" SIGTERM; do
    grep -q -- "$o" "$T/last.out" || bad "decoder --help does not mention $o"
done

# ---- --device: a build or machine without a usable GPU says so (exit 69) before any work;
# a device that does not exist or a bad spelling is bad usage of another kind
if ! nvidia-smi >/dev/null 2>&1; then
    expect_rc "encoder --device cuda without a GPU" 69 "$ENC" -m "$TINY" -q --device cuda "$T/speech.wav" -o "$T/dev.jbc"
    check "  ... says why (CUDA build / driver / device)" grep -qiE "cuda|driver|device" "$T/last.err"
    check "  ... and leaves no codes file" test ! -e "$T/dev.jbc"
    expect_rc "decoder --device cuda:1 without a GPU" 69 "$DEC" -m "$TINY" -q --device cuda:1 --in "$T/speech.jbc" -o "$T/dev.wav"
    check "  ... and leaves no audio file" test ! -e "$T/dev.wav"
fi
expect_rc "encoder --device tpu" 64 "$ENC" -m "$TINY" -q --device tpu "$T/speech.wav" -o "$T/dev.jbc"
expect_rc "encoder --device cpu" 0 "$ENC" -m "$TINY" -q --device cpu "$T/speech.wav" -o "$T/dev.jbc"

check_summary test_codec
