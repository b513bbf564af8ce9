// test_jb_transformer.c: the transformer against an independent dense reference written from
// the README's mask table (section F), and incremental / chunked passes against the
// teacher-forced one, for every attention kind (orders 0, 1, 2, 8, 10, 12), F32 and F16
// weights, res_scale.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "jb_nn.h"
#include "jb_safetensors.h"
#include "jb_test.h"
#include "jb_transformer.h"

static uint64_t rng_state = 12345;
static float frand(void) {   // uniform in [-1, 1)
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((rng_state >> 40) / (double)(1 << 24)) * 2.0f - 1.0f;
}

typedef struct {
    char name[128];
    int64_t shape[2];
    int ndim;
    float *data;
    uint16_t *half;
} wt_t;

static wt_t wts[512];
static int n_wts;

static float *add_w(const char *name, int ndim, int64_t a, int64_t b, float scale, float offset) {
    wt_t *w = &wts[n_wts++];
    snprintf(w->name, sizeof w->name, "%s", name);
    w->ndim = ndim, w->shape[0] = a, w->shape[1] = b;
    int64_t n = ndim == 1 ? a : a * b;
    w->data = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) w->data[i] = offset + scale * frand();
    return w->data;
}

typedef struct {
    float *ln0_g, *ln0_b, *ln1_g, *ln1_b, *attn_w, *attn_b, *enc_w, *enc_b, *proj_w, *proj_b,
        *fc_w, *fc_b, *mp_w, *mp_b;
} ref_layer_t;

// Random weights for a transformer under "t." into wts; f16: matrices stored F16 (the test's
// float copies are rounded the same way so the reference sees the same values).
static void make_weights(const jb_transformer_hp_t *hp, ref_layer_t *L) {
    int W = hp->width, S = (int)(hp->m_attn * W), M = (int)(hp->m_mlp * W);
    char nm[128];
    for (int d = 0; d < hp->depth; d++) {
        int kind = jb_transformer_attn_func(hp->attn_order, d);
#define P(field, suffix, nd, a, b, sc, off)                                  \
        snprintf(nm, sizeof nm, "t._attn_mods.%d." suffix, d);               \
        L[d].field = add_w(nm, nd, a, b, sc, off);
        P(ln0_g, "ln_0.weight", 1, W, 0, 0.2f, 1.0f)
        P(ln0_b, "ln_0.bias", 1, W, 0, 0.1f, 0.0f)
        P(attn_w, "attn.c_attn.w", 2, W, kind == 6 ? S : 3 * S, 0.5f, 0.0f)
        P(attn_b, "attn.c_attn.b", 1, kind == 6 ? S : 3 * S, 0, 0.1f, 0.0f)
        if (kind == 6) {
            P(enc_w, "attn.c_enc_kv.w", 2, W, 2 * S, 0.5f, 0.0f)
            P(enc_b, "attn.c_enc_kv.b", 1, 2 * S, 0, 0.1f, 0.0f)
        }
        P(proj_w, "attn.c_proj.w", 2, S, W, 0.3f, 0.0f)
        P(proj_b, "attn.c_proj.b", 1, W, 0, 0.1f, 0.0f)
        P(ln1_g, "ln_1.weight", 1, W, 0, 0.2f, 1.0f)
        P(ln1_b, "ln_1.bias", 1, W, 0, 0.1f, 0.0f)
        P(fc_w, "mlp.c_fc.w", 2, W, M, 0.3f, 0.0f)
        P(fc_b, "mlp.c_fc.b", 1, M, 0, 0.1f, 0.0f)
        P(mp_w, "mlp.c_proj.w", 2, M, W, 0.3f, 0.0f)
        P(mp_b, "mlp.c_proj.b", 1, W, 0, 0.1f, 0.0f)
#undef P
    }
}

