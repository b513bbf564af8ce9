#!/bin/bash
# test_train.sh: jukebox-train end to end on a few seconds of audio made here with sox (tones
# and a square wave, three files, two formats and rates) and a hand-written labels file:
# a VQ-VAE, then a top prior and an upsampler on its codes, then lyrics top priors of both
# kinds (joint sequence, lyrics encoder) on songs with sung lyrics made by jukebox-mkdataset
# (the loss formula checked in every metrics row, the vocabularies against a Python
# transcription of the reference's rules, sampling with --lyrics). Checks with independent tools:
# the loss goes down (awk over metrics.csv), the trained VQ-VAE reconstructs better than
# the untrained one (python3 over the decoder's WAV), the files load in jukebox-encoder /
# jukebox-decoder / jukebox-prior-top / jukebox-upsampler-mid, a resumed run equals an
# uninterrupted one byte for byte (cmp), and bad options and data give their exit codes.
set -u
BUILD=${BUILD:-build}
B=$BUILD/bin
. "$(dirname "$0")/lib/check.sh"

for need in jukebox-train jukebox-encoder jukebox-decoder jukebox-job jukebox-prior-top \
            jukebox-upsampler-mid jukebox-codes; do
    [ -x "$B/$need" ] || { bad "missing $B/$need (make)"; check_finish test_train; }
done
for tool in sox python3 cmp awk; do
    command -v "$tool" >/dev/null || { bad "missing tool $tool (scripts/deps.sh test)"; check_finish test_train; }
done
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
TR="$B/jukebox-train"

# ---- data: 6 s of audio, 3 files, labels --------------------------------------------------
mkdir -p "$T/data/audio"
sox -R -n -r 44100 -c 1 -b 16 "$T/data/audio/a.wav" synth 2 sine 220 sine 330 remix 1-2 gain -6
sox -R -n -r 44100 -c 1 -b 16 "$T/data/audio/b.wav" synth 2 square 110 gain -12
sox -R -n -r 22050 -c 2 "$T/data/audio/c.flac" synth 2 sine 440 sine 660 gain -8
cat > "$T/data/labels.jsonl" <<'EOF'
{"file":"audio/a.wav","artist":"Sine Duo","genre":"ambient","lyrics":""}
{"id":"b","artist":"Square One","genre":"chip_tune"}
{"file":"audio/c.flac","artist":"Sine Duo","genre":"ambient"}
EOF

code() { "$TR" "$@" > /dev/null 2> "$T/err"; echo $?; }

# mean of column 2 (loss) over the first / last 5 rows; 1 when last < frac * first
loss_down() {
    awk -F, -v f="$2" 'NR > 1 {l[NR - 1] = $2; n = NR - 1}
        END {if (n < 10) exit 1; for (i = 1; i <= 5; i++) {a += l[i]; b += l[n - 5 + i]}
             printf "    loss: first 5 steps %.3f, last 5 %.3f\n", a / 5, b / 5 > "/dev/stderr";
             exit !(b < f * a)}' "$1"
}

# ---- VQ-VAE -----------------------------------------------------------------------------
echo "-- VQ-VAE (toy preset, 40 steps)"
VQ=(--data "$T/data" --batch 2 --sample-length 2048 --seed 1 --threads 1)
"$TR" vqvae "${VQ[@]}" --out "$T/vq" --steps 40 --log-every 20 2> "$T/vq.err"; rc=$?
check "vqvae: exit 0" '[ $rc = 0 ]'
check "vqvae: progress lines with loss, steps/s and ETA" \
    'grep -q "step 40/40  loss .* steps/s  ETA" "$T/vq.err"'
check "vqvae: model file, optimiser state, metrics.csv, metrics.png written" \
    '[ -s "$T/vq/vqvae.safetensors" ] && [ -s "$T/vq/optim.safetensors" ] && [ -s "$T/vq/metrics.csv" ]'
check "vqvae: metrics.csv has a header with the reference metrics and 40 rows" \
    'head -1 "$T/vq/metrics.csv" | grep -q "^step,loss,.*recons_loss.*commit_loss.*,lr,grad_norm$" &&
     [ $(wc -l < "$T/vq/metrics.csv") = 41 ]'
check "vqvae: metrics.png is a PNG" \
    '[ "$(head -c 8 "$T/vq/metrics.png" | od -An -tx1 | tr -d " \n")" = 89504e470d0a1a0a ]'
