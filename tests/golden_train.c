// golden_train.c: kind `train` (golden README section E). Priors (E2): loss, metrics, logits
// and the gradient of every parameter of SimplePrior.z_forward + backward, each within the
// case's tolerance; the optimiser (E3, train_prior_top_tiny): jb_adam fed with the stored
// gradients, learning rates and clip scales, against the parameters after steps 1 and 3.
// VQ-VAE cases (E1) go to golden_train_vqvae (tests/golden_train_vqvae.c).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "golden.h"
#include "jb_adam.h"
#include "jb_safetensors.h"
#include "jb_train_prior.h"

int golden_train_vqvae(const golden_case_t *c, golden_result_t *r);

static double jnum(json_t *o, const char *key, double def) {
    json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : def;
}

// rel/abs of tolerance[section][per_key][tensor], else tolerance[section] with abs given as
// "1e-6 * max|...|" (computed from ref).
static void tol_for(const golden_case_t *c, const char *section, const char *per_key,
                    const char *tensor, const float *ref, int64_t n, double *rel, double *abs) {
    json_t *t = json_object_get(json_object_get(c->json, "tolerance"), section);
    json_t *pt = per_key ? json_object_get(json_object_get(json_object_get(c->json, "tolerance"),
                                                           per_key), tensor)
                         : NULL;
    if (!pt && per_key && !strcmp(section, "params_after_step"))
        pt = json_object_get(json_object_get(t, "per_tensor"), tensor);
    double mx = 0;
    for (int64_t i = 0; i < n; i++) mx = fmax(mx, fabs(ref[i]));
    *rel = jnum(t, "rel", 1e-3);
    // abs is a number, or a string "<k> * max|...|" meaning k times this tensor's max |ref|
    json_t *ja = json_object_get(t, "abs");
    *abs = 1e-6 * mx;
    if (json_is_number(ja)) {
        *abs = json_number_value(ja);
    } else if (json_is_string(ja)) {
        char *end;
        double k = strtod(json_string_value(ja), &end);
        if (end != json_string_value(ja)) *abs = k * mx;
    }
    if (json_is_object(pt)) {
        *rel = jnum(pt, "rel", *rel);
        *abs = jnum(pt, "abs", *abs);
    }
}

static void check_scalar(const golden_case_t *c, golden_result_t *r, const jb_st_t *io,
                         const char *name, double ours) {
    jb_err_t err = {0};
    float *ref = jb_st_get_f32(io, name, -1, NULL, &err);
    if (!ref) {
        golden_fail(r, "%s", err.msg);
        return;
    }
    double rel, abs;
    tol_for(c, "losses", NULL, name, ref, 1, &rel, &abs);
    float o = (float)ours;
    golden_check_close(r, name, &o, ref, 1, rel, abs);
    jb_free(ref);
}

static int is_tied_x_out(const golden_case_t *c, const char *name) {
    if (strcmp(name, "prior.x_out.weight")) return 0;
    return json_array_size(json_object_get(c->json, "tied_parameters")) > 0;
}