static int write_weights(const char *path, int f16) {
    jb_err_t err;
    jb_st_writer_t *w = jb_st_writer_new(&err);
    if (!w) return -1;
    for (int i = 0; i < n_wts; i++) {
        wt_t *t = &wts[i];
        int64_t n = t->ndim == 1 ? t->shape[0] : t->shape[0] * t->shape[1];
        int is_mat = f16 && t->ndim == 2;
        if (is_mat) {
            t->half = malloc(2 * (size_t)n);
            for (int64_t j = 0; j < n; j++) {
                t->half[j] = jb_f32_to_f16(t->data[j]);
                t->data[j] = jb_f16_to_f32(t->half[j]);
            }
        }
        if (jb_st_writer_add(w, t->name, is_mat ? JB_F16 : JB_F32, t->ndim, t->shape,
                             is_mat ? (const void *)t->half : (const void *)t->data, &err)) {
            jb_st_writer_destroy(&w);
            return -1;
        }
    }
    int rc = jb_st_writer_write(w, path, NULL, NULL, &err);
    jb_st_writer_destroy(&w);
    return rc;
}

static void free_weights(void) {
    for (int i = 0; i < n_wts; i++) {
        free(wts[i].data);
        free(wts[i].half);
        wts[i].data = NULL, wts[i].half = NULL;
    }
    n_wts = 0;
}

// ---- the independent reference -------------------------------------------

// README section F, literally.
static int visible(int kind, int i, int j, int bc, int prime_keys) {
    switch (kind) {
    case 0: return j <= i;
    case 1: return j / bc == i / bc && j <= i;
    case 2: return j % bc == i % bc && j <= i;
    case 7: return j < prime_keys && j <= i;
    default: return 0;
    }
}

static void ref_ln(double *y, const double *x, const float *g, const float *b, int C) {
    double m = 0, v = 0;
    for (int c = 0; c < C; c++) m += x[c];
    m /= C;
    for (int c = 0; c < C; c++) v += (x[c] - m) * (x[c] - m);
    v /= C;
    for (int c = 0; c < C; c++) y[c] = (x[c] - m) / sqrt(v + 1e-5) * g[c] + b[c];
}

static void ref_lin(double *y, const double *x, const float *w, const float *b, int K, int N) {
    for (int n = 0; n < N; n++) {
        double s = b[n];
        for (int k = 0; k < K; k++) s += x[k] * w[k * N + n];
        y[n] = s;
    }
}

