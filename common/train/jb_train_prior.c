// jb_train_prior.c: see jb_train_prior.h.
#include "jb_train_prior.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jb_conv_grad.h"
#include "jb_grad.h"
#include "jb_safetensors.h"

#define MAX_COND_STAGES 8

// Parameters of one transformer block (indices into tp->params; -1: absent).
enum { LN0_G, LN0_B, ATT_W, ATT_B, ENC_W, ENC_B, PROJ_W, PROJ_B, LN1_G, LN1_B, FC_W, FC_B,
       MP_W, MP_B, N_LP };

typedef struct {
    int kind;
    int p[N_LP];
} tlayer_t;

// Activations of one block saved by the forward (R = N·T rows).
typedef struct {
    float *x;           // (R, W) block input
    float *h0;          // (R, W) ln_0 output
    float *mu0, *rs0;   // (R)
    float *qkv;         // (R, 3S); kind 6: (R, S) queries
    float *kv;          // kind 6: (N·E, 2S) keys | values of the encoder rows
    float *w;           // (R, H, kmax) softmax weights
    float *a;           // (R, S) attention output
    float *r;           // (R, W) ln_1 input: x + s·c_proj(a)
    float *h1;          // (R, W) ln_1 output
    float *mu1, *rs1;   // (R)
    float *u;           // (R, M) c_fc output
    float *m;           // (R, M) quick_gelu(u)
} tacts_t;

typedef struct {
    int W, D, H, S, hd, M, T, E, bc, prime_keys;
    float res_scale;
    tlayer_t *L;        // (D)
    tacts_t *A;         // (D)
    int *kmax;          // (D) softmax row length
    float *out;         // (R, W) output of the last block
    // backward scratch
    float *dy, *dr, *dt, *dh;   // (R, W)
    float *dqkv;        // (R, 3S)
    float *da;          // (R, S)
    float *dm, *du;     // (R, M)
    float *dkv;         // (N·E, 2S)
} ttf_t;

typedef struct {
    int w1, b1, w3, b3;   // model.1 (cm, cw, 3), model.3 (cw, cm, 1)
    int dil;
} cres_t;

typedef struct {
    cres_t *res;          // (cond_depth)
    int wt, bt;           // ConvTranspose1d (cw, co, 2s), (co)
    int co;
} cstage_t;

struct jb_train_prior {
    jb_prior_t *pr;                 // hparams and derived shapes (validated by jb_prior_new)
    jb_st_t *st;                    // the source file (metadata and tensor order for _save)
    jb_prior_info_t info;
    jb_prior_hparams_t hp;
    int Nmax;
    jb_train_param_t *params;
    int n_params, cap_params;
    float *wbuf, *gbuf;             // (total) weights, gradients
    int64_t total;
    // parameter indices (-1: absent)
    int genre, artist, time[3], start, x_emb, pos_emb, x_out;
    int p_start, p_x_emb, p_pos, proj_w, proj_b, pln_g, pln_b, p_x_out;
    int c_x_emb, c_w0, c_b0, c_ln_g, c_ln_b;
    cstage_t stage[MAX_COND_STAGES];
    int c_stages, c_stride, c_width, c_mid, L0;
    float c_res_scale;
    double t_lo[3], t_hi[3];
    ttf_t tf, ptf;
    // activations (Nmax sequences)
    int32_t *seq;                   // (Nmax, S) joint ids
    int32_t *tok;                   // (Nmax, P) lyric tokens (encoder model)
    float *cond_y;                  // (Nmax, W)
    float *cond_x;                  // (Nmax, T, W)
    int32_t *tbins;                 // (Nmax, T, 3) timing-signal rows (total, absolute, relative)
    float *hf;                      // (Nmax·S, W) input of x_out
    float *logits, *dlogits;        // (Nmax·S, B)
    float *dhf;                     // (Nmax·S, W)
    float *dcond_x;                 // (Nmax, T, W)
    float *dcond_y;                 // (Nmax, W)
    // lyrics encoder
    float *pp, *enc, *emu, *ers;    // (Nmax·P, W) x2, (Nmax·P) x2
    float *plog, *dplog;            // (Nmax·P, V)
    float *denc, *dpp;              // (Nmax·P, W)
    float *dpout;                   // (Nmax·P, pw)
    // conditioner: per item n, a-chain buffers ca[n·n_a + k] and c_model.1 outputs ch[n·n_h + j]
    float **ca, **ch;
    int n_a, n_h;
    float *cemb;                    // (Nmax, L0, W) x_emb rows
    float *cmu, *crs;               // (Nmax, T)
    float *cs[7];                   // scratch, each (T · max(W, cw, cm))
    float *cws;                     // conv scratch (jb_conv_grad.h): 3 T max(W, cw, cm, co)
    // every allocation of activations
    void **owned;
    int n_owned, cap_owned;
};

// ---- memory -------------------------------------------------------------------------------

static void *take(jb_train_prior_t *tp, size_t bytes) {
    if (tp->n_owned == tp->cap_owned) {
        int nc = tp->cap_owned ? 2 * tp->cap_owned : 128;
        void **o = realloc(tp->owned, sizeof(void *) * (size_t)nc);
        if (!o) return NULL;
        tp->owned = o, tp->cap_owned = nc;
    }
    void *p = jb_calloc(bytes ? bytes : 1);
    if (p) tp->owned[tp->n_owned++] = p;
    return p;
}
#define TAKE_F(tp, n) ((float *)take(tp, sizeof(float) * (size_t)(n)))

// ---- parameters ----------------------------------------------------------------------------

static int add_param(jb_train_prior_t *tp, const char *name, int ndim, int64_t d0, int64_t d1,
                     int64_t d2) {
    if (tp->n_params == tp->cap_params) {
        int nc = tp->cap_params ? 2 * tp->cap_params : 64;
        jb_train_param_t *p = realloc(tp->params, sizeof *p * (size_t)nc);
        if (!p) return -1;
        tp->params = p, tp->cap_params = nc;
    }
    jb_train_param_t *p = &tp->params[tp->n_params];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = ndim;
    p->shape[0] = d0, p->shape[1] = d1, p->shape[2] = d2;
    p->numel = 1;
    for (int i = 0; i < ndim; i++) p->numel *= p->shape[i];
    p->offset = tp->total;
    tp->total += (p->numel + 15) / 16 * 16;   // 64-byte aligned starts
    return tp->n_params++;
}

#define PW(tp, i) ((tp)->params[i].w)
#define PG(tp, i) ((tp)->params[i].g)

// ---- transformer ---------------------------------------------------------------------------