check "vqvae: loss goes down (last 5 steps < 0.8 x first 5)" 'loss_down "$T/vq/metrics.csv" 0.8'
check "vqvae: no temporary files left" '! ls "$T/vq" | grep -q tmp'

# --out and its parents are made (train.md: "run directory (created)"); --steps 0 has no
# metrics to plot, and its log does not claim a metrics.png
"$TR" vqvae "${VQ[@]}" --out "$T/new/runs/vq0" --steps 0 2> "$T/vq0.err"; rc=$?
check "vqvae --steps 0 into new directories writes the initial model (rc $rc)" \
    '[ $rc = 0 ] && [ -s "$T/new/runs/vq0/vqvae.safetensors" ]'
check "vqvae --steps 0: no metrics.png, and the log names none" \
    '[ ! -e "$T/new/runs/vq0/metrics.png" ] && grep -q "wrote " "$T/vq0.err" && ! grep -q "metrics.png" "$T/vq0.err"'

# --init from the trained model with the decoders alone (tied upsampling): the encoders'
# tensors and the codebooks stay byte for byte, the decoders change; --until in the past
# stops after the first step with a checkpoint.
echo '{"upsample_tied": true, "train_decoder_only": true}' > "$T/dec.json"
"$TR" vqvae "${VQ[@]}" --out "$T/vqd" --init "$T/vq/vqvae.safetensors" --hparams "$T/dec.json" \
    --steps 5 --until 1 2> "$T/vqd.err"; rc=$?
check "vqvae --init with train_decoder_only, --until in the past: exit 0, one step" \
    '[ $rc = 0 ] && grep -q "stopped at step 1" "$T/vqd.err" && [ $(wc -l < "$T/vqd/metrics.csv") = 2 ]'
cat > "$T/same.py" <<'EOF'
import json, struct, sys
def tensors(p):
    f = open(p, 'rb'); n = struct.unpack('<Q', f.read(8))[0]; h = json.loads(f.read(n)); d = f.read()
    return {k: d[v['data_offsets'][0]:v['data_offsets'][1]] for k, v in h.items() if k != '__metadata__'}
a, b = tensors(sys.argv[1]), tensors(sys.argv[2])
enc = [k for k in a if k.startswith('encoders.') or 'bottleneck' in k]
dec = [k for k in a if k.startswith('decoders.')]
same_enc = all(a[k] == b[k] for k in enc)
moved_dec = any(a[k] != b[k] for k in dec)
print(len(enc), len(dec), same_enc, moved_dec)
sys.exit(not (enc and dec and same_enc and moved_dec))
EOF
check "decoder-only: encoders and codebooks unchanged, decoders moved" \
    'python3 "$T/same.py" "$T/vq/vqvae.safetensors" "$T/vqd/vqvae.safetensors" >&2'
check "vqvae --init with --resume: exit 64" \
    '[ $(code vqvae "${VQ[@]}" --out "$T/vqd" --init "$T/vq/vqvae.safetensors" --resume) = 64 ]'

echo "-- the trained VQ-VAE in jukebox-encoder / jukebox-decoder"
rec_err() {   # relative squared error of decode(encode(a.wav)) against a.wav
    "$B/jukebox-encoder" -q -m "$1" "$T/data/audio/a.wav" > "$T/a.jbc" &&
    "$B/jukebox-decoder" -q -m "$1" -i "$T/a.jbc" -o "$T/a_dec.wav" &&
    python3 - "$T/data/audio/a.wav" "$T/a_dec.wav" <<'EOF'
import sys, wave, struct
def rd(p):
    w = wave.open(p); n = w.getnframes(); d = w.readframes(n)
    return struct.unpack('<%dh' % n, d), w.getframerate()
x, rx = rd(sys.argv[1]); y, ry = rd(sys.argv[2])
assert rx == ry == 44100 and len(x) == len(y), (rx, ry, len(x), len(y))
num = sum((a - b) ** 2 for a, b in zip(x, y)); den = sum(a * a for a in x)
print('%.6f' % (num / den))
EOF
}
e1=$(rec_err "$T/vq/vqvae.safetensors"); r1=$?
e0=$(rec_err "$T/new/runs/vq0/vqvae.safetensors"); r0=$?
echo "    reconstruction error (relative): trained $e1, untrained $e0"
check "encoder and decoder load the trained model; decoded length equals the input's" \
    '[ $r1 = 0 ] && [ $r0 = 0 ]'
