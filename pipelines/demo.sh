#!/bin/bash
# demo.sh: `make demo`: one job through every stage on the bundled model.
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
out=demo-out/run-$(date +%Y%m%dT%H%M%S)
mkdir -p demo-out
# The bundled model (models/default/README.md) was trained on the synthetic data set of
# scripts/train-default.sh: 10 s songs of 8 genres, 4 artists each (jukebox-mkdataset
# --list); its vocabularies hold exactly those names. A 10 s song of the first jazz artist:
GENRE=${DEMO_GENRE:-jazz}
ARTIST=${DEMO_ARTIST:-Miles Harmon Trio}
PATH="$PWD/$BUILD/bin:$PATH" pipelines/jukebox sample --models models/default \
    --artist "$ARTIST" --genre "$GENRE" --total-seconds 10 --seconds 10 \
    --samples 2 --seed 1 -o "$out"
echo
echo "demo: wrote $out/"
ls "$out" "$out/level_0"
echo "demo: listen to $out/level_0/sample_0.wav; open $out/index.html in a browser"
echo "demo: (a small model trained on synthetic songs in a CPU hour: see models/default/README.md)"
