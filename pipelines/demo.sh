#!/bin/bash
# demo.sh: `make demo`: one job through every stage on the bundled model.
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
out=demo-out/run-$(date +%Y%m%dT%H%M%S)
mkdir -p demo-out
# The bundled model is tiny and untrained (models/default/README.md): its timing
# signal covers songs of 0.05 to 1 s, so the demo asks for 0.16 s of a 0.19 s song.
PATH="$PWD/$BUILD/bin:$PATH" pipelines/jukebox sample --models models/default \
    --artist-id 2=33 --genre-ids 2=21,18 --total-seconds 0.19 --seconds 0.16 \
    --samples 2 --top-k 1 --seed 1 -o "$out"
echo
echo "demo: wrote $out/"
ls "$out" "$out/level_0"
echo "demo: listen to $out/level_0/sample_0.wav; open $out/index.html in a browser"
echo "demo: (the bundled model is untrained, so this is noise: see models/default/README.md)"
