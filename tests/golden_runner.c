// golden_runner.c: run every golden case whose kind has a checker.
//
//   golden-runner [DIR] [CASE...]     DIR defaults to tests/golden
//
// Prints per case the checks, the worst error relative to tolerance and
// pass/fail; kinds without a checker are listed as skipped. Ends with
// "golden: N passed, N failed, N skipped" (cases).
#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "golden.h"

void golden_check_close(golden_result_t *r, const char *what, const float *ours,
                        const float *ref, int64_t n, double rel, double abs) {
    double max_abs = 0, max_rel = 0, worst = 0;
    int64_t bad = 0, first_bad = -1;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)ours[i] - (double)ref[i]);
        double tol = abs + rel * fabs((double)ref[i]);
        if (!(d <= tol)) {   // NaN fails
            bad++;
            if (first_bad < 0) first_bad = i;
        }
        if (d > max_abs || d != d) max_abs = d;
        if (fabs(ref[i]) > 0 && d / fabs(ref[i]) > max_rel) max_rel = d / fabs(ref[i]);
        if (tol > 0 && d / tol > worst) worst = d / tol;
        if (d != d) worst = INFINITY;
    }
    r->checks++;
    if (worst > r->worst) r->worst = worst;
    printf("    %-28s n=%-8lld max_abs=%.3g max_rel=%.3g worst/tol=%.3f %s\n", what,
           (long long)n, max_abs, max_rel, worst, bad ? "FAIL" : "ok");
    if (bad) {
        r->failed++;
        printf("      %lld elements out of tolerance; first at %lld: ours %.9g ref %.9g\n",
               (long long)bad, (long long)first_bad, ours[first_bad], ref[first_bad]);
        if (!r->first_failure[0])
            snprintf(r->first_failure, sizeof r->first_failure, "%s: %lld elements off", what,
                     (long long)bad);
    }
}

void golden_check_equal_i32(golden_result_t *r, const char *what, const int32_t *ours,
                            const int32_t *ref, int64_t n) {
    int64_t bad = 0, first_bad = -1;
    for (int64_t i = 0; i < n; i++)
        if (ours[i] != ref[i]) {
            bad++;
            if (first_bad < 0) first_bad = i;
        }
    r->checks++;
    printf("    %-28s n=%-8lld mismatches=%lld %s\n", what, (long long)n, (long long)bad,
           bad ? "FAIL" : "ok");
    if (bad) {
        r->failed++;
        printf("      first mismatch at %lld: ours %d ref %d\n", (long long)first_bad,
               ours[first_bad], ref[first_bad]);
        if (!r->first_failure[0])
            snprintf(r->first_failure, sizeof r->first_failure, "%s: %lld mismatches", what,
                     (long long)bad);
    }
}

void golden_fail(golden_result_t *r, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    r->checks++;
    r->failed++;
    printf("    FAIL %s\n", msg);
    if (!r->first_failure[0]) snprintf(r->first_failure, sizeof r->first_failure, "%s", msg);
}

void golden_tolerance(const golden_case_t *c, const char *tensor, const float *ref, int64_t n,
                      double *rel, double *abs) {
    double maxabs = 0;
    for (int64_t i = 0; i < n; i++)
        if (fabs(ref[i]) > maxabs) maxabs = fabs(ref[i]);
    *rel = 1e-4;
    *abs = fmax(1e-5 * maxabs, 1e-5);
    json_t *t = json_object_get(c->json, "tolerance");
    if (json_is_object(t)) {
        json_t *jr = json_object_get(t, "rel"), *ja = json_object_get(t, "abs");
        if (json_is_number(jr)) *rel = json_number_value(jr);
        if (json_is_number(ja)) *abs = json_number_value(ja);
    }
    json_t *per = json_object_get(c->json, "tolerance_per_tensor");
    json_t *pt = tensor ? json_object_get(per, tensor) : NULL;
    if (json_is_object(pt)) {
        json_t *jr = json_object_get(pt, "rel"), *ja = json_object_get(pt, "abs");
        if (json_is_number(jr)) *rel = json_number_value(jr);
        if (json_is_number(ja)) *abs = json_number_value(ja);
    }
}

