// jb_expect.c: see jb_expect.h.
#include "jb_expect.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jb_hparams.h"

// Every weight is a float tensor: the reference's load_state_dict copies any float
// dtype into its parameters, and the C stages widen F16/BF16/F64 on the fly.
#define FLOATS ((1u << JB_F32) | (1u << JB_F16) | (1u << JB_BF16) | (1u << JB_F64))
#define F32_ONLY FLOATS
#define CONV1D_W FLOATS

void jb_expect_destroy(jb_expect_t **e_p) {
    if (!e_p || !*e_p) return;
    free((*e_p)->t);
    free(*e_p);
    *e_p = NULL;
}

// Append one tensor; name is printf-style. -1 on out of memory or a name too long.
static int add(jb_expect_t *e, unsigned dtypes, int ndim, const int64_t *shape, const char *fmt,
               ...) __attribute__((format(printf, 5, 6)));
static int add(jb_expect_t *e, unsigned dtypes, int ndim, const int64_t *shape, const char *fmt,
               ...) {
    if (e->n == e->cap) {
        int nc = e->cap ? e->cap * 2 : 256;
        jb_expect_tensor_t *nt = realloc(e->t, (size_t)nc * sizeof *nt);
        if (!nt) return -1;
        e->t = nt, e->cap = nc;
    }
    jb_expect_tensor_t *t = &e->t[e->n];
    memset(t, 0, sizeof *t);
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    if (len < 0 || len >= (int)sizeof t->name) return -1;
    t->ndim = ndim;
    int64_t n = 1;
    for (int d = 0; d < ndim; d++) t->shape[d] = shape[d], n *= shape[d];
    t->dtypes = dtypes;
    e->n_params += n;
    e->n++;
    return 0;
}

#define S1(a) ((const int64_t[]){(a)})
#define S2(a, b) ((const int64_t[]){(a), (b)})
#define S3(a, b, c) ((const int64_t[]){(a), (b), (c)})

// nn.Conv1d / nn.ConvTranspose1d: weight [out, in, k] (transposed: [in, out, k]), bias [out].
static int conv(jb_expect_t *e, const char *pre, int64_t w0, int64_t w1, int64_t k, int64_t out) {
    return add(e, F32_ONLY, 3, S3(w0, w1, k), "%s.weight", pre) ||
           add(e, F32_ONLY, 1, S1(out), "%s.bias", pre);
}

// Resnet1D(n_in, depth, m_conv): blocks in .model (or .blocks with checkpoint_res).
static int resnet1d(jb_expect_t *e, const char *pre, int n_in, int depth, double m_conv,
                    int as_blocks) {
    int st = (int)(m_conv * n_in);
    char p[128];
    for (int d = 0; d < depth; d++) {
        snprintf(p, sizeof p, "%s.%s.%d.model.1", pre, as_blocks ? "blocks" : "model", d);
        if (conv(e, p, st, n_in, 3, st)) return -1;
        snprintf(p, sizeof p, "%s.%s.%d.model.3", pre, as_blocks ? "blocks" : "model", d);
        if (conv(e, p, n_in, st, 1, n_in)) return -1;
    }
    return 0;
}

// DecoderConvBock(in_emb, out_emb, down_t, stride_t, width, depth, m_conv).
static int decoder_block(jb_expect_t *e, const char *pre, int in_emb, int out_emb, int down_t,
                         int stride_t, int width, int depth, double m_conv, int as_blocks) {
    char p[128];
    if (down_t <= 0) return 0;
    snprintf(p, sizeof p, "%s.model.0", pre);
    if (conv(e, p, width, out_emb, 3, width)) return -1;
    for (int i = 0; i < down_t; i++) {
        snprintf(p, sizeof p, "%s.model.%d.0", pre, 1 + i);
        if (resnet1d(e, p, width, depth, m_conv, as_blocks)) return -1;
        int out = i == down_t - 1 ? in_emb : width;
        snprintf(p, sizeof p, "%s.model.%d.1", pre, 1 + i);
        if (conv(e, p, width, out, 2 * stride_t, out)) return -1;
    }
    return 0;
}

