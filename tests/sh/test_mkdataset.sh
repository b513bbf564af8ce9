#!/bin/bash
# test_mkdataset.sh: jukebox-mkdataset end to end. Renders small datasets into a temporary
# directory and checks them with independent tools: sox/soxi for the audio (rate, channels,
# length, level, spectra), python3's json for the labels, cmp for determinism; then the
# option errors and their exit codes. Needs sox, python3, espeak-ng and fluid-soundfont-gm
# (scripts/deps.sh test installs them).
set -u
BUILD=${BUILD:-build}
BIN=$BUILD/bin/jukebox-mkdataset
SF2=/usr/share/sounds/sf2/FluidR3_GM.sf2
. "$(dirname "$0")/lib/check.sh"

for need in "$BIN" "$SF2"; do
    [ -e "$need" ] || { bad "missing $need (make; scripts/deps.sh test)"; check_finish test_mkdataset; }
done
for tool in sox soxi python3 espeak-ng cmp; do
    command -v "$tool" >/dev/null || { bad "missing tool $tool (scripts/deps.sh test)"; check_finish test_mkdataset; }
done
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

N=8; S=3; SEED=42
run() { "$BIN" -q "$@" 2>"$T/stderr"; }
"$BIN" --list >"$T/list" 2>/dev/null
check "--list names at least 6 genres with 3+ artists each" \
    awk -F'[:,]' 'NF >= 4 {g++} END {exit !(g >= 6)}' "$T/list"

run --out "$T/a" --songs $N --seconds $S --seed $SEED --threads 1
check "render $N songs of ${S}s exits 0" [ $? = 0 ]

# Audio: every file there, 44.1 kHz mono, exactly S seconds, not silent.
fmt_ok=1; loud_ok=1
for i in $(seq 0 $((N - 1))); do
    f=$T/a/audio/song$(printf %05d "$i").wav
    if [ ! -s "$f" ]; then fmt_ok=0; echo "    missing $f"; continue; fi
    rate=$(soxi -r "$f"); ch=$(soxi -c "$f"); ns=$(soxi -s "$f")
    if [ "$rate" != 44100 ] || [ "$ch" != 1 ] || [ "$ns" != $((S * 44100)) ]; then
        fmt_ok=0; echo "    $f: rate $rate channels $ch samples $ns"
    fi
    rms=$(sox "$f" -n stat 2>&1 | awk '/RMS +amplitude/ {print $3}')
    awk -v r="$rms" 'BEGIN {exit !(r > 0.03)}' || { loud_ok=0; echo "    $f: RMS $rms"; }
done
check "$N wav files, 44100 Hz mono, $S s each" [ $fmt_ok = 1 ]
check "every song is audible (RMS > 0.03)" [ $loud_ok = 1 ]
check "no temporary files left" [ -z "$(find "$T/a" -name '*.tmp*')" ]

# Labels: one JSON object per song with known genre/artist, word timings inside the song.
cat >"$T/labels.py" <<'EOF'
import json, os, sys
d, n, dur, listing, vocals = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5] == "1"
artists = {}
for line in open(listing):
    g, rest = line.rstrip("\n").split(":", 1)
    artists[g] = [a.strip() for a in rest.split(",")]
lines = open(os.path.join(d, "labels.jsonl")).read().splitlines()
errs = []
if len(lines) != n:
    errs.append("%d lines, want %d" % (len(lines), n))
seen = set()
for k, line in enumerate(lines):
    o = json.loads(line)
    f = os.path.join(d, o["file"])
    if not os.path.isfile(f): errs.append("line %d: no file %s" % (k, f))
    seen.add(o["file"])
    if o["genre"] not in artists: errs.append("line %d: genre %r" % (k, o["genre"]))
    elif o["artist"] not in artists[o["genre"]]: errs.append("line %d: artist %r" % (k, o["artist"]))
    if abs(o["duration"] - dur) > 1e-6: errs.append("line %d: duration %r" % (k, o["duration"]))
    ws = o["words"]
    if vocals and not ws: errs.append("line %d: no words" % k)
    if not vocals and (ws or o["lyrics"]): errs.append("line %d: words without vocals" % k)
    prev = 0.0
    for w in ws:
        if not (0 <= w["start"] < w["end"] <= dur + 1e-6 and w["start"] >= prev - 1e-9):
            errs.append("line %d: word %r at %r..%r" % (k, w["word"], w["start"], w["end"]))
        prev = w["end"]
    if " ".join(w["word"] for w in ws) != " ".join(o["lyrics"].split()):
        errs.append("line %d: lyrics %r do not match the words" % (k, o["lyrics"]))