const char *golden_path(const golden_case_t *c, const char *file) {
    static __thread char buf[4096];
    snprintf(buf, sizeof buf, "%s/%s", c->dir, file);
    return buf;
}

typedef int (*kind_fn)(const golden_case_t *, golden_result_t *);

static kind_fn checker_for(const char *kind) {
    if (!strcmp(kind, "vqvae")) return golden_run_vqvae;
    if (!strcmp(kind, "prior")) return golden_run_prior;
    if (!strcmp(kind, "pipeline")) return golden_run_pipeline;
    if (!strcmp(kind, "labels")) return golden_run_labels;
    if (!strcmp(kind, "train")) return golden_run_train;
    return NULL;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv) {
    const char *root = argc > 1 ? argv[1] : "tests/golden";
    setvbuf(stdout, NULL, _IOLBF, 0);
    DIR *d = opendir(root);
    if (!d) {
        fprintf(stderr, "golden: cannot open directory %s\n", root);
        printf("golden: 0 passed, 1 failed\n");
        return 1;
    }
    char *names[512];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 512)
        if (e->d_name[0] != '.') names[n++] = strdup(e->d_name);
    closedir(d);
    qsort(names, (size_t)n, sizeof names[0], cmp_str);

    int passed = 0, failed = 0, skipped = 0;
    for (int i = 0; i < n; i++) {
        if (argc > 2) {   // only the named cases
            int want = 0;
            for (int a = 2; a < argc; a++) want |= !strcmp(argv[a], names[i]);
            if (!want) continue;
        }
        char dir[4096], path[4200];
        snprintf(dir, sizeof dir, "%s/%s", root, names[i]);
        struct stat st;
        if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) continue;
        const char *kind = NULL;
        json_error_t jerr;
        json_t *js = NULL;
        snprintf(path, sizeof path, "%s/case.json", dir);
        if (stat(path, &st) == 0) {
            js = json_load_file(path, 0, &jerr);
            if (!js) {
                printf("%-28s FAIL case.json: %s (line %d)\n", names[i], jerr.text, jerr.line);
                failed++;
                continue;
            }
            kind = json_string_value(json_object_get(js, "kind"));
        } else {
            snprintf(path, sizeof path, "%s/cases.json", dir);
            if (stat(path, &st) != 0) continue;   // not a case folder (e.g. checkpoints/)
            js = json_load_file(path, 0, &jerr);
            if (!js) {
                printf("%-28s FAIL cases.json: %s\n", names[i], jerr.text);
                failed++;
                continue;
            }
            kind = "labels";
        }
        if (!kind) {
            printf("%-28s FAIL: case.json has no kind\n", names[i]);
            failed++;
            json_decref(js);
            continue;
        }
        kind_fn fn = checker_for(kind);
        if (!fn) {
            printf("%-28s kind %-9s skipped (not implemented)\n", names[i], kind);
            skipped++;
            json_decref(js);
            continue;
        }
        printf("%-28s kind %s\n", names[i], kind);
        golden_case_t c = {.dir = dir, .name = names[i], .json = js,
                           .verbose = getenv("GOLDEN_VERBOSE") != NULL};
        golden_result_t r = {0};
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int rc = fn(&c, &r);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (rc == GOLDEN_SKIP && r.failed == 0) {
            printf("%-28s kind %-9s skipped (%s)\n", names[i], kind, r.skip_reason);
            skipped++;
            json_decref(js);
            continue;
        }
        double secs = (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec);
        if (rc != 0 && r.failed == 0) golden_fail(&r, "checker returned an error");
        if (r.checks == 0) golden_fail(&r, "checker made no comparison");
        int ok = r.failed == 0;
        printf("%-28s %s  checks=%d failed=%d worst/tol=%.3f  %.1fs%s%s\n", names[i],
               ok ? "PASS" : "FAIL", r.checks, r.failed, r.worst, secs,
               ok ? "" : "  first: ", ok ? "" : r.first_failure);
        if (ok) passed++;
        else failed++;
        json_decref(js);
    }
    for (int i = 0; i < n; i++) free(names[i]);
    printf("golden: %d passed, %d failed, %d skipped\n", passed, failed, skipped);
    return failed ? 1 : 0;
}
