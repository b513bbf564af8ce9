// jb_vqvae.c: VQ-VAE forward passes (reference: jukebox/vqvae/{vqvae,encdec,resnet,bottleneck}.py).
#include "jb_vqvae.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jb_conv.h"
#include "jb_tensor.h"

#define MAX_DOWN 16   // jb_vqvae_hparams_parse caps downs_t at 16
#define VQ_ROWS 128   // bottleneck rows per distance block: dots (128, l_bins) in scratch
#define VQ_SLOTS 16   // at most that many threads in the bottleneck (one slot each)

// One convolution: packed weights and its geometry.
typedef struct {
    int C, OC, k, s, p, d;
    int transposed;
    float *w;   // conv: (k, C, OC); transposed: (C, k, OC)   [jb_conv.h packing]
    float *b;   // (OC)
    float *wg;  // (4, C, OC) Winograd F(2,3) weights (resnet k=3 convs only), else NULL
} conv_t;

// ResConv1DBlock: x += conv1(relu(conv3_d(relu(x)))).
typedef struct {
    conv_t conv3;   // model.1: width -> m_conv*width, kernel 3, dilation d, padding d
    conv_t conv1;   // model.3: m_conv*width -> width, 1x1
} res_t;

// EncoderConvBlock (encoders.L.level_blocks.l) or DecoderConvBock (decoders.L.level_blocks.l).
typedef struct {
    int down_t, depth;
    conv_t in;                // decoder model.0: emb -> width, kernel 3
    conv_t step[MAX_DOWN];    // encoder model.i.0 (down, kernel 2s); decoder model.(1+i).1 (up)
    res_t *res[MAX_DOWN];     // [depth] each: encoder model.i.1, decoder model.(1+i).0
    conv_t out;               // encoder model.<down_t>: width -> emb, kernel 3
} block_t;

struct jb_vqvae {
    jb_vqvae_hparams_t hp;
    block_t enc[JB_MAX_LEVELS][JB_MAX_LEVELS];   // [L][l]: encoders.L.level_blocks.l
    block_t dec[JB_MAX_LEVELS][JB_MAX_LEVELS];   // [L][l]: decoders.L.level_blocks.l
    conv_t dec_out[JB_MAX_LEVELS];               // decoders.L.out: emb -> 1, kernel 3
    float *codebook[JB_MAX_LEVELS];              // (l_bins, emb)  bottleneck.level_blocks.L.k
    float *k_norm[JB_MAX_LEVELS];                // (l_bins)       ‖k_j‖²
    float *weights;                              // one allocation behind every pointer above
    size_t n_weights;                            // floats
    res_t *res_pool;                             // every res_t, one allocation
    int64_t margin_enc[JB_MAX_LEVELS];           // raw samples of context per side
    int64_t margin_dec[JB_MAX_LEVELS];
    int64_t max_window;                          // raw samples per pass
    int method;                                  // JB_VQVAE_IM2COL / _DIRECT / _WINOGRAD
    const jb_vqvae_backend_t *backend;           // another backend for the windows, or NULL
    void *backend_impl;
    // activations, sized once for max_window by a planning pass
    float *buf[3];                               // ping, pong (T, C) and resnet hidden (T, S)
    size_t cap[3];
    float *ws;                                   // conv / bottleneck scratch
    size_t cap_ws;
};

// ---- weights --------------------------------------------------------------------

typedef struct {
    jb_vqvae_t *vq;
    const jb_st_t *st;   // NULL: random weights
    uint64_t rng;
    int pass;            // 0: count floats and res blocks; 1: carve and fill
    size_t used;         // floats carved / counted
    size_t n_res;        // res blocks carved / counted
} loader_t;

static float rand_uniform(uint64_t *s) {   // xorshift64*: uniform in [-1, 1)
    *s ^= *s >> 12, *s ^= *s << 25, *s ^= *s >> 27;
    uint64_t r = *s * 0x2545F4914F6CDD1Dull;
    return (float)((r >> 40) * (1.0 / 8388608.0)) - 1.0f;
}

static float *carve(loader_t *ld, size_t n) {
    float *p = ld->pass ? ld->vq->weights + ld->used : NULL;
    ld->used += (n + 15) & ~(size_t)15;   // 64-byte aligned pieces
    return p;
}

// Fill dst (n floats) from tensor `name` of the given shape, or randomly.
static int fill(loader_t *ld, float **raw, const char *name, int ndim, const int64_t *shape,
                float scale, size_t n, jb_err_t *err) {
    if (!ld->st) {
        float *r = malloc(sizeof(float) * n);
        if (!r) return jb_err_set(err, JB_ENOMEM, "vqvae: out of memory");
        for (size_t i = 0; i < n; i++) r[i] = scale * rand_uniform(&ld->rng);
        *raw = r;
        return 0;
    }
    *raw = jb_st_get_f32(ld->st, name, ndim, shape, err);
    return *raw ? 0 : -1;
}