check "the trained VQ-VAE reconstructs better than the untrained one" \
    'awk -v a="$e1" -v b="$e0" "BEGIN {exit !(a < b)}"'

# ---- priors -----------------------------------------------------------------------------
echo "-- top prior (level 2, 40 steps) on the VQ-VAE's codes"
PR=(--data "$T/data" --vqvae "$T/vq/vqvae.safetensors" --seed 1 --threads 1)
"$TR" prior "${PR[@]}" --level 2 --out "$T/top" --steps 40 -q; rc=$?
check "prior level 2: exit 0, model file and codes cache written" \
    '[ $rc = 0 ] && [ -s "$T/top/prior_level_2.safetensors" ] && [ -s "$T/top/codes.safetensors" ]'
check "prior level 2: loss goes down (last 5 steps < 0.8 x first 5)" \
    'loss_down "$T/top/metrics.csv" 0.8'
check "prior level 2: vocabularies from the labels in the model file's metadata" \
    'python3 - "$T/top/prior_level_2.safetensors" <<EOF
import sys, json, struct
f = open(sys.argv[1], "rb"); n = struct.unpack("<Q", f.read(8))[0]
m = json.loads(f.read(n))["__metadata__"]
a = json.loads(m["artists"]); g = json.loads(m["genres"]); h = json.loads(m["hparams"])
assert a == {"sine_duo": 1, "square_one": 2}, a
assert g == {"ambient": 1, "chip": 2, "tune": 3}, g
assert h["y_bins"] == [4, 3] and h["labels"] and h["level"] == 2, h["y_bins"]
EOF'
"$B/jukebox-job" sample -q --id t1 --artist "Square One" --genre chip_tune --seconds 0.2 \
    --total-seconds 2 --vqvae "$T/vq/vqvae.safetensors" --check "$T/top/prior_level_2.safetensors" |
    "$B/jukebox-prior-top" -q -t 1 -m "$T/top/prior_level_2.safetensors" > "$T/top.jbc"; rc=$?
check "jukebox-prior-top samples top codes with the trained prior" \
    '[ $rc = 0 ] && "$B/jukebox-codes" info "$T/top.jbc" | grep -q "^level 2: 6[0-9] codes"'

echo "-- upsampler (level 1, 20 steps) conditioned on the top codes"
"$TR" prior "${PR[@]}" --level 1 --out "$T/up1" --steps 20 -q; rc=$?
check "prior level 1: exit 0" '[ $rc = 0 ] && [ -s "$T/up1/prior_level_1.safetensors" ]'
check "prior level 1: loss goes down (last 5 steps < 0.9 x first 5)" \
    'loss_down "$T/up1/metrics.csv" 0.9'
"$B/jukebox-upsampler-mid" -q -t 1 -m "$T/up1/prior_level_1.safetensors" < "$T/top.jbc" > "$T/mid.jbc"; rc=$?
check "jukebox-upsampler-mid upsamples with the trained level-1 prior" \
    '[ $rc = 0 ] && "$B/jukebox-codes" info "$T/mid.jbc" | grep -q "^level 1: 2[0-9][0-9] codes"'
"$TR" prior "${PR[@]}" --level 1 --out "$T/init" --init "$T/up1/prior_level_1.safetensors" \
    --steps 3 -q; rc=$?
check "prior --init MODEL continues from a model file" '[ $rc = 0 ] && [ -s "$T/init/metrics.csv" ]'