if len(seen) != len(lines): errs.append("duplicate files")
for e in errs[:10]: print("    " + e)
sys.exit(1 if errs else 0)
EOF
check "labels.jsonl: every song, known genre/artist, words inside the song, match lyrics" \
    python3 "$T/labels.py" "$T/a" $N $S "$T/list" 1

# Determinism: same seed -> byte-identical, whatever the thread count.
same_dir() {   # dir1 dir2 n: the first n songs and label lines are identical
    cmp -s <(head -n "$3" "$1/labels.jsonl") <(head -n "$3" "$2/labels.jsonl") || return 1
    [ "$(wc -l <"$1/labels.jsonl")" -ge "$3" ] || return 1
    for i in $(seq 0 $(($3 - 1))); do
        cmp -s "$1/audio/song$(printf %05d "$i").wav" "$2/audio/song$(printf %05d "$i").wav" || return 1
    done
}
run --out "$T/b" --songs $N --seconds $S --seed $SEED --threads 1
check "same seed twice: byte-identical audio and labels" same_dir "$T/a" "$T/b" $N
run --out "$T/c" --songs $N --seconds $S --seed $SEED --threads 3
check "same seed with --threads 3: byte-identical" same_dir "$T/a" "$T/c" $N
run --out "$T/p" --songs 3 --seconds $S --seed $SEED --threads 2
check "a smaller run renders the same first songs" same_dir "$T/a" "$T/p" 3
run --out "$T/f" --first 2 --songs 2 --seconds $S --seed $SEED --threads 2
check "--first 2 --songs 2 renders songs 2 and 3 of the run, labels too" bash -c "
    cmp -s <(sed -n 3,4p '$T/a/labels.jsonl') '$T/f/labels.jsonl' &&
    cmp -s '$T/a/audio/song00002.wav' '$T/f/audio/song00002.wav' &&
    cmp -s '$T/a/audio/song00003.wav' '$T/f/audio/song00003.wav' &&
    [ ! -e '$T/f/audio/song00000.wav' ]"

run --out "$T/d" --songs $N --seconds $S --seed $((SEED + 1)) --threads 2
ndiff=0
for i in $(seq 0 $((N - 1))); do
    cmp -s "$T/a/audio/song$(printf %05d "$i").wav" "$T/d/audio/song$(printf %05d "$i").wav" ||
        ndiff=$((ndiff + 1))
done
check "a different seed changes every song ($ndiff/$N differ)" [ $ndiff = $N ]

run --out "$T/n" --songs 2 --seconds $S --seed $SEED --no-vocals
check "--no-vocals exits 0" [ $? = 0 ]
check "--no-vocals: labels carry no lyrics" python3 "$T/labels.py" "$T/n" 2 $S "$T/list" 0
check "--no-vocals: the audio differs from the sung version" \
    bash -c "! cmp -s '$T/a/audio/song00000.wav' '$T/n/audio/song00000.wav'"

# docs/dataset.md's example label is what the tool writes for that song (seed 7, song 1).
run --out "$T/doc" --seed 7 --first 1 --songs 1 --seconds 10 --threads 1
check "dataset.md's example label equals the tool's (seed 7, song 1)" python3 -c '
import json, re, sys
doc = open("docs/dataset.md").read()
ex = re.search(r"```json\n(\{\"id\":\"song00001\".*?\})\n```", doc, re.S).group(1)
ex = json.loads(ex.replace(", ...]", "]"))
got = json.loads(open(sys.argv[1]).readline())
sys.exit(not (all(got[k] == v for k, v in ex.items() if k != "words") and
              got["words"][:len(ex["words"])] == ex["words"]))' "$T/doc/labels.jsonl"