static int ttf_params(jb_train_prior_t *tp, ttf_t *tf, const char *prefix, int W, int D, int H,
                      double m_attn, double m_mlp, int T, int order, int blocks, int res_scale,
                      int E, int prime_len, jb_err_t *err) {
    tf->W = W, tf->D = D, tf->H = H, tf->T = T, tf->E = E;
    tf->S = (int)(m_attn * W), tf->M = (int)(m_mlp * W);
    if (W <= 0 || D <= 0 || H <= 0 || tf->S <= 0 || tf->M <= 0 || tf->S % H)
        return jb_err_set(err, JB_EINVAL, "transformer '%s': bad sizes", prefix);
    tf->hd = tf->S / H;
    tf->res_scale = res_scale ? 1.0f / (float)D : 1.0f;
    if (blocks > 0) {
        tf->bc = T / blocks;
        tf->prime_keys = (prime_len / blocks + 1) * blocks;
    }
    tf->L = calloc((size_t)D, sizeof(tlayer_t));
    tf->A = calloc((size_t)D, sizeof(tacts_t));
    tf->kmax = calloc((size_t)D, sizeof(int));
    if (!tf->L || !tf->A || !tf->kmax) return jb_err_set(err, JB_ENOMEM, "out of memory");
    int S = tf->S;
    for (int d = 0; d < D; d++) {
        tlayer_t *L = &tf->L[d];
        L->kind = jb_transformer_attn_func(order, d);
        int k = L->kind;
        if (!(k == 0 || k == 1 || k == 2 || k == 3 || k == 6 || k == 7))
            return jb_err_set(err, JB_EUNSUP, "transformer '%s' layer %d: attn_func %d", prefix, d,
                              k);
        if ((k >= 1 && k <= 3 && tf->bc <= 0) || (k == 6 && E <= 0) || (k == 7 && tf->bc <= 0))
            return jb_err_set(err, JB_EUNSUP, "transformer '%s' layer %d: attn_func %d needs "
                              "blocks / lyrics", prefix, d, k);
        tf->kmax[d] = k == 1 || k == 3 ? tf->bc : k == 2 ? T / tf->bc : k == 6 ? E
                      : k == 7 ? tf->prime_keys : T;
        for (int i = 0; i < N_LP; i++) L->p[i] = -1;
        char nm[256];
#define P1(idx, suffix, a)                                                       \
        snprintf(nm, sizeof nm, "%s_attn_mods.%d.%s", prefix, d, suffix);        \
        if ((L->p[idx] = add_param(tp, nm, 1, a, 0, 0)) < 0) goto oom;
#define P2(idx, suffix, a, b)                                                    \
        snprintf(nm, sizeof nm, "%s_attn_mods.%d.%s", prefix, d, suffix);        \
        if ((L->p[idx] = add_param(tp, nm, 2, a, b, 0)) < 0) goto oom;
        P2(ATT_W, "attn.c_attn.w", W, k == 6 ? S : 3 * S)
        P1(ATT_B, "attn.c_attn.b", k == 6 ? S : 3 * S)
        if (k == 6) {
            P2(ENC_W, "attn.c_enc_kv.w", W, 2 * S)
            P1(ENC_B, "attn.c_enc_kv.b", 2 * S)
        }
        P2(PROJ_W, "attn.c_proj.w", S, W)
        P1(PROJ_B, "attn.c_proj.b", W)
        P1(LN0_G, "ln_0.weight", W)
        P1(LN0_B, "ln_0.bias", W)
        P2(FC_W, "mlp.c_fc.w", W, tf->M)
        P1(FC_B, "mlp.c_fc.b", tf->M)
        P2(MP_W, "mlp.c_proj.w", tf->M, W)
        P1(MP_B, "mlp.c_proj.b", W)
        P1(LN1_G, "ln_1.weight", W)
        P1(LN1_B, "ln_1.bias", W)
#undef P1
#undef P2
    }
    return 0;
oom:
    return jb_err_set(err, JB_ENOMEM, "out of memory");
}

static int ttf_acts(jb_train_prior_t *tp, ttf_t *tf, int N, jb_err_t *err) {
    int64_t R = (int64_t)N * tf->T, W = tf->W, S = tf->S, M = tf->M, H = tf->H;
    int64_t NE = (int64_t)N * tf->E;
    for (int d = 0; d < tf->D; d++) {
        tacts_t *A = &tf->A[d];
        int k6 = tf->L[d].kind == 6;
        A->x = TAKE_F(tp, R * W), A->h0 = TAKE_F(tp, R * W);
        A->mu0 = TAKE_F(tp, R), A->rs0 = TAKE_F(tp, R);
        A->qkv = TAKE_F(tp, R * (k6 ? S : 3 * S));
        A->kv = k6 ? TAKE_F(tp, NE * 2 * S) : NULL;
        A->w = TAKE_F(tp, R * H * (tf->kmax[d] > 0 ? tf->kmax[d] : 1));
        A->a = TAKE_F(tp, R * S), A->r = TAKE_F(tp, R * W), A->h1 = TAKE_F(tp, R * W);
        A->mu1 = TAKE_F(tp, R), A->rs1 = TAKE_F(tp, R);
        A->u = TAKE_F(tp, R * M), A->m = TAKE_F(tp, R * M);
        if (!A->x || !A->h0 || !A->mu0 || !A->rs0 || !A->qkv || (k6 && !A->kv) || !A->w ||
            !A->a || !A->r || !A->h1 || !A->mu1 || !A->rs1 || !A->u || !A->m)
            goto oom;
    }
    tf->out = TAKE_F(tp, R * W);
    tf->dy = TAKE_F(tp, R * W), tf->dr = TAKE_F(tp, R * W);
    tf->dt = TAKE_F(tp, R * W), tf->dh = TAKE_F(tp, R * W);
    tf->dqkv = TAKE_F(tp, R * 3 * S), tf->da = TAKE_F(tp, R * S);
    tf->dm = TAKE_F(tp, R * M), tf->du = TAKE_F(tp, R * M);
    tf->dkv = TAKE_F(tp, (NE > 0 ? NE : 1) * 2 * S);
    if (!tf->out || !tf->dy || !tf->dr || !tf->dt || !tf->dh || !tf->dqkv || !tf->da ||
        !tf->dm || !tf->du || !tf->dkv)
        goto oom;
    return 0;
oom:
    return jb_err_set(err, JB_ENOMEM, "out of memory (activations of %d sequences)", N);
}

// Input in tf->A[0].x: (N·T, W); output in tf->out. enc: (N·E, W) or NULL.
static void ttf_forward(jb_train_prior_t *tp, ttf_t *tf, const float *enc, int N) {
    int R = N * tf->T, W = tf->W, S = tf->S, M = tf->M;
    float s = tf->res_scale;
    for (int d = 0; d < tf->D; d++) {
        const tlayer_t *L = &tf->L[d];
        tacts_t *A = &tf->A[d];
        float *xo = d + 1 < tf->D ? tf->A[d + 1].x : tf->out;
        const int *p = L->p;
        jb_grad_layernorm_forward(A->h0, A->mu0, A->rs0, A->x, PW(tp, p[LN0_G]), PW(tp, p[LN0_B]),
                                  R, W);
        jb_nn_attn_kind_t kk = {L->kind, tf->bc, tf->E, tf->prime_keys};
        if (L->kind == 6) {
            jb_grad_linear_forward(A->qkv, A->h0, PW(tp, p[ATT_W]), PW(tp, p[ATT_B]), R, W, S);
            jb_grad_linear_forward(A->kv, enc, PW(tp, p[ENC_W]), PW(tp, p[ENC_B]), N * tf->E, W,
                                   2 * S);
            jb_grad_attn_forward(A->a, A->w, A->qkv, S, A->kv, A->kv + S, 2 * S, kk, N, tf->T,
                                 tf->E, tf->H, tf->hd, tf->kmax[d]);
        } else {
            jb_grad_linear_forward(A->qkv, A->h0, PW(tp, p[ATT_W]), PW(tp, p[ATT_B]), R, W, 3 * S);
            jb_grad_attn_forward(A->a, A->w, A->qkv, 3 * S, A->qkv + S, A->qkv + 2 * S, 3 * S, kk,
                                 N, tf->T, tf->T, tf->H, tf->hd, tf->kmax[d]);
        }
        float *t = tf->dt, *mo = tf->dh;   // backward scratch, free during the forward
        jb_grad_linear_forward(t, A->a, PW(tp, p[PROJ_W]), PW(tp, p[PROJ_B]), R, S, W);
        int64_t RW = (int64_t)R * W;
        for (int64_t i = 0; i < RW; i++) A->r[i] = A->x[i] + (s == 1.0f ? t[i] : s * t[i]);
        jb_grad_layernorm_forward(A->h1, A->mu1, A->rs1, A->r, PW(tp, p[LN1_G]), PW(tp, p[LN1_B]),
                                  R, W);
        jb_grad_linear_forward(A->u, A->h1, PW(tp, p[FC_W]), PW(tp, p[FC_B]), R, W, M);
        jb_grad_quick_gelu_forward(A->m, A->u, (int64_t)R * M);
        jb_grad_linear_forward(mo, A->m, PW(tp, p[MP_W]), PW(tp, p[MP_B]), R, M, W);
        if (s == 1.0f)
            for (int64_t i = 0; i < RW; i++) xo[i] = A->r[i] + mo[i];
        else
            for (int64_t i = 0; i < RW; i++) xo[i] = A->x[i] + s * (t[i] + mo[i]);
    }
}

