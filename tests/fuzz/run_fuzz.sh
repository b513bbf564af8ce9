#!/bin/bash
# run_fuzz.sh: build every tests/fuzz/fuzz_*.c as a libFuzzer target and run each
# for FUZZ_SECONDS; print "fuzz: N passed, N failed" (N = targets); exit non-zero
# when a target crashed, leaked, hit undefined behaviour or did not build.
#
# A target declares what it links in comment lines (any number of each):
#   // fuzz-sources: common/wire/jb_wire.c common/core/jb_err.c
# (a path that does not exist is looked up by its file name in the layer folders of common/,
# so common/jb_wire.c also works)
#   // fuzz-libs: -lmsgpackc -llz4
# A target that reads the environment variable JB_FUZZ_WRITE_SEEDS (in
# LLVMFuzzerInitialize: write seed inputs into that directory, then exit) gets
# its seed corpus that way; files in tests/fuzz/corpus/<target>/ are added too.
#
# Env: BUILD (default build), FUZZ_SECONDS (default 60), FUZZ_MAX_LEN (default
# 16384), FUZZ_TARGETS (names to run, default all), CLANG (default clang).
# Output: $BUILD/fuzz/<target> (binary), <target>.corpus/, <target>.log,
# <target>-crash-* (inputs that failed; reproduce with ./<target> FILE).
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_MAX_LEN=${FUZZ_MAX_LEN:-16384}
CLANG=${CLANG:-clang}
out=$BUILD/fuzz
mkdir -p "$out"

if ! command -v "$CLANG" >/dev/null; then
    echo "run_fuzz.sh: $CLANG not found (Debian: clang libclang-rt-14-dev)" >&2
    echo "fuzz: 0 passed, 1 failed"
    exit 69
fi

cflags="-std=c11 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
        -fno-omit-frame-pointer -DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION -D_GNU_SOURCE
        $(for d in common/*/; do [ "$d" = common/cuda_emu/ ] || printf -- "-I%s " "${d%/}"; done) -Icommon -Wall -Wextra -Wno-unused-parameter"
pass=0; fail=0; failed=""
for src in tests/fuzz/fuzz_*.c; do
    [ -f "$src" ] || continue
    name=$(basename "$src" .c)
    if [ -n "${FUZZ_TARGETS:-}" ] && [[ " $FUZZ_TARGETS " != *" $name "* ]]; then continue; fi
    sources=$(sed -n 's#^[[:space:]]*//[[:space:]]*fuzz-sources:##p' "$src" | tr '\n' ' ')
    resolved=""
    for f in $sources; do
        if [ ! -f "$f" ]; then
            g=$(find common -mindepth 2 -name "$(basename "$f")" -print -quit)
            [ -n "$g" ] && f=$g
        fi
        resolved="$resolved $f"
    done
    sources="${resolved# }"
    libs=$(sed -n 's#^[[:space:]]*//[[:space:]]*fuzz-libs:##p' "$src" | tr '\n' ' ')
    echo "== $name: build ($src $sources$libs)"
    # shellcheck disable=SC2086
    if ! $CLANG $cflags "$src" $sources $libs -o "$out/$name" 2>"$out/$name.build.log"; then
        cat "$out/$name.build.log"
        echo "   $name: build failed"
        fail=$((fail + 1)); failed="$failed $name"; continue
    fi
    corpus=$out/$name.corpus
    mkdir -p "$corpus"
    if grep -q JB_FUZZ_WRITE_SEEDS "$src"; then
        if ! JB_FUZZ_WRITE_SEEDS=$corpus "$out/$name" >"$out/$name.seeds.log" 2>&1; then
            cat "$out/$name.seeds.log"
            echo "   $name: writing seeds failed"
            fail=$((fail + 1)); failed="$failed $name"; continue
        fi
    fi
    if [ -d "tests/fuzz/corpus/$name" ]; then cp -r "tests/fuzz/corpus/$name/." "$corpus/"; fi
    echo "   $name: $(find "$corpus" -type f | wc -l) seed/corpus files; fuzzing ${FUZZ_SECONDS}s"
    "$out/$name" "$corpus" -max_total_time="$FUZZ_SECONDS" -max_len="$FUZZ_MAX_LEN" \
        -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$out/$name-" >"$out/$name.log" 2>&1
    rc=$?
    runs=$(grep -E '^stat::number_of_executed_units' "$out/$name.log" | awk '{print $2}')
    cov=$(grep -oE 'cov: [0-9]+' "$out/$name.log" | tail -n 1)
    if [ "$rc" = 0 ]; then
        echo "   $name: ok (${runs:-?} runs, ${cov:-cov: ?}, corpus $(find "$corpus" -type f | wc -l))"
        pass=$((pass + 1))
    else
        grep -E 'ERROR|SUMMARY|runtime error|==[0-9]+==' "$out/$name.log" | head -n 20
        echo "   $name: FAILED (exit $rc); log $out/$name.log; input $(ls "$out/$name"-* 2>/dev/null | grep -v '\.log$' | head -n 1)"
        fail=$((fail + 1)); failed="$failed $name"
    fi
done
[ -n "$failed" ] && echo "failing:$failed"
echo "fuzz: $pass passed, $fail failed"
[ "$fail" = 0 ]
