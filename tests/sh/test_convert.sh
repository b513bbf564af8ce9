#!/bin/bash
# test_convert.sh: jukebox-convert and jukebox-inspect as a user runs them.
# Golden checkpoints convert to files whose tensor data are byte-identical to the
# golden model files; bad input gives the documented exit code, a message and no
# file; whole releases convert (or are refused whole).
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
GOLDEN=${GOLDEN:-tests/golden}
CONV=$BUILD/bin/jukebox-convert
INSP=$BUILD/bin/jukebox-inspect
CK=$GOLDEN/checkpoints
IDS=$GOLDEN/labels
. tests/sh/lib/check.sh
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

# Tensor data of a safetensors file: everything after the 8-byte length and the header.
data_of() {
    local n
    n=$(od -An -t u8 -N8 "$1" | tr -d ' ')
    tail -c +$((9 + n)) "$1"
}
same_data() { cmp -s <(data_of "$1") <(data_of "$2"); }
# The tensor table (name dtype shape bytes) jukebox-inspect prints.
table() { "$INSP" "$1" | sed -n '/^tensors:/,/^totals:/p'; }

# 1. every good golden checkpoint, single-file mode
for f in "$CK"/*.pth.tar; do
    b=$(basename "$f")
    case "$b" in *truncated*|*corrupt*) continue ;; esac
    case_name=$(sed -e 's/\.zip\.pth\.tar$//' -e 's/\.pth\.tar$//' <<<"$b")
    out=$T/$b.safetensors
    "$CONV" -q "$f" -o "$out" --ids "$IDS" 2>"$T/err"; rc=$?
    check_status "$b: converts (exit $rc: $(tail -1 "$T/err"))" $((rc != 0))
    [ -f "$out" ] || continue
    same_data "$out" "$GOLDEN/$case_name/model.safetensors"
    check_status "$b: tensor data byte-identical to $case_name/model.safetensors" $?
    cmp -s <(table "$out") <(table "$GOLDEN/$case_name/model.safetensors")
    check_status "$b: same names, dtypes, shapes, bytes" $?
    "$INSP" --no-tensors "$out" >"$T/insp"; rc=$?
    check_status "$b: inspect says the tensors match the hparams (exit $rc)" $rc
    grep -q '^memory' "$T/insp"; check_status "$b: inspect gives a memory estimate" $?
done
# fp16 stays fp16
"$INSP" --no-tensors "$T/prior_top_5b_fp16w.pth.tar.safetensors" | grep -q '^  F16 '
check_status "prior_top_5b_fp16w: F16 tensors kept" $?
# vocabularies of a labelled prior: {"name": id} with shared ids
hdr() { head -c $((8 + $(od -An -t u8 -N8 "$1" | tr -d ' '))) "$1" | tail -c +9; }
hdr "$T/prior_top_5b_lyrics_tiny.pth.tar.safetensors" | grep -q 'the_beatles\\":2,\\"beatles\\":2'
check_status "5b_lyrics: artists vocabulary from v2_artist_ids.txt (shared id)" $?
hdr "$T/prior_top_1b_lyrics_tiny.pth.tar.safetensors" | grep -q 'the beatles\\":2'
check_status "1b_lyrics: artists vocabulary from v3_artist_ids.txt" $?
"$INSP" --no-tensors "$T/prior_top_5b_lyrics_tiny.pth.tar.safetensors" | \
    grep -q "artists  $(grep -c ';' "$IDS/v2_artist_ids.txt") names"
check_status "inspect counts the vocabulary" $?
# no vocabulary without --ids, with a warning
"$CONV" "$CK/prior_top_5b_tiny.pth.tar" -o "$T/noids.safetensors" 2>"$T/err"
check_status "no --ids: converts" $?
grep -q 'WARN.*no --ids' "$T/err"; check_status "no --ids: warns" $?
! hdr "$T/noids.safetensors" | grep -q '"artists"'; check_status "no --ids: no vocabulary" $?

# 2. damaged checkpoints: 65, a message naming the file, no output, no temporary
for b in vqvae_tiny.truncated.pth.tar vqvae_tiny.corrupt.pth.tar \
         vqvae_tiny.zip.truncated.pth.tar vqvae_tiny.zip.corrupt.pth.tar; do
    mkdir -p "$T/bad"
    "$CONV" "$CK/$b" -o "$T/bad/out.safetensors" 2>"$T/err"; rc=$?
    check_status "$b: exit 65 (got $rc)" $((rc != 65))
    grep -q "ERROR.*$b" "$T/err"; check_status "$b: error names the file: $(tail -1 "$T/err")" $?
    [ -z "$(ls -A "$T/bad")" ]; check_status "$b: nothing written" $?
done

# 3. a checkpoint that does not match its hps: every problem listed by name, 65, no file
M=tests/fixtures/torch/vqvae_mismatch.zip.pth.tar
"$CONV" "$M" -o "$T/bad/m.safetensors" 2>"$T/err"; rc=$?
check_status "mismatch: exit 65 (got $rc)" $((rc != 65))
grep -q "missing tensor 'decoders.0.out.bias'" "$T/err"; check_status "mismatch: missing named" $?
grep -q "extra tensor 'extra.weight'" "$T/err"; check_status "mismatch: extra named" $?
grep -q "tensor 'bottleneck.level_blocks.1.k': shape \[16, 32\], expected \[32, 16\]" "$T/err"
check_status "mismatch: wrong shape named" $?
grep -q "tensor 'bottleneck.level_blocks.2.k': dtype I64, expected F32 or F16 or BF16 or F64" "$T/err"
check_status "mismatch: wrong dtype named" $?
! grep -q "bottleneck.level_blocks.0.k" "$T/err"; check_status "mismatch: an F16 float tensor is fine" $?
grep -q "1 missing, 1 extra, 2 of wrong shape or dtype" "$T/err"; check_status "mismatch: counted" $?
[ -z "$(ls -A "$T/bad")" ]; check_status "mismatch: nothing written" $?
# --preset wins over the checkpoint's hps: a tiny VQ-VAE is not the released one
"$CONV" "$CK/vqvae_tiny.pth.tar" -o "$T/bad/p.safetensors" --preset vqvae 2>"$T/err"; rc=$?
check_status "--preset vqvae on a tiny VQ-VAE: exit 65 (got $rc)" $((rc != 65))
grep -q "hyper-parameters (vqvae)" "$T/err"; check_status "--preset named in the report" $?
# no hps and no preset: usage
"$CONV" tests/fixtures/torch/bare_state_dict.zip.pth.tar -o "$T/bad/b.safetensors" 2>"$T/err"
rc=$?; check_status "no hps, no --preset: exit 64 (got $rc)" $((rc != 64))
grep -q "no 'hps' entry: name a --preset" "$T/err"; check_status "no hps: says so" $?
[ -z "$(ls -A "$T/bad")" ]; check_status "refusals: nothing written" $?

# 4. usage and missing files
"$CONV" >/dev/null 2>&1; check_status "no arguments: 64" $(( $? != 64 ))
"$CONV" --bogus x >/dev/null 2>&1; check_status "unknown option: 64" $(( $? != 64 ))
"$CONV" "$CK/vqvae_tiny.pth.tar" -o "$T/x" --preset nope >/dev/null 2>&1
check_status "unknown preset: 64" $(( $? != 64 ))
"$CONV" "$T/none.pth.tar" -o "$T/x" >/dev/null 2>&1; check_status "missing checkpoint: 66" $(( $? != 66 ))
"$CONV" --model 7b --in "$T" --ids "$IDS" --out "$T" >/dev/null 2>&1
check_status "--model 7b: 64" $(( $? != 64 ))
"$CONV" --model 5b --in "$T" --out "$T" >/dev/null 2>&1; check_status "release without --ids: 64" $(( $? != 64 ))
"$INSP" >/dev/null 2>&1; check_status "inspect without a file: 64" $(( $? != 64 ))
"$INSP" "$T/none.safetensors" >/dev/null 2>&1; check_status "inspect missing file: 66" $(( $? != 66 ))
"$INSP" "$CK/vqvae_tiny.pth.tar" >/dev/null 2>&1; check_status "inspect a non-model file: 65" $(( $? != 65 ))
# A trained VQ-VAE keeps its codebook EMA state for --resume (train.md): not "extra"
"$INSP" --no-tensors models/default/vqvae.safetensors > "$T/insp_def" 2>&1; rc=$?
check_status "inspect the bundled VQ-VAE (EMA state kept): exit 0, listed as training state (got $rc)" \
    $(( rc != 0 || $(grep -c 'training state' "$T/insp_def") != 6 ))

# 5. whole releases from the tiny checkpoints (their own hps)
mkrel() {   # dir, top checkpoint
    mkdir -p "$1"
    ln -s "$PWD/$CK/vqvae_tiny.pth.tar" "$1/vqvae.pth.tar"
    ln -s "$PWD/$CK/upsampler_bottom_tiny.zip.pth.tar" "$1/prior_level_0.pth.tar"
    ln -s "$PWD/$CK/upsampler_mid_tiny.pth.tar" "$1/prior_level_1.pth.tar"
    ln -s "$PWD/$CK/$2" "$1/prior_level_2.pth.tar"
}
mkrel "$T/rel5b" prior_top_5b_tiny.zip.pth.tar
# --out and its parents are made (README: --out models/5b_lyrics on a fresh checkout)
"$CONV" --model 5b --in "$T/rel5b" --ids "$IDS" --out "$T/out5b/sub" --hps checkpoint 2>"$T/err"
rc=$?; check_status "release 5b: exit 0 into a directory it makes (got $rc: $(tail -1 "$T/err"))" $rc
mv "$T/out5b/sub"/* "$T/out5b/" && rmdir "$T/out5b/sub"
for pair in vqvae:vqvae_tiny prior_level_0:upsampler_bottom_tiny \
            prior_level_1:upsampler_mid_tiny prior_level_2:prior_top_5b_tiny; do
    s=${pair%%:*}; c=${pair#*:}
    same_data "$T/out5b/$s.safetensors" "$GOLDEN/$c/model.safetensors"
    check_status "release 5b: $s.safetensors data identical to $c" $?
done
grep -q 'writing: .*(100%)' "$T/err"; check_status "release: progress shown" $?
grep -q 'wrote .*prior_level_2.safetensors: 80 tensors, [0-9]* bytes' "$T/err"
check_status "release: bytes written reported" $?
mkrel "$T/rel1b" prior_top_1b_lyrics_tiny.pth.tar
mkdir -p "$T/out1b"
"$CONV" -q --model 1b_lyrics --in "$T/rel1b" --ids "$IDS" --out "$T/out1b" --hps checkpoint
check_status "release 1b_lyrics: exit 0" $?
hdr "$T/out1b/prior_level_2.safetensors" | grep -q 'the beatles'
check_status "release 1b_lyrics: top prior has v3 vocabularies" $?
hdr "$T/out1b/prior_level_1.safetensors" | grep -q 'the_beatles'
check_status "release 1b_lyrics: upsampler has v2 vocabularies" $?
# with the presets (the default), tiny checkpoints do not fit: refused whole
mkdir -p "$T/outp"
"$CONV" --model 5b --in "$T/rel5b" --ids "$IDS" --out "$T/outp" 2>"$T/err"; rc=$?
check_status "release with presets on tiny checkpoints: exit 65 (got $rc)" $((rc != 65))
[ -z "$(ls -A "$T/outp")" ]; check_status "refused release: no file written" $?
# a missing stage: 66, nothing written
rm "$T/rel5b/prior_level_1.pth.tar"
"$CONV" --model 5b --in "$T/rel5b" --ids "$IDS" --out "$T/outp" --hps checkpoint 2>/dev/null
rc=$?; check_status "release missing prior_level_1: exit 66 (got $rc)" $((rc != 66))
[ -z "$(ls -A "$T/outp")" ]; check_status "incomplete release: no file written" $?

check_summary test_convert.sh
