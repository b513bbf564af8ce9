// jb_test.h: the tiny harness every tests/test_*.c uses.
//
//   int main(void) { JB_CHECK(1 + 1 == 2, "arith"); return jb_test_summary("test_x"); }
//
// Each check prints "ok"/"FAIL" with its name; jb_test_summary prints
// "<name>: N passed, N failed" (tests/run_tests.sh adds the lines up) and
// returns the process exit code (0 only when nothing failed). A part that cannot run
// in this build or on this machine says so with JB_SKIP("reason", ...): it prints
// "  SKIP reason" and the summary gains ", N skipped" (with CI=true the run fails).
#ifndef JB_TEST_H
#define JB_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int jb_test_passed, jb_test_failed, jb_test_skipped;

#define JB_CHECK(cond, ...)                                                   \
    do {                                                                      \
        if (cond) {                                                           \
            jb_test_passed++;                                                 \
            if (getenv("JB_TEST_VERBOSE")) {                                  \
                printf("  ok   ");                                            \
                printf(__VA_ARGS__);                                          \
                printf("\n");                                                 \
            }                                                                 \
        } else {                                                              \
            jb_test_failed++;                                                 \
            printf("  FAIL %s:%d: ", __FILE__, __LINE__);                     \
            printf(__VA_ARGS__);                                              \
            printf("\n");                                                     \
        }                                                                     \
        fflush(stdout);                                                       \
    } while (0)

#define JB_SKIP(...)                                                          \
    do {                                                                      \
        jb_test_skipped++;                                                    \
        printf("  SKIP ");                                                    \
        printf(__VA_ARGS__);                                                  \
        printf("\n");                                                        \
        fflush(stdout);                                                       \
    } while (0)

// Checks that a call returning 0/-1 succeeded; prints err.msg when not.
#define JB_CHECK_OK(call, errp, name)                                         \
    do {                                                                      \
        int rc_ = (call);                                                     \
        JB_CHECK(rc_ == 0, "%s (%s)", name, rc_ == 0 ? "" : (errp)->msg);     \
    } while (0)

static inline int jb_test_summary(const char *name) {
    if (jb_test_skipped)
        printf("%s: %d passed, %d failed, %d skipped\n", name, jb_test_passed, jb_test_failed,
               jb_test_skipped);
    else
        printf("%s: %d passed, %d failed\n", name, jb_test_passed, jb_test_failed);
    return jb_test_failed ? 1 : 0;
}

// Max |a-b| and whether every element satisfies |a-b| <= abs + rel*|b|.
static inline int jb_test_close(const float *a, const float *b, long n, double rel, double abs_,
                                double *max_abs, double *max_rel) {
    int ok = 1;
    double ma = 0, mr = 0;
    for (long i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= abs_ + rel * fabs((double)b[i]))) ok = 0;   // NaN fails too
        if (d > ma || d != d) ma = d;
        double r = d / (fabs((double)b[i]) + 1e-30);
        if (r > mr && fabs((double)b[i]) > abs_) mr = r;
    }
    if (max_abs) *max_abs = ma;
    if (max_rel) *max_rel = mr;
    return ok;
}

#endif