static int take_conv(loader_t *ld, conv_t *cv, const char *prefix, int C, int OC, int k, int s,
                     int p, int d, int transposed, int wino, jb_err_t *err) {
    size_t nw = (size_t)C * OC * k;
    float *w = carve(ld, nw), *b = carve(ld, (size_t)OC);
    float *wg = wino ? carve(ld, (size_t)4 * C * OC) : NULL;
    if (!ld->pass) return 0;
    *cv = (conv_t){.C = C, .OC = OC, .k = k, .s = s, .p = p, .d = d, .transposed = transposed,
                   .w = w, .b = b, .wg = wg};
    char name[256];
    int64_t shape[3] = {transposed ? C : OC, transposed ? OC : C, k};
    float *raw = NULL;
    float scale = 1.0f / sqrtf((float)(C * k));
    snprintf(name, sizeof name, "%s.weight", prefix);
    if (fill(ld, &raw, name, 3, shape, scale, nw, err)) return -1;
    if (transposed) jb_convt1d_pack(w, raw, C, OC, k);
    else jb_conv1d_pack(w, raw, OC, C, k);
    if (wg) jb_conv1d_pack_wino(wg, raw, OC, C);
    jb_free(raw);
    raw = NULL;
    snprintf(name, sizeof name, "%s.bias", prefix);
    int64_t bshape[1] = {OC};
    if (fill(ld, &raw, name, 1, bshape, scale, (size_t)OC, err)) return -1;
    memcpy(b, raw, sizeof(float) * OC);
    jb_free(raw);
    return 0;
}

// Resnet1D(width, depth) at prefix: blocks "<prefix>.model.<j>.model.{1,3}".
static int take_resnet(loader_t *ld, res_t **out, const char *prefix, int width, int depth,
                       int reverse, jb_err_t *err) {
    const jb_vqvae_hparams_t *hp = &ld->vq->hp;
    int state = (int)(hp->m_conv * width);
    res_t *rs = ld->pass ? ld->vq->res_pool + ld->n_res : NULL;
    ld->n_res += (size_t)depth;
    if (ld->pass) *out = rs;
    for (int j = 0; j < depth; j++) {
        // built in forward order, then reversed for the decoder: stored block j has the
        // dilation of forward block depth-1-j
        int fwd = reverse ? depth - 1 - j : j;
        int e = hp->dilation_cycle ? fwd % hp->dilation_cycle : fwd;
        int dil = 1;
        for (int q = 0; q < e; q++) dil *= hp->dilation_growth_rate;
        char name[200];
        snprintf(name, sizeof name, "%s.model.%d.model.1", prefix, j);
        if (take_conv(ld, rs ? &rs[j].conv3 : NULL, name, width, state, 3, 1, dil, dil, 0, 1, err))
            return -1;
        snprintf(name, sizeof name, "%s.model.%d.model.3", prefix, j);
        if (take_conv(ld, rs ? &rs[j].conv1 : NULL, name, state, width, 1, 1, 0, 1, 0, 0, err))
            return -1;
    }
    return 0;
}

