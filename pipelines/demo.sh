#!/bin/bash
# demo.sh: `make demo` (and the installed `jukebox-demo`): one job through every stage on
# the bundled model. Writes DEMO_OUT (default ./demo-out, where the command is run) and
# nothing anywhere else. The front command picks the threads (a share of the cores, idle
# threads sleeping: see `jukebox --help`).
set -eu
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
# The bundled model (models/default/README.md) was trained on the synthetic data set of
# scripts/train-default.sh: 10 s songs of 8 genres, 4 artists each (jukebox-mkdataset
# --list); its vocabularies hold exactly those names. A 10 s song of the first jazz artist:
GENRE=${DEMO_GENRE:-jazz}
ARTIST=${DEMO_ARTIST:-Miles Harmon Trio}
export PATH
"$front" sample --models "$models" \
    --artist "$ARTIST" --genre "$GENRE" --total-seconds 10 --seconds 10 \
    --samples 2 --seed 1 -o "$out"
echo
echo "demo: wrote $out/"
ls "$out" "$out/level_0"
echo "demo: listen to $out/level_0/sample_0.wav; open $out/index.html in a browser"
echo "demo: (a small model trained on synthetic songs in a CPU hour: see models/default/README.md)"
