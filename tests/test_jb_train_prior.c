// test_jb_train_prior.c: the backward passes of jb_grad against central finite differences
// (objective Σ out·r with random r, accumulated in double) on small random shapes; the
// attention masks of every kind against a dense reference built from the golden README's mask
// table; whole-model finite differences through jb_train_prior (tied x_emb/x_out, the
// Conditioner, labels, the joint lyrics sequence, the lyrics encoder); jb_adam against the
// README's formulas evaluated in double.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <unistd.h>

#include "jb_adam.h"
#include "jb_conv_grad.h"
#include "jb_grad.h"
#include "jb_safetensors.h"
#include "jb_test.h"
#include "jb_train_prior.h"

static uint64_t rng = 88172645463325252ull;
static double urand(void) {   // xorshift64, [-1, 1)
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (double)(rng >> 11) / (double)(1ull << 52) - 1.0;
}
static float *rnd(int64_t n, double scale) {
    float *p = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) p[i] = (float)(scale * urand());
    return p;
}
static float *zeros(int64_t n) { return calloc((size_t)n, sizeof(float)); }

static double dot(const float *a, const float *b, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

// A layer under test: forward(ctx) writes ctx->out; the objective is Σ out·r.
typedef struct {
    void (*fwd)(void *ctx);
    void *ctx;
    float *out, *r;
    int64_t n_out;
} obj_t;

static double objective(obj_t *o) {
    o->fwd(o->ctx);
    return dot(o->out, o->r, o->n_out);
}

// Central differences of the objective w.r.t. every element of x: (n) against grad: (n).
static void fd_check(const char *what, obj_t *o, float *x, const float *grad, int64_t n,
                     double h) {
    double maxg = 0, maxerr = 0;
    for (int64_t i = 0; i < n; i++) maxg = fmax(maxg, fabs(grad[i]));
    for (int64_t i = 0; i < n; i++) {
        float x0 = x[i];
        x[i] = x0 + (float)h;
        double hp = (double)x[i] - x0;
        double lp = objective(o);
        x[i] = x0 - (float)h;
        double hm = x0 - (double)x[i];
        double lm = objective(o);
        x[i] = x0;
        double fd = (lp - lm) / (hp + hm);
        maxerr = fmax(maxerr, fabs(fd - grad[i]));
    }
    o->fwd(o->ctx);
    JB_CHECK(maxerr <= 1e-2 * maxg + 1e-4 && maxg > 0,
             "%s: finite differences, max err %.3g (max |grad| %.3g, n %lld)", what, maxerr, maxg,
             (long long)n);
}

// ---- LayerNorm ---------------------------------------------------------------------------
typedef struct { float *out, *mean, *rstd, *x, *g, *b; int R, C; } ln_ctx;
static void ln_fwd(void *p) {
    ln_ctx *c = p;
    jb_grad_layernorm_forward(c->out, c->mean, c->rstd, c->x, c->g, c->b, c->R, c->C);
}
static void test_layernorm(void) {
    ln_ctx c = {.R = 3, .C = 8};
    int64_t n = (int64_t)c.R * c.C;
    c.out = zeros(n), c.mean = zeros(c.R), c.rstd = zeros(c.R);
    c.x = rnd(n, 1.0), c.g = rnd(c.C, 1.0), c.b = rnd(c.C, 1.0);
    float *r = rnd(n, 1.0), *dx = zeros(n), *dg = zeros(c.C), *db = zeros(c.C);
    obj_t o = {ln_fwd, &c, c.out, r, n};
    ln_fwd(&c);
    jb_grad_layernorm_backward(dx, dg, db, r, c.x, c.mean, c.rstd, c.g, c.R, c.C);
    fd_check("layernorm dx", &o, c.x, dx, n, 1e-2);
    fd_check("layernorm dg", &o, c.g, dg, c.C, 1e-2);
    fd_check("layernorm db", &o, c.b, db, c.C, 1e-2);
    // accumulation: a second backward doubles the gradients
    jb_grad_layernorm_backward(dx, dg, db, r, c.x, c.mean, c.rstd, c.g, c.R, c.C);
    float *dx1 = zeros(n), *dg1 = zeros(c.C), *db1 = zeros(c.C);
    jb_grad_layernorm_backward(dx1, dg1, db1, r, c.x, c.mean, c.rstd, c.g, c.R, c.C);
    double e = 0;
    for (int64_t i = 0; i < n; i++) e = fmax(e, fabs(dx[i] - 2 * dx1[i]));
    JB_CHECK(e < 1e-5, "layernorm backward accumulates (err %.3g)", e);
    free(c.out), free(c.mean), free(c.rstd), free(c.x), free(c.g), free(c.b);
    free(r), free(dx), free(dg), free(db), free(dx1), free(dg1), free(db1);
}

// ---- linear, output projection -------------------------------------------------------------
typedef struct { float *out, *x, *w, *b; int M, K, N, t; } lin_ctx;
static void lin_fwd(void *p) {
    lin_ctx *c = p;
    if (c->t) jb_grad_proj_t_forward(c->out, c->x, c->w, c->M, c->K, c->N);
    else jb_grad_linear_forward(c->out, c->x, c->w, c->b, c->M, c->K, c->N);
}
static void test_linear(int transposed) {
    lin_ctx c = {.M = 5, .K = 7, .N = 6, .t = transposed};
    c.out = zeros((int64_t)c.M * c.N), c.x = rnd((int64_t)c.M * c.K, 1.0);
    c.w = rnd((int64_t)c.K * c.N, 0.5), c.b = rnd(c.N, 0.5);
    float *r = rnd((int64_t)c.M * c.N, 1.0), *dx = zeros((int64_t)c.M * c.K);
    float *dw = zeros((int64_t)c.K * c.N), *db = zeros(c.N);
    obj_t o = {lin_fwd, &c, c.out, r, (int64_t)c.M * c.N};
    lin_fwd(&c);
    if (transposed) {
        jb_grad_proj_t_backward(dx, dw, r, c.x, c.w, c.M, c.K, c.N);
        fd_check("proj_t dx", &o, c.x, dx, (int64_t)c.M * c.K, 1e-2);
        fd_check("proj_t dE", &o, c.w, dw, (int64_t)c.K * c.N, 1e-2);
    } else {
        jb_grad_linear_backward(dx, dw, db, r, c.x, c.w, c.M, c.K, c.N);
        fd_check("linear dx", &o, c.x, dx, (int64_t)c.M * c.K, 1e-2);
        fd_check("linear dw", &o, c.w, dw, (int64_t)c.K * c.N, 1e-2);
        fd_check("linear db", &o, c.b, db, c.N, 1e-2);
    }
    free(c.out), free(c.x), free(c.w), free(c.b), free(r), free(dx), free(dw), free(db);
}

// ---- quick_gelu, ReLU ---------------------------------------------------------------------------
typedef struct { float *out, *u; int64_t n; int relu; } act_ctx;
static void act_fwd(void *p) {
    act_ctx *c = p;
    if (c->relu) jb_grad_relu_forward(c->out, c->u, c->n);
    else jb_grad_quick_gelu_forward(c->out, c->u, c->n);
}
static void test_activations(void) {
    act_ctx c = {.n = 40};
    c.out = zeros(c.n), c.u = rnd(c.n, 3.0);
    float *r = rnd(c.n, 1.0), *du = zeros(c.n);
    obj_t o = {act_fwd, &c, c.out, r, c.n};
    act_fwd(&c);
    jb_grad_quick_gelu_backward(du, r, c.u, c.n);
    fd_check("quick_gelu", &o, c.u, du, c.n, 1e-3);
    // the README's closed form g·σ(1.702x)·(1.702x(1−σ) + 1) in double
    double e = 0;
    for (int64_t i = 0; i < c.n; i++) {
        double z = 1.702 * c.u[i], s = 1 / (1 + exp(-z));
        e = fmax(e, fabs(du[i] - r[i] * s * (z * (1 - s) + 1)));
    }
    JB_CHECK(e < 1e-5, "quick_gelu backward = closed form (err %.3g)", e);
    for (int64_t i = 0; i < c.n; i++)   // keep away from the kink
        if (fabs(c.u[i]) < 0.05f) c.u[i] = 0.3f;
    c.relu = 1;
    memset(du, 0, sizeof(float) * (size_t)c.n);
    jb_grad_relu_backward(du, r, c.u, c.n);
    fd_check("relu", &o, c.u, du, c.n, 1e-2);
    free(c.out), free(c.u), free(r), free(du);
}

// ---- attention ---------------------------------------------------------------------------------
// The README F table, written independently of jb_nn_attn_keys.
static int sees(int kind, int bc, int prime_keys, int i, int j) {
    switch (kind) {
    case 0: return j <= i;
    case 1: return j / bc == i / bc && j <= i;
    case 2: return j % bc == i % bc && j <= i;
    case 3: return i / bc > 0 && j / bc == i / bc - 1;
    case 6: return 1;
    case 7: return j <= i && j < prime_keys;
    }
    return 0;
}

typedef struct {
    float *a, *w, *qkv, *kv;
    jb_nn_attn_kind_t kind;
    int N, T, E, H, hd, kmax;
} at_ctx;
static void at_fwd(void *p) {
    at_ctx *c = p;
    int S = c->H * c->hd;
    if (c->kind.kind == 6)
        jb_grad_attn_forward(c->a, c->w, c->qkv, S, c->kv, c->kv + S, 2 * S, c->kind, c->N, c->T,
                             c->E, c->H, c->hd, c->kmax);
    else
        jb_grad_attn_forward(c->a, c->w, c->qkv, 3 * S, c->qkv + S, c->qkv + 2 * S, 3 * S, c->kind,
                             c->N, c->T, c->T, c->H, c->hd, c->kmax);
}
// T = 12: one tile of queries; T = 150: three tiles of jb_grad's 64 (blocks of 40 keys and the
// 70 prime keys cross tile boundaries).
static void test_attention(int kind, int T) {
    at_ctx c = {.N = 2, .T = T, .E = 5, .H = 2, .hd = 3};
    int bc = T > 12 ? 40 : 4, S = c.H * c.hd, pk = T > 12 ? 70 : 8;
    c.kind = (jb_nn_attn_kind_t){kind, bc, c.E, pk};
    c.kmax = c.T > c.E ? c.T : c.E;
    int64_t R = (int64_t)c.N * c.T, qw = kind == 6 ? S : 3 * S;
    c.a = zeros(R * S), c.w = zeros(R * c.H * c.kmax), c.qkv = rnd(R * qw, 1.5);
    c.kv = rnd((int64_t)c.N * c.E * 2 * S, 1.5);
    at_fwd(&c);
    // dense reference in double: training-mode scaling, masked softmax
    double s = 1.0 / sqrt(sqrt((double)c.hd)), maxe = 0;
    int Tk = kind == 6 ? c.E : c.T;
    for (int n = 0; n < c.N; n++)
        for (int h = 0; h < c.H; h++)
            for (int i = 0; i < c.T; i++) {
                const float *q = c.qkv + ((int64_t)n * c.T + i) * qw + h * c.hd;
                double wt[160], m = -1e300, sum = 0;
                int any = 0;
                for (int j = 0; j < Tk; j++) {
                    if (!sees(kind, bc, pk, i, j)) continue;
                    const float *k = kind == 6 ? c.kv + ((int64_t)n * c.E + j) * 2 * S + h * c.hd
                                               : c.qkv + ((int64_t)n * c.T + j) * qw + S + h * c.hd;
                    double acc = 0;
                    for (int d = 0; d < c.hd; d++) acc += (q[d] * s) * (k[d] * s);
                    wt[j] = acc, m = fmax(m, acc), any = 1;
                }
                for (int d = 0; d < c.hd; d++) {
                    double o = 0;
                    if (any) {
                        sum = 0;
                        for (int j = 0; j < Tk; j++)
                            if (sees(kind, bc, pk, i, j)) sum += exp(wt[j] - m);
                        for (int j = 0; j < Tk; j++) {
                            if (!sees(kind, bc, pk, i, j)) continue;
                            const float *v = kind == 6
                                ? c.kv + ((int64_t)n * c.E + j) * 2 * S + S + h * c.hd
                                : c.qkv + ((int64_t)n * c.T + j) * qw + 2 * S + h * c.hd;
                            o += exp(wt[j] - m) / sum * v[d];
                        }
                    }
                    float ours = c.a[((int64_t)n * c.T + i) * S + h * c.hd + d];
                    maxe = fmax(maxe, fabs(ours - o));
                }
            }
    JB_CHECK(maxe < 1e-5, "attention kind %d, T %d: forward = dense masked reference (err %.3g)",
             kind, T, maxe);
    float *r = rnd(R * S, 1.0), *dqkv = zeros(R * qw), *dkv = zeros((int64_t)c.N * c.E * 2 * S);
    obj_t o = {at_fwd, &c, c.a, r, R * S};
    char what[64];
    if (kind == 6) {
        jb_grad_attn_backward(dqkv, dkv, dkv + S, r, c.w, c.qkv, S, c.kv, c.kv + S, 2 * S, c.kind,
                              c.N, c.T, c.E, c.H, c.hd, c.kmax);
        snprintf(what, sizeof what, "attention kind 6, T %d: dq", T);
        fd_check(what, &o, c.qkv, dqkv, R * qw, 1e-2);
        snprintf(what, sizeof what, "attention kind 6, T %d: dk|dv", T);
        fd_check(what, &o, c.kv, dkv, (int64_t)c.N * c.E * 2 * S, 1e-2);
    } else {
        jb_grad_attn_backward(dqkv, dqkv + S, dqkv + 2 * S, r, c.w, c.qkv, 3 * S, c.qkv + S,
                              c.qkv + 2 * S, 3 * S, c.kind, c.N, c.T, c.T, c.H, c.hd, c.kmax);
        snprintf(what, sizeof what, "attention kind %d, T %d: dq|dk|dv", kind, T);
        fd_check(what, &o, c.qkv, dqkv, R * qw, 1e-2);
    }
    free(c.a), free(c.w), free(c.qkv), free(c.kv), free(r), free(dqkv), free(dkv);
}

// ---- convolutions ---------------------------------------------------------------------------------
typedef struct { float *out, *x, *w, *b; int L, Ci, Co, k, d, pad, t; } cv_ctx;
// The layouts and calls the upsamplers' Conditioner makes (jb_train_prior.c cond_forward):
// stride-1 "same" convs with dilation, ConvTranspose1d with 2s taps.
static float cv_ws[4096];
static void cv_fwd(void *p) {
    cv_ctx *c = p;
    if (c->t) jb_cg_convt_forward(c->out, c->x, c->L, c->Ci, c->w, c->b, c->Co, c->k, c->d,
                                  c->pad, cv_ws);
    else jb_cg_conv_forward(c->out, c->x, c->L, c->Ci, c->w, c->b, c->Co, c->k, 1, c->pad, c->d,
                            cv_ws);
}
static void test_conv(int transposed, int k, int d_or_s) {
    cv_ctx c = {.L = 9, .Ci = 3, .Co = 4, .k = k, .d = d_or_s, .t = transposed};
    c.pad = transposed ? d_or_s / 2 : d_or_s * (k - 1) / 2;
    int Lo = transposed ? (c.L - 1) * d_or_s - 2 * c.pad + k : c.L;
    c.out = zeros((int64_t)Lo * c.Co), c.x = rnd((int64_t)c.L * c.Ci, 1.0);
    c.w = rnd((int64_t)c.Ci * c.Co * k, 0.5), c.b = rnd(c.Co, 0.5);
    float *r = rnd((int64_t)Lo * c.Co, 1.0), *dx = zeros((int64_t)c.L * c.Ci);
    float *dw = zeros((int64_t)c.Ci * c.Co * k), *db = zeros(c.Co);
    obj_t o = {cv_fwd, &c, c.out, r, (int64_t)Lo * c.Co};
    cv_fwd(&c);
    // a direct evaluation of one output element from PyTorch's definitions
    double ref = c.b[1];
    int t = 4;
    for (int ci = 0; ci < c.Ci; ci++)
        for (int j = 0; j < k; j++) {
            if (transposed) {   // out[o] += in[u]·w[ci][co][j] where o = u·s + j − pad
                int num = t + c.pad - j;
                if (num % d_or_s == 0 && num / d_or_s >= 0 && num / d_or_s < c.L)
                    ref += c.x[(num / d_or_s) * c.Ci + ci] * c.w[(ci * c.Co + 1) * k + j];
            } else {
                int src = t + j * d_or_s - c.pad;
                if (src >= 0 && src < c.L) ref += c.x[src * c.Ci + ci] * c.w[(1 * c.Ci + ci) * k + j];
            }
        }
    JB_CHECK(fabs(c.out[t * c.Co + 1] - ref) < 1e-5, "%s k %d %s %d: forward element",
             transposed ? "convT" : "conv", k, transposed ? "stride" : "dilation", d_or_s);
    // weight and bias gradients accumulate (+=), the input gradient is written (=)
    for (int64_t i = 0; i < (int64_t)c.L * c.Ci; i++) dx[i] = 1e6f;
    if (transposed)
        jb_cg_convt_backward(dx, dw, db, r, c.x, c.L, c.Ci, c.w, c.Co, k, d_or_s, c.pad, cv_ws);
    else
        jb_cg_conv_backward(dx, dw, db, r, c.x, c.L, c.Ci, c.w, c.Co, k, 1, c.pad, d_or_s, cv_ws);
    fd_check(transposed ? "convT dx" : "conv dx", &o, c.x, dx, (int64_t)c.L * c.Ci, 1e-2);
    fd_check(transposed ? "convT dw" : "conv dw", &o, c.w, dw, (int64_t)c.Ci * c.Co * k, 1e-2);
    fd_check(transposed ? "convT db" : "conv db", &o, c.b, db, c.Co, 1e-2);
    free(c.out), free(c.x), free(c.w), free(c.b), free(r), free(dx), free(dw), free(db);
}

// ---- cross-entropy, embedding -------------------------------------------------------------------
static void test_ce(void) {
    int R = 4, V = 7;
    float *l = rnd((int64_t)R * V, 2.0), *d = zeros((int64_t)R * V);
    int32_t tg[4] = {0, 6, 3, 3};
    double loss = jb_grad_ce_bits(d, l, tg, R, V, 0.7);
    double ref = 0;
    for (int r = 0; r < R; r++) {
        double s = 0;
        for (int j = 0; j < V; j++) s += exp(l[r * V + j]);
        ref += -log(exp(l[r * V + tg[r]]) / s);
    }
    ref /= R * log(2.0);
    JB_CHECK(fabs(loss - ref) < 1e-9, "cross-entropy in bits (%.9g vs %.9g)", loss, ref);
    double maxe = 0;
    for (int i = 0; i < R * V; i++) {
        float x0 = l[i];
        l[i] = x0 + 1e-3f;
        double lp = jb_grad_ce_bits(NULL, l, tg, R, V, 1);
        l[i] = x0 - 1e-3f;
        double lm = jb_grad_ce_bits(NULL, l, tg, R, V, 1);
        l[i] = x0;
        maxe = fmax(maxe, fabs(0.7 * (lp - lm) / 2e-3 - d[i]));
    }
    JB_CHECK(maxe < 1e-4, "cross-entropy gradient vs finite differences (err %.3g)", maxe);
    float tab[3 * 2] = {0}, dout[3 * 2] = {1, 2, 3, 4, 5, 6};
    int32_t ids[3] = {2, -1, 2};
    jb_grad_embed_backward(tab, dout, ids, 3, 2);
    JB_CHECK(tab[4] == 6 && tab[5] == 8 && tab[0] == 0 && tab[2] == 0,
             "embedding backward sums repeated ids, skips -1");
    free(l), free(d);
}

// ---- whole model ------------------------------------------------------------------------------------
// Finite differences of the loss through jb_train_prior for the largest-gradient elements of
// some parameters. The loss is a mean over tokens in float32, so h is large and only the
// biggest gradient entries are compared (5%).
// y of the fixture is used when use_y (the unlabelled variant takes none).
static void test_model_at(const char *model, const char *dir, int use_y, const char **names,
                          int n_names) {
    char path[512];
    jb_err_t err = {0};
    snprintf(path, sizeof path, "tests/golden/%s/io.safetensors", dir);
    jb_st_t *io = jb_st_open(path, &err);
    JB_CHECK(io != NULL, "%s: open io (%s)", dir, err.msg);
    if (!io) return;
    int32_t *z = jb_st_get_i32(io, "z", -1, NULL, &err);
    int32_t *zc = jb_st_find(io, "z_cond") ? jb_st_get_i32(io, "z_cond", -1, NULL, &err) : NULL;
    int32_t *y = use_y && jb_st_find(io, "y") ? jb_st_get_i32(io, "y", -1, NULL, &err) : NULL;
    int N = (int)jb_st_find(io, "z")->shape[0];
    jb_train_prior_t *tp = jb_train_prior_new(model, N, &err);
    JB_CHECK(tp != NULL, "%s: load (%s)", dir, err.msg);
    if (tp) {
        jb_train_prior_loss_t L;
        JB_CHECK_OK(jb_train_prior_step(tp, z, zc, y, N, &L, NULL, &err), &err, "step");
        for (int k = 0; k < n_names; k++) {
            const jb_train_param_t *p = jb_train_prior_find(tp, names[k]);
            JB_CHECK(p != NULL, "%s: parameter %s", dir, names[k]);
            if (!p) continue;
            double worst = 0;
            int64_t picked[3] = {-1, -1, -1};
            for (int rep = 0; rep < 3; rep++) {   // the three largest |grad| entries
                int64_t best = -1;
                for (int64_t i = 0; i < p->numel; i++) {
                    if (i == picked[0] || i == picked[1]) continue;
                    if (best < 0 || fabsf(p->g[i]) > fabsf(p->g[best])) best = i;
                }
                picked[rep] = best;
                float g = p->g[best], w0 = p->w[best];
                float h = 1e-2f;
                jb_train_prior_loss_t lp, lm;
                p->w[best] = w0 + h;
                jb_train_prior_eval(tp, z, zc, y, N, &lp, NULL, &err);
                p->w[best] = w0 - h;
                jb_train_prior_eval(tp, z, zc, y, N, &lm, NULL, &err);
                p->w[best] = w0;
                double fd = (lp.loss - lm.loss) / (2.0 * h);
                worst = fmax(worst, fabs(fd - g) / fabs(g));
            }
            JB_CHECK(worst < 0.05, "%s: %s vs finite differences of the loss (worst rel %.3g)",
                     dir, names[k], worst);
        }
    }
    jb_train_prior_destroy(&tp);
    JB_CHECK(tp == NULL, "destroy nulls the pointer");
    jb_train_prior_destroy(&tp);
    jb_free(z), jb_free(zc), jb_free(y);
    jb_st_close(&io);
}

static void test_model(const char *dir, const char **names, int n_names) {
    char path[512];
    snprintf(path, sizeof path, "tests/golden/%s/model.safetensors", dir);
    test_model_at(path, dir, 1, names, n_names);
}


// The training forward's logits against the inference path (jb_prior_forward, which passes
// the golden `prior` cases) on a model file; io gives z, z_cond and y (y skipped when
// use_y is 0).
static void test_vs_inference(const char *model, const char *io_path, int use_y) {
    jb_err_t err = {0};
    jb_st_t *io = jb_st_open(io_path, &err);
    jb_prior_t *p = jb_prior_new(model, &err);
    JB_CHECK(io && p, "%s: open (%s)", model, err.msg);
    if (!io || !p) {
        jb_st_close(&io);
        jb_prior_destroy(&p);
        return;
    }
    const jb_prior_info_t *in = jb_prior_info(p);
    int32_t *z = jb_st_get_i32(io, "z", -1, NULL, &err);
    int32_t *zc = jb_st_find(io, "z_cond") ? jb_st_get_i32(io, "z_cond", -1, NULL, &err) : NULL;
    int32_t *y = use_y && jb_st_find(io, "y") ? jb_st_get_i32(io, "y", -1, NULL, &err) : NULL;
    int N = (int)jb_st_find(io, "z")->shape[0];
    int64_t nl = (int64_t)N * in->seq_len * in->seq_bins;
    float *a = malloc(sizeof(float) * (size_t)nl), *b = malloc(sizeof(float) * (size_t)nl);
    jb_train_prior_t *tp = jb_train_prior_new(model, N, &err);
    JB_CHECK(tp != NULL, "%s: train load (%s)", model, err.msg);
    if (tp) {
        jb_train_prior_loss_t L;
        JB_CHECK_OK(jb_prior_forward(p, z, zc, y, N, a, NULL, &err), &err, "inference forward");
        JB_CHECK_OK(jb_train_prior_eval(tp, z, zc, y, N, &L, b, &err), &err, "training forward");
        double e = 0, mx = 0;
        for (int64_t i = 0; i < nl; i++) e = fmax(e, fabs(a[i] - b[i])), mx = fmax(mx, fabs(a[i]));
        JB_CHECK(e <= 1e-4 * mx + 1e-6, "%s: training logits = inference logits (max err %.3g, "
                 "max |logit| %.3g)", model, e, mx);
    }
    jb_train_prior_destroy(&tp);
    free(a), free(b);
    jb_free(z), jb_free(zc), jb_free(y);
    jb_prior_destroy(&p);
    jb_st_close(&io);
}

// A variant of train_prior_top_tiny's model written to a temporary file: no labels (so
// prior.start_token), res_scale, attn_order 9 (a dense layer among block kinds). z only.
static int write_variant(const char *path, jb_err_t *err) {
    jb_st_t *st = jb_st_open("tests/golden/train_prior_top_tiny/model.safetensors", err);
    if (!st) return -1;
    int rc = -1;
    jb_st_writer_t *w = jb_st_writer_new(err);
    json_t *hp = json_loads(jb_st_meta(st, "hparams"), 0, NULL);
    char *dump = NULL;
    float start[48];
    if (!w || !hp) goto done;
    json_object_set_new(hp, "labels", json_false());
    json_object_set_new(hp, "res_scale", json_true());
    json_object_set_new(hp, "attn_order", json_integer(9));
    dump = json_dumps(hp, JSON_COMPACT);
    if (jb_st_writer_meta(w, "kind", "prior", err) || jb_st_writer_meta(w, "hparams", dump, err))
        goto done;
    for (int i = 0; i < jb_st_count(st); i++) {
        const jb_st_entry_t *e = jb_st_entry(st, i);
        if (!strncmp(e->name, "y_emb.", 6)) continue;
        if (jb_st_writer_add(w, e->name, e->dtype, e->ndim, e->shape, e->data, err)) goto done;
    }
    for (int i = 0; i < 48; i++) start[i] = (float)(0.05 * urand());
    int64_t shp[2] = {1, 48};
    if (jb_st_writer_add(w, "prior.start_token", JB_F32, 2, shp, start, err) ||
        jb_st_writer_write(w, path, NULL, NULL, err))
        goto done;
    rc = 0;
done:
    free(dump);
    json_decref(hp);
    jb_st_writer_destroy(&w);
    jb_st_close(&st);
    return rc;
}

static void test_variant(void) {
    char path[64];
    snprintf(path, sizeof path, "/tmp/test_jb_train_prior_%d.safetensors", (int)getpid());
    jb_err_t err = {0};
    JB_CHECK_OK(write_variant(path, &err), &err, "write the unlabelled res_scale variant");
    static const char *names[] = {"prior.start_token", "prior.x_out.weight",
                                  "prior.transformer._attn_mods.3.attn.c_attn.w",
                                  "prior.transformer._attn_mods.0.ln_1.weight"};
    test_model_at(path, "train_prior_top_tiny", 0, names, 4);
    test_vs_inference(path, "tests/golden/train_prior_top_tiny/io.safetensors", 0);
    unlink(path);
}


// A few Adam steps on one batch lower its loss; the trained weights saved as a model file
// give the inference path (jb_prior_forward) the training forward's logits, and reload equal.
static void test_train_save(const char *dir) {
    char mp[256], iop[256], out[128];
    snprintf(mp, sizeof mp, "tests/golden/%s/model.safetensors", dir);
    snprintf(iop, sizeof iop, "tests/golden/%s/io.safetensors", dir);
    snprintf(out, sizeof out, "/tmp/test_jb_train_prior_save_%d.safetensors", (int)getpid());
    jb_err_t err = {0};
    jb_st_t *io = jb_st_open(iop, &err);
    if (!io) {
        JB_CHECK(0, "open %s (%s)", iop, err.msg);
        return;
    }
    int32_t *z = jb_st_get_i32(io, "z", -1, NULL, &err);
    int32_t *zc = jb_st_find(io, "z_cond") ? jb_st_get_i32(io, "z_cond", -1, NULL, &err) : NULL;
    int32_t *y = jb_st_find(io, "y") ? jb_st_get_i32(io, "y", -1, NULL, &err) : NULL;
    int N = (int)jb_st_find(io, "z")->shape[0];
    jb_train_prior_t *tp = jb_train_prior_new(mp, N, &err);
    int64_t n = 0;
    float *w = tp ? jb_train_prior_weights(tp, &n) : NULL, *g = tp ? jb_train_prior_grads(tp, &n)
                                                                   : NULL;
    jb_adam_t *opt = jb_adam_new(n, &err);
    JB_CHECK(tp && opt, "%s: trainer and optimiser (%s)", dir, err.msg);
    if (tp && opt) {
        jb_adam_hp_t hp = jb_adam_defaults();
        hp.lr = 3e-3, hp.lr_warmup = 1, hp.clip = 100;
        double first = 0, last = 0;
        for (int step = 1; step <= 6; step++) {
            jb_train_prior_loss_t L;
            if (jb_train_prior_step(tp, z, zc, y, N, &L, NULL, &err)) break;
            if (step == 1) first = L.loss;
            last = L.loss;
            double gn = jb_adam_grad_norm(g, n);
            jb_adam_step(opt, &hp, w, g, jb_adam_lr(&hp, step), jb_adam_clip_scale(&hp, gn));
        }
        JB_CHECK(last < first - 0.05, "%s: 6 Adam steps lower the batch loss (%.4f -> %.4f bits)",
                 dir, first, last);
        JB_CHECK_OK(jb_train_prior_save(tp, out, &err), &err, "save");
        jb_prior_t *p = jb_prior_new(out, &err);
        jb_train_prior_t *tp2 = jb_train_prior_new(out, N, &err);
        JB_CHECK(p && tp2, "%s: saved file loads (%s)", dir, err.msg);
        if (p && tp2) {
            const jb_prior_info_t *in = jb_prior_info(p);
            int64_t nl = (int64_t)N * in->seq_len * in->seq_bins, n2;
            float *a = malloc(sizeof(float) * (size_t)nl), *b = malloc(sizeof(float) * (size_t)nl);
            jb_train_prior_loss_t L;
            JB_CHECK_OK(jb_prior_forward(p, z, zc, y, N, a, NULL, &err), &err, "inference");
            JB_CHECK_OK(jb_train_prior_eval(tp, z, zc, y, N, &L, b, &err), &err, "eval");
            double e = 0, mx = 0;
            for (int64_t i = 0; i < nl; i++) e = fmax(e, fabs(a[i] - b[i])), mx = fmax(mx, fabs(a[i]));
            JB_CHECK(e <= 1e-4 * mx + 1e-6, "%s: saved model's inference logits = trained "
                     "logits (max err %.3g)", dir, e);
            float *w2 = jb_train_prior_weights(tp2, &n2);
            JB_CHECK(n2 == n && !memcmp(w, w2, sizeof(float) * (size_t)n),
                     "%s: reloaded weights identical", dir);
            free(a), free(b);
        }
        jb_prior_destroy(&p);
        jb_train_prior_destroy(&tp2);
        unlink(out);
    }
    jb_adam_destroy(&opt);
    jb_train_prior_destroy(&tp);
    jb_free(z), jb_free(zc), jb_free(y);
    jb_st_close(&io);
}

// ---- Adam ---------------------------------------------------------------------------------------------
static void test_adam(void) {
    jb_err_t err = {0};
    jb_adam_hp_t hp = jb_adam_defaults();
    hp.lr = 1e-3, hp.lr_warmup = 100, hp.lr_decay = 50, hp.lr_gamma = 0.5;
    JB_CHECK(fabs(jb_adam_lr(&hp, 0)) == 0, "lr at position 0 is 0");
    JB_CHECK(fabs(jb_adam_lr(&hp, 98) - 4.9e-4) < 1e-15, "step decay at 98: 4.9e-4");
    JB_CHECK(fabs(jb_adam_lr(&hp, 100) - 2.5e-4) < 1e-15, "step decay at 100: 2.5e-4");
    hp.lr_use_linear_decay = 1, hp.lr_start_linear_decay = 120, hp.lr_decay = 40;
    JB_CHECK(fabs(jb_adam_lr(&hp, 50) - 5e-4) < 1e-15, "linear decay: warm-up at 50");
    JB_CHECK(fabs(jb_adam_lr(&hp, 130) - 7.5e-4) < 1e-15, "linear decay at 130: 0.75·lr");
    JB_CHECK(jb_adam_lr(&hp, 500) == 0, "linear decay ends at 0");
    hp.clip = 2.0;
    JB_CHECK(jb_adam_clip_scale(&hp, 1.0) == 1.0 && jb_adam_clip_scale(&hp, 5.0) == 2.5,
             "clip scale max(1, gn/clip)");
    JB_CHECK(!jb_adam_skip(&hp, 1e9), "no skip with ignore_grad_norm 0");
    hp.ignore_grad_norm = 10;
    JB_CHECK(jb_adam_skip(&hp, 11) && !jb_adam_skip(&hp, 9), "skip when gn > ignore_grad_norm");
    // three steps against the formula in double
    hp = jb_adam_defaults();
    hp.beta1 = 0.9, hp.beta2 = 0.925, hp.eps = 1e-6, hp.weight_decay = 0.01;
    enum { n = 5 };
    float p[n] = {0.5f, -0.25f, 1.0f, 0.0f, 2.0f};
    double pd[n], m[n] = {0}, v[n] = {0};
    for (int i = 0; i < n; i++) pd[i] = p[i];
    jb_adam_t *a = jb_adam_new(n, &err);
    JB_CHECK(a != NULL, "adam new");
    if (!a) return;
    double lrs[3] = {0.0, 1e-3, 5e-4}, scales[3] = {1.5, 1.0, 1.0};
    for (int s = 0; s < 3; s++) {
        float g[n];
        for (int i = 0; i < n; i++) g[i] = (float)urand();
        jb_adam_step(a, &hp, p, g, lrs[s], scales[s]);
        int t = s + 1;
        double ss = lrs[s] * sqrt(1 - pow(hp.beta2, t)) / (1 - pow(hp.beta1, t));
        for (int i = 0; i < n; i++) {
            double gi = g[i] / scales[s];
            m[i] = hp.beta1 * m[i] + (1 - hp.beta1) * gi;
            v[i] = hp.beta2 * v[i] + (1 - hp.beta2) * gi * gi;
            pd[i] -= ss * (m[i] / (sqrt(v[i]) + hp.eps) + hp.weight_decay * pd[i]);
        }
    }
    double e = 0;
    for (int i = 0; i < n; i++) e = fmax(e, fabs(p[i] - pd[i]));
    JB_CHECK(e < 1e-6 && jb_adam_t_count(a) == 3, "adam: 3 steps = formula in double (err %.3g)",
             e);
    JB_CHECK(fabs(jb_adam_m(a)[0] - m[0]) < 1e-6 && fabs(jb_adam_v(a)[0] - v[0]) < 1e-6,
             "adam moments");
    jb_adam_destroy(&a);
    JB_CHECK(a == NULL, "adam destroy nulls");
}

int main(void) {
    test_layernorm();
    test_linear(0);
    test_linear(1);
    test_activations();
    static const int kinds[] = {0, 1, 2, 3, 6, 7};
    for (int i = 0; i < 6; i++) {
        test_attention(kinds[i], 12);
        test_attention(kinds[i], 150);
    }
    test_conv(0, 3, 1);
    test_conv(0, 3, 3);
    test_conv(0, 1, 1);
    test_conv(1, 4, 2);
    test_conv(1, 6, 3);
    test_ce();
    static const char *up[] = {"prior.x_emb.weight", "conditioner_blocks.0.x_emb.weight",
                               "conditioner_blocks.0.cond.model.1.0.blocks.0.model.1.weight",
                               "conditioner_blocks.0.cond.model.2.1.weight",
                               "y_emb.artist_emb.emb.weight", "y_emb.bow_genre_emb.emb.weight"};
    test_model("train_upsampler_tiny", up, 6);
    static const char *top[] = {"prior.x_out.weight", "y_emb.absolute_pos_emb.emb.weight",
                                "prior.transformer._attn_mods.2.attn.c_attn.w"};
    test_model("train_prior_top_tiny", top, 3);
    static const char *oneb[] = {"prior.x_emb.weight", "prior.transformer._attn_mods.15.attn.c_attn.w",
                                 "prior.pos_emb.pos_emb"};
    test_model("train_prior_1b_tiny", oneb, 3);
    static const char *ly[] = {"prime_x_out.weight", "prime_prior.x_emb.weight",
                               "prior.transformer._attn_mods.18.attn.c_enc_kv.w",
                               "prime_state_ln.weight"};
    test_model("train_prior_lyrics_tiny", ly, 4);
    static const char *inf[] = {"upsampler_bottom_tiny", "upsampler_mid_tiny",
                                "prior_top_5b_tiny", "prior_top_5b_lyrics_tiny",
                                "prior_top_1b_lyrics_tiny", "prior_top_5b_fp16w"};
    for (int i = 0; i < 6; i++) {
        char m[256], io[256];
        snprintf(m, sizeof m, "tests/golden/%s/model.safetensors", inf[i]);
        snprintf(io, sizeof io, "tests/golden/%s/io.safetensors", inf[i]);
        test_vs_inference(m, io, 1);
    }
    test_variant();
    test_train_save("train_upsampler_tiny");
    test_train_save("train_prior_lyrics_tiny");
    test_adam();
    return jb_test_summary("test_jb_train_prior");
}