static int take_all(loader_t *ld, jb_err_t *err) {
    jb_vqvae_t *vq = ld->vq;
    const jb_vqvae_hparams_t *hp = &vq->hp;
    int emb = hp->emb_width;
    char pre[160], name[200];
    for (int L = 0; L < hp->levels; L++) {
        int width = hp->width * hp->multipliers[L], depth = hp->depth * hp->multipliers[L];
        for (int l = 0; l <= L; l++) {
            int down = hp->downs_t[l], s = hp->strides_t[l];
            block_t *eb = &vq->enc[L][l], *db = &vq->dec[L][l];
            if (ld->pass) eb->down_t = db->down_t = down, eb->depth = db->depth = depth;
            if (down == 0) continue;   // the reference's block is then empty (identity)
            snprintf(pre, sizeof pre, "encoders.%d.level_blocks.%d.model", L, l);
            for (int i = 0; i < down; i++) {
                int cin = i > 0 ? width : (l == 0 ? 1 : emb);
                snprintf(name, sizeof name, "%s.%d.0", pre, i);
                if (take_conv(ld, &eb->step[i], name, cin, width, 2 * s, s, s / 2, 1, 0, 0, err))
                    return -1;
                snprintf(name, sizeof name, "%s.%d.1", pre, i);
                if (take_resnet(ld, &eb->res[i], name, width, depth, 0, err)) return -1;
            }
            snprintf(name, sizeof name, "%s.%d", pre, down);
            if (take_conv(ld, &eb->out, name, width, emb, 3, 1, 1, 1, 0, 0, err)) return -1;

            snprintf(pre, sizeof pre, "decoders.%d.level_blocks.%d.model", L, l);
            snprintf(name, sizeof name, "%s.0", pre);
            if (take_conv(ld, &db->in, name, emb, width, 3, 1, 1, 1, 0, 0, err)) return -1;
            for (int i = 0; i < down; i++) {
                snprintf(name, sizeof name, "%s.%d.0", pre, 1 + i);
                if (take_resnet(ld, &db->res[i], name, width, depth, hp->reverse_decoder_dilation,
                                err))
                    return -1;
                snprintf(name, sizeof name, "%s.%d.1", pre, 1 + i);
                int cout = i == down - 1 ? emb : width;
                if (take_conv(ld, &db->step[i], name, width, cout, 2 * s, s, s / 2, 1, 1, 0, err))
                    return -1;
            }
        }
        snprintf(name, sizeof name, "decoders.%d.out", L);
        if (take_conv(ld, &vq->dec_out[L], name, emb, 1, 3, 1, 1, 1, 0, 0, err)) return -1;

        size_t nk = (size_t)hp->l_bins * emb;
        float *k = carve(ld, nk), *kn = carve(ld, (size_t)hp->l_bins);
        if (ld->pass) {
            float *raw = NULL;
            int64_t shape[2] = {hp->l_bins, emb};
            snprintf(name, sizeof name, "bottleneck.level_blocks.%d.k", L);
            if (fill(ld, &raw, name, 2, shape, 1.0f, nk, err)) return -1;
            memcpy(k, raw, sizeof(float) * nk);
            jb_free(raw);
            for (int j = 0; j < hp->l_bins; j++) {
                float acc = 0.0f;
                for (int c = 0; c < emb; c++) acc += k[(size_t)j * emb + c] * k[(size_t)j * emb + c];
                kn[j] = acc;
            }
            vq->codebook[L] = k, vq->k_norm[L] = kn;
        }
    }
    return 0;
}

// ---- receptive fields -------------------------------------------------------------

// Context (raw samples) one output of encoders.L / decoders.L can see on either side,
// rounded up to a multiple of the top hop length so chunk windows keep stride phases.
static void compute_margins(jb_vqvae_t *vq) {
    const jb_vqvae_hparams_t *hp = &vq->hp;
    int64_t top = hp->hop_lengths[hp->levels - 1];
    for (int L = 0; L < hp->levels; L++) {
        int64_t J = 1, reach = 0;   // J: raw samples between positions of the current signal
        for (int l = 0; l <= L; l++) {
            block_t *b = &vq->enc[L][l];
            for (int i = 0; i < b->down_t; i++) {
                conv_t *c = &b->step[i];
                reach += (int64_t)(c->k > c->p ? c->k - 1 : c->p) * J;
                J *= c->s;
                for (int j = 0; j < b->depth; j++) reach += (int64_t)b->res[i][j].conv3.d * J;
            }
            if (b->down_t) reach += J;
        }
        reach += J;
        vq->margin_enc[L] = (reach + top - 1) / top * top;

        J = hp->hop_lengths[L], reach = 0;
        for (int l = L; l >= 0; l--) {
            block_t *b = &vq->dec[L][l];
            if (!b->down_t) continue;
            reach += J;
            for (int i = 0; i < b->down_t; i++) {
                for (int j = 0; j < b->depth; j++) reach += (int64_t)b->res[i][j].conv3.d * J;
                conv_t *c = &b->step[i];
                reach += (int64_t)((c->k + c->s - 1) / c->s) * J;
                J /= c->s;
            }
        }
        reach += J + hp->hop_lengths[L];
        vq->margin_dec[L] = (reach + top - 1) / top * top;
    }
}

// ---- forward passes -----------------------------------------------------------------

// A pass either plans (records the largest buffer each op needs, and the ops themselves
// when rec is set) or runs.
typedef struct {
    jb_vqvae_t *vq;
    int plan;
    size_t need[3], need_ws;
    jb_vqvae_op_t *rec;   // plan only: the convolutions in order (up to max_rec), or NULL
    int n_rec, max_rec;
} pass_t;

static void record(pass_t *ps, int dst_idx, int src_idx, const conv_t *c, int flags) {
    if (ps->rec && ps->n_rec < ps->max_rec)
        ps->rec[ps->n_rec] = (jb_vqvae_op_t){
            .src = src_idx, .dst = dst_idx, .flags = flags, .C = c->C, .OC = c->OC, .k = c->k,
            .s = c->s, .p = c->p, .d = c->d, .transposed = c->transposed, .w = c->w, .b = c->b,
            .wg = c->wg};
    ps->n_rec++;
}

static float *bufp(pass_t *ps, int idx) { return ps->plan ? NULL : ps->vq->buf[idx]; }

