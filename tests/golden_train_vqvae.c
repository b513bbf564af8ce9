// golden_train_vqvae.c: checker of kind "train" for model "vqvae" (README section E1).
// Called by the train-kind runner (golden_run_train) for cases whose case.json "model" is
// "vqvae". Runs one jb_train_vqvae_step on x with the case's weights and EMA state and
// compares codes (exact), loss and every metric (tolerance.losses), x_out and the codebook
// state after the update (tolerance.float_outputs), and the gradient of every parameter
// (tolerance.gradients_per_tensor; fallback rel 1e-3, abs 1e-6 max|grad|).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "golden.h"
#include "jb_hparams.h"
#include "jb_safetensors.h"
#include "jb_tensor.h"
#include "jb_train_vqvae.h"

int golden_train_vqvae(const golden_case_t *c, golden_result_t *r);

static double max_abs(const float *v, int64_t n) {
    double m = 0.0;
    for (int64_t i = 0; i < n; i++) m = fabs(v[i]) > m ? fabs(v[i]) : m;
    return m;
}

// {rel, abs} of tolerance.<group>.<name>, or the fallback.
static void tol_of(const golden_case_t *c, const char *group, const char *name, double *rel,
                   double *abs) {
    json_t *t = json_object_get(json_object_get(json_object_get(c->json, "tolerance"), group), name);
    if (json_is_object(t)) {
        if (json_is_number(json_object_get(t, "rel"))) *rel = json_number_value(json_object_get(t, "rel"));
        if (json_is_number(json_object_get(t, "abs"))) *abs = json_number_value(json_object_get(t, "abs"));
    }
}

static void check_float(const golden_case_t *c, golden_result_t *r, const jb_st_t *io,
                        const char *name, const float *ours, int64_t n, const char *group,
                        double rel_dflt, double abs_scale) {
    jb_err_t err = {0};
    const jb_st_entry_t *e = jb_st_get(io, name, -1, NULL, &err);
    float *ref = e ? jb_st_get_f32(io, name, -1, NULL, &err) : NULL;
    if (!ref) {
        golden_fail(r, "%s", err.msg);
        return;
    }
    int64_t m = 1;
    for (int i = 0; i < e->ndim; i++) m *= e->shape[i];
    if (m != n) {
        golden_fail(r, "%s: %lld elements, ours %lld", name, (long long)m, (long long)n);
    } else {
        double rel = rel_dflt, abs = abs_scale * max_abs(ref, n);
        if (abs < 1e-30 && abs_scale > 0) abs = 1e-30;
        tol_of(c, group, name, &rel, &abs);
        golden_check_close(r, name, ours, ref, n, rel, abs);
    }
    jb_free(ref);
}

