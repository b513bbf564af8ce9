#!/bin/bash
# test_valgrind.sh: selected unit tests again under valgrind; any memory error
# or definite leak fails. (OpenMP's thread pool keeps "possibly lost" blocks
# by design, so only definite leaks count.)
set -u
BUILD=${BUILD:-build}
. "$(dirname "$0")/lib/check.sh"
if ! command -v valgrind >/dev/null; then
    bad "valgrind not installed (scripts/deps.sh test installs it)"
    check_finish test_valgrind
fi
if [ -n "${SAN_BUILD:-}" ] || [[ "$BUILD" == *asan* ]]; then
    # A sanitizer build cannot run under valgrind; the asan run covers the same ground.
    skip "sanitizer build: valgrind cannot run it (the plain 'make test' runs this)"
    check_finish test_valgrind
fi
# Tests that are quick enough for valgrind's ~30x slowdown.
tests="test_jb_model_files test_jb_device test_jb_job test_jb_transformer test_jb_prior test_jb_nn test_jb_wire test_jb_torch test_jb_text test_jb_labels test_jb_codes test_jb_audio test_jb_codec test_jb_job test_jb_collect test_jb_compose test_jb_trainer test_jb_link test_jb_spool test_jb_publish test_jb_pickle test_jb_optim test_jb_outdir test_jb_service"
for t in $tests; do
    bin="$BUILD/tests/$t"
    [ -x "$bin" ] || { bad "valgrind $t: $bin not built (make test builds it)"; continue; }
    log=$(mktemp)
    # JB_TEST_VALGRIND: a test may shrink its largest case (test_jb_codes does).
    if JB_TEST_VALGRIND=1 OMP_NUM_THREADS=1 valgrind -q --error-exitcode=99 --leak-check=full \
        --errors-for-leak-kinds=definite --show-leak-kinds=definite "$bin" >"$log" 2>&1; then
        ok "valgrind $t"
    else
        bad "valgrind $t"; tail -n 40 "$log"
    fi
    rm -f "$log"
done
check_summary test_valgrind