static void need(pass_t *ps, int idx, size_t n) {
    if (idx >= 0 && n > ps->need[idx]) ps->need[idx] = n;
}
static void need_ws(pass_t *ps, size_t n) {
    if (n > ps->need_ws) ps->need_ws = n;
}

// dst_idx (or out when dst_idx < 0) = conv(src: (T, C)); src is buffer src_idx (-1: the
// pass's input); returns T_out.
static int64_t op_conv(pass_t *ps, int dst_idx, float *out, int src_idx, const float *src,
                       int64_t T, const conv_t *c, int flags) {
    if (ps->plan) record(ps, dst_idx, src_idx, c, flags);
    if (c->transposed) {
        int64_t To = jb_convt1d_out_len(T, c->k, c->s, c->p);
        need(ps, dst_idx, (size_t)(To * c->OC));
        if (ps->plan) {
            need_ws(ps, jb_convt1d_ws_floats(T, c->C, c->OC, c->k, c->s,
                                             ps->vq->method ? JB_CONV_DIRECT : 0));
            return To;
        }
        float *dst = dst_idx >= 0 ? ps->vq->buf[dst_idx] : out;
        jb_convt1d(dst, src, T, c->C, c->w, c->b, c->OC, c->k, c->s, c->p,
                   flags | (ps->vq->method ? JB_CONV_DIRECT : 0), ps->vq->ws);
        return To;
    }
    int64_t To = jb_conv1d_out_len(T, c->k, c->s, c->p, c->d);
    need(ps, dst_idx, (size_t)(To * c->OC));
    int method = ps->vq->method;
    if (method == JB_VQVAE_WINOGRAD && c->wg) {
        if (ps->plan) {
            need_ws(ps, jb_conv1d_wino_ws_floats(T, c->C, c->OC, c->d));
            return To;
        }
        jb_conv1d_wino(dst_idx >= 0 ? ps->vq->buf[dst_idx] : out, src, T, c->C, c->wg, c->b,
                       c->OC, c->d, flags, ps->vq->ws);
        return To;
    }
    // Winograd mode: the remaining convs (strided, the k=3 in/out convs) by im2col, whose
    // scratch is a block per thread rather than a margined copy of a whole input
    if (method == JB_VQVAE_DIRECT) flags |= JB_CONV_DIRECT;
    if (ps->plan) {
        need_ws(ps, jb_conv1d_ws_floats(T, c->C, c->k, c->s, c->p, c->d, flags));
        return To;
    }
    float *dst = dst_idx >= 0 ? ps->vq->buf[dst_idx] : out;
    jb_conv1d(dst, src, T, c->C, c->w, c->b, c->OC, c->k, c->s, c->p, c->d, flags, ps->vq->ws);
    return To;
}

// Resnet1D on buf[idx]: (T, width), hidden in buf[2].
static void op_resnet(pass_t *ps, int idx, int64_t T, const res_t *rs, int depth) {
    for (int j = 0; j < depth; j++) {
        op_conv(ps, 2, NULL, idx, bufp(ps, idx), T, &rs[j].conv3,
                JB_CONV_RELU_IN | JB_CONV_RELU_OUT);
        op_conv(ps, idx, NULL, 2, bufp(ps, 2), T, &rs[j].conv1, JB_CONV_ACC);
    }
}

// encoders.L on x: (T, 1); leaves (T / hop_L, emb) in buf[*out_idx]; returns its T.
static int64_t run_encoder(pass_t *ps, int L, const float *x, int64_t T, int *out_idx) {
    const float *cur = x;
    int idx = -1;
    for (int l = 0; l <= L; l++) {
        const block_t *b = &ps->vq->enc[L][l];
        for (int i = 0; i < b->down_t; i++) {
            int dst = idx == 0 ? 1 : 0;
            T = op_conv(ps, dst, NULL, idx, cur, T, &b->step[i], 0);
            idx = dst, cur = bufp(ps, idx);
            op_resnet(ps, idx, T, b->res[i], b->depth);
        }
        if (b->down_t) {
            int dst = idx == 0 ? 1 : 0;
            T = op_conv(ps, dst, NULL, idx, cur, T, &b->out, 0);
            idx = dst, cur = bufp(ps, idx);
        }
    }
    *out_idx = idx;
    return T;
}