static int build_vqvae(jb_expect_t *e, const jb_vqvae_hparams_t *v) {
    char p[128];
    const int x_ch = 1;
    for (int l = 0; l < v->levels; l++) {   // encoders.l: levels 0..l
        int width = v->width * v->multipliers[l], depth = v->depth * v->multipliers[l];
        for (int j = 0; j <= l; j++) {
            int in = j == 0 ? x_ch : v->emb_width, down = v->downs_t[j], s = v->strides_t[j];
            if (down <= 0) continue;
            for (int i = 0; i < down; i++) {
                snprintf(p, sizeof p, "encoders.%d.level_blocks.%d.model.%d.0", l, j, i);
                if (conv(e, p, width, i == 0 ? in : width, 2 * s, width)) return -1;
                snprintf(p, sizeof p, "encoders.%d.level_blocks.%d.model.%d.1", l, j, i);
                if (resnet1d(e, p, width, depth, v->m_conv, 0)) return -1;
            }
            snprintf(p, sizeof p, "encoders.%d.level_blocks.%d.model.%d", l, j, down);
            if (conv(e, p, v->emb_width, width, 3, v->emb_width)) return -1;
        }
    }
    for (int l = 0; l < v->levels; l++) {   // decoders.l
        int width = v->width * v->multipliers[l], depth = v->depth * v->multipliers[l];
        for (int j = 0; j <= l; j++) {
            snprintf(p, sizeof p, "decoders.%d.level_blocks.%d", l, j);
            if (decoder_block(e, p, v->emb_width, v->emb_width, v->downs_t[j], v->strides_t[j],
                              width, depth, v->m_conv, 0))
                return -1;
        }
        snprintf(p, sizeof p, "decoders.%d.out", l);
        if (conv(e, p, x_ch, v->emb_width, 3, x_ch)) return -1;
    }
    for (int l = 0; l < v->levels; l++)
        if (add(e, F32_ONLY, 2, S2(v->l_bins, v->emb_width), "bottleneck.level_blocks.%d.k", l))
            return -1;
    return 0;
}

// transformer.py: the attention kind of layer d for an attn_order; 6 reads the lyrics
// encoder (has c_enc_kv). -1 for an unknown order.
static int attn_func(int order, int d) {
    static const int o10[79] = {1, 2, 3, 1, 2, 3, 1, 2, 3,
                                1, 2, 3, 1, 2, 3, 1, 2, 3, 6, 1, 2, 3, 1, 2, 3, 1, 2, 3, 6,
                                1, 2, 3, 1, 2, 3, 1, 2, 3, 6, 1, 2, 3, 1, 2, 3, 1, 2, 3, 6,
                                1, 2, 3, 1, 2, 3, 1, 2, 3, 6, 1, 2, 3, 1, 2, 3, 1, 2, 3, 6,
                                1, 2, 3, 1, 2, 3, 1, 2, 3, 6};
    switch (order) {
    case 0: return 0;
    case 1: return (int[]){1, 2}[d % 2];
    case 2: return (int[]){1, 2, 3}[d % 3];
    case 3: return (int[]){1, 4}[d % 2];
    case 4: return (int[]){1, 5}[d % 2];
    case 5: return (int[]){1, 4, 1, 1}[d % 4];
    case 6: return (int[]){1, 2, 3, 6}[d % 4];
    case 7: return d % 16 == 15 ? 6 : (int[]){1, 2, 3}[(d % 16) % 3];
    case 8: return (int[]){1, 2, 3, 1, 2, 3, 1, 2, 3, 6}[d % 10];
    case 9: return (int[]){1, 2, 3, 0}[d % 4];
    case 10: return o10[d % 79];
    case 11: return d % 16 == 15 ? (int[]){6, 6, 0}[d % 3] : (int[]){1, 2, 3}[d % 3];
    case 12: return d % 16 == 15 ? (int[]){7, 7, 0}[d % 3] : (int[]){1, 2, 3}[d % 3];
    default: return -1;
    }
}

// Conv1D(n_in, n_out): w [n_in, n_out], b [n_out].
static int conv1d(jb_expect_t *e, const char *pre, int64_t n_in, int64_t n_out) {
    return add(e, CONV1D_W, 2, S2(n_in, n_out), "%s.w", pre) ||
           add(e, F32_ONLY, 1, S1(n_out), "%s.b", pre);
}

