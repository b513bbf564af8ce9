// golden.h: the golden runner's contract with the per-kind checkers.
//
// tests/golden_runner.c walks a directory of case folders (a folder with
// case.json, or labels/cases.json), reads each case's "kind" and calls the
// checker for that kind. A checker lives in tests/golden_<kind>.c and defines
//     int golden_run_<kind>(const golden_case_t *c, golden_result_t *r);
// The runner declares the checkers weak: a kind whose file is not linked in is
// reported as "skipped (not implemented)", never as passed.
#ifndef GOLDEN_H
#define GOLDEN_H

#include <jansson.h>
#include <stdint.h>

typedef struct {
    const char *dir;    // case folder, e.g. tests/golden/vqvae_tiny
    const char *name;   // folder name
    json_t *json;       // parsed case.json (labels: cases.json); borrowed
    int verbose;        // GOLDEN_VERBOSE set
} golden_case_t;

typedef struct {
    int checks;         // comparisons made
    int failed;         // comparisons that failed
    double worst;       // worst |err| / tolerance over all float checks (<= 1 passes)
    char first_failure[512];
    char skip_reason[128];   // set with a GOLDEN_SKIP return
} golden_result_t;

// A checker returns 0 when it ran the case, -1 on a harness error, and GOLDEN_SKIP
// (with skip_reason) for a case of a kind it knows but a part not implemented yet:
// the runner lists it as skipped, never as passed.
#define GOLDEN_SKIP 2

// Float comparison: every element within abs + rel*|ref|. Prints a line
// "    <what>: max_abs=.. max_rel=.. worst/tol=.. ok|FAIL" and counts it.
void golden_check_close(golden_result_t *r, const char *what, const float *ours,
                        const float *ref, int64_t n, double rel, double abs);
// Integer equality; prints the first mismatch position.
void golden_check_equal_i32(golden_result_t *r, const char *what, const int32_t *ours,
                            const int32_t *ref, int64_t n);
// A failure that is not a comparison (harness error, error return); counts one failed check.
void golden_fail(golden_result_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// Tolerance helper: reads c->json["tolerance"] {rel, abs} and, if present,
// ["tolerance_per_tensor"][tensor]; falls back to rel 1e-4, abs 1e-5*max|ref|.
void golden_tolerance(const golden_case_t *c, const char *tensor, const float *ref, int64_t n,
                      double *rel, double *abs);
// "<dir>/<file>" into a static per-thread buffer.
const char *golden_path(const golden_case_t *c, const char *file);

// Checkers (weak; defined in tests/golden_<kind>.c).
int golden_run_vqvae(const golden_case_t *c, golden_result_t *r) __attribute__((weak));
int golden_run_prior(const golden_case_t *c, golden_result_t *r) __attribute__((weak));
int golden_run_pipeline(const golden_case_t *c, golden_result_t *r) __attribute__((weak));
int golden_run_labels(const golden_case_t *c, golden_result_t *r) __attribute__((weak));
int golden_run_train(const golden_case_t *c, golden_result_t *r) __attribute__((weak));

#endif