# ---- lyrics priors ----------------------------------------------------------------------
# A data set with sung lyrics made by jukebox-mkdataset (3 songs of 3 s), the VQ-VAE above.
echo "-- lyrics top priors (toy_lyrics: joint sequence; toy_lyrics_5b: lyrics encoder)"
# col_down CSV COL FRAC: mean of column COL over the last 5 rows < FRAC x the first 5
col_down() {
    awk -F, -v c="$2" -v f="$3" 'NR > 1 {l[NR - 1] = $c; n = NR - 1}
        END {if (n < 10) exit 1; for (i = 1; i <= 5; i++) {a += l[i]; b += l[n - 5 + i]}
             printf "    column %d: first 5 steps %.3f, last 5 %.3f\n", c, a / 5, b / 5 > "/dev/stderr";
             exit !(b < f * a)}' "$1"
}
# loss_formula CSV P G FRAC: every row finite and loss = (FRAC·P·prime + G·gen) / (P + G),
# the reference's z_forward (prior.py), from the CSV's own gen_loss and prime_loss columns
loss_formula() {
    awk -F, -v P="$2" -v G="$3" -v f="$4" 'NR == 1 {ok = ($2 == "loss" && $3 == "gen_loss" &&
        $4 == "prime_loss"); next}
        {for (i = 2; i <= 6; i++) if ($i !~ /^-?[0-9.]+(e[-+]?[0-9]+)?$/) ok = 0
         want = (f * P * $4 + G * $3) / (P + G); d = $2 - want; if (d < 0) d = -d
         if (d > 1e-5 * (1 + want)) ok = 0; n++}
        END {exit !(ok && n > 0)}' "$1"
}
SF2=/usr/share/sounds/sf2/FluidR3_GM.sf2
if [ -x "$B/jukebox-mkdataset" ] && [ -e "$SF2" ] && command -v espeak-ng >/dev/null; then
    "$B/jukebox-mkdataset" -q --out "$T/sung" --songs 3 --seconds 3 --seed 3 --threads 1; rc=$?
    check "jukebox-mkdataset: 3 songs with lyrics" \
        '[ $rc = 0 ] && [ $(grep -c "\"lyrics\":\"[a-z]" "$T/sung/labels.jsonl") = 3 ]'
    LY=(--level 2 --data "$T/sung" --vqvae "$T/vq/vqvae.safetensors" --seed 1 --threads 1 -q)
    for kind in toy_lyrics toy_lyrics_5b; do
        "$TR" prior "${LY[@]}" --preset $kind --out "$T/$kind" --steps 60; rc=$?
        M="$T/$kind/prior_level_2.safetensors"
        check "$kind: exit 0, model file written" '[ $rc = 0 ] && [ -s "$M" ]'
        check "$kind: metrics finite; loss = (0.4·16·prime_loss + 32·gen_loss) / 48 in every row" \
            'loss_formula "$T/$kind/metrics.csv" 16 32 0.4'
        check "$kind: loss goes down (last 5 steps < 0.8 x first 5)" \
            'col_down "$T/$kind/metrics.csv" 2 0.8'
        check "$kind: lyrics loss (prime_loss) goes down (last 5 < 0.95 x first 5)" \
            'col_down "$T/$kind/metrics.csv" 4 0.95'
        check "$kind: hparams, text version and vocabularies keyed as the labeller looks up" \
            'python3 - "$M" "$T/sung/labels.jsonl" $kind <<EOF