# --tunes: the same artists, tempi and keys, arranged with the melody in front;
# jukebox-eval music (aubio's YIN) finds a clear pitch in more of the loud frames
# (measured on these 8 songs of 4 s: 39 % without, 53 % with --tunes).
run --out "$T/t" --songs $N --seconds 4 --seed $SEED --threads 2 --tunes
check "--tunes exits 0" [ $? = 0 ]
run --out "$T/u" --songs $N --seconds 4 --seed $SEED --threads 2
check "--tunes: labels say so; same artists, tempi, keys and modes as without it" python3 -c "
import json, sys
t = [json.loads(l) for l in open(sys.argv[1])]
u = [json.loads(l) for l in open(sys.argv[2])]
sys.exit(not (len(t) == len(u) == $N and all(a.get('tunes') is True and 'tunes' not in b and
    all(a[k] == b[k] for k in ('artist', 'genre', 'tempo', 'key', 'mode')) for a, b in zip(t, u))))" \
    "$T/t/labels.jsonl" "$T/u/labels.jsonl"
check "--tunes: the audio differs" bash -c "! cmp -s '$T/t/audio/song00000.wav' '$T/u/audio/song00000.wav'"
if [ -x "$BUILD/bin/jukebox-eval" ]; then
    "$BUILD/bin/jukebox-eval" music --test "$T/u" --test "$T/t" --json "$T/music.json" >/dev/null 2>&1
    shares=$(python3 -c "import json, sys; t = json.load(open(sys.argv[1]))['tests']
print('%.3f %.3f' % (t[0]['pitched'], t[1]['pitched']))" "$T/music.json" 2>/dev/null)
    check "--tunes: more loud frames with a clear pitch (without, with: $shares)" \
        awk -v s="$shares" 'BEGIN { split(s, a, " "); exit !(a[1] > 0 && a[2] >= a[1] + 0.1) }'
else
    bad "missing $BUILD/bin/jukebox-eval (make)"
fi

run --out "$T/g" --songs 4 --seconds 2 --genres jazz,blues
check "--genres jazz,blues: only those genres, alternating" \
    python3 -c "import json,sys; g=[json.loads(l)['genre'] for l in open(sys.argv[1])]; sys.exit(g != ['jazz','blues','jazz','blues'])" "$T/g/labels.jsonl"

# Genres differ: long-term third-octave spectra (sox's FFT, 50 Hz .. 12.8 kHz, level removed)
# of 2 songs per genre by different artists, no vocals. Songs of one genre must be closer to
# each other than to other genres' songs on average, and rock must differ from classical.
run --out "$T/s" --songs 16 --seconds 4 --seed 7 --no-vocals --threads 2
for i in $(seq 0 15); do
    f=$T/s/audio/song$(printf %05d "$i").wav
    g=$(sed -n "$((i + 1))p" "$T/s/labels.jsonl" | python3 -c 'import json,sys; print(json.load(sys.stdin)["genre"])')
    echo "$g $(sox "$f" -n stat -freq 2>&1 | awk 'NF == 2 && $1 + 0 > 0 {
        b = int(3 * log($1 / 50) / log(2)); if (b >= 0 && b < 24) e[b] += $2 }
        END { for (i = 0; i < 24; i++) printf "%.4f ", 10 * log(e[i] + 1e-9) / log(10); print "" }')"
