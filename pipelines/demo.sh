#!/bin/bash
# demo.sh: `make demo` (and the installed `jukebox-demo`): one job through every stage on
# the bundled model. Writes DEMO_OUT (default ./demo-out, where the command is run) and
# nothing anywhere else. The front command picks the threads (a share of the cores, idle
# threads sleeping: see `jukebox --help`).
set -eu
[ $# = 0 ] || case "$1" in
    -h|--help)
        cat <<'USAGE'
usage: jukebox-demo    (make demo in a source tree)

Runs the whole pipeline (jukebox sample) on the bundled model: two songs of 10 s, two
samples each, a jazz song by Miles Harmon Trio and a rock song by The Iron Kites, each
sung with a verse of pipelines/demo-lyrics/. Writes DEMO_OUT/run-<time>/ and
DEMO_OUT/run-<time>-rock/ (the audio of every level, the codes, index.html) and nothing
anywhere else.

environment:
  DEMO_OUT DIR      where the runs go (default ./demo-out, where the command is run)
  DEMO_GENRE NAME   any of these three: one song of your choice instead, in
  DEMO_ARTIST NAME    DEMO_OUT/run-<time>/; the ones not set are jazz, Miles Harmon
  DEMO_LYRICS FILE    Trio and the jazz verse (pipelines/demo-lyrics/jazz.txt)

exit codes: those of jukebox (jukebox --help); 64 an argument (it takes none).
USAGE
        exit 0 ;;
    *) echo "jukebox-demo: unexpected argument '$1' (it takes none; see --help)" >&2; exit 64 ;;
esac
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The front command and the model: the source tree (pipelines/, models/default, build/bin),
# or an installed tree (PREFIX/bin/jukebox-demo beside PREFIX/bin/jukebox, the model in
# PREFIX/share/jukebox/models/default).
if [ -x "$here/jukebox" ] && [ -d "$here/../models/default" ]; then
    front=$here/jukebox models=$here/../models/default                     # source tree
    [ -d "$here/../${BUILD:-build}/bin" ] && PATH="$(cd "$here/../${BUILD:-build}/bin" && pwd):$PATH"
elif [ -x "$here/jukebox" ] && [ -d "$here/../share/jukebox/models/default" ]; then
    front=$here/jukebox models=$here/../share/jukebox/models/default       # PREFIX/bin
else
    front=$here/../../../bin/jukebox models=$here/../models/default        # share/jukebox/pipelines
fi
out=${DEMO_OUT:-$PWD/demo-out}/run-$(date +%Y%m%dT%H%M%S)
mkdir -p "$(dirname "$out")"
lyrics_dir=$here/demo-lyrics                                              # beside demo.sh
[ -d "$lyrics_dir" ] || lyrics_dir=$here/../share/jukebox/pipelines/demo-lyrics   # PREFIX/bin
# The bundled model (models/default/README.md) was trained on the synthetic data set of
# scripts/train-default.sh: 10 s songs of 8 genres, 4 artists each (jukebox-mkdataset
# --list); its vocabularies hold exactly those names. Two songs of two genres, each sung
# with a short verse (pipelines/demo-lyrics/, words of the data set's lyrics): jazz by its
# first jazz artist in run-<time>/, rock in run-<time>-rock/, two samples each.
# DEMO_GENRE, DEMO_ARTIST and DEMO_LYRICS (a file), any of them: one song of your choice
# instead; the ones not set are the jazz song's.
export PATH
song() {   # outdir genre artist lyrics-file
    local lyr=()
    [ -n "$4" ] && lyr=(--lyrics-file "$4")
    "$front" sample --models "$models" --artist "$3" --genre "$2" "${lyr[@]}" \
        --total-seconds 10 --seconds 10 --samples 2 --seed 1 -o "$1"
    echo
    echo "demo: wrote $1/"
    ls "$1" "$1/level_0"
}
if [ -n "${DEMO_GENRE:-}${DEMO_ARTIST:-}${DEMO_LYRICS:-}" ]; then
    song "$out" "${DEMO_GENRE:-jazz}" "${DEMO_ARTIST:-Miles Harmon Trio}" "${DEMO_LYRICS:-$lyrics_dir/jazz.txt}"
    outs=("$out")
else
    song "$out" jazz "Miles Harmon Trio" "$lyrics_dir/jazz.txt"
    song "$out-rock" rock "The Iron Kites" "$lyrics_dir/rock.txt"
    outs=("$out" "$out-rock")
fi
for o in "${outs[@]}"; do
    echo "demo: listen to $o/level_0/sample_0.wav; open $o/index.html in a browser"
done
echo "demo: (a small model trained on synthetic songs in a CPU hour or two: see models/default/README.md)"