// Adam fed with the stored gradients (E3): after1 and after3 within params_after_step.
static void check_optimizer(const golden_case_t *c, golden_result_t *r, const jb_st_t *io,
                            const float *our_grads, int64_t our_n) {
    json_t *oj = json_object_get(c->json, "optimizer");
    json_t *set = json_object_get(oj, "settings"), *steps = json_object_get(oj, "steps");
    json_t *params = json_object_get(c->json, "parameters");
    jb_err_t err = {0};
    jb_adam_hp_t hp = jb_adam_defaults();
    hp.lr = jnum(set, "lr", hp.lr), hp.beta1 = jnum(set, "beta1", hp.beta1);
    hp.beta2 = jnum(set, "beta2", hp.beta2), hp.eps = jnum(set, "eps", hp.eps);
    hp.weight_decay = jnum(set, "weight_decay", 0), hp.clip = jnum(set, "clip", hp.clip);
    hp.ignore_grad_norm = jnum(set, "ignore_grad_norm", 0);
    hp.lr_warmup = jnum(set, "lr_warmup", hp.lr_warmup);
    hp.lr_decay = jnum(set, "lr_decay", hp.lr_decay);
    hp.lr_gamma = jnum(set, "lr_gamma", hp.lr_gamma);
    hp.lr_scale = jnum(set, "lr_scale", hp.lr_scale);
    hp.lr_use_linear_decay = json_is_true(json_object_get(set, "lr_use_linear_decay"));
    hp.lr_start_linear_decay = jnum(set, "lr_start_linear_decay", 0);
    int64_t step0 = (int64_t)jnum(oj, "step0", 0);
    size_t np = json_array_size(params), nsteps = json_array_size(steps);
    // one flat array in the order of `parameters`
    int64_t total = 0;
    int64_t *off = calloc(np + 1, sizeof(int64_t));
    jb_st_t *model = jb_st_open(golden_path(c, "model.safetensors"), &err);
    float *w = NULL, *g[3] = {NULL, NULL, NULL};
    jb_adam_t *opt = NULL;
    if (!off || !model) {
        golden_fail(r, "optimizer: %s", err.msg);
        goto done;
    }
    for (size_t i = 0; i < np; i++) {
        const jb_st_entry_t *e = jb_st_find(model, json_string_value(json_array_get(params, i)));
        if (!e) {
            golden_fail(r, "optimizer: parameter %s not in model.safetensors",
                        json_string_value(json_array_get(params, i)));
            goto done;
        }
        int64_t n = 1;
        for (int d = 0; d < e->ndim; d++) n *= e->shape[d];
        off[i] = total;
        total += n;
    }
    off[np] = total;
    w = malloc(sizeof(float) * (size_t)total);
    for (int s = 0; s < 3; s++) g[s] = malloc(sizeof(float) * (size_t)total);
    if (!w || !g[0] || !g[1] || !g[2]) {
        golden_fail(r, "optimizer: out of memory");
        goto done;
    }
    static const char *gpre[3] = {"grad.", "opt.step2.grad.", "opt.step3.grad."};
    for (size_t i = 0; i < np; i++) {
        const char *pn = json_string_value(json_array_get(params, i));
        char nm[256];
        int64_t n = off[i + 1] - off[i];
        float *v = jb_st_get_f32(model, pn, -1, NULL, &err);
        if (!v) goto fail_err;
        memcpy(w + off[i], v, sizeof(float) * (size_t)n);
        jb_free(v);
        for (int s = 0; s < 3; s++) {
            snprintf(nm, sizeof nm, "%s%s", gpre[s], pn);
            if (!(v = jb_st_get_f32(io, nm, -1, NULL, &err))) goto fail_err;
            memcpy(g[s] + off[i], v, sizeof(float) * (size_t)n);
            jb_free(v);
        }
    }
    // schedule, gradient norm, clip scale against the recorded steps
    float *gn_ref = jb_st_get_f32(io, "opt.grad_norm", -1, NULL, &err);
    if (!gn_ref) goto fail_err;
    {
        float ours_gn = (float)jb_adam_grad_norm(our_grads, our_n);
        golden_check_close(r, "grad_norm(our grads)", &ours_gn, gn_ref, 1, 1e-4, 0);
        float st_gn = (float)jb_adam_grad_norm(g[0], total);
        golden_check_close(r, "grad_norm(stored grads)", &st_gn, gn_ref, 1, 1e-5, 0);
    }
    jb_free(gn_ref);
    if (!(opt = jb_adam_new(total, &err))) goto fail_err;
    for (size_t s = 0; s < nsteps && s < 3; s++) {
        json_t *sj = json_array_get(steps, s);
        double lr = jnum(sj, "lr", 0), scale = jnum(sj, "clip_scale", 1);
        double gn = jnum(sj, "grad_norm", 0);
        float ol = (float)jb_adam_lr(&hp, step0 + (int64_t)s), rl = (float)lr;
        float oc = (float)jb_adam_clip_scale(&hp, gn), rc = (float)scale;
        char what[64];
        snprintf(what, sizeof what, "step %zu lr", s + 1);
        golden_check_close(r, what, &ol, &rl, 1, 1e-6, 0);
        snprintf(what, sizeof what, "step %zu clip_scale", s + 1);
        golden_check_close(r, what, &oc, &rc, 1, 1e-6, 0);
        // A skipped step leaves parameters, moments and the step counter as they were.
        if (!jb_adam_skip(&hp, gn)) jb_adam_step(opt, &hp, w, g[s], lr, scale);
        if (s != 0 && s != 2) continue;
        for (size_t i = 0; i < np; i++) {
            const char *pn = json_string_value(json_array_get(params, i));
            char nm[256];
            snprintf(nm, sizeof nm, "opt.after%zu.%s", s + 1, pn);
            float *ref = jb_st_get_f32(io, nm, -1, NULL, &err);
            if (!ref) goto fail_err;
            int64_t n = off[i + 1] - off[i];
            double rel, abs;
            tol_for(c, "params_after_step", "params_after_step", nm, ref, n, &rel, &abs);
            golden_check_close(r, nm, w + off[i], ref, n, rel, abs);
            jb_free(ref);
        }
    }
    goto done;
fail_err:
    golden_fail(r, "optimizer: %s", err.msg);
done:
    jb_adam_destroy(&opt);
    free(w);
    for (int s = 0; s < 3; s++) free(g[s]);
    free(off);
    jb_st_close(&model);
}