// x: (N, T, W) in/out; enc: (N, E, W) or NULL. Double precision, full masked softmax.
static void ref_forward(const jb_transformer_hp_t *hp, const ref_layer_t *L, double *x, int N,
                        int T, const float *enc, int E) {
    int W = hp->width, S = (int)(hp->m_attn * W), M = (int)(hp->m_mlp * W), H = hp->heads;
    int hd = S / H, bc = hp->blocks ? hp->n_ctx / hp->blocks : 0;
    int pk = hp->blocks ? (hp->prime_len / hp->blocks + 1) * hp->blocks : 0;
    double rs = hp->res_scale ? 1.0 / hp->depth : 1.0;
    int KV = T > E ? T : E;
    double *h = malloc(sizeof(double) * W), *q = malloc(sizeof(double) * T * 3 * S);
    double *k = malloc(sizeof(double) * KV * S), *v = malloc(sizeof(double) * KV * S);
    double *a = malloc(sizeof(double) * T * S), *p = malloc(sizeof(double) * KV);
    double *ao = malloc(sizeof(double) * T * W), *hh = malloc(sizeof(double) * M);
    double *mo = malloc(sizeof(double) * W), *e = malloc(sizeof(double) * W);
    for (int d = 0; d < hp->depth; d++) {
        int kind = jb_transformer_attn_func(hp->attn_order, d);
        for (int b = 0; b < N; b++) {
            double *xb = x + (size_t)b * T * W;
            for (int i = 0; i < T; i++) {
                ref_ln(h, xb + i * W, L[d].ln0_g, L[d].ln0_b, W);
                if (kind == 6) {
                    ref_lin(q + i * 3 * S, h, L[d].attn_w, L[d].attn_b, W, S);
                } else {
                    double tmp[3 * 512];
                    ref_lin(tmp, h, L[d].attn_w, L[d].attn_b, W, 3 * S);
                    memcpy(q + i * 3 * S, tmp, sizeof(double) * S);
                    memcpy(k + i * S, tmp + S, sizeof(double) * S);
                    memcpy(v + i * S, tmp + 2 * S, sizeof(double) * S);
                }
            }
            if (kind == 6)
                for (int j = 0; j < E; j++) {
                    double ein[512], tmp[1024];
                    for (int c = 0; c < W; c++) ein[c] = enc[((size_t)b * E + j) * W + c];
                    ref_lin(tmp, ein, L[d].enc_w, L[d].enc_b, W, 2 * S);
                    memcpy(k + j * S, tmp, sizeof(double) * S);
                    memcpy(v + j * S, tmp + S, sizeof(double) * S);
                }
            for (int i = 0; i < T; i++)
                for (int hh_ = 0; hh_ < H; hh_++) {
                    const double *qi = q + i * 3 * S + hh_ * hd;
                    double *ai = a + i * S + hh_ * hd;
                    int j0 = 0, nkeys;
                    if (kind == 3) {   // previous block, zero keys/values in block 0
                        if (i / bc == 0) {
                            for (int c = 0; c < hd; c++) ai[c] = 0;
                            continue;
                        }
                        j0 = (i / bc - 1) * bc, nkeys = bc;
                    } else if (kind == 6) {
                        nkeys = E;
                    } else if (kind == 7) {
                        nkeys = pk;
                    } else {
                        nkeys = T;
                    }
                    double mx = -1e300, s = 0;
                    for (int jj = 0; jj < nkeys; jj++) {
                        int j = j0 + jj;
                        double dot = 0;
                        for (int c = 0; c < hd; c++) dot += qi[c] * k[j * S + hh_ * hd + c];
                        dot /= sqrt((double)hd);
                        if (kind != 3 && kind != 6 && !visible(kind, i, j, bc, pk)) dot = -1e9;
                        p[jj] = dot;
                        if (dot > mx) mx = dot;
                    }
                    for (int jj = 0; jj < nkeys; jj++) s += (p[jj] = exp(p[jj] - mx));
                    for (int c = 0; c < hd; c++) {
                        double acc = 0;
                        for (int jj = 0; jj < nkeys; jj++)
                            acc += p[jj] / s * v[(j0 + jj) * S + hh_ * hd + c];
                        ai[c] = acc;
                    }
                }
            for (int i = 0; i < T; i++) {
                double *xi = xb + i * W;
                ref_lin(ao + i * W, a + i * S, L[d].proj_w, L[d].proj_b, S, W);
                for (int c = 0; c < W; c++) e[c] = xi[c] + rs * ao[i * W + c];
                ref_ln(h, e, L[d].ln1_g, L[d].ln1_b, W);
                ref_lin(hh, h, L[d].fc_w, L[d].fc_b, W, M);
                for (int c = 0; c < M; c++) hh[c] = hh[c] / (1.0 + exp(-1.702 * hh[c]));
                ref_lin(mo, hh, L[d].mp_w, L[d].mp_b, M, W);
                for (int c = 0; c < W; c++) xi[c] = xi[c] + rs * (ao[i * W + c] + mo[c]);
            }
        }
    }
    free(h), free(q), free(k), free(v), free(a), free(p), free(ao), free(hh), free(mo), free(e);
}

// ---- one configuration -------------------------------------------------------

static double max_diff(const float *a, const float *b, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > m || d != d) m = d;
    }
    return m;
}