// d(output) in tf->dy on entry; returns the buffer holding d(input): (N·T, W).
// denc: (N·E, W) += gradient of the encoder rows (kind-6 layers).
static float *ttf_backward(jb_train_prior_t *tp, ttf_t *tf, const float *enc, float *denc,
                           int N) {
    int R = N * tf->T, W = tf->W, S = tf->S, M = tf->M;
    int64_t RW = (int64_t)R * W;
    float s = tf->res_scale;
    float *dy = tf->dy, *dr = tf->dr;
    for (int d = tf->D - 1; d >= 0; d--) {
        const tlayer_t *L = &tf->L[d];
        const tacts_t *A = &tf->A[d];
        const int *p = L->p;
        // MLP branch: out = r + mo (s = 1) or x + s·(t + mo)
        const float *dmo = dy;
        if (s != 1.0f) {
            for (int64_t i = 0; i < RW; i++) tf->dt[i] = s * dy[i];
            dmo = tf->dt;
        }
        memset(tf->dm, 0, sizeof(float) * (size_t)R * M);
        jb_grad_linear_backward(tf->dm, PG(tp, p[MP_W]), PG(tp, p[MP_B]), dmo, A->m,
                                PW(tp, p[MP_W]), R, M, W);
        memset(tf->du, 0, sizeof(float) * (size_t)R * M);
        jb_grad_quick_gelu_backward(tf->du, tf->dm, A->u, (int64_t)R * M);
        memset(tf->dh, 0, sizeof(float) * (size_t)RW);
        jb_grad_linear_backward(tf->dh, PG(tp, p[FC_W]), PG(tp, p[FC_B]), tf->du, A->h1,
                                PW(tp, p[FC_W]), R, W, M);
        memset(dr, 0, sizeof(float) * (size_t)RW);
        jb_grad_layernorm_backward(dr, PG(tp, p[LN1_G]), PG(tp, p[LN1_B]), tf->dh, A->r, A->mu1,
                                   A->rs1, PW(tp, p[LN1_G]), R, W);
        for (int64_t i = 0; i < RW; i++) dr[i] += dy[i];   // d r (= d x through the residual)
        // attention branch: t = c_proj(a) enters with factor s
        const float *dt = dr;
        if (s != 1.0f) {
            for (int64_t i = 0; i < RW; i++) tf->dt[i] = s * dr[i];
            dt = tf->dt;
        }
        memset(tf->da, 0, sizeof(float) * (size_t)R * S);
        jb_grad_linear_backward(tf->da, PG(tp, p[PROJ_W]), PG(tp, p[PROJ_B]), dt, A->a,
                                PW(tp, p[PROJ_W]), R, S, W);
        jb_nn_attn_kind_t kk = {L->kind, tf->bc, tf->E, tf->prime_keys};
        memset(tf->dh, 0, sizeof(float) * (size_t)RW);
        if (L->kind == 6) {
            int NE = N * tf->E;
            memset(tf->dqkv, 0, sizeof(float) * (size_t)R * S);
            memset(tf->dkv, 0, sizeof(float) * (size_t)NE * 2 * S);
            jb_grad_attn_backward(tf->dqkv, tf->dkv, tf->dkv + S, tf->da, A->w, A->qkv, S, A->kv,
                                  A->kv + S, 2 * S, kk, N, tf->T, tf->E, tf->H, tf->hd,
                                  tf->kmax[d]);
            jb_grad_linear_backward(denc, PG(tp, p[ENC_W]), PG(tp, p[ENC_B]), tf->dkv, enc,
                                    PW(tp, p[ENC_W]), NE, W, 2 * S);
            jb_grad_linear_backward(tf->dh, PG(tp, p[ATT_W]), PG(tp, p[ATT_B]), tf->dqkv, A->h0,
                                    PW(tp, p[ATT_W]), R, W, S);
        } else {
            memset(tf->dqkv, 0, sizeof(float) * (size_t)R * 3 * S);
            jb_grad_attn_backward(tf->dqkv, tf->dqkv + S, tf->dqkv + 2 * S, tf->da, A->w, A->qkv,
                                  3 * S, A->qkv + S, A->qkv + 2 * S, 3 * S, kk, N, tf->T, tf->T,
                                  tf->H, tf->hd, tf->kmax[d]);
            jb_grad_linear_backward(tf->dh, PG(tp, p[ATT_W]), PG(tp, p[ATT_B]), tf->dqkv, A->h0,
                                    PW(tp, p[ATT_W]), R, W, 3 * S);
        }
        jb_grad_layernorm_backward(dr, PG(tp, p[LN0_G]), PG(tp, p[LN0_B]), tf->dh, A->x, A->mu0,
                                   A->rs0, PW(tp, p[LN0_G]), R, W);
        float *tmp = dy;
        dy = dr, dr = tmp;
    }
    return dy;
}

static void ttf_free(ttf_t *tf) {
    free(tf->L);
    free(tf->A);
    free(tf->kmax);
}

// ---- construction -----------------------------------------------------------------------------


static int cond_params(jb_train_prior_t *tp, const jb_st_t *st, jb_err_t *err) {
    const jb_prior_hparams_t *hp = &tp->hp;
    int W = hp->width, cw = hp->cond_width, L1 = hp->level + 1;
    int down = hp->vqvae.downs_t[L1], s = hp->vqvae.strides_t[L1];
    int cm = (int)(hp->cond_m_conv * cw);
    if (down <= 0 || down > MAX_COND_STAGES || cw <= 0 || cm <= 0 || hp->cond_depth <= 0)
        return jb_err_set(err, JB_EFORMAT, "conditioner: unsupported sizes (downs %d, width %d, "
                          "depth %d)", down, cw, hp->cond_depth);
    tp->c_stages = down, tp->c_stride = s, tp->c_width = cw, tp->c_mid = cm;
    tp->c_res_scale = hp->cond_res_scale ? (float)(1.0 / sqrt((double)hp->cond_depth)) : 1.0f;
    tp->L0 = hp->n_ctx / tp->info.cond_downsample;
    char nm[256];
    const char *pre = "conditioner_blocks.0.";
    // cond_c_res = 1 stores the residual blocks as "blocks", otherwise "model" (as jb_prior).
    snprintf(nm, sizeof nm, "%scond.model.1.0.blocks.0.model.1.weight", pre);
    const char *list = jb_st_find(st, nm) ? "blocks" : "model";
    snprintf(nm, sizeof nm, "%sx_emb.weight", pre);
    if ((tp->c_x_emb = add_param(tp, nm, 2, tp->info.bins, W, 0)) < 0) goto oom;
    snprintf(nm, sizeof nm, "%scond.model.0.weight", pre);
    if ((tp->c_w0 = add_param(tp, nm, 3, cw, W, 3)) < 0) goto oom;
    snprintf(nm, sizeof nm, "%scond.model.0.bias", pre);
    if ((tp->c_b0 = add_param(tp, nm, 1, cw, 0, 0)) < 0) goto oom;
    for (int i = 0; i < down; i++) {
        cstage_t *sg = &tp->stage[i];
        sg->res = calloc((size_t)hp->cond_depth, sizeof(cres_t));
        if (!sg->res) goto oom;
        for (int j = 0; j < hp->cond_depth; j++) {
            cres_t *r = &sg->res[j];
            int e = hp->cond_dilation_cycle > 0 ? j % hp->cond_dilation_cycle : j;
            r->dil = 1;
            for (int q = 0; q < e; q++) r->dil *= hp->cond_dilation_growth_rate;
            snprintf(nm, sizeof nm, "%scond.model.%d.0.%s.%d.model.1.weight", pre, 1 + i, list, j);
            if ((r->w1 = add_param(tp, nm, 3, cm, cw, 3)) < 0) goto oom;
            snprintf(nm, sizeof nm, "%scond.model.%d.0.%s.%d.model.1.bias", pre, 1 + i, list, j);
            if ((r->b1 = add_param(tp, nm, 1, cm, 0, 0)) < 0) goto oom;
            snprintf(nm, sizeof nm, "%scond.model.%d.0.%s.%d.model.3.weight", pre, 1 + i, list, j);
            if ((r->w3 = add_param(tp, nm, 3, cw, cm, 1)) < 0) goto oom;
            snprintf(nm, sizeof nm, "%scond.model.%d.0.%s.%d.model.3.bias", pre, 1 + i, list, j);
            if ((r->b3 = add_param(tp, nm, 1, cw, 0, 0)) < 0) goto oom;
        }
        sg->co = i == down - 1 ? W : cw;
        snprintf(nm, sizeof nm, "%scond.model.%d.1.weight", pre, 1 + i);
        if ((sg->wt = add_param(tp, nm, 3, cw, sg->co, 2 * s)) < 0) goto oom;
        snprintf(nm, sizeof nm, "%scond.model.%d.1.bias", pre, 1 + i);
        if ((sg->bt = add_param(tp, nm, 1, sg->co, 0, 0)) < 0) goto oom;
    }
    snprintf(nm, sizeof nm, "%sln.weight", pre);
    if ((tp->c_ln_g = add_param(tp, nm, 1, W, 0, 0)) < 0) goto oom;
    snprintf(nm, sizeof nm, "%sln.bias", pre);
    if ((tp->c_ln_b = add_param(tp, nm, 1, W, 0, 0)) < 0) goto oom;
    // lengths of the a-chain: conv0 output, then per stage depth blocks and the up-sampling
    int L = tp->L0;
    for (int i = 0; i < down; i++) L = (L - 1) * s - 2 * (s / 2) + 2 * s;
    if (L != hp->n_ctx)
        return jb_err_set(err, JB_EFORMAT, "conditioner: %d positions from %d codes, n_ctx %d",
                          L, tp->L0, hp->n_ctx);
    tp->n_a = 1 + down * (hp->cond_depth + 1);
    tp->n_h = down * hp->cond_depth;
    return 0;
oom:
    return jb_err_set(err, JB_ENOMEM, "out of memory");
}