static int run_prior(const golden_case_t *c, golden_result_t *r) {
    jb_err_t err = {0};
    int rc = -1;
    jb_train_prior_t *tp = NULL;
    int32_t *z = NULL, *zc = NULL, *y = NULL;
    float *logits = NULL, *ref = NULL;
    jb_st_t *io = jb_st_open(golden_path(c, "io.safetensors"), &err);
    if (!io) {
        golden_fail(r, "%s", err.msg);
        return -1;
    }
    const jb_st_entry_t *ez = jb_st_get(io, "z", -1, NULL, &err);
    if (!ez) {
        golden_fail(r, "%s", err.msg);
        goto done;
    }
    int N = (int)ez->shape[0];
    if (!(tp = jb_train_prior_new(golden_path(c, "model.safetensors"), N, &err))) {
        golden_fail(r, "load: %s", err.msg);
        goto done;
    }
    const jb_prior_info_t *in = jb_train_prior_info(tp);
    z = jb_st_get_i32(io, "z", -1, NULL, &err);
    if (jb_st_find(io, "z_cond")) zc = jb_st_get_i32(io, "z_cond", -1, NULL, &err);
    if (jb_st_find(io, "y")) y = jb_st_get_i32(io, "y", -1, NULL, &err);
    logits = malloc(sizeof(float) * (size_t)N * in->seq_len * in->seq_bins);
    if (!z || !logits) {
        golden_fail(r, "inputs: %s", err.msg);
        goto done;
    }
    jb_train_prior_loss_t L;
    if (jb_train_prior_step(tp, z, zc, y, N, &L, logits, &err)) {
        golden_fail(r, "step: %s", err.msg);
        goto done;
    }
    check_scalar(c, r, io, "loss", L.loss);
    check_scalar(c, r, io, "metrics.bpd", L.gen_loss);
    check_scalar(c, r, io, "metrics.gen_loss", L.gen_loss);
    check_scalar(c, r, io, "metrics.prime_loss", L.prime_loss);
    int64_t nl = (int64_t)N * in->seq_len * in->seq_bins;
    if (!(ref = jb_st_get_f32(io, "logits", -1, NULL, &err))) {
        golden_fail(r, "%s", err.msg);
        goto done;
    }
    {
        double rel, abs;
        tol_for(c, "logits", NULL, "logits", ref, nl, &rel, &abs);
        golden_check_close(r, "logits", logits, ref, nl, rel, abs);
    }
    jb_free(ref), ref = NULL;
    // every parameter's gradient
    json_t *params = json_object_get(c->json, "parameters");
    int matched = 0;
    for (size_t i = 0; i < json_array_size(params); i++) {
        const char *pn = json_string_value(json_array_get(params, i));
        char nm[256];
        snprintf(nm, sizeof nm, "grad.%s", pn);
        if (is_tied_x_out(c, pn) && !jb_st_find(io, nm)) continue;
        const jb_train_param_t *p = jb_train_prior_find(tp, pn);
        if (!p) {
            golden_fail(r, "parameter %s: not a parameter of our model", pn);
            continue;
        }
        if (!(ref = jb_st_get_f32(io, nm, -1, NULL, &err))) {
            golden_fail(r, "%s", err.msg);
            continue;
        }
        double rel, abs;
        tol_for(c, "gradients", "gradients_per_tensor", nm, ref, p->numel, &rel, &abs);
        golden_check_close(r, nm, p->g, ref, p->numel, rel, abs);
        jb_free(ref), ref = NULL;
        matched++;
    }
    if (matched != jb_train_prior_n_params(tp))
        golden_fail(r, "%d of our %d parameters compared", matched, jb_train_prior_n_params(tp));
    if (json_object_get(c->json, "optimizer")) {
        int64_t ng;
        float *g = jb_train_prior_grads(tp, &ng);
        check_optimizer(c, r, io, g, ng);
    }
    rc = 0;
done:
    jb_free(z), jb_free(zc), jb_free(y), jb_free(ref);
    free(logits);
    jb_train_prior_destroy(&tp);
    jb_st_close(&io);
    return rc;
}

int golden_run_train(const golden_case_t *c, golden_result_t *r) {
    const char *model = json_string_value(json_object_get(c->json, "model"));
    if (model && !strcmp(model, "prior")) return run_prior(c, r);
    if (model && !strcmp(model, "vqvae")) return golden_train_vqvae(c, r);
    golden_fail(r, "train case with model '%s'", model ? model : "(none)");
    return -1;
}