import sys, json, struct, re
f = open(sys.argv[1], "rb"); n = struct.unpack("<Q", f.read(8))[0]
m = json.loads(f.read(n))["__metadata__"]; h = json.loads(m["hparams"])
v3 = sys.argv[3] == "toy_lyrics"
assert h["use_tokens"] and h["n_tokens"] == 16 and h["labels"] and h["prime_loss_fraction"] == 0.4
assert h["single_enc_dec"] == v3 and h["labels_v3"] == v3 and h["n_vocab"] == (79 if v3 else 80), h
labs = [json.loads(l) for l in open(sys.argv[2])]
# labels.py / artist_genre_processor.py: v3 keys are lower(); v2 keys normalised, genre words
norm = lambda s: re.sub("_+", "_", re.sub("[^a-z0-9]", "_", s.lower())).strip("_")
key = (lambda s: s.lower()) if v3 else norm
arts = sorted({key(o["artist"]) for o in labs})
gens = sorted({key(o["genre"]) for o in labs}) if v3 else sorted({w for o in labs for w in norm(o["genre"]).split("_")})
assert json.loads(m["artists"]) == {a: i + 1 for i, a in enumerate(arts)}, m["artists"]
assert json.loads(m["genres"]) == {g: i + 1 for i, g in enumerate(gens)}, m["genres"]
EOF'
        "$B/jukebox-job" sample -q --id ly --artist "Neon Drift" --genre electronic \
            --lyrics "sing code glow wave my soul" --seconds 0.2 --total-seconds 3 \
            --vqvae "$T/vq/vqvae.safetensors" --check "$M" |
            "$B/jukebox-prior-top" -q -t 1 -m "$M" > "$T/$kind.jbc"; rc=$?
        check "$kind: jukebox-prior-top samples a job with --lyrics" \
            '[ $rc = 0 ] && "$B/jukebox-codes" info "$T/$kind.jbc" | grep -q "^level 2: 6[0-9] codes"'
    done
    # the whole pipeline: the lyrics top prior, the upsamplers trained above, the decoder
    "$TR" prior "${PR[@]}" --level 0 --out "$T/up0" --steps 5 -q
    M="$T/toy_lyrics/prior_level_2.safetensors"
    "$B/jukebox-job" sample -q --id lyp --artist "Neon Drift" --genre electronic \
        --lyrics "Sing, code & glow!" --seconds 0.2 --total-seconds 3 \
        --vqvae "$T/vq/vqvae.safetensors" |
        "$B/jukebox-prior-top" -q -t 1 -m "$M" |
        "$B/jukebox-upsampler-mid" -q -t 1 -m "$T/up1/prior_level_1.safetensors" |
        "$B/jukebox-upsampler-bottom" -q -t 1 -m "$T/up0/prior_level_0.safetensors" |
        "$B/jukebox-decoder" -q -t 1 -m "$T/vq/vqvae.safetensors" --outdir "$T/lypipe"
    st="${PIPESTATUS[*]}"
    check "toy_lyrics through the pipeline with --lyrics: every process exits 0 ($st)" \
        '[ "$st" = "0 0 0 0 0" ] && [ -s "$T/lypipe/lyp/level_0/sample_0.wav" ]'
    check "toy_lyrics: lyric alignment picture; the lyrics cleaned by the v3 text processor" \
        '[ -s "$T/lypipe/lyp/align_0.png" ] && grep -q "\"lyrics\": *\"Sing, code  glow!\"" "$T/lypipe/lyp/labels.json" &&
         grep -q "\"lyrics_dropped\": *\"&\"" "$T/lypipe/lyp/labels.json"'
    "$TR" prior "${LY[@]}" --preset toy_lyrics_5b --out "$T/lra" --steps 12
    "$TR" prior "${LY[@]}" --preset toy_lyrics_5b --out "$T/lrb" --steps 7
    "$TR" prior "${LY[@]}" --out "$T/lrb" --steps 12 --resume
    check "toy_lyrics_5b: resumed 7 + 5 steps: model, optimiser state, metrics identical to 12" \
        'cmp -s "$T/lra/prior_level_2.safetensors" "$T/lrb/prior_level_2.safetensors" &&
         cmp -s "$T/lra/optim.safetensors" "$T/lrb/optim.safetensors" &&
         cmp -s "$T/lra/metrics.csv" "$T/lrb/metrics.csv"'
    "$TR" prior "${LY[@]}" --out "$T/lyinit" --init "$T/toy_lyrics/prior_level_2.safetensors" \
        --steps 3; rc=$?
    check "--init with a trained lyrics prior continues it" \
        '[ $rc = 0 ] && loss_formula "$T/lyinit/metrics.csv" 16 32 0.4'
    check "--preset toy_lyrics below the top level: exit 64" \
        '[ $(code prior --level 1 --data "$T/sung" --vqvae "$T/vq/vqvae.safetensors" \
              --preset toy_lyrics --out "$T/x") = 64 ] &&
         grep -q "top priors" "$T/err"'
else
    bad "lyrics: missing jukebox-mkdataset, $SF2 or espeak-ng (scripts/deps.sh test)"
fi

# ---- resume -----------------------------------------------------------------------------
echo "-- resume equals an uninterrupted run"
RV=(--data "$T/data" --batch 2 --sample-length 2048 --seed 5 --threads 1 -q)
"$TR" vqvae "${RV[@]}" --out "$T/ra" --steps 10 --save-every 5
"$TR" vqvae "${RV[@]}" --out "$T/rb" --steps 5
"$TR" vqvae --data "$T/data" --batch 2 --seed 5 --threads 1 -q --out "$T/rb" --steps 10 --resume
check "vqvae: resumed 5 + 5 steps: model file identical to 10 steps" \
    'cmp -s "$T/ra/vqvae.safetensors" "$T/rb/vqvae.safetensors"'
check "vqvae: optimiser state and metrics.csv identical too" \
    'cmp -s "$T/ra/optim.safetensors" "$T/rb/optim.safetensors" && cmp -s "$T/ra/metrics.csv" "$T/rb/metrics.csv"'
