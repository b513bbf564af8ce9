#!/bin/bash
# test_eval_music.sh: jukebox-eval music and lyrics end to end on inputs whose answer is known.
# music: a directory of sox-made songs (a sine on A4, one 50 cents off, white noise) with a
# labels file: the shares of pitched and in-tune frames, the note changes of a scale (7) and
# of held sines (0), and an 11025 Hz sine under noise as a line. lyrics: run directories with hand-made index.html alignments (diagonal: 1,
# reversed: -1, a sample without alignment) and errors (no page: 66, a broken alignment: 65).
# align: a lyrics top prior's every encoder-attention head on two sox-made songs with lyrics
# (one row per such layer and head, counted from the model file's tensors by python3; the
# best row is the highest mean) and errors (a prior without lyrics: 64, no data: 66).
set -u
BUILD=${BUILD:-build}
E=$BUILD/bin/jukebox-eval
pass=0; fail=0
ok() { echo "  ok   $1"; pass=$((pass + 1)); }
bad() { echo "  FAIL $1"; fail=$((fail + 1)); }
check() { local name=$1; shift; if eval "$@"; then ok "$name"; else bad "$name"; fi; }
finish() { echo "test_eval_music: $pass passed, $fail failed"; [ "$fail" = 0 ]; exit; }
[ -x "$E" ] || { bad "missing $E (make)"; finish; }
for tool in sox python3; do
    command -v "$tool" >/dev/null || { bad "missing tool $tool (scripts/deps.sh test)"; finish; }
done
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

mk() {   # dir name sox-synth-args...
    local d=$1 n=$2; shift 2
    mkdir -p "$T/$d/audio"
    sox -n -r 44100 -c 1 -b 16 "$T/$d/audio/$n.wav" "$@" 2>/dev/null
    printf '{"file":"audio/%s.wav","genre":"x","artist":"y"}\n' "$n" >> "$T/$d/labels.jsonl"
}
mk tuned a4 synth 3 sine 440 vol 0.5
mk tuned c4 synth 3 sine 261.6256 vol 0.5
mk off q1 synth 3 sine 452.893 vol 0.5        # A4 + 50 cents
mk noise n1 synth 3 whitenoise vol 0.5
mk line l1 synth 3 whitenoise vol 0.3 synth 3 sine mix 11025 vol 0.5
scale=()   # C major, C4 to C5, a quarter second a note: 7 moves in 2 s
for f in 261.63 293.66 329.63 349.23 392.00 440 493.88 523.25; do
    scale+=(${scale:+:} synth 0.25 sine $f vol 0.5)
done
mk tune s1 "${scale[@]}"
"$E" music --test "$T/tuned" --test "$T/off" --test "$T/noise" --test "$T/line" \
    --test "$T/tune" --json "$T/m.json" > "$T/m.txt" 2>&1