static int cond_acts(jb_train_prior_t *tp, jb_err_t *err) {
    int N = tp->Nmax, W = tp->hp.width, cw = tp->c_width, cm = tp->c_mid, s = tp->c_stride;
    int T = tp->hp.n_ctx, D = tp->hp.cond_depth;
    tp->ca = calloc((size_t)N * tp->n_a, sizeof(float *));
    tp->ch = calloc((size_t)N * tp->n_h, sizeof(float *));
    if (!tp->ca || !tp->ch) goto oom;
    for (int n = 0; n < N; n++) {
        float **a = tp->ca + (int64_t)n * tp->n_a, **h = tp->ch + (int64_t)n * tp->n_h;
        int L = tp->L0, k = 0, j = 0;
        if (!(a[k++] = TAKE_F(tp, (int64_t)L * cw))) goto oom;
        for (int i = 0; i < tp->c_stages; i++) {
            for (int b = 0; b < D; b++) {
                if (!(a[k++] = TAKE_F(tp, (int64_t)L * cw))) goto oom;
                if (!(h[j++] = TAKE_F(tp, (int64_t)L * cm))) goto oom;
            }
            L = (L - 1) * s - 2 * (s / 2) + 2 * s;
            if (!(a[k++] = TAKE_F(tp, (int64_t)L * tp->stage[i].co))) goto oom;
        }
    }
    int mx = W > cw ? W : cw;
    mx = mx > cm ? mx : cm;
    for (int i = 0; i < 7; i++)
        if (!(tp->cs[i] = TAKE_F(tp, (int64_t)T * mx))) goto oom;
    // A conv of k <= 3 taps at a length L <= T, or a transposed conv of 2s taps from a length
    // L with L s <= T: at most 3 T max(channels) floats of im2col / cols scratch.
    int mc = mx;
    for (int i = 0; i < tp->c_stages; i++) mc = tp->stage[i].co > mc ? tp->stage[i].co : mc;
    if (!(tp->cws = TAKE_F(tp, 3 * (int64_t)T * mc))) goto oom;
    tp->cemb = TAKE_F(tp, (int64_t)N * tp->L0 * W);
    tp->cmu = TAKE_F(tp, (int64_t)N * T), tp->crs = TAKE_F(tp, (int64_t)N * T);
    if (!tp->cemb || !tp->cmu || !tp->crs) goto oom;
    return 0;
oom:
    return jb_err_set(err, JB_ENOMEM, "out of memory (conditioner)");
}

static int load_params(jb_train_prior_t *tp, const jb_st_t *st, jb_err_t *err) {
    tp->wbuf = jb_calloc(sizeof(float) * (size_t)tp->total);
    tp->gbuf = jb_calloc(sizeof(float) * (size_t)tp->total);
    if (!tp->wbuf || !tp->gbuf) return jb_err_set(err, JB_ENOMEM, "out of memory (parameters)");
    for (int i = 0; i < tp->n_params; i++) {
        jb_train_param_t *p = &tp->params[i];
        p->w = tp->wbuf + p->offset, p->g = tp->gbuf + p->offset;
        float *v = jb_st_get_f32(st, p->name, p->ndim, p->shape, err);
        if (!v) return -1;
        memcpy(p->w, v, sizeof(float) * (size_t)p->numel);
        jb_free(v);
    }
    return 0;
}

