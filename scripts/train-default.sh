#!/bin/bash
# train-default.sh: reproduces models/default (docs/default_model.md) from scratch:
# the synthetic data set (jukebox-mkdataset) split into training and held-out songs, the
# VQ-VAE, the top prior (artist, genre and timing conditioning), the middle and bottom
# upsamplers, then the evaluation (jukebox-eval) and a spectrogram of a generated song.
#
#   scripts/train-default.sh [STEP...]     STEP: data vqvae priors install eval (the default,
#                                          in that order); priors = top, mid and bottom at
#                                          the same time, each also a step of its own
#
# Environment: WORK (default data/default-model: data set, runs, evaluation; not committed),
# MODELS (default models/default: where `install` copies the model files), THREADS (2: the
# VQ-VAE and the evaluation), PRIOR_THREADS (1 a prior).
# Every step is deterministic from the seeds below; the training steps resume from their
# checkpoint when run again with more steps (jukebox-train --resume). The default model was
# made with exactly these settings on the shared 2-core machine (docs/default_model.md has
# the times): the three priors were trained at the same time, 1 thread each; their step
# counts are what fitted in the hour (each run was stopped right after that checkpoint,
# which equals a run of that many steps: the learning rate is constant after the warm-up).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-data/default-model}
MODELS=${MODELS:-models/default}
THREADS=${THREADS:-2}
PRIOR_THREADS=${PRIOR_THREADS:-1}
B=build/bin

# ---- settings -----------------------------------------------------------------------------
DATA_SEED=2026      # jukebox-mkdataset --seed
SONGS=160           # 8 genres x 4 artists x 5 songs; song i: genre i % 8, artist (i / 8) % 4
SECONDS_=10         # seconds a song
HELDOUT_FROM=128    # songs 128..159 (the 5th song of every artist) are held out
VQ_STEPS=1800       # VQ-VAE: batch 2 x 8192 samples
TOP_STEPS=6500      # top prior: batch 8 x 256 codes (2.97 s)
MID_STEPS=9500      # upsamplers: batch 16 x 128 codes
BOTTOM_STEPS=8000
TRAIN_SEED=1

mkdir -p "$WORK/hp"
cat > "$WORK/hp/vqvae.json" <<'EOF'
{"levels": 3, "downs_t": [3, 2, 2], "strides_t": [2, 2, 2], "emb_width": 32, "l_bins": 256,
 "width": 32, "depth": 3, "m_conv": 1.0, "dilation_growth_rate": 3, "dilation_cycle": null,
 "hvqvae_multipliers": [2, 1, 1], "sample_length": 8192, "commit": 0.02, "spectral": 0.0,
 "multispectral": 1.0, "loss_fn": "l2", "lr": 0.001, "lr_warmup": 50.0, "bs": 4}
EOF
cat > "$WORK/hp/top.json" <<'EOF'
{"n_ctx": 256, "prior_width": 96, "prior_depth": 4, "heads": 2, "attn_order": 0,
 "blocks": null, "spread": null, "init_scale": 1.0, "m_attn": 0.25, "m_mlp": 1.0,
 "t_bins": 32, "max_bow_genre_size": 1, "lr": 0.001, "lr_warmup": 50.0, "bs": 8}
EOF
cat > "$WORK/hp/up.json" <<'EOF'
{"n_ctx": 128, "prior_width": 64, "prior_depth": 3, "heads": 2, "attn_order": 0,
 "blocks": null, "spread": null, "init_scale": 1.0, "m_attn": 0.25, "m_mlp": 1.0,
 "cond_width": 32, "cond_depth": 2, "cond_dilation_growth_rate": 3,
 "max_bow_genre_size": 1, "lr": 0.001, "lr_warmup": 50.0, "bs": 16}
EOF

resume_flag() { [ -f "$1/optim.safetensors" ] && echo --resume || true; }

step_data() {
    make -s "$B/jukebox-mkdataset"
    [ -f "$WORK/all/labels.jsonl" ] ||
        "$B/jukebox-mkdataset" --out "$WORK/all" --songs $SONGS --seconds $SECONDS_ \
            --seed $DATA_SEED --quiet
    # split by song index (labels.jsonl is in song order): symbolic links to the audio
    for s in train heldout; do rm -rf "$WORK/$s"; mkdir -p "$WORK/$s/audio"; done
    awk -v from=$HELDOUT_FROM -v w="$WORK" '{
        s = (NR - 1 >= from) ? "heldout" : "train"
        print > (w "/" s "/labels.jsonl")
        match($0, /"id":"[^"]*"/); id = substr($0, RSTART + 6, RLENGTH - 7)
        print id, s }' "$WORK/all/labels.jsonl" |
    while read -r id s; do ln -s "../../all/audio/$id.wav" "$WORK/$s/audio/$id.wav"; done
    echo "data: $(ls "$WORK/train/audio" | wc -l) training songs, $(ls "$WORK/heldout/audio" | wc -l) held out"
}

train_vqvae() {
    "$B/jukebox-train" vqvae --data "$WORK/train" --out "$WORK/runs/vq" \
        --hparams "$WORK/hp/vqvae.json" --batch 2 --steps $VQ_STEPS --save-every 100 \
        --log-every 20 --threads "$THREADS" --seed $TRAIN_SEED $(resume_flag "$WORK/runs/vq")
}