// codes: (T) = nearest rows of codebook L for e: (T, emb). Blocks of VQ_ROWS rows in
// parallel, each with its own (VQ_ROWS, l_bins) distance slot in the scratch.
static void run_bottleneck(pass_t *ps, int L, const float *e, int64_t T, int32_t *codes) {
    jb_vqvae_t *vq = ps->vq;
    int K = vq->hp.l_bins, C = vq->hp.emb_width;
    size_t slot = (size_t)VQ_ROWS * K + VQ_ROWS;   // dots (VQ_ROWS, K), then xx (VQ_ROWS)
    if (ps->plan) {
        need_ws(ps, VQ_SLOTS * slot);
        return;
    }
    int64_t nb = (T + VQ_ROWS - 1) / VQ_ROWS;
    int nt = omp_get_max_threads();
    if (nt > VQ_SLOTS) nt = VQ_SLOTS;
    if (nt > nb) nt = (int)nb;
    #pragma omp parallel for schedule(static) num_threads(nt < 1 ? 1 : nt)
    for (int64_t blk = 0; blk < nb; blk++) {
        int64_t r0 = blk * VQ_ROWS;
        int n = (int)(T - r0 < VQ_ROWS ? T - r0 : VQ_ROWS);
        float *dots = vq->ws + (size_t)omp_get_thread_num() * slot, *xx = dots + (size_t)VQ_ROWS * K;
        const float *x = e + r0 * C;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, K, C, 1.0f, x, C,
                    vq->codebook[L], C, 0.0f, dots, K);
        for (int i = 0; i < n; i++) jb_vq_sumsq_row(i, xx, x, C);
        for (int i = 0; i < n; i++) jb_vq_argmin_at(i, codes + r0, dots, xx, vq->k_norm[L], K);
    }
}

// decoders.L on codes: (T_L); leaves audio (T_L * hop_L) in buf[2] (free once the last
// resnet is done); returns its length.
static int64_t run_decoder(pass_t *ps, int L, const int32_t *codes, int64_t T) {
    jb_vqvae_t *vq = ps->vq;
    int emb = vq->hp.emb_width;
    need(ps, 0, (size_t)T * emb);
    if (!ps->plan) JB_CPU_LAUNCH(T, jb_vq_lookup_row, vq->buf[0], vq->codebook[L], codes, emb);
    int idx = 0;
    for (int l = L; l >= 0; l--) {
        const block_t *b = &vq->dec[L][l];
        if (!b->down_t) continue;
        int dst = idx == 0 ? 1 : 0;
        T = op_conv(ps, dst, NULL, idx, bufp(ps, idx), T, &b->in, 0);
        idx = dst;
        for (int i = 0; i < b->down_t; i++) {
            op_resnet(ps, idx, T, b->res[i], b->depth);
            dst = idx == 0 ? 1 : 0;
            T = op_conv(ps, dst, NULL, idx, bufp(ps, idx), T, &b->step[i], 0);
            idx = dst;
        }
    }
    return op_conv(ps, 2, NULL, idx, bufp(ps, idx), T, &vq->dec_out[L], 0);
}

// ---- construction -------------------------------------------------------------------

// Plan every pass at the largest window for the current conv method, then allocate the
// activations once.
static int alloc_acts(jb_vqvae_t *vq, jb_err_t *err) {
    const jb_vqvae_hparams_t *hp = &vq->hp;
    pass_t ps = {.vq = vq, .plan = 1};
    for (int L = 0; L < hp->levels; L++) {
        int idx;
        int64_t Tl = run_encoder(&ps, L, NULL, vq->max_window, &idx);
        run_bottleneck(&ps, L, NULL, Tl, NULL);
        run_decoder(&ps, L, NULL, vq->max_window / hp->hop_lengths[L]);
    }
    for (int i = 0; i < 3; i++) {
        jb_free(vq->buf[i]);
        vq->cap[i] = ps.need[i];
        vq->buf[i] = jb_alloc(sizeof(float) * (ps.need[i] ? ps.need[i] : 1));
    }
    jb_free(vq->ws);
    vq->cap_ws = ps.need_ws;
    vq->ws = jb_alloc(sizeof(float) * (ps.need_ws ? ps.need_ws : 1));
    if (!vq->buf[0] || !vq->buf[1] || !vq->buf[2] || !vq->ws)
        return jb_err_set(err, JB_ENOMEM,
                          "vqvae: out of memory for activations of a %lld-sample window",
                          (long long)vq->max_window);
    return 0;
}

