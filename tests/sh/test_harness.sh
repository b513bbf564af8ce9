#!/bin/bash
# test_harness.sh: the test harness says what it did. tests/run_tests.sh adds up passed, failed
# and skipped, names the tests that skipped, and with CI=true counts a test that skipped as a
# failure unless JB_CI_MAY_SKIP names it; tests/sh/lib/check.sh and tests/jb_test.h print the
# "SKIP reason" lines and the "N passed, N failed, N skipped" summaries it reads.
# Fake tests in a temp BUILD (TEST_FILTER keeps the real ones out).
set -u
cd "$(dirname "$0")/../.."
. tests/sh/lib/check.sh
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
mkdir -p "$T/b/tests"
fake() {   # fake NAME LINES...: a test binary that prints LINES
    local n=$1; shift
    { echo '#!/bin/sh'; for l in "$@"; do printf 'echo "%s"\n' "$l"; done; } > "$T/b/tests/$n"
    chmod +x "$T/b/tests/$n"
}
fake test_zz_a "  ok   one" "test_zz_a: 2 passed, 0 failed"
fake test_zz_b "  SKIP no widget on this machine" "test_zz_b: 1 passed, 0 failed, 1 skipped"
rt() { out=$(env -u CI BUILD="$T/b" TEST_FILTER=test_zz_ "$@" tests/run_tests.sh 2>&1); rc=$?; }

# 1. skips are counted and the skipping tests named
rt
check "without CI: a skip passes the run (exit $rc)" '[ $rc = 0 ]'
check "the total counts the skip: $(tail -1 <<<"$out")" '[ "$(tail -1 <<<"$out")" = "3 passed, 0 failed, 1 skipped" ]'
check "the skipping test is named" 'grep -qx "skipping: test_zz_b" <<<"$out"'
check "its reason is shown" 'grep -q "SKIP no widget on this machine" <<<"$out"'

# 2. CI=true: a skip is a failure ...
rt CI=true
check "CI=true: a skip fails the run (exit $rc)" '[ $rc != 0 ]'
check "CI=true: counted as one failure: $(tail -1 <<<"$out")" '[ "$(tail -1 <<<"$out")" = "3 passed, 1 failed, 1 skipped" ] && grep -qx "failing: test_zz_b" <<<"$out"'
check "CI=true: says why" 'grep -q "skipped with CI=true: CI must run every test" <<<"$out"'
# ... unless JB_CI_MAY_SKIP names the test
rt CI=true JB_CI_MAY_SKIP="test_zz_x test_zz_b"
check "CI=true, JB_CI_MAY_SKIP names it: passes (exit $rc)" '[ $rc = 0 ] && [ "$(tail -1 <<<"$out")" = "3 passed, 0 failed, 1 skipped" ]'

# 3. no summary line, or a non-zero exit with nothing failed: a failure (as before)
fake test_zz_c "no summary here"
printf '#!/bin/sh\necho "test_zz_d: 1 passed, 0 failed"\nexit 3\n' > "$T/b/tests/test_zz_d"; chmod +x "$T/b/tests/test_zz_d"
rt
check "no summary line and a bad exit code each count as a failure: $(tail -1 <<<"$out")" \
    '[ $rc != 0 ] && [ "$(tail -1 <<<"$out")" = "4 passed, 2 failed, 1 skipped" ]'

# 4. check.sh: a condition string, a command with arguments, a status, a skip, the summary
out=$(bash -c '. tests/sh/lib/check.sh
    a=1; check "string" "[ \$a = 1 ]"; check "command" test "x y" = "x y"; check "false" false
    check_status "status 0" 0; check_status "status 1" 1; skip "no sox"; check_summary test_x
    echo "rc=$?"' 2>&1)
check "check.sh: ok/FAIL/SKIP lines" 'grep -qx "  ok   string" <<<"$out" && grep -qx "  ok   command" <<<"$out" && grep -qx "  FAIL false" <<<"$out" && grep -qx "  FAIL status 1" <<<"$out" && grep -qx "  SKIP no sox" <<<"$out"'
check "check.sh: summary with skips, non-zero status on a failure" \
    'grep -qx "test_x: 3 passed, 2 failed, 1 skipped" <<<"$out" && grep -qx "rc=1" <<<"$out"'
out=$(bash -c '. tests/sh/lib/check.sh; check "a" true; check_finish test_y; echo after' 2>&1); rc=$?
check "check.sh: check_finish prints the plain summary and exits 0 (rc $rc)" \
    '[ $rc = 0 ] && [ "$out" = "  ok   a
test_y: 1 passed, 0 failed" ]'

# 5. jb_test.h: JB_SKIP prints the reason and the summary counts it
cat > "$T/t.c" <<'C'
#include "jb_test.h"
int main(void) {
    JB_CHECK(1, "fine");
    JB_SKIP("no %s here", "GPU");
    return jb_test_summary("test_c");
}
C
if cc -std=c11 -Wall -Wextra -Werror -Itests "$T/t.c" -o "$T/t" -lm 2>"$T/cc.err"; then
    out=$("$T/t"); rc=$?
    check "jb_test.h: SKIP line and '1 passed, 0 failed, 1 skipped' (rc $rc)" \
        '[ $rc = 0 ] && grep -qx "  SKIP no GPU here" <<<"$out" && grep -qx "test_c: 1 passed, 0 failed, 1 skipped" <<<"$out"'
else
    bad "jb_test.h: the example does not compile: $(head -3 "$T/cc.err")"
fi
check_summary test_harness