jb_train_prior_t *jb_train_prior_new(const char *path, int max_batch, jb_err_t *err) {
    if (max_batch < 1) {
        jb_err_set(err, JB_EINVAL, "max_batch %d", max_batch);
        return NULL;
    }
    jb_train_prior_t *tp = calloc(1, sizeof *tp);
    jb_st_t *st = NULL;
    if (!tp) {
        jb_err_set(err, JB_ENOMEM, "out of memory");
        return NULL;
    }
    tp->Nmax = max_batch;
    if (!(tp->pr = jb_prior_new(path, err))) goto fail;
    tp->info = *jb_prior_info(tp->pr);
    tp->hp = *jb_prior_hparams(tp->pr);
    if (!(st = jb_st_open(path, err))) goto fail;
    const jb_prior_hparams_t *hp = &tp->hp;
    const jb_prior_info_t *in = &tp->info;
    int W = hp->width, S = in->seq_len, B = in->seq_bins, T = hp->n_ctx, P = hp->n_tokens;
    int N = max_batch;
    tp->genre = tp->artist = tp->start = tp->x_out = -1;
    tp->time[0] = tp->time[1] = tp->time[2] = -1;
    tp->p_start = tp->p_x_emb = tp->p_pos = tp->proj_w = tp->proj_b = -1;
    tp->pln_g = tp->pln_b = tp->p_x_out = tp->c_x_emb = -1;
    // parameters in the reference's named_parameters() order
    if (in->x_cond && cond_params(tp, st, err)) goto fail;
    if (hp->labels) {
        if ((tp->genre = add_param(tp, "y_emb.bow_genre_emb.emb.weight", 2, hp->y_bins[0], W,
                                   0)) < 0 ||
            (tp->artist = add_param(tp, "y_emb.artist_emb.emb.weight", 2, hp->y_bins[1], W,
                                    0)) < 0)
            goto oom;
        if (in->include_time_signal) {
            static const char *names[3] = {"total_length", "absolute_pos", "relative_pos"};
            char nm[128];
            for (int i = 0; i < 3; i++) {
                snprintf(nm, sizeof nm, "y_emb.%s_emb.emb.weight", names[i]);
                if ((tp->time[i] = add_param(tp, nm, 2, hp->t_bins, W, 0)) < 0) goto oom;
            }
            double sr = hp->sr;
            tp->t_lo[0] = hp->min_duration * sr, tp->t_hi[0] = hp->max_duration * sr;
            tp->t_lo[1] = 0.0, tp->t_hi[1] = hp->max_duration * sr;
            tp->t_lo[2] = 0.0, tp->t_hi[2] = 1.0;
        }
    }
    if (in->lyrics == JB_PRIOR_LYRICS_ENCODER) {
        int pw = hp->prime_width;
        if ((tp->p_start = add_param(tp, "prime_prior.start_token", 2, 1, pw, 0)) < 0 ||
            (tp->p_x_emb = add_param(tp, "prime_prior.x_emb.weight", 2, hp->n_vocab, pw, 0)) < 0 ||
            (tp->p_pos = add_param(tp, "prime_prior.pos_emb.pos_emb", 2, P, pw, 0)) < 0)
            goto oom;
        if (ttf_params(tp, &tp->ptf, "prime_prior.transformer.", pw, hp->prime_depth,
                       hp->prime_heads, hp->prime_m_attn, hp->prime_m_mlp, P,
                       hp->prime_attn_order, hp->prime_blocks, hp->prime_res_scale, 0, 0, err))
            goto fail;
        if ((tp->proj_w = add_param(tp, "prime_state_proj.w", 2, pw, W, 0)) < 0 ||
            (tp->proj_b = add_param(tp, "prime_state_proj.b", 1, W, 0, 0)) < 0 ||
            (tp->pln_g = add_param(tp, "prime_state_ln.weight", 1, W, 0, 0)) < 0 ||
            (tp->pln_b = add_param(tp, "prime_state_ln.bias", 1, W, 0, 0)) < 0 ||
            (tp->p_x_out = add_param(tp, "prime_x_out.weight", 2, hp->n_vocab, W, 0)) < 0)
            goto oom;
    }
    if ((tp->x_emb = add_param(tp, "prior.x_emb.weight", 2, B, W, 0)) < 0) goto oom;
    if (!hp->labels && (tp->start = add_param(tp, "prior.start_token", 2, 1, W, 0)) < 0) goto oom;
    if ((tp->pos_emb = add_param(tp, "prior.pos_emb.pos_emb", 2, S, W, 0)) < 0) goto oom;
    if (ttf_params(tp, &tp->tf, "prior.transformer.", W, hp->depth, hp->heads, hp->m_attn,
                   hp->m_mlp, S, hp->attn_order, hp->blocks, hp->res_scale,
                   in->lyrics == JB_PRIOR_LYRICS_ENCODER ? P : 0,
                   in->lyrics == JB_PRIOR_LYRICS_JOINT ? P : 0, err))
        goto fail;
    if (hp->merged_decoder && (tp->x_out = add_param(tp, "prior.x_out.weight", 2, B, W, 0)) < 0)
        goto oom;
    if (load_params(tp, st, err)) goto fail;
    tp->st = st, st = NULL;
    // activations
    int64_t R = (int64_t)N * S;
    tp->seq = take(tp, sizeof(int32_t) * (size_t)R);
    tp->cond_y = TAKE_F(tp, (int64_t)N * W);
    tp->cond_x = TAKE_F(tp, (int64_t)N * T * W);
    tp->tbins = take(tp, sizeof(int32_t) * (size_t)N * T * 3);
    tp->hf = TAKE_F(tp, R * W), tp->dhf = TAKE_F(tp, R * W);
    tp->logits = TAKE_F(tp, R * B), tp->dlogits = TAKE_F(tp, R * B);
    tp->dcond_x = TAKE_F(tp, (int64_t)N * T * W), tp->dcond_y = TAKE_F(tp, (int64_t)N * W);
    if (!tp->seq || !tp->cond_y || !tp->cond_x || !tp->tbins || !tp->hf || !tp->dhf ||
        !tp->logits || !tp->dlogits || !tp->dcond_x || !tp->dcond_y)
        goto oom;
    if (ttf_acts(tp, &tp->tf, N, err)) goto fail;
    if (in->lyrics == JB_PRIOR_LYRICS_ENCODER) {
        int64_t NP = (int64_t)N * P;
        int V = hp->n_vocab, pw = hp->prime_width;
        tp->tok = take(tp, sizeof(int32_t) * (size_t)NP);
        tp->pp = TAKE_F(tp, NP * W), tp->enc = TAKE_F(tp, NP * W);
        tp->emu = TAKE_F(tp, NP), tp->ers = TAKE_F(tp, NP);
        tp->plog = TAKE_F(tp, NP * V), tp->dplog = TAKE_F(tp, NP * V);
        tp->denc = TAKE_F(tp, NP * W), tp->dpp = TAKE_F(tp, NP * W);
        tp->dpout = TAKE_F(tp, NP * pw);
        if (!tp->tok || !tp->pp || !tp->enc || !tp->emu || !tp->ers || !tp->plog || !tp->dplog ||
            !tp->denc || !tp->dpp || !tp->dpout)
            goto oom;
        if (ttf_acts(tp, &tp->ptf, N, err)) goto fail;
    }
    if (in->x_cond && cond_acts(tp, err)) goto fail;
    return tp;
oom:
    jb_err_set(err, JB_ENOMEM, "out of memory");
fail:
    jb_err_prefix(err, "%s", path);
    jb_st_close(&st);
    jb_train_prior_destroy(&tp);
    return NULL;
}

void jb_train_prior_destroy(jb_train_prior_t **tp_p) {
    if (!tp_p || !*tp_p) return;
    jb_train_prior_t *tp = *tp_p;
    jb_prior_destroy(&tp->pr);
    jb_st_close(&tp->st);
    for (int i = 0; i < MAX_COND_STAGES; i++) free(tp->stage[i].res);
    ttf_free(&tp->tf);
    ttf_free(&tp->ptf);
    free(tp->params);
    jb_free(tp->wbuf);
    jb_free(tp->gbuf);
    free(tp->ca);
    free(tp->ch);
    for (int i = 0; i < tp->n_owned; i++) jb_free(tp->owned[i]);
    free(tp->owned);
    free(tp);
    *tp_p = NULL;
}

const jb_prior_info_t *jb_train_prior_info(const jb_train_prior_t *tp) { return &tp->info; }
int jb_train_prior_n_params(const jb_train_prior_t *tp) { return tp->n_params; }
const jb_train_param_t *jb_train_prior_param(const jb_train_prior_t *tp, int i) {
    return i >= 0 && i < tp->n_params ? &tp->params[i] : NULL;
}
const jb_train_param_t *jb_train_prior_find(const jb_train_prior_t *tp, const char *name) {
    for (int i = 0; i < tp->n_params; i++)
        if (!strcmp(tp->params[i].name, name)) return &tp->params[i];
    return NULL;
}
float *jb_train_prior_weights(jb_train_prior_t *tp, int64_t *n) {
    *n = tp->total;
    return tp->wbuf;
}
float *jb_train_prior_grads(jb_train_prior_t *tp, int64_t *n) {
    *n = tp->total;
    return tp->gbuf;
}

// ---- forward ----------------------------------------------------------------------------------

// Timing-signal rows of every position (the bins from jb_prior_time_bins, the inference's
// own body; kept for the backward).
static int time_signal(jb_train_prior_t *tp, const int32_t *y, int N, jb_err_t *err) {
    const jb_prior_hparams_t *hp = &tp->hp;
    int W = hp->width, T = hp->n_ctx, L = tp->info.label_len;
    for (int n = 0; n < N; n++) {
        int32_t *bins = tp->tbins + (int64_t)n * T * 3;
        if (jb_prior_time_bins(y + (int64_t)n * L, n, T, hp->t_bins, tp->t_lo, tp->t_hi, bins,
                               err))
            return -1;
        for (int i = 0; i < T; i++) {
            const float *et = PW(tp, tp->time[0]) + (int64_t)bins[3 * i] * W;
            const float *ea = PW(tp, tp->time[1]) + (int64_t)bins[3 * i + 1] * W;
            const float *er = PW(tp, tp->time[2]) + (int64_t)bins[3 * i + 2] * W;
            float *o = tp->cond_x + ((int64_t)n * T + i) * W;
            for (int c = 0; c < W; c++) o[c] = (et[c] + ea[c]) + er[c];
        }
    }
    return 0;
}

