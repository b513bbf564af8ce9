#!/bin/bash
# measure-threads.sh: the figures of issue 14 (threads on a shared host), side by side.
#   quiet:  `make demo` with the defaults and with OMP_WAIT_POLICY=PASSIVE set by hand
#   busy:   the demo-sized job (jukebox sample, bundled model, 10 s, 2 samples) with two
#           busy loops (yes > /dev/null) running: defaults and --threads 1
# Alternating, ROUNDS rounds (default 2); prints each time and the load average.
set -u
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-2}
T=$(mktemp -d /tmp/jb_measure.XXXXXX)
loops=()
trap 'for p in "${loops[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$T"' EXIT
export PATH="$PWD/build/bin:$PATH"
make -s all >/dev/null
t() {   # t NAME CMD...: wall seconds of CMD
    local name=$1 s e; shift
    s=$(date +%s.%N)
    "$@" > "$T/out" 2>&1 || { echo "$name: failed"; tail -3 "$T/out"; }
    e=$(date +%s.%N)
    printf '%-28s %7.1f s   load %s\n' "$name" "$(echo "$e - $s" | bc)" "$(cut -d' ' -f1-3 /proc/loadavg)"
}
job() { env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT pipelines/jukebox sample --models models/default --artist "Miles Harmon Trio" \
            --genre jazz --total-seconds 10 --seconds 10 --samples 2 --seed 1 -q -o "$T/run$RANDOM" "$@"; }
echo "cores: $(nproc); $(date -u +%FT%TZ)"
echo "-- quiet: make demo"
for r in $(seq "$ROUNDS"); do
    t "make demo (defaults)" env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT make -s demo
    t "make demo (PASSIVE by hand)" env OMP_WAIT_POLICY=PASSIVE make -s demo
done
echo "-- busy: two busy loops running"
yes > /dev/null & loops+=($!)
yes > /dev/null & loops+=($!)
for r in $(seq "$ROUNDS"); do
    t "job (defaults)" job
    t "job (--threads 1)" job --threads 1
done
