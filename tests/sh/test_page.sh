#!/bin/bash
# test_page.sh: a run's page (index.html) in headless Chromium, as a person sees it
# (issue 14, item 12): it loads with no errors, every picture and audio loads, body text
# and links have a contrast ratio of at least 4.5:1 (computed from the rendered styles),
# each sample has a waveform per level, the level-1 preview is linked, the duration
# shown is the audio's, the settings and per-level times are there. A screenshot is taken
# (JB_KEEP_SCREENSHOT=FILE keeps it).
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
export PATH="$PWD/$BUILD/bin:$PATH"
T=$(mktemp -d /tmp/jb_page.XXXXXX)
trap '[ -n "${KEEP:-}" ] || rm -rf "$T"' EXIT
pass=0; fail=0
check() { if eval "$2"; then echo "  ok   $1"; pass=$((pass + 1)); else echo "  FAIL $1"; fail=$((fail + 1)); fi; }
if ! command -v chromium >/dev/null; then
    echo "  FAIL chromium not installed (scripts/deps.sh test installs it)"
    echo "test_page: 0 passed, 1 failed"; exit 1
fi

echo "-- a run of the bundled model: 2 samples of 1.5 s"
pipelines/jukebox sample --models models/default --artist "Miles Harmon Trio" --genre jazz \
    --total-seconds 2 --seconds 1.5 --samples 2 --seed 5 -q -o "$T/run" 2>"$T/run.err"; rc=$?
check "run written (rc $rc)" "[ $rc = 0 ] && [ -s '$T/run/index.html' ]"
R=$T/run
# The page with the checker (tests/sh/lib/page_check.js) first in its <head>.
python3 - "$R/index.html" "$R/check.html" tests/sh/lib/page_check.js <<'PY'
import sys
page, out, js = sys.argv[1:4]
html = open(page, encoding='utf-8').read()
assert '<head>' in html
open(out, 'w', encoding='utf-8').write(
    html.replace('<head>', '<head><script>' + open(js).read() + '</script>', 1))
PY
timeout 90 chromium --headless --no-sandbox --disable-gpu --user-data-dir="$T/profile" \
    --autoplay-policy=no-user-gesture-required --virtual-time-budget=8000 \
    --dump-dom "file://$R/check.html" > "$T/dom.html" 2>"$T/chromium.err"; rc=$?
check "chromium renders the page (rc $rc)" "[ $rc = 0 ] && grep -q 'id=\"page-check\">{' '$T/dom.html'"
python3 - "$T/dom.html" "$R" > "$T/report.txt" <<'PY'
import html, json, re, sys, wave
dom, run = sys.argv[1:3]
m = re.search(r'<pre id="page-check">(.*?)</pre>', open(dom, encoding='utf-8').read(), re.S)
r = json.loads(html.unescape(m.group(1))) if m else {}
def dur(p):
    w = wave.open(p); return w.getnframes() / w.getframerate()
res = {}
res['errors'] = r.get('errors', ['no report'])
imgs = r.get('images', [])
res['images'] = len(imgs)
res['images_bad'] = [i['src'] for i in imgs if not i['loaded']]
res['waves'] = sorted(i['src'] for i in imgs if re.match(r'level_\d/sample_\d\.png$', i['src'] or ''))
aud = r.get('audio', [])
res['audio'] = len(aud)
res['audio_bad'] = [a['src'] for a in aud if a['readyState'] < 1 or a['error']]
res['audio_dur_off'] = [a['src'] for a in aud
                        if not a.get('duration') or abs(a['duration'] - dur(run + '/' + a['src'])) > 0.01]
page = open(run + '/index.html', encoding='utf-8').read()
shown = re.findall(r'class="meta duration">([0-9.]+) s<', page)
want = ['%.1f' % dur(run + '/level_0/sample_%d.wav' % k) for k in range(2)]
res['duration_shown'] = shown
res['duration_want'] = want
c = r.get('contrast', [])
res['contrast_n'] = len(c)
res['contrast_links'] = len([e for e in c if e['tag'] == 'a'])
low = [e for e in c if e['ratio'] < 4.5]
res['contrast_low'] = low[:5]
res['contrast_min'] = min([e['ratio'] for e in c] or [0])
print(json.dumps(res))
PY
rep=$(cat "$T/report.txt")
echo "  report: $rep" | cut -c1-600
jq_() { python3 -c "import json,sys; r=json.load(open('$T/report.txt')); print($1)"; }
check "no console errors, no failed resources" "[ \"\$(jq_ 'len(r[\"errors\"])')\" = 0 ]"
check "every image loads ($(jq_ 'r["images"]') images)" "[ \"\$(jq_ 'len(r[\"images_bad\"])')\" = 0 ] && [ \$(jq_ 'r[\"images\"]') -ge 6 ]"
check "a waveform picture per sample and level (6), drawn by the decoder" \
    "[ \"\$(jq_ 'len(r[\"waves\"])')\" = 6 ] && [ -s '$R/level_1/sample_1.png' ] && [ \"\$(head -c 4 '$R/level_2/sample_0.png' | tail -c 3)\" = PNG ]"
check "every audio element loads, its duration the file's" \
    "[ \"\$(jq_ 'len(r[\"audio_bad\"]) + len(r[\"audio_dur_off\"])')\" = 0 ] && [ \$(jq_ 'r[\"audio\"]') -ge 2 ]"
check "the page shows each song's duration, rounded to 0.1 s (not the player's floor)" \
    "[ \"\$(jq_ 'r[\"duration_shown\"] == r[\"duration_want\"]')\" = True ]"
check "text and link contrast >= 4.5:1 everywhere (min $(jq_ 'r["contrast_min"]'), $(jq_ 'r["contrast_links"]') links)" \
    "[ \"\$(jq_ 'len(r[\"contrast_low\"])')\" = 0 ] && [ \$(jq_ 'r[\"contrast_links\"]') -ge 6 ] && [ \$(jq_ 'r[\"contrast_n\"]') -ge 20 ]"
check "the level-1 (middle) preview is linked" "grep -q 'href=\"level_1/sample_0.wav\"' '$R/index.html'"
check "labels and settings on the page" \
    "grep -q 'Miles Harmon Trio' '$R/index.html' && grep -q 'Settings: .*temperature .*seed 5' '$R/index.html'"
check "compute time per level on the page (timings.js, shown in the rendered page)" \
    "[ \$(grep -o 'codes complete after' '$R/index.html' | wc -l) -ge 2 ] && [ \$(grep -oE '\"[0-2]\": [0-9.]+' '$R/timings.js' | wc -l) = 3 ] && [ \$(grep -oE 'class=\"ready\" data-level=\"[0-2]\">[0-9.]+ s</td>' '$T/dom.html' | wc -l) -ge 6 ]"
timeout 90 chromium --headless --no-sandbox --disable-gpu --user-data-dir="$T/profile" \
    --window-size=1024,1100 --screenshot="$T/shot.png" "file://$R/index.html" >/dev/null 2>&1
check "screenshot taken" "[ \$(stat -c %s '$T/shot.png' 2>/dev/null || echo 0) -gt 10000 ]"
[ -n "${JB_KEEP_SCREENSHOT:-}" ] && cp "$T/shot.png" "$JB_KEEP_SCREENSHOT"
echo "test_page: $pass passed, $fail failed"
[ "$fail" = 0 ]