static int layer_norm(jb_expect_t *e, const char *pre, int64_t n) {
    return add(e, F32_ONLY, 1, S1(n), "%s.weight", pre) ||
           add(e, F32_ONLY, 1, S1(n), "%s.bias", pre);
}

// ConditionalAutoregressive2D.
static int autoregressive(jb_expect_t *e, const char *pre, int bins, int n_ctx, int width,
                          int depth, int attn_order, double m_attn, double m_mlp, int y_cond,
                          int only_encode) {
    char p[160];
    if (!y_cond && add(e, F32_ONLY, 2, S2(1, width), "%s.start_token", pre)) return -1;
    if (add(e, F32_ONLY, 2, S2(bins, width), "%s.x_emb.weight", pre) ||
        add(e, F32_ONLY, 2, S2(n_ctx, width), "%s.pos_emb.pos_emb", pre))
        return -1;
    int st = (int)(m_attn * width), mlp = (int)(m_mlp * width);
    for (int d = 0; d < depth; d++) {
        int f = attn_func(attn_order, d);
        snprintf(p, sizeof p, "%s.transformer._attn_mods.%d.attn.c_attn", pre, d);
        if (conv1d(e, p, width, f == 6 ? st : 3 * st)) return -1;
        if (f == 6) {
            snprintf(p, sizeof p, "%s.transformer._attn_mods.%d.attn.c_enc_kv", pre, d);
            if (conv1d(e, p, width, 2 * st)) return -1;
        }
        snprintf(p, sizeof p, "%s.transformer._attn_mods.%d.attn.c_proj", pre, d);
        if (conv1d(e, p, st, width)) return -1;
        snprintf(p, sizeof p, "%s.transformer._attn_mods.%d.ln_0", pre, d);
        if (layer_norm(e, p, width)) return -1;
        snprintf(p, sizeof p, "%s.transformer._attn_mods.%d.mlp.c_fc", pre, d);
        if (conv1d(e, p, width, mlp)) return -1;
        snprintf(p, sizeof p, "%s.transformer._attn_mods.%d.mlp.c_proj", pre, d);
        if (conv1d(e, p, mlp, width)) return -1;
        snprintf(p, sizeof p, "%s.transformer._attn_mods.%d.ln_1", pre, d);
        if (layer_norm(e, p, width)) return -1;
    }
    if (!only_encode && add(e, F32_ONLY, 2, S2(bins, width), "%s.x_out.weight", pre)) return -1;
    return 0;
}

static int build_prior(jb_expect_t *e, const jb_prior_hparams_t *h, int cond_c_res) {
    const jb_vqvae_hparams_t *v = &h->vqvae;
    int w = h->width;
    int x_cond = h->level != v->levels - 1, y_cond = h->labels;
    if (x_cond) {   // Conditioner on the level above
        int up = h->level + 1;
        if (add(e, F32_ONLY, 2, S2(v->l_bins, w), "conditioner_blocks.0.x_emb.weight") ||
            decoder_block(e, "conditioner_blocks.0.cond", w, w, v->downs_t[up], v->strides_t[up],
                          h->cond_width, h->cond_depth, h->cond_m_conv, cond_c_res == 1) ||
            layer_norm(e, "conditioner_blocks.0.ln", w))
            return -1;
    }
    if (y_cond) {   // LabelConditioner
        if (add(e, F32_ONLY, 2, S2(h->y_bins[0], w), "y_emb.bow_genre_emb.emb.weight") ||
            add(e, F32_ONLY, 2, S2(h->y_bins[1], w), "y_emb.artist_emb.emb.weight"))
            return -1;
        if (!x_cond &&
            (add(e, F32_ONLY, 2, S2(h->t_bins, w), "y_emb.total_length_emb.emb.weight") ||
             add(e, F32_ONLY, 2, S2(h->t_bins, w), "y_emb.absolute_pos_emb.emb.weight") ||
             add(e, F32_ONLY, 2, S2(h->t_bins, w), "y_emb.relative_pos_emb.emb.weight")))
            return -1;
    }
    if (h->single_enc_dec)   // lyrics and codes in one sequence
        return autoregressive(e, "prior", v->l_bins + h->n_vocab, h->n_ctx + h->n_tokens, w,
                              h->depth, h->attn_order, h->m_attn, h->m_mlp, 1, 0);
    if (h->use_tokens && h->n_tokens) {   // separate lyrics encoder
        if (autoregressive(e, "prime_prior", h->n_vocab, h->n_tokens, h->prime_width,
                           h->prime_depth, h->prime_attn_order, h->prime_m_attn, h->prime_m_mlp,
                           0, 1) ||
            conv1d(e, "prime_state_proj", h->prime_width, w) ||
            layer_norm(e, "prime_state_ln", w) ||
            add(e, F32_ONLY, 2, S2(h->n_vocab, w), "prime_x_out.weight"))
            return -1;
    }
    return autoregressive(e, "prior", v->l_bins, h->n_ctx, w, h->depth, h->attn_order, h->m_attn,
                          h->m_mlp, y_cond, 0);
}