static void cond_forward(jb_train_prior_t *tp, const int32_t *zc, int N) {
    int W = tp->hp.width, cw = tp->c_width, cm = tp->c_mid, s = tp->c_stride, T = tp->hp.n_ctx;
    int D = tp->hp.cond_depth;
    float *ws = tp->cws;
    for (int n = 0; n < N; n++) {
        float **a = tp->ca + (int64_t)n * tp->n_a, **h = tp->ch + (int64_t)n * tp->n_h;
        float *e = tp->cemb + (int64_t)n * tp->L0 * W;
        const int32_t *z = zc + (int64_t)n * tp->L0;
        for (int t = 0; t < tp->L0; t++)
            memcpy(e + (int64_t)t * W, PW(tp, tp->c_x_emb) + (int64_t)z[t] * W,
                   sizeof(float) * (size_t)W);
        jb_cg_conv_forward(a[0], e, tp->L0, W, PW(tp, tp->c_w0), PW(tp, tp->c_b0), cw, 3, 1, 1, 1, ws);
        int L = tp->L0, k = 0, j = 0;
        float *t1 = tp->cs[0], *t2 = tp->cs[1], *t3 = tp->cs[2];
        for (int i = 0; i < tp->c_stages; i++) {
            const cstage_t *sg = &tp->stage[i];
            for (int b = 0; b < D; b++, j++, k++) {
                const cres_t *r = &sg->res[b];
                int64_t n1 = (int64_t)L * cw;
                jb_grad_relu_forward(t1, a[k], n1);
                jb_cg_conv_forward(h[j], t1, L, cw, PW(tp, r->w1), PW(tp, r->b1), cm, 3, 1, r->dil,
                                   r->dil, ws);
                jb_grad_relu_forward(t2, h[j], (int64_t)L * cm);
                jb_cg_conv_forward(t3, t2, L, cm, PW(tp, r->w3), PW(tp, r->b3), cw, 1, 1, 0, 1, ws);
                for (int64_t q = 0; q < n1; q++) a[k + 1][q] = a[k][q] + tp->c_res_scale * t3[q];
            }
            jb_cg_convt_forward(a[k + 1], a[k], L, cw, PW(tp, sg->wt), PW(tp, sg->bt), sg->co,
                                2 * s, s, s / 2, ws);
            k++;
            L = (L - 1) * s - 2 * (s / 2) + 2 * s;
        }
        jb_grad_layernorm_forward(tp->cond_x + (int64_t)n * T * W, tp->cmu + (int64_t)n * T,
                                  tp->crs + (int64_t)n * T, a[k], PW(tp, tp->c_ln_g),
                                  PW(tp, tp->c_ln_b), T, W);
    }
}

static void cond_backward(jb_train_prior_t *tp, const int32_t *zc, int N) {
    int W = tp->hp.width, cw = tp->c_width, cm = tp->c_mid, s = tp->c_stride, T = tp->hp.n_ctx;
    int D = tp->hp.cond_depth;
    int mx = W > cw ? W : cw;
    mx = mx > cm ? mx : cm;
    size_t big = sizeof(float) * (size_t)T * mx;
    float *ws = tp->cws;
    for (int n = 0; n < N; n++) {
        float **a = tp->ca + (int64_t)n * tp->n_a, **h = tp->ch + (int64_t)n * tp->n_h;
        float *e = tp->cemb + (int64_t)n * tp->L0 * W;
        float *dA = tp->cs[0], *dB = tp->cs[1], *t1 = tp->cs[2], *t2 = tp->cs[3];
        float *dr2 = tp->cs[4], *dh1 = tp->cs[5], *dr1 = tp->cs[6];
        int k = tp->n_a - 1, j = tp->n_h - 1;
        memset(dA, 0, big);
        jb_grad_layernorm_backward(dA, PG(tp, tp->c_ln_g), PG(tp, tp->c_ln_b),
                                   tp->dcond_x + (int64_t)n * T * W, a[k],
                                   tp->cmu + (int64_t)n * T, tp->crs + (int64_t)n * T,
                                   PW(tp, tp->c_ln_g), T, W);
        int Ls[MAX_COND_STAGES + 1];
        Ls[0] = tp->L0;
        for (int i = 0; i < tp->c_stages; i++) Ls[i + 1] = (Ls[i] - 1) * s - 2 * (s / 2) + 2 * s;
        for (int i = tp->c_stages - 1; i >= 0; i--) {
            const cstage_t *sg = &tp->stage[i];
            int L = Ls[i];
            jb_cg_convt_backward(dB, PG(tp, sg->wt), PG(tp, sg->bt), dA, a[k - 1], L, cw,
                                 PW(tp, sg->wt), sg->co, 2 * s, s, s / 2, ws);
            k--;
            float *tmp = dA;
            dA = dB, dB = tmp;
            for (int b = D - 1; b >= 0; b--, j--, k--) {
                const cres_t *r = &sg->res[b];
                int64_t n1 = (int64_t)L * cw, n2 = (int64_t)L * cm;
                const float *ain = a[k - 1];
                for (int64_t q = 0; q < n1; q++) t1[q] = tp->c_res_scale * dA[q];   // d h2
                jb_grad_relu_forward(t2, h[j], n2);
                jb_cg_conv_backward(dr2, PG(tp, r->w3), PG(tp, r->b3), t1, t2, L, cm,
                                    PW(tp, r->w3), cw, 1, 1, 0, 1, ws);
                memset(dh1, 0, sizeof(float) * (size_t)n2);
                jb_grad_relu_backward(dh1, dr2, h[j], n2);
                jb_grad_relu_forward(t2, ain, n1);
                jb_cg_conv_backward(dr1, PG(tp, r->w1), PG(tp, r->b1), dh1, t2, L, cw,
                                    PW(tp, r->w1), cm, 3, 1, r->dil, r->dil, ws);
                jb_grad_relu_backward(dA, dr1, ain, n1);   // + the identity path already in dA
            }
        }
        jb_cg_conv_backward(dB, PG(tp, tp->c_w0), PG(tp, tp->c_b0), dA, e, tp->L0, W,
                            PW(tp, tp->c_w0), cw, 3, 1, 1, 1, ws);
        jb_grad_embed_backward(PG(tp, tp->c_x_emb), dB, zc + (int64_t)n * tp->L0, tp->L0, W);
    }
}

static int check_ids(const int32_t *v, int64_t n, int lo, int hi, const char *what,
                     jb_err_t *err) {
    for (int64_t i = 0; i < n; i++)
        if (v[i] < lo || v[i] >= hi)
            return jb_err_set(err, JB_EINVAL, "%s: %d at %lld outside [%d, %d)", what, v[i],
                              (long long)i, lo, hi);
    return 0;
}

// The joint id sequence (lyric tokens, then codes offset by n_vocab) and the start
// conditioning (artist + genre embeddings, or the start token) of every sample.
static int seq_and_start(jb_train_prior_t *tp, const int32_t *z, const int32_t *y, int N,
                         jb_err_t *err) {
    const jb_prior_hparams_t *hp = &tp->hp;
    const jb_prior_info_t *in = &tp->info;
    int W = hp->width, T = hp->n_ctx, P = hp->n_tokens;
    int LL = in->label_len, V = hp->n_vocab;
    if (jb_prior_fill_seq(in, tp->seq, y, z, T, N, err)) return -1;   // inference's body
    for (int n = 0; n < N; n++) {
        const int32_t *ly = in->lyrics ? y + (int64_t)n * LL + LL - P : NULL;
        if (ly && check_ids(ly, P, 0, V, "lyric token", err)) return -1;
        if (in->lyrics == JB_PRIOR_LYRICS_ENCODER)
            memcpy(tp->tok + (int64_t)n * P, ly, sizeof(int32_t) * (size_t)P);
    }
    for (int n = 0; n < N; n++) {
        float *o = tp->cond_y + (int64_t)n * W;
        if (!hp->labels) {
            memcpy(o, PW(tp, tp->start), sizeof(float) * (size_t)W);
            continue;
        }
        const int32_t *yn = y + (int64_t)n * LL;
        for (int c = 0; c < W; c++) o[c] = 0.0f;
        for (int g = 0; g < hp->max_bow_genre_size; g++) {
            int id = yn[4 + g];
            if (id < 0) continue;   // masked slot
            if (id >= hp->y_bins[0])
                return jb_err_set(err, JB_EINVAL, "sample %d: genre id %d outside [0, %d)", n, id,
                                  hp->y_bins[0]);
            const float *e = PW(tp, tp->genre) + (int64_t)id * W;
            for (int c = 0; c < W; c++) o[c] += e[c];
        }
        int a = yn[3];
        if (a < 0 || a >= hp->y_bins[1])
            return jb_err_set(err, JB_EINVAL, "sample %d: artist id %d outside [0, %d)", n, a,
                              hp->y_bins[1]);
        const float *e = PW(tp, tp->artist) + (int64_t)a * W;
        for (int c = 0; c < W; c++) o[c] = o[c] + e[c];
    }
    return 0;
}