static jb_vqvae_t *build(const jb_vqvae_hparams_t *hp, const jb_st_t *st, uint64_t seed,
                         int64_t max_window, jb_err_t *err) {
    jb_vqvae_t *vq = calloc(1, sizeof *vq);
    if (!vq) {
        jb_err_set(err, JB_ENOMEM, "vqvae: out of memory");
        return NULL;
    }
    vq->hp = *hp;
    vq->method = JB_VQVAE_DEFAULT_METHOD;
    int64_t top = hp->hop_lengths[hp->levels - 1];
    if (max_window <= 0) max_window = JB_VQVAE_DEFAULT_WINDOW;
    vq->max_window = max_window / top * top;
    if (vq->max_window < top) {
        jb_err_set(err, JB_EINVAL, "vqvae: max_window %lld is below the top hop length %lld",
                   (long long)max_window, (long long)top);
        goto fail;
    }
    for (int L = 0; L < hp->levels; L++) {
        int depth = hp->depth * hp->multipliers[L];
        if ((int)(hp->m_conv * hp->width * hp->multipliers[L]) < 1 || hp->multipliers[L] < 1 ||
            depth > 4096) {
            jb_err_set(err, JB_EFORMAT, "vqvae: level %d: unsupported width/depth", L);
            goto fail;
        }
        // the largest dilation, growth^(depth-1) (or ^(cycle-1)), must stay a sane int
        int e = hp->dilation_cycle > 0 && hp->dilation_cycle < depth ? hp->dilation_cycle : depth;
        int64_t dil = 1;
        for (int q = 0; q < e - 1 && dil <= (1 << 24); q++) dil *= hp->dilation_growth_rate;
        if (hp->dilation_growth_rate < 1 || dil > (1 << 24)) {
            jb_err_set(err, JB_EFORMAT, "vqvae: level %d: dilation growth %d over depth %d is "
                       "too large", L, hp->dilation_growth_rate, depth);
            goto fail;
        }
    }

    loader_t ld = {.vq = vq, .st = st, .rng = seed * 2654435761u + 0x9E3779B97F4A7C15ull};
    if (take_all(&ld, err)) goto fail;   // pass 0: sizes only
    vq->n_weights = ld.used;
    vq->weights = jb_alloc(sizeof(float) * ld.used);
    vq->res_pool = calloc(ld.n_res ? ld.n_res : 1, sizeof(res_t));
    if (!vq->weights || !vq->res_pool) {
        jb_err_set(err, JB_ENOMEM, "vqvae: out of memory for %zu weights", ld.used);
        goto fail;
    }
    ld.pass = 1, ld.used = 0, ld.n_res = 0;
    if (take_all(&ld, err)) goto fail;   // jb_st_get names file and tensor
    compute_margins(vq);

    if (alloc_acts(vq, err)) goto fail;
    return vq;
fail:
    jb_vqvae_destroy(&vq);
    return NULL;
}

jb_vqvae_t *jb_vqvae_new(const jb_st_t *st, int64_t max_window, jb_err_t *err) {
    json_t *js = jb_hparams_from_st(st, err);
    if (!js) return NULL;
    jb_vqvae_hparams_t hp;
    int rc = jb_vqvae_hparams_parse(js, &hp, err);
    json_decref(js);
    if (rc) {
        jb_err_prefix(err, "%s", jb_st_path(st));
        return NULL;
    }
    return build(&hp, st, 0, max_window, err);
}

jb_vqvae_t *jb_vqvae_new_random(const jb_vqvae_hparams_t *hp, uint64_t seed, int64_t max_window,
                                jb_err_t *err) {
    return build(hp, NULL, seed, max_window, err);
}

void jb_vqvae_destroy(jb_vqvae_t **vq_p) {
    if (!vq_p || !*vq_p) return;
    jb_vqvae_t *vq = *vq_p;
    jb_free(vq->weights);
    free(vq->res_pool);
    for (int i = 0; i < 3; i++) jb_free(vq->buf[i]);
    jb_free(vq->ws);
    free(vq);
    *vq_p = NULL;
}

const jb_vqvae_hparams_t *jb_vqvae_hparams(const jb_vqvae_t *vq) { return &vq->hp; }
int64_t jb_vqvae_max_window(const jb_vqvae_t *vq) { return vq->max_window; }
int64_t jb_vqvae_margin(const jb_vqvae_t *vq, int level, int decode) {
    if (level < 0 || level >= vq->hp.levels) return -1;
    return decode ? vq->margin_dec[level] : vq->margin_enc[level];
}
size_t jb_vqvae_weight_bytes(const jb_vqvae_t *vq) { return vq->n_weights * sizeof(float); }
size_t jb_vqvae_act_bytes(const jb_vqvae_t *vq) {
    return (vq->cap[0] + vq->cap[1] + vq->cap[2] + vq->cap_ws) * sizeof(float);
}
int jb_vqvae_set_method(jb_vqvae_t *vq, int method, jb_err_t *err) {
    if (method < JB_VQVAE_IM2COL || method > JB_VQVAE_WINOGRAD)
        return jb_err_set(err, JB_EINVAL, "vqvae: unknown conv method %d", method);
    if (vq->method == method) return 0;
    vq->method = method;
    return alloc_acts(vq, err);   // the scratch differs between the methods
}

// ---- the view for other backends -------------------------------------------------------

