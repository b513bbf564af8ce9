#!/bin/bash
# run_tests.sh: run every test binary, the golden runner and the shell tests;
# add up their "N passed, N failed[, N skipped]" lines and print the total last
# ("N passed, N failed, N skipped").
# A test that cannot run a part here prints "SKIP <reason>" and counts it as skipped. With
# CI=true a test that skipped anything counts as one failure (CI installs everything and must
# run every test), unless it is named in JB_CI_MAY_SKIP (space-separated; `make asan` names
# the tests a sanitizer build cannot run).
# Env: BUILD (default build), GOLDEN (default tests/golden), TEST_FILTER (substring),
#      CI, JB_CI_MAY_SKIP, JB_TEST_TIMEOUT (seconds a test may run, default 1200).
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
GOLDEN=${GOLDEN:-tests/golden}
export BUILD GOLDEN
# OpenMP threads that spin at barriers starve the working thread when the machine is
# shared (2 cores, several test runs): the VQ-VAE tests ran 6x slower that way.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
pass=0; fail=0; skipped=0; broken=""; skippers=""
run_one() {   # name, command...
    local name=$1; shift
    [ -n "${TEST_FILTER:-}" ] && [[ "$name" != *"$TEST_FILTER"* ]] && return
    echo "== $name"
    local out rc
    # A bound on each test (JB_TEST_TIMEOUT seconds, default 1200): a test that hangs fails
    # with a line saying so instead of holding up the whole run.
    out=$(timeout --kill-after=30 "${JB_TEST_TIMEOUT:-1200}" "$@" 2>&1); rc=$?
    printf '%s\n' "$out"
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        echo "   (still running after ${JB_TEST_TIMEOUT:-1200} s: stopped) -> counted as 1 failure"
        fail=$((fail + 1)); broken="$broken $name"; return
    fi
    local line
    line=$(printf '%s\n' "$out" | grep -E '[0-9]+ passed, [0-9]+ failed' | tail -n 1)
    if [ -z "$line" ]; then
        echo "   (no summary line; exit code $rc) -> counted as 1 failure"
        fail=$((fail + 1)); broken="$broken $name"; return
    fi
    local p f s
    p=$(printf '%s' "$line" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+')
    f=$(printf '%s' "$line" | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+')
    s=$(printf '%s' "$line" | grep -oE '[0-9]+ skipped' | grep -oE '[0-9]+')
    pass=$((pass + p)); fail=$((fail + f)); skipped=$((skipped + ${s:-0}))
    if [ "${s:-0}" != 0 ]; then
        skippers="$skippers $name"
        if [ "${CI:-}" = true ] && [[ " ${JB_CI_MAY_SKIP:-} " != *" $name "* ]]; then
            echo "   ($s skipped with CI=true: CI must run every test) -> counted as 1 failure"
            fail=$((fail + 1)); broken="$broken $name"; return
        fi
    fi
    if [ "$rc" != 0 ] && [ "$f" = 0 ]; then
        echo "   (exit code $rc with no failed check) -> counted as 1 failure"
        fail=$((fail + 1)); broken="$broken $name"
    elif [ "$f" != 0 ]; then
        broken="$broken $name"
    fi
}
for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] || continue
    case "$t" in *.o|*.d) continue ;; esac
    run_one "$(basename "$t")" "$t"
done
if [ -x "$BUILD/tests/golden-runner" ]; then
    run_one golden "$BUILD/tests/golden-runner" "$GOLDEN"
fi
if [ -x "$BUILD/tests/golden-runner-cuda" ]; then
    # the vqvae, prior and pipeline cases again through the device code (VQ-VAE, samplers and
    # Conditioner on CUDA; against the CPU emulation of CUDA in a plain build)
    dev_cases=$(cd "$GOLDEN" && ls -d vqvae_* prior_* upsampler_* pipeline_* 2>/dev/null)
    run_one golden-cuda env JB_GOLDEN_DEVICE=cuda "$BUILD/tests/golden-runner-cuda" "$GOLDEN" \
        $dev_cases
fi
for s in tests/sh/test_*.sh; do
    [ -f "$s" ] || continue
    run_one "$(basename "$s")" bash "$s"
done
echo
[ -n "$skippers" ] && echo "skipping:$skippers"
[ -n "$broken" ] && echo "failing:$broken"
echo "$pass passed, $fail failed, $skipped skipped"
[ "$fail" = 0 ]
