#!/bin/sh
# deps.sh: make sure the Debian packages the build and tests need are installed.
# As root it installs what is missing with apt-get; otherwise it prints the
# exact command to run and fails. Usage: scripts/deps.sh [build|test|demo|all]
set -eu
what=${1:-build}
build="gcc make pkg-config libopenblas-dev libjansson-dev libzmq3-dev libmsgpack-dev liblz4-dev libsndfile1-dev libsoxr-dev libsystemd-dev zlib1g-dev libfluidsynth-dev libaubio-dev"
test="valgrind sox espeak-ng fluid-soundfont-gm clang libclang-rt-14-dev iproute2 chromium systemd python3"
demo=""
case "$what" in
    build) pkgs="$build" ;;
    test) pkgs="$build $test" ;;
    demo) pkgs="$build $demo" ;;
    all) pkgs="$build $test $demo" ;;
    *) echo "deps.sh: unknown set '$what' (build, test, demo, all)" >&2; exit 64 ;;
esac
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
    echo "deps.sh: installing:$missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >&2
else
    echo "deps.sh: missing Debian packages:$missing" >&2
    echo "run: sudo apt-get update && sudo apt-get install -y$missing" >&2
    exit 69
fi