int jb_vqvae_ops(const jb_vqvae_t *vq, int level, int decode, jb_vqvae_op_t *ops, int max,
                 int *out_buf, jb_err_t *err) {
    if (level < 0 || level >= vq->hp.levels)
        return jb_err_set(err, JB_EINVAL, "vqvae: level %d of %d", level, vq->hp.levels);
    // a planning pass at the largest window records the ops (and changes nothing in vq)
    pass_t ps = {.vq = (jb_vqvae_t *)vq, .plan = 1, .rec = ops, .max_rec = ops ? max : 0};
    int idx = 2;
    if (decode) run_decoder(&ps, level, NULL, vq->max_window / vq->hp.hop_lengths[level]);
    else run_encoder(&ps, level, NULL, vq->max_window, &idx);
    if (out_buf) *out_buf = idx;
    return ps.n_rec;
}

const float *jb_vqvae_weights(const jb_vqvae_t *vq, size_t *n) {
    *n = vq->n_weights;
    return vq->weights;
}

void jb_vqvae_codebook(const jb_vqvae_t *vq, int level, const float **codebook,
                       const float **k_norm) {
    *codebook = vq->codebook[level], *k_norm = vq->k_norm[level];
}

int jb_vqvae_method(const jb_vqvae_t *vq) { return vq->method; }

void jb_vqvae_set_backend(jb_vqvae_t *vq, const jb_vqvae_backend_t *be, void *impl) {
    vq->backend = be, vq->backend_impl = be ? impl : NULL;
}

// ---- chunked drivers -----------------------------------------------------------------

// Chunk length (raw samples) for a signal of T samples with `margin` context per side.
static int64_t pick_chunk(const jb_vqvae_t *vq, int64_t T, int64_t hop, int64_t margin,
                          int64_t chunk, const char *what, int level, jb_err_t *err) {
    int64_t top = vq->hp.hop_lengths[vq->hp.levels - 1];
    if (chunk == 0) {
        if (T <= vq->max_window) return T > 0 ? T : 1;
        chunk = (vq->max_window - 2 * margin) / top * top;
        if (chunk <= 0)
            return jb_err_set(err, JB_EINVAL,
                              "vqvae %s level %d: max_window %lld leaves no room beside the "
                              "%lld-sample margins",
                              what, level, (long long)vq->max_window, (long long)margin);
        return chunk;
    }
    if (chunk < 0 || chunk % hop)
        return jb_err_set(err, JB_EINVAL,
                          "vqvae %s level %d: chunk %lld is not a positive multiple of the hop "
                          "length %lld",
                          what, level, (long long)chunk, (long long)hop);
    int64_t widest = (chunk < T ? chunk : T) + 2 * margin;
    if (widest > T) widest = T;
    if (widest > vq->max_window)
        return jb_err_set(err, JB_EINVAL,
                          "vqvae %s level %d: chunk %lld plus margins (%lld) exceeds max_window %lld",
                          what, level, (long long)chunk, (long long)(2 * margin),
                          (long long)vq->max_window);
    return chunk;
}

// jb_conv calls sgemm from inside OpenMP loops: OpenBLAS runs single-threaded meanwhile.
static int blas_single(void) {
    int n = openblas_get_num_threads();
    openblas_set_num_threads(1);
    return n;
}

static int encode(jb_vqvae_t *vq, const float *audio, int N, int64_t T, int level,
                  int32_t *codes, float *latents, int64_t chunk, jb_err_t *err);
static int decode(jb_vqvae_t *vq, const int32_t *codes, int N, int64_t T_L, int level,
                  float *audio, int64_t chunk, jb_err_t *err);

int jb_vqvae_encode(jb_vqvae_t *vq, const float *audio, int N, int64_t T, int level,
                    int32_t *codes, int64_t chunk, jb_err_t *err) {
    int nb = blas_single();
    int rc = encode(vq, audio, N, T, level, codes, NULL, chunk, err);
    openblas_set_num_threads(nb);
    return rc;
}

int jb_vqvae_encode_latents(jb_vqvae_t *vq, const float *audio, int N, int64_t T, int level,
                            float *latents, int64_t chunk, jb_err_t *err) {
    int nb = blas_single();
    int rc = encode(vq, audio, N, T, level, NULL, latents, chunk, err);
    openblas_set_num_threads(nb);
    return rc;
}

int jb_vqvae_decode(jb_vqvae_t *vq, const int32_t *codes, int N, int64_t T_L, int level,
                    float *audio, int64_t chunk, jb_err_t *err) {
    int nb = blas_single();
    int rc = decode(vq, codes, N, T_L, level, audio, chunk, err);
    openblas_set_num_threads(nb);
    return rc;
}