RP=(--data "$T/data" --vqvae "$T/vq/vqvae.safetensors" --level 1 --seed 5 --threads 1 -q)
"$TR" prior "${RP[@]}" --out "$T/pa" --steps 12
"$TR" prior "${RP[@]}" --out "$T/pb" --steps 7
"$TR" prior "${RP[@]}" --out "$T/pb" --steps 12 --resume
check "prior: resumed 7 + 5 steps: model file and optimiser state identical to 12 steps" \
    'cmp -s "$T/pa/prior_level_1.safetensors" "$T/pb/prior_level_1.safetensors" &&
     cmp -s "$T/pa/optim.safetensors" "$T/pb/optim.safetensors"'
"$TR" vqvae --data "$T/data" --batch 3 --seed 5 -q --out "$T/rb" --steps 12 --resume 2> "$T/err"; rc=$?
check "resume with another --batch: exit 64 naming the saved settings" \
    '[ $rc = 64 ] && grep -q "saved with --seed 5 --batch 2" "$T/err"'

# ---- errors -----------------------------------------------------------------------------
echo "-- bad options and data"
check "--help: exit 0, every option listed" \
    '"$TR" --help | grep -q -- "--sample-length" && "$TR" --help | grep -q -- "--resume"'
check "no command: exit 64" '[ $(code) = 64 ]'
check "unknown command: exit 64" '[ $(code remix) = 64 ] && grep -q "unknown command" "$T/err"'
check "missing --data: exit 64" '[ $(code vqvae --out "$T/x") = 64 ] && grep -q -- "--data" "$T/err"'
check "bad --steps: exit 64" '[ $(code vqvae --data "$T/data" --out "$T/x" --steps -3) = 64 ]'
check "unknown option: exit 64" '[ $(code vqvae --data "$T/data" --out "$T/x" --bogus) = 64 ]'
check "unknown preset: exit 64" '[ $(code vqvae --data "$T/data" --out "$T/x" --preset huge) = 64 ]'
check "prior without --level: exit 64" \
    '[ $(code prior --data "$T/data" --out "$T/x" --vqvae "$T/vq/vqvae.safetensors") = 64 ]'
check "missing data directory: exit 66, named" \
    '[ $(code vqvae --data "$T/nope" --out "$T/x") = 66 ] && grep -q "$T/nope" "$T/err"'
mkdir -p "$T/empty"
check "no audio files: exit 66" '[ $(code vqvae --data "$T/empty" --out "$T/x") = 66 ]'
mkdir -p "$T/badlab/audio" && cp "$T/data/audio/a.wav" "$T/badlab/audio/"
echo '{"file":"audio/zzz.wav","artist":"x"}' > "$T/badlab/labels.jsonl"
check "labels line naming no audio file: exit 65, file and line named" \
    '[ $(code vqvae --data "$T/badlab" --out "$T/x") = 65 ] && grep -q "labels.jsonl:1" "$T/err"'
echo 'not json' > "$T/badlab/labels.jsonl"
check "labels line not JSON: exit 65" '[ $(code vqvae --data "$T/badlab" --out "$T/x") = 65 ]'
check "--resume without a checkpoint: exit 66" \
    '[ $(code vqvae --data "$T/data" --out "$T/none" --resume) = 66 ]'
check "missing --vqvae file: exit 66" \
    '[ $(code prior --level 2 --data "$T/data" --out "$T/x" --vqvae "$T/none.safetensors") = 66 ]'
check "--init with a labelled prior without vocabularies: exit 65, named" \
    '[ $(code prior --level 2 --data "$T/data" --out "$T/lyr" --vqvae "$T/vq/vqvae.safetensors" \
         --init tests/golden/train_prior_lyrics_tiny/model.safetensors) = 65 ] &&
     grep -q "artists" "$T/err"'
check "--preset toy_lyrics for a VQ-VAE: exit 64" \
    '[ $(code vqvae --data "$T/data" --out "$T/x" --preset toy_lyrics) = 64 ]'
check "--init with a prior of another level: exit 64" \
    '[ $(code prior --level 2 --data "$T/data" --out "$T/x" --vqvae "$T/vq/vqvae.safetensors" \
         --init "$T/up1/prior_level_1.safetensors") = 64 ]'
check "--level above the VQ-VAE's levels: exit 64" \
    '[ $(code prior --level 3 --data "$T/data" --out "$T/x" --vqvae "$T/vq/vqvae.safetensors") = 64 ]'
check "sample length not a multiple of the top hop: exit 64" \
    '[ $(code vqvae --data "$T/data" --out "$T/x" --sample-length 2000) = 64 ]'
check_finish test_train