int golden_train_vqvae(const golden_case_t *c, golden_result_t *r) {
    jb_err_t err = {0};
    jb_train_vqvae_t *tv = NULL;
    float *x = NULL;
    jb_st_t *model = jb_st_open(golden_path(c, "model.safetensors"), &err);
    jb_st_t *io = model ? jb_st_open(golden_path(c, "io.safetensors"), &err) : NULL;
    if (!io) {
        golden_fail(r, "%s", err.msg);
        goto done;
    }
    const json_t *hj = json_object_get(c->json, "hparams");
    jb_vqvae_hparams_t hp;
    jb_vqvae_loss_hparams_t lh;
    if (jb_vqvae_hparams_parse(hj, &hp, &err) || jb_vqvae_loss_hparams_parse(hj, &lh, &err)) {
        golden_fail(r, "case.json hparams: %s", err.msg);
        goto done;
    }
    const jb_st_entry_t *xe = jb_st_get(io, "x", -1, NULL, &err);
    if (!xe || xe->ndim != 3 || xe->shape[2] != 1) {
        golden_fail(r, "x: %s", xe ? "expected [N, T, 1]" : err.msg);
        goto done;
    }
    int N = (int)xe->shape[0];
    int64_t T = xe->shape[1];
    x = jb_st_get_f32(io, "x", -1, NULL, &err);
    tv = x ? jb_train_vqvae_new(&hp, &lh, N, T, 0, &err) : NULL;
    if (!tv || jb_train_vqvae_load(tv, model, &err)) {
        golden_fail(r, "%s", err.msg);
        goto done;
    }
    int K = hp.l_bins, E = hp.emb_width;
    for (int L = 0; L < hp.levels; L++) {
        char ns[32], ne[32];
        snprintf(ns, sizeof ns, "k_sum_in.%d", L);
        snprintf(ne, sizeof ne, "k_elem_in.%d", L);
        int64_t s2[2] = {K, E}, s1[1] = {K};
        float *ks = jb_st_get_f32(io, ns, 2, s2, &err);
        float *ke = ks ? jb_st_get_f32(io, ne, 1, s1, &err) : NULL;
        int bad = !ke || jb_train_vqvae_set_ema(tv, L, NULL, ks, ke, &err);
        jb_free(ks), jb_free(ke);
        if (bad) {
            golden_fail(r, "%s", err.msg);
            goto done;
        }
    }
    jb_tvq_result_t res;
    if (jb_train_vqvae_step(tv, x, &res, &err)) {
        golden_fail(r, "step: %s", err.msg);
        goto done;
    }
    // codes
    for (int L = 0; L < hp.levels; L++) {
        char nz[32];
        snprintf(nz, sizeof nz, "zs.%d", L);
        int64_t TL = T / hp.hop_lengths[L], zshape[2] = {N, TL};
        int32_t *zs = jb_st_get_i32(io, nz, 2, zshape, &err);
        if (!zs) golden_fail(r, "%s", err.msg);
        else golden_check_equal_i32(r, nz, res.zs[L], zs, N * TL);
        jb_free(zs);
    }
    // loss and metrics
    const char *names[64];
    double values[64];
    int nm = jb_train_vqvae_metrics(tv, &res, names, values, 64);
    double lrel = 1e-5;
    json_t *lt = json_object_get(json_object_get(c->json, "tolerance"), "losses");
    if (json_is_number(json_object_get(lt, "rel"))) lrel = json_number_value(json_object_get(lt, "rel"));
    for (int i = -1; i < nm && i < 64; i++) {
        char key[64];
        snprintf(key, sizeof key, i < 0 ? "loss" : "metrics.%s", i < 0 ? "" : names[i]);
        if (!jb_st_find(io, key)) {
            golden_fail(r, "%s: not in io.safetensors", key);
            continue;
        }
        float ours = (float)(i < 0 ? res.loss : values[i]);
        check_float(c, r, io, key, &ours, 1, "losses", lrel, 0.0);
    }
    // metrics the reference stores that we do not produce
    json_t *losses = json_object_get(c->json, "losses");
    const char *key;
    json_t *val;
    json_object_foreach(losses, key, val) {
        int found = !strcmp(key, "loss");
        for (int i = 0; i < nm && !found; i++)
            found = !strncmp(key, "metrics.", 8) && !strcmp(key + 8, names[i]);
        if (!found) golden_fail(r, "%s: not produced", key);
    }
    // outputs
    check_float(c, r, io, "x_out", res.x_out, (int64_t)N * T, "float_outputs", 1e-4, 1e-5);
    for (int L = 0; L < hp.levels; L++) {
        const float *k, *ks, *ke;
        jb_train_vqvae_codebook(tv, L, &k, &ks, &ke);
        char nk[32];
        snprintf(nk, sizeof nk, "k_out.%d", L);
        check_float(c, r, io, nk, k, (int64_t)K * E, "float_outputs", 1e-4, 1e-5);
        snprintf(nk, sizeof nk, "k_sum_out.%d", L);
        check_float(c, r, io, nk, ks, (int64_t)K * E, "float_outputs", 1e-4, 1e-5);
        snprintf(nk, sizeof nk, "k_elem_out.%d", L);
        check_float(c, r, io, nk, ke, K, "float_outputs", 1e-4, 1e-5);
    }
    // gradients: every stored grad.* must be one of ours, every parameter of ours stored
    int ngrad = 0;
    for (int i = 0; i < jb_st_count(io); i++) {
        const char *nmg = jb_st_entry(io, i)->name;
        if (strncmp(nmg, "grad.", 5)) continue;
        ngrad++;
        int pi = jb_train_vqvae_find(tv, nmg + 5);
        if (pi < 0) {
            golden_fail(r, "%s: no such parameter", nmg);
            continue;
        }
        jb_tvq_param_t p = jb_train_vqvae_param(tv, pi);
        check_float(c, r, io, nmg, p.g, p.n, "gradients_per_tensor", 1e-3, 1e-6);
    }
    if (ngrad != jb_train_vqvae_n_params(tv))
        golden_fail(r, "%d gradients stored, the model has %d parameters", ngrad,
                    jb_train_vqvae_n_params(tv));
done:
    jb_free(x);
    jb_train_vqvae_destroy(&tv);
    jb_st_close(&io);
    jb_st_close(&model);
    return r->failed ? -1 : 0;
}