rc=$?
check "music exits 0 (rc $rc)" "[ $rc = 0 ]"
read -r pt it po io pn l4n l4l < <(python3 -c "import json, sys; t = json.load(open(sys.argv[1]))['tests']
print(t[0]['pitched'], t[0]['in_tune'], t[1]['pitched'], t[1]['in_tune'], t[2]['pitched'],
      t[2]['line_sr4_db'], t[3]['line_sr4_db'])" "$T/m.json" 2>/dev/null)
check "sines on A4 and C4: pitched ($pt) and in tune ($it)" \
    "awk -v p='$pt' -v i='$it' 'BEGIN { exit !(p > 0.95 && i > 0.95) }'"
check "a sine 50 cents off: pitched ($po), out of tune ($io)" \
    "awk -v p='$po' -v i='$io' 'BEGIN { exit !(p > 0.95 && i < 0.05) }'"
check "white noise: no clear pitch ($pn)" "awk -v p='$pn' 'BEGIN { exit !(p < 0.05) }'"
check "an 11025 Hz sine under noise is a line ($l4l dB), noise is not ($l4n dB)" \
    "awk -v a='$l4l' -v b='$l4n' 'BEGIN { exit !(a > 15 && b < 8) }'"
read -r nt nq ns < <(python3 -c "import json, sys; t = json.load(open(sys.argv[1]))['tests']
print(t[0]['note_changes'], t[4]['note_changes'], t[4]['note_changes_per_s'])" "$T/m.json" 2>/dev/null)
check "a scale of 8 notes: 7 note changes ($nq, $ns a second); held sines: none ($nt)" \
    "[ '$nq' = 7 ] && [ '$nt' = 0 ]"
check "the table names every directory" "grep -q '$T/line' '$T/m.txt' && grep -q '$T/tuned' '$T/m.txt'"

# lyrics: pages as jukebox's decoder writes them (docs: common/jb_html.c)
page() {   # dir sample json
    mkdir -p "$T/$1"
    printf '<section><script type="application/json" id="align-%s">%s</script>\n</section>\n' \
        "$2" "$3" >> "$T/$1/index.html"
}
page run1 0 '[[9,1,0,0],[0,9,1,0],[0,0,9,1],[0,0,0,9]]'
page run1 1 '[[0,0,0,9],[0,0,9,0],[0,9,0,0],[9,0,0,0]]'
page run2 0 '[]'
"$E" lyrics --test "$T/run1" --test "$T/run2" --json "$T/l.json" > "$T/l.txt" 2>&1
rc=$?
check "lyrics exits 0 (rc $rc)" "[ $rc = 0 ]"
read -r r0 r1 n mean < <(python3 -c "import json, sys; j = json.load(open(sys.argv[1]))
print(j['samples'][0]['rho'], j['samples'][1]['rho'], j['n'], j['mean_rho'])" "$T/l.json" 2>/dev/null)
check "a diagonal alignment: 1 ($r0); a reversed one: -1 ($r1); 2 samples, mean 0 ($n, $mean)" \
    "awk -v a='$r0' -v b='$r1' -v n='$n' -v m='$mean' 'BEGIN { exit !(a > 0.999 && b < -0.999 && n == 2 && m * m < 1e-12) }'"
read -r s0 f0 l0 ms < <(python3 -c "import json, sys; j = json.load(open(sys.argv[1]))
print(j['samples'][0]['span'], j['samples'][0]['first_char'], j['samples'][0]['last_char'], j['mean_span'])" "$T/l.json" 2>/dev/null)
check "spans: the diagonal attends to characters 0..3 of 4 (span $s0, $f0..$l0), mean span 1 ($ms)" \
    "awk -v s='$s0' -v f='$f0' -v l='$l0' -v m='$ms' 'BEGIN { exit !(s == 1 && f == 0 && l == 3 && m == 1) }'"
check "a sample without alignment is reported" "grep -q 'no alignment' '$T/l.txt'"
"$E" lyrics --test "$T/nosuch" > /dev/null 2>&1
rc=$?
check "a run without index.html exits 66 (rc $rc)" "[ $rc = 66 ]"
page run3 0 '[[1,2],[3]]'
"$E" lyrics --test "$T/run3" > "$T/e.txt" 2>&1
rc=$?
check "frames of different lengths exit 65 and name the frame (rc $rc)" \
    "[ $rc = 65 ] && grep -q 'frame 1' '$T/e.txt'"
"$E" music > /dev/null 2> "$T/u.txt"
rc=$?
check "music without --test exits 64, naming what it needs (rc $rc)" \
    "[ $rc = 64 ] && grep -q 'music: needs --test' '$T/u.txt'"
"$E" music --test "$T" --sr 0 > /dev/null 2> "$T/u.txt"; rc=$?
check "a bad --sr exits 64, naming the option (rc $rc)" "[ $rc = 64 ] && grep -q -- '--sr 0' '$T/u.txt'"
"$E" spectrogram --in "$T/x.wav" -o "$T/x.png" --range 0 > /dev/null 2> "$T/u.txt"; rc=$?
check "a bad --range exits 64, naming the option (rc $rc)" "[ $rc = 64 ] && grep -q -- '--range 0' '$T/u.txt'"

# align: every layer/head of a lyrics top prior on real songs (the golden tiny pipeline's
# models: lyrics encoder, songs up to 1 s; no vocabularies: names give "unknown")
G=tests/golden/pipeline_tiny_lyrics
mkdir -p "$T/al/audio"
for n in s1 s2; do
    sox -n -r 44100 -c 1 -b 16 "$T/al/audio/$n.wav" synth 0.9 sine 330 vol 0.4 synth 0.9 pinknoise mix vol 0.3 2>/dev/null
    printf '{"file":"audio/%s.wav","genre":"x","artist":"y","lyrics":"la la la lo li la"}\n' "$n" >> "$T/al/labels.jsonl"
done
"$E" align --prior $G/prior_level_2.safetensors --vqvae $G/vqvae.safetensors --data "$T/al" \
    --json "$T/a.json" > "$T/a.txt" 2>&1
rc=$?
check "align exits 0 (rc $rc)" "[ $rc = 0 ]"
read -r an asongs aok < <(python3 -c "import json, sys
d = json.load(open(sys.argv[1])); h = d['heads']; b = d['best']
ok = all(-1 <= x['min_rho'] <= x['mean_rho'] <= 1 for x in h)
ok = ok and b['mean_rho'] == max(x['mean_rho'] for x in h)
ok = ok and any((x['layer'], x['head']) == (b['layer'], b['head']) for x in h)
ok = ok and len({(x['layer'], x['head']) for x in h}) == len(h)
print(len(h), d['songs'], int(ok))" "$T/a.json" 2>/dev/null)
# the model's encoder-attention layers (the only ones that see the lyrics), 2 heads each
nk=$(python3 -c "import json, struct, sys
f = open(sys.argv[1], 'rb'); n = struct.unpack('<Q', f.read(8))[0]; h = json.loads(f.read(n))
print(2 * sum(1 for k in h if k.startswith('prior.') and k.endswith('.attn.c_enc_kv.w')))" $G/prior_level_2.safetensors 2>/dev/null)
check "align: one row per encoder-attention layer and head ($an rows, $nk expected), 2 songs ($asongs)" \
    "[ -n '$nk' ] && [ '$an' = '$nk' ] && [ '$asongs' = 2 ]"
check "align: rho within [-1, 1], min <= mean, the best is the highest mean ($aok)" "[ '$aok' = 1 ]"
check "align prints the table and the best head" "grep -q '^best: layer' '$T/a.txt'"
"$E" align --prior tests/golden/pipeline_tiny/prior_level_2.safetensors \
    --vqvae tests/golden/pipeline_tiny/vqvae.safetensors --data "$T/al" > "$T/e2.txt" 2>&1
rc=$?
check "align: a prior without lyrics is refused (rc $rc): $(head -c 120 "$T/e2.txt")" \
    "[ $rc = 64 ] && grep -q 'not a lyrics top prior' '$T/e2.txt'"
"$E" align --prior $G/prior_level_2.safetensors --vqvae $G/vqvae.safetensors --data "$T/nosuch" \
    > /dev/null 2>&1
rc=$?
check "align: a missing data directory exits 66 (rc $rc)" "[ $rc = 66 ]"

finish