static int check_sizes(const jb_expect_t *e, jb_err_t *err) {
    for (int i = 0; i < e->n; i++)
        for (int d = 0; d < e->t[i].ndim; d++)
            if (e->t[i].shape[d] <= 0 || e->t[i].shape[d] > (1 << 24))
                return jb_err_set(err, JB_EFORMAT,
                                  "hparams give tensor '%s' a dimension of %lld", e->t[i].name,
                                  (long long)e->t[i].shape[d]);
    return 0;
}

jb_expect_t *jb_expect_vqvae(const json_t *hp, jb_err_t *err) {
    jb_vqvae_hparams_t v;
    if (jb_vqvae_hparams_parse(hp, &v, err)) return NULL;
    jb_expect_t *e = calloc(1, sizeof *e);
    if (!e || build_vqvae(e, &v)) {
        jb_expect_destroy(&e);
        jb_err_set(err, JB_ENOMEM, "expected tensors: out of memory");
        return NULL;
    }
    if (check_sizes(e, err)) jb_expect_destroy(&e);
    return e;
}

jb_expect_t *jb_expect_prior(const json_t *hp, jb_err_t *err) {
    jb_prior_hparams_t h;
    int cond_c_res = 0;
    if (jb_prior_hparams_parse(hp, &h, err) ||
        jb_hp_int_or(hp, "cond_c_res", 0, &cond_c_res, err))
        return NULL;
    if (attn_func(h.attn_order, 0) < 0 ||
        (h.use_tokens && !h.single_enc_dec && attn_func(h.prime_attn_order, 0) < 0)) {
        jb_err_set(err, JB_EFORMAT, "hparams: attn_order %d / prime_attn_order %d unknown",
                   h.attn_order, h.prime_attn_order);
        return NULL;
    }
    jb_expect_t *e = calloc(1, sizeof *e);
    if (!e || build_prior(e, &h, cond_c_res)) {
        jb_expect_destroy(&e);
        jb_err_set(err, JB_ENOMEM, "expected tensors: out of memory");
        return NULL;
    }
    if (check_sizes(e, err)) jb_expect_destroy(&e);
    return e;
}

int jb_expect_find(const jb_expect_t *e, const char *name) {
    for (int i = 0; i < e->n; i++)
        if (!strcmp(e->t[i].name, name)) return i;
    return -1;
}

int jb_expect_check(const jb_expect_t *e, int i, jb_dtype_t dt, int ndim, const int64_t *shape,
                    jb_err_t *err) {
    const jb_expect_tensor_t *t = &e->t[i];
    int same = ndim == t->ndim;
    for (int d = 0; same && d < ndim; d++) same = shape[d] == t->shape[d];
    if (!same) {
        char a[96], b[96];
        return jb_err_set(err, JB_EFORMAT, "tensor '%s': shape %s, expected %s", t->name,
                          jb_shape_str(shape, ndim, a, sizeof a),
                          jb_shape_str(t->shape, t->ndim, b, sizeof b));
    }
    if (!((t->dtypes >> dt) & 1u)) {
        char want[64] = "";
        for (int k = 0; k < JB_DTYPE_COUNT; k++)
            if ((t->dtypes >> k) & 1u) {
                if (want[0]) strncat(want, " or ", sizeof want - strlen(want) - 1);
                strncat(want, jb_dtype_name((jb_dtype_t)k), sizeof want - strlen(want) - 1);
            }
        return jb_err_set(err, JB_EFORMAT, "tensor '%s': dtype %s, expected %s", t->name,
                          jb_dtype_name(dt), want);
    }
    return 0;
}