// The separate lyrics encoder (5b_lyrics kind): tokens -> prime transformer -> projection,
// LayerNorm (tp->enc, what the music attends to) and its own logits (tp->plog).
static void lyrics_encoder_forward(jb_train_prior_t *tp, int N) {
    const jb_prior_hparams_t *hp = &tp->hp;
    int W = hp->width, P = hp->n_tokens, V = hp->n_vocab, pw = hp->prime_width;
    for (int n = 0; n < N; n++)
        for (int t = 0; t < P; t++) {
            const float *e = t == 0 ? PW(tp, tp->p_start)
                                    : PW(tp, tp->p_x_emb) +
                                          (int64_t)tp->tok[(int64_t)n * P + t - 1] * pw;
            const float *pe = PW(tp, tp->p_pos) + (int64_t)t * pw;
            float *o = tp->ptf.A[0].x + ((int64_t)n * P + t) * pw;
            for (int c = 0; c < pw; c++) o[c] = (e[c] + pe[c]) + 0.0f;
        }
    ttf_forward(tp, &tp->ptf, NULL, N);
    int NP = N * P;
    jb_grad_linear_forward(tp->pp, tp->ptf.out, PW(tp, tp->proj_w), PW(tp, tp->proj_b), NP, pw, W);
    jb_grad_layernorm_forward(tp->enc, tp->emu, tp->ers, tp->pp, PW(tp, tp->pln_g),
                              PW(tp, tp->pln_b), NP, W);
    jb_grad_proj_t_forward(tp->plog, tp->enc, PW(tp, tp->p_x_out), NP, W, V);
}

// The prior's transformer over the joint sequence: inputs (start conditioning or the previous
// id's embedding, positions, the per-position conditioning), blocks, the un-merged decoder's
// x_cond, the output projection into tp->logits.
static void transformer_forward(jb_train_prior_t *tp, int N, int has_x) {
    const jb_prior_hparams_t *hp = &tp->hp;
    const jb_prior_info_t *in = &tp->info;
    int W = hp->width, S = in->seq_len, B = in->seq_bins, T = hp->n_ctx, off = S - T;
    int64_t R = (int64_t)N * S;
    float *x0 = tp->tf.A[0].x;
    const float *xemb = PW(tp, tp->x_emb), *pos = PW(tp, tp->pos_emb);
    for (int n = 0; n < N; n++)
        for (int t = 0; t < S; t++) {
            const float *e = t == 0 ? tp->cond_y + (int64_t)n * W
                                    : xemb + (int64_t)tp->seq[(int64_t)n * S + t - 1] * W;
            const float *pe = pos + (int64_t)t * W;
            const float *xc = has_x && t >= off ? tp->cond_x + ((int64_t)n * T + t - off) * W
                                                : NULL;
            float *o = x0 + ((int64_t)n * S + t) * W;
            if (xc)
                for (int c = 0; c < W; c++) o[c] = (e[c] + pe[c]) + xc[c];
            else
                for (int c = 0; c < W; c++) o[c] = (e[c] + pe[c]) + 0.0f;
        }
    ttf_forward(tp, &tp->tf, tp->enc, N);
    memcpy(tp->hf, tp->tf.out, sizeof(float) * (size_t)(R * W));
    if (!hp->merged_decoder && has_x)
        for (int n = 0; n < N; n++)
            for (int t = off; t < S; t++) {
                const float *xc = tp->cond_x + ((int64_t)n * T + t - off) * W;
                float *o = tp->hf + ((int64_t)n * S + t) * W;
                for (int c = 0; c < W; c++) o[c] += xc[c];
            }
    const float *xout = tp->x_out >= 0 ? PW(tp, tp->x_out) : xemb;
    jb_grad_proj_t_forward(tp->logits, tp->hf, xout, (int)R, W, B);
}

// The losses as z_forward combines them (music and, weighted by prime_loss_fraction, lyrics,
// in bits per token) and, when backward, their gradients into tp->dlogits / tp->dplog.
static void losses(jb_train_prior_t *tp, int N, int backward, jb_train_prior_loss_t *loss) {
    const jb_prior_hparams_t *hp = &tp->hp;
    const jb_prior_info_t *in = &tp->info;
    int S = in->seq_len, B = in->seq_bins, T = hp->n_ctx, P = hp->n_tokens, V = hp->n_vocab;
    int off = S - T;
    int64_t R = (int64_t)N * S;
    double G = T, Pd = in->lyrics ? P : 0, tot = G + Pd;
    double wp = hp->prime_loss_fraction * Pd / tot, wg = G / tot;
    float *dl = backward ? tp->dlogits : NULL;
    if (dl) memset(dl, 0, sizeof(float) * (size_t)(R * B));
    double gen_loss = 0, prime_loss = 0;
    if (off) {
        // joint sequence: per sequence the first off rows are the prime part
        double sp = 0, sg = 0;
        for (int n = 0; n < N; n++) {
            const float *l = tp->logits + (int64_t)n * S * B;
            const int32_t *tg = tp->seq + (int64_t)n * S;
            float *d = dl ? dl + (int64_t)n * S * B : NULL;
            sp += jb_grad_ce_bits(d, l, tg, off, B, wp / N);
            sg += jb_grad_ce_bits(d ? d + (int64_t)off * B : NULL, l + (int64_t)off * B, tg + off,
                                  T, B, wg / N);
        }
        prime_loss = sp / N, gen_loss = sg / N;
    } else {
        gen_loss = jb_grad_ce_bits(dl, tp->logits, tp->seq, R, B, wg);
    }
    if (in->lyrics == JB_PRIOR_LYRICS_ENCODER) {
        float *dp = backward ? tp->dplog : NULL;
        if (dp) memset(dp, 0, sizeof(float) * (size_t)N * P * V);
        prime_loss = jb_grad_ce_bits(dp, tp->plog, tp->tok, (int64_t)N * P, V, wp);
    }
    loss->gen_loss = gen_loss;
    loss->prime_loss = prime_loss;
    loss->loss = wp * prime_loss + wg * gen_loss;
}

// Backward of transformer_forward: into the parameters' gradients, tp->dcond_y (start
// conditioning), tp->dcond_x (per-position conditioning) and tp->denc (lyrics encoder).
static void transformer_backward(jb_train_prior_t *tp, int N, int has_x) {
    const jb_prior_hparams_t *hp = &tp->hp;
    const jb_prior_info_t *in = &tp->info;
    int W = hp->width, S = in->seq_len, B = in->seq_bins, T = hp->n_ctx, P = hp->n_tokens;
    int off = S - T;
    int64_t R = (int64_t)N * S;
    const float *xout = tp->x_out >= 0 ? PW(tp, tp->x_out) : PW(tp, tp->x_emb);
    float *dxout = tp->x_out >= 0 ? PG(tp, tp->x_out) : PG(tp, tp->x_emb);
    memset(tp->dhf, 0, sizeof(float) * (size_t)(R * W));
    jb_grad_proj_t_backward(tp->dhf, dxout, tp->dlogits, tp->hf, xout, (int)R, W, B);
    float *dcx = tp->dcond_x;
    memset(dcx, 0, sizeof(float) * (size_t)N * T * W);
    if (!hp->merged_decoder && has_x)
        for (int n = 0; n < N; n++)
            for (int t = off; t < S; t++) {
                const float *d = tp->dhf + ((int64_t)n * S + t) * W;
                float *o = dcx + ((int64_t)n * T + t - off) * W;
                for (int c = 0; c < W; c++) o[c] += d[c];
            }
    if (tp->denc) memset(tp->denc, 0, sizeof(float) * (size_t)N * P * W);
    memcpy(tp->tf.dy, tp->dhf, sizeof(float) * (size_t)(R * W));
    const float *dx0 = ttf_backward(tp, &tp->tf, tp->enc, tp->denc, N);
    // input embedding: start conditioning at 0, x_emb of the previous id elsewhere, pos_emb
    float *gx = PG(tp, tp->x_emb), *gp = PG(tp, tp->pos_emb);
    for (int n = 0; n < N; n++)
        for (int t = 0; t < S; t++) {
            const float *d = dx0 + ((int64_t)n * S + t) * W;
            float *ge = t == 0 ? tp->dcond_y + (int64_t)n * W
                               : gx + (int64_t)tp->seq[(int64_t)n * S + t - 1] * W;
            if (t == 0) memset(ge, 0, sizeof(float) * (size_t)W);
            for (int c = 0; c < W; c++) {
                ge[c] += d[c];
                gp[(int64_t)t * W + c] += d[c];
            }
            if (has_x && t >= off) {
                float *o = dcx + ((int64_t)n * T + t - off) * W;
                for (int c = 0; c < W; c++) o[c] += d[c];
            }
        }
}