static void run_case(const char *label, jb_transformer_hp_t hp, int f16) {
    ref_layer_t L[32];
    make_weights(&hp, L);
    char path[128];
    snprintf(path, sizeof path, "/tmp/test_jb_transformer.%d.safetensors", (int)getpid());
    jb_err_t err;
    JB_CHECK(write_weights(path, f16) == 0, "%s: write weights", label);
    jb_st_t *st = jb_st_open(path, &err);
    JB_CHECK(st != NULL, "%s: open (%s)", label, st ? "" : err.msg);
    jb_transformer_t *tf = st ? jb_transformer_new(st, "t.", &hp, &err) : NULL;
    JB_CHECK(tf != NULL, "%s: new (%s)", label, tf ? "" : err.msg);
    if (!tf) {
        jb_st_close(&st);
        free_weights();
        return;
    }
    int N = 2, T = hp.n_ctx, W = hp.width, E = hp.encoder_dims;
    int64_t n = (int64_t)N * T * W;
    float *x0 = malloc(sizeof(float) * n), *full = malloc(sizeof(float) * n);
    float *step = malloc(sizeof(float) * n), *chunk = malloc(sizeof(float) * n);
    float *enc = E ? malloc(sizeof(float) * N * E * W) : NULL;
    double *ref = malloc(sizeof(double) * n);
    for (int64_t i = 0; i < n; i++) x0[i] = frand();
    for (int64_t i = 0; i < (int64_t)N * E * W; i++) enc[i] = frand();
    for (int64_t i = 0; i < n; i++) ref[i] = x0[i];
    ref_forward(&hp, L, ref, N, T, enc, E);
    float *reff = malloc(sizeof(float) * n);
    double refmax = 0;
    for (int64_t i = 0; i < n; i++) {
        reff[i] = (float)ref[i];
        refmax = fmax(refmax, fabs(ref[i]));
    }
    double tol = 2e-5 * refmax + (f16 ? 0 : 0);

    // Teacher-forced: one pass over everything.
    jb_tcache_t *c = jb_tcache_new(tf, N, T, &err);
    memcpy(full, x0, sizeof(float) * n);
    if (E) jb_tcache_set_encoder(c, enc, &err);
    JB_CHECK_OK(jb_transformer_forward(tf, c, full, T, NULL, &err), &err, "full pass");
    double dref = max_diff(full, reff, n);
    JB_CHECK(dref <= tol, "%s: full pass vs dense reference: max |diff| %.3g (tol %.3g)", label,
             dref, tol);
    jb_tcache_destroy(&c);

    // One token at a time: a cache sized for passes of 1.
    c = jb_tcache_new(tf, N, 1, &err);
    if (E) jb_tcache_set_encoder(c, enc, &err);
    float *row = malloc(sizeof(float) * N * W);
    int ok = 1;
    for (int t = 0; t < T && ok; t++) {
        for (int b = 0; b < N; b++) memcpy(row + b * W, x0 + ((int64_t)b * T + t) * W, 4 * W);
        ok = jb_transformer_forward(tf, c, row, 1, NULL, &err) == 0;
        for (int b = 0; b < N; b++) memcpy(step + ((int64_t)b * T + t) * W, row + b * W, 4 * W);
    }
    JB_CHECK(ok, "%s: steps (%s)", label, ok ? "" : err.msg);
    double dstep = max_diff(step, full, n);
    JB_CHECK(dstep <= 1e-5 * refmax, "%s: one-token steps vs full pass: max |diff| %.3g", label,
             dstep);
    jb_tcache_destroy(&c);

    // Chunks of several sizes, crossing block boundaries.
    const int sizes[3] = {3, 5, 7};
    for (int si = 0; si < 3; si++) {
        int cs = sizes[si];
        c = jb_tcache_new(tf, N, cs, &err);
        if (E) jb_tcache_set_encoder(c, enc, &err);
        float *buf = malloc(sizeof(float) * N * cs * W);
        ok = 1;
        for (int t = 0; t < T && ok; t += cs) {
            int m = T - t < cs ? T - t : cs;
            for (int b = 0; b < N; b++)
                memcpy(buf + (int64_t)b * m * W, x0 + ((int64_t)b * T + t) * W, 4 * (size_t)m * W);
            ok = jb_transformer_forward(tf, c, buf, m, NULL, &err) == 0;
            for (int b = 0; b < N; b++)
                memcpy(chunk + ((int64_t)b * T + t) * W, buf + (int64_t)b * m * W, 4 * (size_t)m * W);
        }
        double dch = max_diff(chunk, full, n);
        JB_CHECK(ok && dch <= 1e-5 * refmax, "%s: chunks of %d vs full pass: max |diff| %.3g", label,
                 cs, dch);
        // Reset and reuse: same result.
        jb_tcache_reset(c);
        free(buf);
        jb_tcache_destroy(&c);
    }
    // A pass past n_ctx is refused.
    c = jb_tcache_new(tf, N, T, &err);
    memcpy(full, x0, sizeof(float) * n);
    if (E) jb_tcache_set_encoder(c, enc, &err);
    jb_transformer_forward(tf, c, full, T, NULL, &err);
    JB_CHECK(jb_transformer_forward(tf, c, row, 1, NULL, &err) == -1, "%s: pass past n_ctx refused",
             label);
    jb_tcache_destroy(&c);

    free(row), free(x0), free(full), free(step), free(chunk), free(enc), free(ref), free(reff);
    jb_transformer_destroy(&tf);
    jb_st_close(&st);
    unlink(path);
    free_weights();
}