train_prior() {   # level run hparams steps
    "$B/jukebox-train" prior --level "$1" --vqvae "$WORK/runs/vq/vqvae.safetensors" \
        --data "$WORK/train" --out "$WORK/runs/$2" --hparams "$WORK/hp/$3" --steps "$4" \
        --save-every 500 --log-every 100 --threads "$PRIOR_THREADS" --seed $TRAIN_SEED \
        $(resume_flag "$WORK/runs/$2")
}

step_install() {
    mkdir -p "$MODELS"
    cp "$WORK/runs/vq/vqvae.safetensors" "$WORK/runs/top/prior_level_2.safetensors" \
       "$WORK/runs/mid/prior_level_1.safetensors" "$WORK/runs/bottom/prior_level_0.safetensors" \
       "$MODELS/"
}

# Generated songs for the genre figure: 2 a genre (the first artist of each genre, one job
# of 2 samples, seed 1), 10 s of a 10 s song, collected with a labels file naming the genre.
GENRES="rock jazz electronic classical reggae bossa folk blues"
# generate EVALDIR NAME PREFIX [job options]: EVALDIR/PREFIX-<genre>/ runs and EVALDIR/NAME/
# (links to their bottom-level songs and a labels file with the genre asked)
generate() {
    local E=$1 G=$1/$2 P=$3; shift 3
    rm -rf "$G"; mkdir -p "$G/audio"; : > "$G/labels.jsonl"
    for g in $GENRES; do
        local artist
        artist=$(awk -v g="$g" '$0 ~ "\"genre\":\"" g "\"" {
            match($0, /"artist":"[^"]*"/); print substr($0, RSTART + 10, RLENGTH - 11); exit }' \
            "$WORK/all/labels.jsonl")
        rm -rf "$E/$P-$g"
        pipelines/jukebox sample --models "$MODELS" --artist "$artist" --genre "$g" \
            --total-seconds $SECONDS_ --seconds $SECONDS_ --samples 2 --seed 1 "$@" \
            --threads "$THREADS" -q -o "$E/$P-$g"
        for k in 0 1; do
            ln -s "../../$P-$g/level_0/sample_$k.wav" "$G/audio/$g-$k.wav"
            printf '{"file":"audio/%s-%d.wav","artist":"%s","genre":"%s"}\n' "$g" $k "$artist" "$g" \
                >> "$G/labels.jsonl"
        done
    done
}
step_eval() {
    make -s "$B/jukebox-eval"
    local E="$WORK/eval" V="$MODELS/vqvae.safetensors"
    mkdir -p "$E"
    "$B/jukebox-eval" vqvae --vqvae "$V" --data "$WORK/heldout" --json "$E/vqvae.json" | tee "$E/vqvae.txt"
    local runs=(bottom mid top)
    for L in 2 1 0; do   # the training codes from jukebox-train's cache when it is there
        local c="$WORK/runs/${runs[$L]}/codes.safetensors" tc=()
        [ -f "$c" ] && tc=(--train-codes "$c")
        "$B/jukebox-eval" prior --prior "$MODELS/prior_level_$L.safetensors" --vqvae "$V" \
            --train "$WORK/train" "${tc[@]}" --data "$WORK/heldout" --json "$E/prior_$L.json" |
            tee "$E/prior_$L.txt"
    done
    generate "$E" generated sample        # the default temperature (0.99)
    generate "$E" generated_t0.8 sample-t0.8 --temp 0.8
    # held-out songs 128..135 (one a genre) through the VQ-VAE alone (level 0)
    local R="$E/recon0"
    rm -rf "$R"; mkdir -p "$R/audio"; : > "$R/labels.jsonl"
    for i in $(seq $HELDOUT_FROM $((HELDOUT_FROM + 7))); do
        local id; id=$(printf 'song%05d' "$i")
        "$B/jukebox-encoder" -q -m "$V" -l 0 "$WORK/all/audio/$id.wav" |
            "$B/jukebox-decoder" -q -m "$V" -o "$R/audio/$id.wav"
        sed -n "$((i + 1))p" "$WORK/all/labels.jsonl" >> "$R/labels.jsonl"
    done
    "$B/jukebox-eval" genre --train "$WORK/train" --test "$WORK/heldout" --test "$R" \
        --test "$E/generated" --test "$E/generated_t0.8" --json "$E/genre.json" | tee "$E/genre.txt"
    "$B/jukebox-eval" spectrogram --in "$E/sample-jazz/level_0/sample_0.wav" \
        --out "$E/spectrogram-jazz.png"
}

steps=${*:-data vqvae priors install eval}
make -s "$B/jukebox-train" "$B/jukebox-eval" "$B/jukebox-mkdataset" all
for s in $steps; do
    case $s in
        data) step_data ;;
        vqvae) train_vqvae ;;
        priors)
            train_prior 2 top top.json $TOP_STEPS > "$WORK/top.log" 2>&1 & p2=$!
            train_prior 1 mid up.json $MID_STEPS > "$WORK/mid.log" 2>&1 & p1=$!
            train_prior 0 bottom up.json $BOTTOM_STEPS > "$WORK/bottom.log" 2>&1 & p0=$!
            wait $p2 && wait $p1 && wait $p0 ||
                { echo "train-default.sh: a prior failed (see $WORK/*.log)" >&2; exit 70; } ;;
        top) train_prior 2 top top.json $TOP_STEPS ;;
        mid) train_prior 1 mid up.json $MID_STEPS ;;
        bottom) train_prior 0 bottom up.json $BOTTOM_STEPS ;;
        install) step_install ;;
        eval) step_eval ;;
        *) echo "train-default.sh: unknown step '$s'" >&2; exit 64 ;;
    esac
done