// Backward of the start conditioning (artist and genre embeddings, or the start token).
static void start_backward(jb_train_prior_t *tp, const int32_t *y, int N) {
    const jb_prior_hparams_t *hp = &tp->hp;
    int W = hp->width, LL = tp->info.label_len;
    for (int n = 0; n < N; n++) {
        const float *d = tp->dcond_y + (int64_t)n * W;
        if (!hp->labels) {
            for (int c = 0; c < W; c++) PG(tp, tp->start)[c] += d[c];
            continue;
        }
        const int32_t *yn = y + (int64_t)n * LL;
        jb_grad_embed_backward(PG(tp, tp->artist), d, yn + 3, 1, W);
        for (int g = 0; g < hp->max_bow_genre_size; g++)
            jb_grad_embed_backward(PG(tp, tp->genre), d, yn + 4 + g, 1, W);
    }
}

// Backward of lyrics_encoder_forward, from tp->denc and tp->dplog.
static void lyrics_encoder_backward(jb_train_prior_t *tp, int N) {
    const jb_prior_hparams_t *hp = &tp->hp;
    int W = hp->width, P = hp->n_tokens, V = hp->n_vocab, pw = hp->prime_width, NP = N * P;
    jb_grad_proj_t_backward(tp->denc, PG(tp, tp->p_x_out), tp->dplog, tp->enc,
                            PW(tp, tp->p_x_out), NP, W, V);
    memset(tp->dpp, 0, sizeof(float) * (size_t)NP * W);
    jb_grad_layernorm_backward(tp->dpp, PG(tp, tp->pln_g), PG(tp, tp->pln_b), tp->denc, tp->pp,
                               tp->emu, tp->ers, PW(tp, tp->pln_g), NP, W);
    memset(tp->ptf.dy, 0, sizeof(float) * (size_t)NP * pw);
    jb_grad_linear_backward(tp->ptf.dy, PG(tp, tp->proj_w), PG(tp, tp->proj_b), tp->dpp,
                            tp->ptf.out, PW(tp, tp->proj_w), NP, pw, W);
    const float *dpx = ttf_backward(tp, &tp->ptf, NULL, NULL, N);
    for (int n = 0; n < N; n++)
        for (int t = 0; t < P; t++) {
            const float *d = dpx + ((int64_t)n * P + t) * pw;
            float *ge = t == 0 ? PG(tp, tp->p_start)
                               : PG(tp, tp->p_x_emb) + (int64_t)tp->tok[(int64_t)n * P + t - 1] * pw;
            float *gpp = PG(tp, tp->p_pos) + (int64_t)t * pw;
            for (int c = 0; c < pw; c++) ge[c] += d[c], gpp[c] += d[c];
        }
}

// One forward (and, with backward, the backward) pass over a batch of N windows.
static int run(jb_train_prior_t *tp, const int32_t *z, const int32_t *z_cond, const int32_t *y,
               int N, jb_train_prior_loss_t *loss, float *logits_out, int backward,
               jb_err_t *err) {
    const jb_prior_hparams_t *hp = &tp->hp;
    const jb_prior_info_t *in = &tp->info;
    if (N < 1 || N > tp->Nmax)
        return jb_err_set(err, JB_EINVAL, "batch %d outside [1, %d]", N, tp->Nmax);
    if ((in->labels || in->lyrics) && !y)
        return jb_err_set(err, JB_EINVAL, "level %d: labels (y) required", hp->level);
    if (in->x_cond && !z_cond)
        return jb_err_set(err, JB_EINVAL, "level %d: codes of level %d required", hp->level,
                          hp->level + 1);
    int W = hp->width, T = hp->n_ctx;
    if (check_ids(z, (int64_t)N * T, 0, in->bins, "code", err)) return -1;
    if (in->x_cond &&
        check_ids(z_cond, (int64_t)N * tp->L0, 0, in->bins, "conditioning code", err))
        return -1;
    if (seq_and_start(tp, z, y, N, err)) return -1;
    // per-position conditioning of the music positions
    int has_x = in->x_cond || in->include_time_signal;
    if (in->x_cond)
        cond_forward(tp, z_cond, N);
    else if (in->include_time_signal && time_signal(tp, y, N, err))
        return -1;
    if (in->lyrics == JB_PRIOR_LYRICS_ENCODER) lyrics_encoder_forward(tp, N);
    transformer_forward(tp, N, has_x);
    if (logits_out)
        memcpy(logits_out, tp->logits, sizeof(float) * (size_t)N * in->seq_len * in->seq_bins);
    losses(tp, N, backward, loss);
    if (!backward) return 0;

    memset(tp->gbuf, 0, sizeof(float) * (size_t)tp->total);
    transformer_backward(tp, N, has_x);
    start_backward(tp, y, N);
    if (in->x_cond) {
        cond_backward(tp, z_cond, N);
    } else if (in->include_time_signal) {
        for (int64_t r = 0; r < (int64_t)N * T; r++)
            for (int i = 0; i < 3; i++)
                jb_grad_embed_backward(PG(tp, tp->time[i]), tp->dcond_x + r * W,
                                       tp->tbins + r * 3 + i, 1, W);
    }
    if (in->lyrics == JB_PRIOR_LYRICS_ENCODER) lyrics_encoder_backward(tp, N);
    return 0;
}

int jb_train_prior_step(jb_train_prior_t *tp, const int32_t *z, const int32_t *z_cond,
                        const int32_t *y, int N, jb_train_prior_loss_t *loss, float *logits,
                        jb_err_t *err) {
    return run(tp, z, z_cond, y, N, loss, logits, 1, err);
}

int jb_train_prior_eval(jb_train_prior_t *tp, const int32_t *z, const int32_t *z_cond,
                        const int32_t *y, int N, jb_train_prior_loss_t *loss, float *logits,
                        jb_err_t *err) {
    return run(tp, z, z_cond, y, N, loss, logits, 0, err);
}

int jb_train_prior_save(const jb_train_prior_t *tp, const char *path, jb_err_t *err) {
    jb_st_writer_t *w = jb_st_writer_new(err);
    if (!w) return -1;
    int rc = -1;
    for (int i = 0; i < jb_st_meta_count(tp->st); i++) {
        const char *k, *v;
        if (jb_st_meta_at(tp->st, i, &k, &v) == 0 && jb_st_writer_meta(w, k, v, err)) goto done;
    }
    for (int i = 0; i < jb_st_count(tp->st); i++) {
        const jb_st_entry_t *e = jb_st_entry(tp->st, i);
        const jb_train_param_t *p = jb_train_prior_find(tp, e->name);
        if (!p && tp->x_out < 0 && !strcmp(e->name, "prior.x_out.weight"))
            p = &tp->params[tp->x_emb];   // tied: the file keeps its copy in sync
        int rc2 = p ? jb_st_writer_add(w, e->name, JB_F32, p->ndim, p->shape, p->w, err)
                    : jb_st_writer_add(w, e->name, e->dtype, e->ndim, e->shape, e->data, err);
        if (rc2) goto done;
    }
    rc = jb_st_writer_write(w, path, NULL, NULL, err);
done:
    jb_st_writer_destroy(&w);
    return rc;
}
