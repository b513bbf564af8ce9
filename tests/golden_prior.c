// golden_prior.c: kind `prior` (README section B): one SimplePrior level against the reference:
// cond.y, cond.x, encoder_kv, teacher-forced logits, alignment attention (tolerance), greedy
// ancestral and primed sampling (exact).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "golden.h"
#include "golden_device.h"
#include "golden_prior_sizes.h"
#include "jb_prior.h"
#include "jb_safetensors.h"

static int64_t entry_numel(const jb_st_entry_t *e) {
    int64_t n = 1;
    for (int i = 0; i < e->ndim; i++) n *= e->shape[i];
    return n;
}

static void close_to(const golden_case_t *c, golden_result_t *r, const char *name,
                     const float *ours, const float *ref, int64_t n) {
    double rel, abs;
    golden_tolerance(c, name, ref, n, &rel, &abs);
    golden_check_close(r, name, ours, ref, n, rel, abs);
}

int golden_run_prior(const golden_case_t *c, golden_result_t *r) {
    jb_err_t err = {0};
    int rc = -1;
    jb_prior_t *p = NULL;
    jb_prior_sampler_t *s = NULL;
    void *dev = NULL;
    float *buf = NULL, *logits = NULL, *attn = NULL, *ref = NULL;
    int32_t *z = NULL, *zc = NULL, *y = NULL, *tok = NULL, *prime = NULL;
    jb_st_t *io = jb_st_open(golden_path(c, "io.safetensors"), &err);
    if (!io) {
        golden_fail(r, "%s", err.msg);
        return -1;
    }
    p = jb_prior_new(golden_path(c, "model.safetensors"), &err);
    if (!p) {
        golden_fail(r, "load: %s", err.msg);
        goto done;
    }
    const jb_prior_info_t *in = jb_prior_info(p);
    const jb_st_entry_t *ez = jb_st_get(io, "z", -1, NULL, &err);
    if (!ez) {
        golden_fail(r, "%s", err.msg);
        goto done;
    }
    int N = (int)ez->shape[0], W = in->width, T = in->n_ctx;
    if (ez->ndim != 2 || ez->shape[1] != T) {
        golden_fail(r, "z has %lld codes, model n_ctx %d", (long long)ez->shape[1], T);
        goto done;
    }
    z = jb_st_get_i32(io, "z", -1, NULL, &err);
    if (jb_st_find(io, "z_cond")) zc = jb_st_get_i32(io, "z_cond", -1, NULL, &err);
    if (jb_st_find(io, "y")) y = jb_st_get_i32(io, "y", -1, NULL, &err);
    golden_prior_sizes_t sz = golden_prior_sizes(in, N);
    buf = malloc(sizeof(float) * (size_t)sz.act);
    logits = malloc(sizeof(float) * (size_t)sz.logits);
    if (!z || !buf || !logits) {
        golden_fail(r, "inputs: %s", err.msg);
        goto done;
    }

    // cond.y
    if (jb_prior_cond_y(p, y, N, buf, &err)) {
        golden_fail(r, "cond_y: %s", err.msg);
        goto done;
    }
    if ((ref = jb_st_get_f32(io, "cond.y", -1, NULL, &err))) {
        close_to(c, r, "cond.y", buf, ref, (int64_t)N * W);
        jb_free(ref), ref = NULL;
    }
    // cond.x
    if (jb_st_find(io, "cond.x")) {
        if (jb_prior_cond_x(p, y, zc, N, buf, &err)) {
            golden_fail(r, "cond_x: %s", err.msg);
            goto done;
        }
        ref = jb_st_get_f32(io, "cond.x", -1, NULL, &err);
        if (ref) close_to(c, r, "cond.x", buf, ref, (int64_t)N * T * W);
        jb_free(ref), ref = NULL;
    }
    // encoder_kv
    if (jb_st_find(io, "encoder_kv")) {
        int nt = in->n_tokens;
        tok = malloc(sizeof(int32_t) * (size_t)N * nt);
        for (int n = 0; n < N; n++)
            memcpy(tok + n * nt, y + (int64_t)n * in->label_len + in->label_len - nt,
                   sizeof(int32_t) * nt);
        if (jb_prior_encoder_kv(p, tok, N, buf, &err)) {
            golden_fail(r, "encoder_kv: %s", err.msg);
            goto done;
        }
        ref = jb_st_get_f32(io, "encoder_kv", -1, NULL, &err);
        if (ref) close_to(c, r, "encoder_kv", buf, ref, (int64_t)N * nt * W);
        jb_free(ref), ref = NULL;
    }
    // logits (+ attention weights)
    const jb_st_entry_t *ea = jb_st_find(io, "attn");
    if (ea) attn = malloc(sizeof(float) * (size_t)entry_numel(ea));
    if (jb_prior_forward(p, z, zc, y, N, logits, attn, &err)) {
        golden_fail(r, "forward: %s", err.msg);
        goto done;
    }
    const jb_st_entry_t *el = jb_st_find(io, "logits");
    if (!el || entry_numel(el) != sz.logits) {
        golden_fail(r, "logits: stored shape does not match (N %d, %d x %d)", N, in->seq_len,
                    in->seq_bins);
        goto done;
    }
    ref = jb_st_get_f32(io, "logits", -1, NULL, &err);
    if (ref) close_to(c, r, "logits", logits, ref, sz.logits);
    jb_free(ref), ref = NULL;
    if (ea) {
        ref = jb_st_get_f32(io, "attn", -1, NULL, &err);
        if (ref) close_to(c, r, "attn", attn, ref, entry_numel(ea));
        jb_free(ref), ref = NULL;
    }

    // Greedy ancestral and primed sampling.
    int chunk = (int)json_integer_value(json_object_get(c->json, "chunk_size"));
    s = jb_prior_sampler_new(p, N, chunk, &err);
    int32_t *got = malloc(sizeof(int32_t) * (size_t)N * T);
    if (!s || !got || golden_prior_device(s, &dev, &err)) {
        free(got);
        golden_fail(r, "sampler: %s", err.msg);
        goto done;
    }
    int clamped = 0;
    int32_t *want = jb_st_get_i32(io, "greedy", -1, NULL, &err);
    if (jb_prior_sample(s, N, y, zc, NULL, 0, 0, 0, jb_prior_choose_greedy, NULL, got, &clamped,
                        &err))
        golden_fail(r, "greedy: %s", err.msg);
    else if (want)
        golden_check_equal_i32(r, "greedy", got, want, (int64_t)N * T);
    json_t *jc = json_object_get(c->json, "clamped_lyric_tokens_in_greedy");
    if (jc && json_integer_value(jc) != clamped)
        golden_fail(r, "greedy: %d clamped lyric tokens, reference %d", clamped,
                    (int)json_integer_value(jc));
    jb_free(want);
    const jb_st_entry_t *ep = jb_st_find(io, "prime");
    if (ep) {
        int P = (int)ep->shape[1];
        prime = jb_st_get_i32(io, "prime", -1, NULL, &err);
        want = jb_st_get_i32(io, "primed_greedy", -1, NULL, &err);
        if (jb_prior_sample(s, N, y, zc, prime, P, 0, chunk, jb_prior_choose_greedy, NULL, got,
                            &clamped, &err))
            golden_fail(r, "primed: %s", err.msg);
        else if (want)
            golden_check_equal_i32(r, "primed_greedy", got, want, (int64_t)N * T);
        jc = json_object_get(c->json, "clamped_lyric_tokens_in_primed");
        if (jc && json_integer_value(jc) != clamped)
            golden_fail(r, "primed: %d clamped lyric tokens, reference %d", clamped,
                        (int)json_integer_value(jc));
        jb_free(want);
    }
    free(got);
    rc = 0;
done:
    golden_prior_release(s, &dev);
    jb_prior_sampler_destroy(&s);
    jb_prior_destroy(&p);
    jb_st_close(&io);
    free(buf), free(logits), free(attn), free(tok);
    jb_free(ref), jb_free(z), jb_free(zc), jb_free(y), jb_free(prime);
    return rc;
}