// codes: (N, T_L), or latents: (N, T_L, emb) when codes is NULL.
static int encode(jb_vqvae_t *vq, const float *audio, int N, int64_t T, int level,
                  int32_t *codes, float *latents, int64_t chunk, jb_err_t *err) {
    const jb_vqvae_hparams_t *hp = &vq->hp;
    if (level < 0 || level >= hp->levels)
        return jb_err_set(err, JB_EINVAL, "vqvae encode: level %d of %d", level, hp->levels);
    int64_t hop = hp->hop_lengths[level];
    if (N < 0 || T <= 0 || T % hop)
        return jb_err_set(err, JB_EINVAL,
                          "vqvae encode level %d: %lld samples is not a positive multiple of the "
                          "hop length %lld",
                          level, (long long)T, (long long)hop);
    int64_t margin = vq->margin_enc[level];
    chunk = pick_chunk(vq, T, hop, margin, chunk, "encode", level, err);
    if (chunk < 0) return -1;
    pass_t ps = {.vq = vq};
    for (int n = 0; n < N; n++)
        for (int64_t c0 = 0; c0 < T; c0 += chunk) {
            int64_t c1 = c0 + chunk < T ? c0 + chunk : T;
            int64_t w0 = c0 - margin > 0 ? c0 - margin : 0;
            int64_t w1 = c1 + margin < T ? c1 + margin : T;
            int64_t skip = (c0 - w0) / hop;
            int64_t first = (int64_t)n * (T / hop) + c0 / hop;
            if (vq->backend) {
                if (vq->backend->encode(vq->backend_impl, level, audio + (int64_t)n * T + w0,
                                        w1 - w0, skip, (c1 - c0) / hop,
                                        codes ? codes + first : NULL,
                                        codes ? NULL : latents + first * hp->emb_width, err))
                    return -1;
                continue;
            }
            int idx;
            int64_t Tl = run_encoder(&ps, level, audio + (int64_t)n * T + w0, w1 - w0, &idx);
            if (Tl != (w1 - w0) / hop)
                return jb_err_set(err, JB_EINTERNAL, "vqvae encode: %lld rows for a %lld window",
                                  (long long)Tl, (long long)(w1 - w0));
            const float *rows = vq->buf[idx] + skip * hp->emb_width;
            if (codes)
                run_bottleneck(&ps, level, rows, (c1 - c0) / hop, codes + first);
            else
                memcpy(latents + first * hp->emb_width, rows,
                       sizeof(float) * (size_t)((c1 - c0) / hop * hp->emb_width));
        }
    return 0;
}

static int decode(jb_vqvae_t *vq, const int32_t *codes, int N, int64_t T_L, int level,
                  float *audio, int64_t chunk, jb_err_t *err) {
    const jb_vqvae_hparams_t *hp = &vq->hp;
    if (level < 0 || level >= hp->levels)
        return jb_err_set(err, JB_EINVAL, "vqvae decode: level %d of %d", level, hp->levels);
    if (N < 0 || T_L <= 0)
        return jb_err_set(err, JB_EINVAL, "vqvae decode level %d: %lld codes", level,
                          (long long)T_L);
    for (int n = 0; n < N; n++)
        for (int64_t t = 0; t < T_L; t++) {
            int32_t z = codes[(int64_t)n * T_L + t];
            if (z < 0 || z >= hp->l_bins)
                return jb_err_set(err, JB_EFORMAT,
                                  "vqvae decode level %d: item %d position %lld: code %d outside "
                                  "[0, %d)",
                                  level, n, (long long)t, z, hp->l_bins);
        }
    int64_t hop = hp->hop_lengths[level], T = T_L * hop;
    int64_t margin = vq->margin_dec[level];
    chunk = pick_chunk(vq, T, hop, margin, chunk, "decode", level, err);
    if (chunk < 0) return -1;
    pass_t ps = {.vq = vq};
    for (int n = 0; n < N; n++)
        for (int64_t c0 = 0; c0 < T; c0 += chunk) {
            int64_t c1 = c0 + chunk < T ? c0 + chunk : T;
            int64_t w0 = c0 - margin > 0 ? c0 - margin : 0;
            int64_t w1 = c1 + margin < T ? c1 + margin : T;
            if (vq->backend) {
                const int32_t *wc = codes + (int64_t)n * T_L + w0 / hop;
                if (vq->backend->decode(vq->backend_impl, level, wc, (w1 - w0) / hop, c0 - w0,
                                        c1 - c0, audio + (int64_t)n * T + c0, err))
                    return -1;
                continue;
            }
            const float *wout = vq->buf[2];
            int64_t To = run_decoder(&ps, level, codes + (int64_t)n * T_L + w0 / hop,
                                     (w1 - w0) / hop);
            if (To != w1 - w0)
                return jb_err_set(err, JB_EINTERNAL, "vqvae decode: %lld samples for a %lld window",
                                  (long long)To, (long long)(w1 - w0));
            memcpy(audio + (int64_t)n * T + c0, wout + (c0 - w0), sizeof(float) * (size_t)(c1 - c0));
        }
    return 0;
}
