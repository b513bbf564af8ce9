#!/bin/bash
# test_eval_music.sh: jukebox-eval music and lyrics end to end on inputs whose answer is known.
# music: a directory of sox-made songs (a sine on A4, one 50 cents off, white noise) with a
# labels file: the shares of pitched and in-tune frames, and an 11025 Hz sine under noise as
# a line. lyrics: run directories with hand-made index.html alignments (diagonal: 1,
# reversed: -1, a sample without alignment) and errors (no page: 66, a broken alignment: 65).
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
"$E" music --test "$T/tuned" --test "$T/off" --test "$T/noise" --test "$T/line" \
    --json "$T/m.json" > "$T/m.txt" 2>&1
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
check "a sample without alignment is reported" "grep -q 'no alignment' '$T/l.txt'"
"$E" lyrics --test "$T/nosuch" > /dev/null 2>&1
rc=$?
check "a run without index.html exits 66 (rc $rc)" "[ $rc = 66 ]"
page run3 0 '[[1,2],[3]]'
"$E" lyrics --test "$T/run3" > "$T/e.txt" 2>&1
rc=$?
check "frames of different lengths exit 65 and name the frame (rc $rc)" \
    "[ $rc = 65 ] && grep -q 'frame 1' '$T/e.txt'"
"$E" music > /dev/null 2>&1
rc=$?
check "music without --test exits 64 (rc $rc)" "[ $rc = 64 ]"
finish