done >"$T/spectra"
cat >"$T/spectra.py" <<'EOF'
import sys
rows = [l.split() for l in open(sys.argv[1])]
g = [r[0] for r in rows]
x = [[float(v) for v in r[1:]] for r in rows]
x = [[v - sum(s) / len(s) for v in s] for s in x]          # shape only
def dist(a, b): return (sum((p - q) ** 2 for p, q in zip(a, b)) / len(a)) ** 0.5   # dB rms
within = [dist(x[i], x[j]) for i in range(len(x)) for j in range(i + 1, len(x)) if g[i] == g[j]]
between = [dist(x[i], x[j]) for i in range(len(x)) for j in range(i + 1, len(x)) if g[i] != g[j]]
w, b = sum(within) / len(within), sum(between) / len(between)
ratio, apart = float(sys.argv[2]), float(sys.argv[3])   # between/within; rock-classical dB
rock = [s for s, n in zip(x, g) if n == "rock"]
cls = [s for s, n in zip(x, g) if n == "classical"]
rc = min(dist(p, q) for p in rock for q in cls) if rock and cls else 0.0
print("    within %.2f dB, between %.2f dB, rock-classical >= %.2f dB" % (w, b, rc))
sys.exit(0 if b > ratio * w and rc >= apart else 1)
EOF
check "genres differ in spectrum (between > 1.2 x within; rock vs classical > 3 dB)" \
    python3 "$T/spectra.py" "$T/spectra" 1.2 3.0

# Artists differ: 8 rock songs, artists 0..3 twice (--genres with one genre rotates artists).
run --out "$T/r" --songs 8 --seconds 4 --seed 11 --genres rock --no-vocals --threads 2
for i in $(seq 0 7); do
    f=$T/r/audio/song$(printf %05d "$i").wav
    a=$(sed -n "$((i + 1))p" "$T/r/labels.jsonl" | python3 -c 'import json,sys; print(json.load(sys.stdin)["artist"].replace(" ", "_"))')
    echo "$a $(sox "$f" -n stat -freq 2>&1 | awk 'NF == 2 && $1 + 0 > 0 {
        b = int(3 * log($1 / 50) / log(2)); if (b >= 0 && b < 24) e[b] += $2 }
        END { for (i = 0; i < 24; i++) printf "%.4f ", 10 * log(e[i] + 1e-9) / log(10); print "" }')"
done >"$T/artists"
check "artists of a genre differ in spectrum (between > 1.5 x within)" \
    python3 "$T/spectra.py" "$T/artists" 1.5 0

# Usage errors: 64.
for args in "--songs 0" "--songs x" "--seconds 0" "--seconds -1" "--seconds 5000" \
    "--threads 0" "--threads 65" "--first -1" "--first x" "--seed -3" "--seed 9223372036854775808" "--genres nosuch" "--genres rock,,x" "--bogus" \
    "extra-arg"; do
    # shellcheck disable=SC2086
    "$BIN" --out "$T/u" $args >/dev/null 2>&1
    rc=$?
    check "'$args' exits 64 (got $rc)" [ $rc = 64 ]
done
"$BIN" >/dev/null 2>&1
rc=$?; check "no --out exits 64 (got $rc)" [ $rc = 64 ]
"$BIN" --help >"$T/help" 2>&1
rc=$?
check "--help exits 0 and names every option and exit code" bash -c "[ $rc = 0 ] &&
    for w in --out --songs --first --seconds --seed --genres --threads --no-vocals --tunes --soundfont --list \
        --quiet 64 65 66 69 70 73 74; do grep -q -- \"\$w\" '$T/help' || exit 1; done"

# Output that cannot be created: 73. (Runs as root too: a path under a regular file.)
touch "$T/file"
"$BIN" -q --out "$T/file/sub" --songs 1 --seconds 1 >/dev/null 2>&1
rc=$?; check "output under a regular file exits 73 (got $rc)" [ $rc = 73 ]
"$BIN" -q --out "$T/file" --songs 1 --seconds 1 >/dev/null 2>&1
rc=$?; check "output is a regular file exits 73 (got $rc)" [ $rc = 73 ]
# Soundfont missing: 66; not a soundfont: 65.
"$BIN" -q --out "$T/v" --songs 1 --seconds 1 --soundfont "$T/nosuch.sf2" >/dev/null 2>&1
rc=$?; check "missing soundfont exits 66 (got $rc)" [ $rc = 66 ]
echo "not a soundfont" >"$T/bad.sf2"
"$BIN" -q --out "$T/v" --songs 1 --seconds 1 --soundfont "$T/bad.sf2" >/dev/null 2>&1
rc=$?; check "a file that is not a soundfont exits 65 (got $rc)" [ $rc = 65 ]
check_finish test_mkdataset
