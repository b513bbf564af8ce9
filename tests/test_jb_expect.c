// test_jb_expect.c: expected tensors from hparams, against every golden model file
// (names, state_dict order, shapes, dtypes as the reference's modules made them),
// and parameter counts of the released presets against the published sizes.
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jb_expect.h"
#include "jb_hparams.h"
#include "jb_safetensors.h"
#include "jb_test.h"

static void check_file(const char *path) {
    jb_err_t err = {0};
    jb_st_t *st = jb_st_open(path, &err);
    if (!st) return;
    const char *kind = jb_st_meta(st, "kind");
    json_t *hp = kind ? jb_hparams_from_st(st, &err) : NULL;
    if (!hp) {
        jb_st_close(&st);
        return;
    }
    int prior = !strcmp(kind, "prior");
    jb_expect_t *e = prior ? jb_expect_prior(hp, &err) : jb_expect_vqvae(hp, &err);
    JB_CHECK(e != NULL, "%s: expected tensors computed (%s)", path, err.msg);
    if (e) {
        // jb_st_entry is in data-offset order, which the golden writer kept as state_dict order.
        int n = jb_st_count(st), bad = 0, order = 1;
        JB_CHECK(e->n == n, "%s: %d tensors expected, file has %d", path, e->n, n);
        for (int i = 0; i < n; i++) {
            const jb_st_entry_t *t = jb_st_entry(st, i);
            int k = jb_expect_find(e, t->name);
            if (k < 0) {
                if (bad++ < 3) JB_CHECK(0, "%s: '%s' not expected", path, t->name);
                continue;
            }
            if (k != i) order = 0;
            if (jb_expect_check(e, k, t->dtype, t->ndim, t->shape, &err) != 0 && bad++ < 3)
                JB_CHECK(0, "%s: %s", path, err.msg);
        }
        JB_CHECK(bad == 0, "%s: every tensor expected with its shape and dtype", path);
        JB_CHECK(order, "%s: expected order is the state_dict order", path);
    }
    jb_expect_destroy(&e);
    json_decref(hp);
    jb_st_close(&st);
}

static void check_presets(void) {
    // Parameter counts: 5B top priors, ~1B others (the paper's sizes).
    struct { const char *preset; double lo, hi; } c[] = {
        {"prior_5b", 4.9e9, 5.2e9}, {"prior_5b_lyrics", 5.0e9, 5.8e9},
        {"prior_1b_lyrics", 0.9e9, 1.2e9}, {"upsampler_level_0", 0.75e9, 1.1e9},
        {"upsampler_level_1", 0.75e9, 1.1e9}, {"vqvae", 1e6, 1e9}};
    for (size_t k = 0; k < sizeof c / sizeof c[0]; k++) {
        jb_err_t err = {0};
        json_t *hp = jb_hparams_preset(c[k].preset, &err);
        jb_expect_t *e = !hp ? NULL : !strcmp(c[k].preset, "vqvae") ? jb_expect_vqvae(hp, &err)
                                                                       : jb_expect_prior(hp, &err);
        JB_CHECK(e && e->n_params >= c[k].lo && e->n_params <= c[k].hi,
                 "%s: %d tensors, %.3g parameters (%s)", c[k].preset, e ? e->n : 0,
                 e ? (double)e->n_params : 0.0, err.msg);
        jb_expect_destroy(&e);
        json_decref(hp);
    }
    // A shape error names the tensor.
    jb_err_t err = {0};
    json_t *hp = jb_hparams_preset("vqvae", &err);
    jb_expect_t *e = jb_expect_vqvae(hp, &err);
    int k = e ? jb_expect_find(e, "bottleneck.level_blocks.2.k") : -1;
    JB_CHECK(k >= 0, "vqvae codebook expected");
    if (k >= 0) {
        int64_t s[2] = {64, 2048};
        JB_CHECK(jb_expect_check(e, k, JB_F32, 2, s, &err) != 0 &&
                 strstr(err.msg, "bottleneck.level_blocks.2.k") &&
                 strstr(err.msg, "[2048, 64]"), "transposed codebook refused: %s", err.msg);
        int64_t s2[2] = {2048, 64};
        JB_CHECK(jb_expect_check(e, k, JB_I64, 2, s2, &err) != 0 && strstr(err.msg, "dtype I64"),
                 "I64 codebook refused: %s", err.msg);
        JB_CHECK(jb_expect_check(e, k, JB_F16, 2, s2, &err) == 0, "F16 codebook accepted");
        JB_CHECK(jb_expect_check(e, k, JB_F32, 2, s2, &err) == 0, "F32 codebook accepted");
    }
    jb_expect_destroy(&e);
    json_decref(hp);
}

int main(void) {
    const char *g = getenv("GOLDEN") && *getenv("GOLDEN") ? getenv("GOLDEN") : "tests/golden";
    DIR *d = opendir(g);
    JB_CHECK(d != NULL, "golden dir %s", g);
    int files = 0;
    struct dirent *de;
    static const char *names[] = {"model", "vqvae", "prior_level_0", "prior_level_1",
                                  "prior_level_2"};
    while (d && (de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        for (int k = 0; k < 5; k++) {
            char path[1024];
            snprintf(path, sizeof path, "%s/%s/%s.safetensors", g, de->d_name, names[k]);
            FILE *f = fopen(path, "rb");
            if (!f) continue;
            fclose(f);
            files++;
            check_file(path);
        }
    }
    if (d) closedir(d);
    JB_CHECK(files >= 10, "%d golden model files checked", files);
    check_presets();
    return jb_test_summary("test_jb_expect");
}