int main(void) {
    jb_transformer_hp_t base = {.width = 16, .depth = 3, .heads = 2, .n_ctx = 24,
                                .attn_order = 2, .blocks = 4, .m_attn = 0.5, .m_mlp = 1.5};
    // Patterns of the orders.
    int o10[20], o12[16];
    for (int d = 0; d < 20; d++) o10[d] = jb_transformer_attn_func(10, d);
    for (int d = 0; d < 16; d++) o12[d] = jb_transformer_attn_func(12, d);
    JB_CHECK(o10[18] == 6 && o10[19] == 1 && o10[8] == 3 && o10[9] == 1, "order 10 pattern");
    JB_CHECK(o12[15] == 7 && o12[14] == 3 && o12[0] == 1, "order 12 pattern");
    JB_CHECK(jb_transformer_attn_func(8, 9) == 6 && jb_transformer_attn_func(8, 10) == 1,
             "order 8 pattern");
    JB_CHECK(jb_transformer_attn_func(11, 47) == 0 && jb_transformer_attn_func(11, 15) == 6,
             "order 11 pattern");
    JB_CHECK(jb_transformer_attn_func(13, 0) == -1, "unknown order");

    jb_transformer_hp_t hp = base;
    hp.attn_order = 0, hp.blocks = 0, hp.depth = 2;
    run_case("order 0 (dense)", hp, 0);
    hp = base, hp.attn_order = 1, hp.depth = 2;
    run_case("order 1 (block, transpose)", hp, 0);
    hp = base;
    run_case("order 2 (block, transpose, previous)", hp, 0);
    hp = base, hp.res_scale = 1;
    run_case("order 2 res_scale", hp, 0);
    hp = base;
    run_case("order 2 F16 weights", hp, 1);
    hp = base, hp.attn_order = 8, hp.depth = 10, hp.encoder_dims = 7, hp.width = 8;
    run_case("order 8 (enc-dec kind 6)", hp, 0);
    hp = base, hp.attn_order = 10, hp.depth = 20, hp.encoder_dims = 5, hp.width = 8;
    run_case("order 10", hp, 0);
    hp = base, hp.attn_order = 12, hp.depth = 16, hp.prime_len = 5, hp.width = 8;
    run_case("order 12 (prime kind 7)", hp, 0);
    hp = base, hp.attn_order = 1, hp.depth = 2, hp.heads = 1;
    run_case("order 1 one head", hp, 1);

    // Unsupported: block kinds without blocks.
    {
        jb_err_t err;
        hp = base, hp.blocks = 0;
        ref_layer_t L[8];
        make_weights(&hp, L);
        write_weights("/tmp/test_jb_transformer.bad.safetensors", 0);
        jb_st_t *st = jb_st_open("/tmp/test_jb_transformer.bad.safetensors", &err);
        jb_transformer_t *tf = st ? jb_transformer_new(st, "t.", &hp, &err) : NULL;
        JB_CHECK(st && !tf && strstr(err.msg, "attn_func"), "block kinds without blocks refused: %s",
                 err.msg);
        jb_transformer_hp_t h2 = base;
        tf = st ? jb_transformer_new(st, "u.", &h2, &err) : NULL;
        JB_CHECK(!tf && strstr(err.msg, "u._attn_mods.0"), "missing tensor named: %s", err.msg);
        jb_st_close(&st);
        unlink("/tmp/test_jb_transformer.bad.safetensors");
        free_weights();
    }
    return jb_test_summary("test_jb_transformer");
}
