// jb_prior.c: see jb_prior.h.
#include "jb_prior.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jb_matmul.h"
#include "jb_nn.h"

#define MAX_COND_STAGES 8

// One Resnet1D residual block of the Conditioner: x + s·conv1x1(relu(conv3_dil(relu(x)))).
typedef struct {
    float *w1;      // (3, cw, cm) taps of model.1, transposed for x·W
    const float *b1;  // (cm)
    float *w3;      // (1, cm, cw) model.3
    const float *b3;  // (cw)
    int dilation;
} cres_t;

typedef struct {
    cres_t *res;    // (cond_depth)
    float *wt;      // (2s, cw, co) ConvTranspose1d taps
    const float *bt;  // (co)
    int co;
} cstage_t;

struct jb_prior {
    jb_st_t *st;
    jb_prior_hparams_t hp;
    jb_prior_info_t info;
    // labels
    const float *artist_emb;   // (y_bins[1], W)
    const float *genre_emb;    // (y_bins[0], W)
    const float *time_emb[3];  // (t_bins, W) total length, absolute, relative
    double t_lo[3], t_hi[3];
    const float *start_token;  // (1, W) without labels
    // prior
    jb_transformer_t *tf;
    const float *x_emb;        // (seq_bins, W)
    const float *pos_emb;      // (seq_len, W)
    const float *x_out;        // (seq_bins, W) (x_emb when tied)
    // lyrics encoder
    jb_transformer_t *ptf;
    const float *p_start, *p_x_emb, *p_pos_emb;   // (1, pw), (n_vocab, pw), (n_tokens, pw)
    const void *p_proj_w;      // (pw, W)
    jb_dtype_t p_proj_dt;
    const float *p_proj_b, *p_ln_g, *p_ln_b;      // (W)
    // conditioner
    const float *c_x_emb;      // (bins, W)
    float *c_w0;               // (3, W, cw) cond.model.0
    const float *c_b0;         // (cw)
    cstage_t c_stage[MAX_COND_STAGES];
    int c_stages, c_stride, c_width, c_mid;
    float c_res_scale;
    const float *c_ln_g, *c_ln_b;  // (W)
    float **owned;
    int n_owned, cap_owned;
};

struct jb_prior_sampler {
    const jb_prior_t *p;
    int max_batch, max_chunk;
    jb_tcache_t *cache;
    float *cond_y;    // (B, W)
    float *cond_x;    // (B, n_ctx, W)
    float *enc;       // (B, n_tokens, W) lyrics encoder output
    float *x;         // (B, max_chunk, W)
    float *logits;    // (B, seq_bins)
    int32_t *seq;     // (B, seq_len) joint ids
    int32_t *pick;    // (B)
    int32_t *tok;     // (B, n_tokens) lyric tokens for the encoder
    jb_prior_sample_backend_fn backend;   // another backend (the GPU) or NULL
    void *backend_impl;
};

// ---- loading --------------------------------------------------------------------

static int own(jb_prior_t *p, float *ptr, jb_err_t *err) {
    if (p->n_owned == p->cap_owned) {
        int nc = p->cap_owned ? 2 * p->cap_owned : 64;
        float **o = realloc(p->owned, sizeof(float *) * (size_t)nc);
        if (!o) {
            jb_free(ptr);
            return jb_err_set(err, JB_ENOMEM, "out of memory");
        }
        p->owned = o, p->cap_owned = nc;
    }
    p->owned[p->n_owned++] = ptr;
    return 0;
}

// A float tensor of this shape: the file's memory when F32 and aligned, else a widened copy.
static const float *get_f32(jb_prior_t *p, const char *name, int ndim, const int64_t *shape,
                            jb_err_t *err) {
    const jb_st_entry_t *e = jb_st_get(p->st, name, ndim, shape, err);
    if (!e) return NULL;
    if (e->dtype == JB_F32 && ((uintptr_t)e->data % 4) == 0) return (const float *)e->data;
    float *w = jb_st_get_f32(p->st, name, ndim, shape, err);
    if (!w || own(p, w, err)) return NULL;
    return w;
}

static const float *get_mat(jb_prior_t *p, const char *name, int64_t a, int64_t b, jb_err_t *err) {
    int64_t s[2] = {a, b};
    return get_f32(p, name, 2, s, err);
}

static const float *get_vec(jb_prior_t *p, const char *name, int64_t a, jb_err_t *err) {
    return get_f32(p, name, 1, &a, err);
}

// Conv weight w: (Co, Ci, k) [Conv1d] or (Ci, Co, k) [ConvTranspose1d] reordered to taps of
// (Ci, Co) matrices: out (k, Ci, Co).
static float *get_conv(jb_prior_t *p, const char *name, int64_t d0, int64_t d1, int64_t k,
                       int transposed, jb_err_t *err) {
    int64_t s[3] = {d0, d1, k};
    float *w = jb_st_get_f32(p->st, name, 3, s, err);
    if (!w) return NULL;
    float *t = jb_alloc(sizeof(float) * (size_t)(d0 * d1 * k));
    if (!t) {
        jb_free(w);
        jb_err_set(err, JB_ENOMEM, "out of memory");
        return NULL;
    }
    int64_t Ci = transposed ? d0 : d1, Co = transposed ? d1 : d0;
    for (int64_t co = 0; co < Co; co++)
        for (int64_t ci = 0; ci < Ci; ci++)
            for (int64_t j = 0; j < k; j++) {
                float v = transposed ? w[(ci * Co + co) * k + j] : w[(co * Ci + ci) * k + j];
                t[(j * Ci + ci) * Co + co] = v;
            }
    jb_free(w);
    if (own(p, t, err)) return NULL;
    return t;
}

static int load_conditioner(jb_prior_t *p, jb_err_t *err) {
    const jb_prior_hparams_t *hp = &p->hp;
    int W = hp->width, cw = hp->cond_width, L1 = hp->level + 1;
    int down = hp->vqvae.downs_t[L1], s = hp->vqvae.strides_t[L1];
    int cm = (int)(hp->cond_m_conv * cw);
    if (down <= 0 || down > MAX_COND_STAGES || cw <= 0 || cm <= 0 || hp->cond_depth <= 0)
        return jb_err_set(err, JB_EFORMAT, "%s: conditioner: unsupported sizes (downs %d, width %d, "
                          "depth %d)", jb_st_path(p->st), down, cw, hp->cond_depth);
    char nm[256];
    const char *pre = "conditioner_blocks.0.";
    snprintf(nm, sizeof nm, "%sx_emb.weight", pre);
    if (!(p->c_x_emb = get_mat(p, nm, hp->vqvae.l_bins, W, err))) return -1;
    snprintf(nm, sizeof nm, "%scond.model.0.weight", pre);
    if (!(p->c_w0 = get_conv(p, nm, cw, W, 3, 0, err))) return -1;
    snprintf(nm, sizeof nm, "%scond.model.0.bias", pre);
    if (!(p->c_b0 = get_vec(p, nm, cw, err))) return -1;
    // cond_c_res = 1 stores the residual blocks as "blocks", otherwise "model".
    snprintf(nm, sizeof nm, "%scond.model.1.0.blocks.0.model.1.weight", pre);
    const char *list = jb_st_find(p->st, nm) ? "blocks" : "model";
    p->c_stages = down, p->c_stride = s, p->c_width = cw, p->c_mid = cm;
    p->c_res_scale = hp->cond_res_scale ? (float)(1.0 / sqrt((double)hp->cond_depth)) : 1.0f;
    for (int i = 0; i < down; i++) {
        cstage_t *st = &p->c_stage[i];
        st->res = calloc((size_t)hp->cond_depth, sizeof(cres_t));
        if (!st->res) return jb_err_set(err, JB_ENOMEM, "out of memory");
        for (int j = 0; j < hp->cond_depth; j++) {
            cres_t *r = &st->res[j];
            int e = hp->cond_dilation_cycle > 0 ? j % hp->cond_dilation_cycle : j;
            r->dilation = 1;
            for (int q = 0; q < e; q++) r->dilation *= hp->cond_dilation_growth_rate;
            snprintf(nm, sizeof nm, "%scond.model.%d.0.%s.%d.model.1.weight", pre, 1 + i, list, j);
            if (!(r->w1 = get_conv(p, nm, cm, cw, 3, 0, err))) return -1;
            snprintf(nm, sizeof nm, "%scond.model.%d.0.%s.%d.model.1.bias", pre, 1 + i, list, j);
            if (!(r->b1 = get_vec(p, nm, cm, err))) return -1;
            snprintf(nm, sizeof nm, "%scond.model.%d.0.%s.%d.model.3.weight", pre, 1 + i, list, j);
            if (!(r->w3 = get_conv(p, nm, cw, cm, 1, 0, err))) return -1;
            snprintf(nm, sizeof nm, "%scond.model.%d.0.%s.%d.model.3.bias", pre, 1 + i, list, j);
            if (!(r->b3 = get_vec(p, nm, cw, err))) return -1;
        }
        st->co = i == down - 1 ? W : cw;
        snprintf(nm, sizeof nm, "%scond.model.%d.1.weight", pre, 1 + i);
        if (!(st->wt = get_conv(p, nm, cw, st->co, 2 * s, 1, err))) return -1;
        snprintf(nm, sizeof nm, "%scond.model.%d.1.bias", pre, 1 + i);
        if (!(st->bt = get_vec(p, nm, st->co, err))) return -1;
    }
    snprintf(nm, sizeof nm, "%sln.weight", pre);
    if (!(p->c_ln_g = get_vec(p, nm, W, err))) return -1;
    snprintf(nm, sizeof nm, "%sln.bias", pre);
    if (!(p->c_ln_b = get_vec(p, nm, W, err))) return -1;
    return 0;
}

jb_prior_t *jb_prior_new(const char *path, jb_err_t *err) {
    return jb_prior_new_opts(path, NULL, err);
}

// What the hyper-parameters make of this prior (jb_prior_info_t).
static void fill_info(jb_prior_t *p) {
    const jb_prior_hparams_t *hp = &p->hp;
    jb_prior_info_t *in = &p->info;
    const jb_vqvae_hparams_t *vq = &hp->vqvae;
    in->level = hp->level, in->width = hp->width, in->bins = vq->l_bins, in->n_ctx = hp->n_ctx;
    in->labels = hp->labels;
    in->x_cond = hp->level != vq->levels - 1;
    in->include_time_signal = hp->labels && !in->x_cond;
    in->merged_decoder = hp->merged_decoder;
    in->n_tokens = hp->n_tokens;
    in->n_vocab = hp->n_vocab;
    in->lyrics = hp->single_enc_dec ? JB_PRIOR_LYRICS_JOINT
                 : (hp->use_tokens && hp->n_tokens > 0) ? JB_PRIOR_LYRICS_ENCODER
                                                        : JB_PRIOR_NO_LYRICS;
    in->label_len = hp->labels ? 4 + hp->max_bow_genre_size + hp->n_tokens : 0;
    in->seq_len = hp->n_ctx + (in->lyrics == JB_PRIOR_LYRICS_JOINT ? hp->n_tokens : 0);
    in->seq_bins = vq->l_bins + (in->lyrics == JB_PRIOR_LYRICS_JOINT ? hp->n_vocab : 0);
    in->raw_to_tokens = 1;
    for (int l = 0; l <= hp->level; l++) in->raw_to_tokens *= vq->downsamples[l];
    in->cond_downsample = in->x_cond ? vq->downsamples[hp->level + 1] : 0;
    in->sample_length = hp->n_ctx * in->raw_to_tokens;
}

// The label embeddings (artist, genre, and the timing signal of a top prior), or the
// start token of a prior without labels.
static int load_labels(jb_prior_t *p, const char *path, jb_err_t *err) {
    const jb_prior_hparams_t *hp = &p->hp;
    const int W = hp->width;
    if (!hp->labels) return (p->start_token = get_mat(p, "prior.start_token", 1, W, err)) ? 0 : -1;
    if (!(p->artist_emb = get_mat(p, "y_emb.artist_emb.emb.weight", hp->y_bins[1], W, err)) ||
        !(p->genre_emb = get_mat(p, "y_emb.bow_genre_emb.emb.weight", hp->y_bins[0], W, err)))
        return -1;
    if (!p->info.include_time_signal) return 0;
    static const char *names[3] = {"total_length", "absolute_pos", "relative_pos"};
    char nm[256];
    for (int i = 0; i < 3; i++) {
        snprintf(nm, sizeof nm, "y_emb.%s_emb.emb.weight", names[i]);
        if (!(p->time_emb[i] = get_mat(p, nm, hp->t_bins, W, err))) return -1;
    }
    double sr = hp->sr;
    p->t_lo[0] = hp->min_duration * sr, p->t_hi[0] = hp->max_duration * sr;
    p->t_lo[1] = 0.0, p->t_hi[1] = hp->max_duration * sr;
    p->t_lo[2] = 0.0, p->t_hi[2] = 1.0;
    if (!(p->t_hi[0] > p->t_lo[0]) || !(p->t_hi[1] > 0) || hp->t_bins <= 0)
        return jb_err_set(err, JB_EFORMAT, "%s: timing signal needs min_duration < max_duration "
                          "and t_bins > 0", path);
    return 0;
}

// The lyrics encoder (prime prior) of a JB_PRIOR_LYRICS_ENCODER model and its projection.
static int load_lyrics_encoder(jb_prior_t *p, const jb_weights_opts_t *opts, jb_err_t *err) {
    const jb_prior_hparams_t *hp = &p->hp;
    const int W = hp->width, pw = hp->prime_width;
    jb_transformer_hp_t ph = {
        .width = pw, .depth = hp->prime_depth, .heads = hp->prime_heads,
        .n_ctx = hp->n_tokens, .attn_order = hp->prime_attn_order,
        .blocks = hp->prime_blocks, .m_attn = hp->prime_m_attn, .m_mlp = hp->prime_m_mlp,
        .res_scale = hp->prime_res_scale};
    if (!(p->ptf = jb_transformer_new_opts(p->st, "prime_prior.transformer.", &ph, opts, err)))
        return -1;
    int64_t ps[2] = {pw, W};
    const jb_st_entry_t *e = jb_st_get(p->st, "prime_state_proj.w", 2, ps, err);
    if (!e) return -1;
    if (e->dtype == JB_F16 || e->dtype == JB_BF16) {
        p->p_proj_w = e->data, p->p_proj_dt = e->dtype;
    } else {
        if (!(p->p_proj_w = get_mat(p, "prime_state_proj.w", pw, W, err))) return -1;
        p->p_proj_dt = JB_F32;
    }
    if (!(p->p_start = get_mat(p, "prime_prior.start_token", 1, pw, err)) ||
        !(p->p_x_emb = get_mat(p, "prime_prior.x_emb.weight", hp->n_vocab, pw, err)) ||
        !(p->p_pos_emb = get_mat(p, "prime_prior.pos_emb.pos_emb", hp->n_tokens, pw, err)) ||
        !(p->p_proj_b = get_vec(p, "prime_state_proj.b", W, err)) ||
        !(p->p_ln_g = get_vec(p, "prime_state_ln.weight", W, err)) ||
        !(p->p_ln_b = get_vec(p, "prime_state_ln.bias", W, err)))
        return -1;
    return 0;
}

jb_prior_t *jb_prior_new_opts(const char *path, const jb_weights_opts_t *opts, jb_err_t *err) {
    jb_prior_t *p = calloc(1, sizeof *p);
    if (!p) {
        jb_err_set(err, JB_ENOMEM, "out of memory");
        return NULL;
    }
    if (!(p->st = jb_st_open(path, err))) goto fail;
    const char *kind = jb_st_meta(p->st, "kind");
    if (kind && strcmp(kind, "prior")) {
        jb_err_set(err, JB_EFORMAT, "%s: model kind '%s', expected 'prior'", path, kind);
        goto fail;
    }
    json_t *hj = jb_hparams_from_st(p->st, err);
    if (!hj) goto fail;
    int rc = jb_prior_hparams_parse(hj, &p->hp, err);
    json_decref(hj);
    if (rc) {
        jb_err_prefix(err, "%s", path);
        goto fail;
    }
    const jb_prior_hparams_t *hp = &p->hp;
    const jb_prior_info_t *in = &p->info;
    const int W = hp->width;
    fill_info(p);
    if (in->lyrics && (hp->n_tokens <= 0 || hp->n_vocab <= 0)) {
        jb_err_set(err, JB_EFORMAT, "%s: lyrics model with n_tokens %d, n_vocab %d", path,
                   hp->n_tokens, hp->n_vocab);
        goto fail;
    }
    if (load_labels(p, path, err)) goto fail;
    jb_transformer_hp_t th = {
        .width = W, .depth = hp->depth, .heads = hp->heads, .n_ctx = in->seq_len,
        .attn_order = hp->attn_order, .blocks = hp->blocks, .m_attn = hp->m_attn,
        .m_mlp = hp->m_mlp, .res_scale = hp->res_scale,
        .encoder_dims = in->lyrics == JB_PRIOR_LYRICS_ENCODER ? hp->n_tokens : 0,
        .prime_len = in->lyrics == JB_PRIOR_LYRICS_JOINT ? hp->n_tokens : 0};
    if (!(p->tf = jb_transformer_new_opts(p->st, "prior.transformer.", &th, opts, err))) goto fail;
    if (!(p->x_emb = get_mat(p, "prior.x_emb.weight", in->seq_bins, W, err)) ||
        !(p->pos_emb = get_mat(p, "prior.pos_emb.pos_emb", in->seq_len, W, err)))
        goto fail;
    if (hp->merged_decoder) {
        if (!(p->x_out = get_mat(p, "prior.x_out.weight", in->seq_bins, W, err))) goto fail;
    } else {
        p->x_out = p->x_emb;   // tied: x_out.weight is x_emb.weight
    }
    if (in->lyrics == JB_PRIOR_LYRICS_ENCODER && load_lyrics_encoder(p, opts, err)) goto fail;
    if (in->x_cond && load_conditioner(p, err)) goto fail;
    if (in->lyrics && hp->alignment_layer >= hp->depth) {
        jb_err_set(err, JB_EFORMAT, "%s: alignment_layer %d >= depth %d", path,
                   hp->alignment_layer, hp->depth);
        goto fail;
    }
    return p;
fail:
    jb_prior_destroy(&p);
    return NULL;
}

void jb_prior_destroy(jb_prior_t **p_p) {
    if (!p_p || !*p_p) return;
    jb_prior_t *p = *p_p;
    jb_transformer_destroy(&p->tf);
    jb_transformer_destroy(&p->ptf);
    for (int i = 0; i < MAX_COND_STAGES; i++) free(p->c_stage[i].res);
    for (int i = 0; i < p->n_owned; i++) jb_free(p->owned[i]);
    free(p->owned);
    jb_st_close(&p->st);
    free(p);
    *p_p = NULL;
}

const jb_prior_info_t *jb_prior_info(const jb_prior_t *p) { return &p->info; }
const jb_prior_hparams_t *jb_prior_hparams(const jb_prior_t *p) { return &p->hp; }
const jb_transformer_t *jb_prior_transformer(const jb_prior_t *p) { return p->tf; }

int jb_prior_set_alignment(jb_prior_t *p, int layer, int head, jb_err_t *err) {
    if (!p->info.lyrics) return jb_err_set(err, JB_EINVAL, "alignment: not a lyrics prior");
    if (layer < 0 || layer >= p->hp.depth || head < 0 || head >= p->hp.heads)
        return jb_err_set(err, JB_EINVAL, "alignment: layer %d head %d outside [0, %d) x [0, %d)",
                          layer, head, p->hp.depth, p->hp.heads);
    jb_transformer_layer_t l;
    if (p->info.lyrics == JB_PRIOR_LYRICS_ENCODER &&
        (jb_transformer_layer(p->tf, layer, &l) || l.kind != 6))
        return jb_err_set(err, JB_EINVAL, "alignment: layer %d does not attend to the lyrics "
                          "(not an encoder-attention layer)", layer);
    p->hp.alignment_layer = layer;
    p->hp.alignment_head = head;
    return 0;
}

// ---- conditioning -------------------------------------------------------------------

int jb_prior_cond_y(const jb_prior_t *p, const int32_t *y, int N, float *out, jb_err_t *err) {
    const jb_prior_hparams_t *hp = &p->hp;
    int W = hp->width, G = hp->max_bow_genre_size, L = p->info.label_len;
    if (!hp->labels) {
        for (int n = 0; n < N; n++) memcpy(out + (int64_t)n * W, p->start_token, sizeof(float) * W);
        return 0;
    }
    for (int n = 0; n < N; n++) {
        const int32_t *yn = y + (int64_t)n * L;
        float *o = out + (int64_t)n * W;
        for (int c = 0; c < W; c++) o[c] = 0.0f;
        for (int g = 0; g < G; g++) {
            int id = yn[4 + g];
            if (id < 0) continue;   // empty slot
            if (id >= hp->y_bins[0])
                return jb_err_set(err, JB_EINVAL, "sample %d: genre id %d outside [0, %d)", n, id,
                                  hp->y_bins[0]);
            const float *e = p->genre_emb + (int64_t)id * W;
            for (int c = 0; c < W; c++) o[c] += e[c];
        }
        int a = yn[3];
        if (a < 0 || a >= hp->y_bins[1])
            return jb_err_set(err, JB_EINVAL, "sample %d: artist id %d outside [0, %d)", n, a,
                              hp->y_bins[1]);
        const float *e = p->artist_emb + (int64_t)a * W;
        for (int c = 0; c < W; c++) o[c] = o[c] + e[c];
    }
    return 0;
}
void jb_prior_tables(const jb_prior_t *p, const float **x_emb, const float **pos_emb,
                     const float **x_out) {
    *x_emb = p->x_emb, *pos_emb = p->pos_emb, *x_out = p->x_out;
}

// Bin of a float32 position in [lo, hi) as the reference's RangeEmbedding computes it.
static int range_bin(float pos, double lo, double hi, int bins) {
    float norm = (pos - (float)lo) / (float)(hi - lo);
    return (int)floorf((float)bins * norm);
}

int jb_prior_time_bins(const int32_t *y, int row, int n_ctx, int t_bins, const double lo[3],
                       const double hi[3], int32_t *bins, jb_err_t *err) {
    float total = (float)y[0], start = (float)y[1], end = (float)((int64_t)y[1] + y[2]);
    if (!(total > 0)) return jb_err_set(err, JB_EINVAL, "sample %d: total_length %d", row, y[0]);
    float rs = start / total, re = end / total;
    re = re < 0.0f ? 0.0f : re > 1.0f ? 1.0f : re;
    int bt = range_bin(total, lo[0], hi[0], t_bins);
    if (bt < 0 || bt >= t_bins)
        return jb_err_set(err, JB_EINVAL, "sample %d: total_length %d outside [%g, %g)", row,
                          y[0], lo[0], hi[0]);
    for (int i = 0; i < n_ctx; i++) {
        float interp = (float)i / (float)n_ctx;
        float pa = start + (end - start) * interp;
        float pr = rs + (re - rs) * interp;
        int ba = range_bin(pa, lo[1], hi[1], t_bins);
        int br = range_bin(pr, lo[2], hi[2], t_bins);
        if (ba < 0 || ba >= t_bins || br < 0 || br >= t_bins)
            return jb_err_set(err, JB_EINVAL, "sample %d: offset %d, length %d: position %d "
                              "outside the timing signal's range [0, %g)", row, y[1], y[2], i,
                              hi[1]);
        bins[3 * i] = bt, bins[3 * i + 1] = ba, bins[3 * i + 2] = br;
    }
    return 0;
}

static int time_signal(const jb_prior_t *p, const int32_t *y, int N, float *out, jb_err_t *err) {
    const jb_prior_hparams_t *hp = &p->hp;
    int W = hp->width, T = hp->n_ctx, L = p->info.label_len;
    int32_t *bins = malloc(sizeof(int32_t) * 3 * (size_t)T);
    if (!bins) return jb_err_set(err, JB_ENOMEM, "timing signal: out of memory");
    for (int n = 0; n < N; n++) {
        if (jb_prior_time_bins(y + (int64_t)n * L, n, T, hp->t_bins, p->t_lo, p->t_hi, bins,
                               err)) {
            free(bins);
            return -1;
        }
        for (int i = 0; i < T; i++) {
            const float *et = p->time_emb[0] + (int64_t)bins[3 * i] * W;
            const float *ea = p->time_emb[1] + (int64_t)bins[3 * i + 1] * W;
            const float *er = p->time_emb[2] + (int64_t)bins[3 * i + 2] * W;
            float *o = out + ((int64_t)n * T + i) * W;
            for (int c = 0; c < W; c++) o[c] = (et[c] + ea[c]) + er[c];
        }
    }
    free(bins);
    return 0;
}

// Conv1d, stride 1, time-major: out: (L, Co) = b + Σ_tap in[t + tap·dil - pad]·wt[tap];
// in: (L, Ci); wt: (k, Ci, Co).
static void conv1d(float *out, const float *in, const float *wt, const float *b, int L, int Ci,
                   int Co, int k, int dil, int pad) {
    for (int t = 0; t < L; t++) memcpy(out + (int64_t)t * Co, b, sizeof(float) * Co);
    for (int j = 0; j < k; j++) {
        int sh = j * dil - pad;
        int lo = sh < 0 ? -sh : 0, hi = sh > 0 ? L - sh : L;
        if (hi > lo)
            jb_matmul_acc(out + (int64_t)lo * Co, in + (int64_t)(lo + sh) * Ci,
                          wt + (int64_t)j * Ci * Co, JB_F32, hi - lo, Ci, Co);
    }
}

// ConvTranspose1d, time-major: out: (Lo, Co), Lo = (L-1)·s - 2p + k; in: (L, Ci);
// wt: (k, Ci, Co); tmp: (L, Co).
static void convt1d(float *out, const float *in, const float *wt, const float *b, float *tmp,
                    int L, int Ci, int Co, int k, int s, int pad) {
    int Lo = (L - 1) * s - 2 * pad + k;
    for (int t = 0; t < Lo; t++) memcpy(out + (int64_t)t * Co, b, sizeof(float) * Co);
    for (int j = 0; j < k; j++) {
        jb_matmul(tmp, in, wt + (int64_t)j * Ci * Co, JB_F32, NULL, L, Ci, Co);
        for (int t = 0; t < L; t++) {
            int o = t * s + j - pad;
            if (o < 0 || o >= Lo) continue;
            float *dst = out + (int64_t)o * Co;
            const float *src = tmp + (int64_t)t * Co;
            for (int c = 0; c < Co; c++) dst[c] += src[c];
        }
    }
}

static int conditioner(const jb_prior_t *p, const int32_t *z_cond, int N, float *out,
                       jb_err_t *err) {
    int W = p->hp.width, cw = p->c_width, cm = p->c_mid, s = p->c_stride;
    int L0 = p->hp.n_ctx / p->info.cond_downsample, bins = p->info.bins;
    int maxc = W > cw ? W : cw;
    maxc = maxc > cm ? maxc : cm;
    size_t big = (size_t)p->hp.n_ctx * (size_t)maxc;
    float *a = jb_alloc(sizeof(float) * big), *b = jb_alloc(sizeof(float) * big);
    float *c = jb_alloc(sizeof(float) * big);
    if (!a || !b || !c) {
        jb_free(a), jb_free(b), jb_free(c);
        return jb_err_set(err, JB_ENOMEM, "conditioner: out of memory");
    }
    int rc = 0;
    for (int n = 0; n < N && !rc; n++) {
        const int32_t *z = z_cond + (int64_t)n * L0;
        for (int t = 0; t < L0; t++)
            if (z[t] < 0 || z[t] >= bins) {
                rc = jb_err_set(err, JB_EINVAL, "sample %d: conditioning code %d at %d outside "
                                "[0, %d)", n, z[t], t, bins);
                break;
            }
        if (rc) break;
        jb_nn_embed(c, p->c_x_emb, z, L0, W, bins);           // (L0, W)
        conv1d(a, c, p->c_w0, p->c_b0, L0, W, cw, 3, 1, 1);   // (L0, cw)
        int L = L0;
        for (int i = 0; i < p->c_stages; i++) {
            const cstage_t *st = &p->c_stage[i];
            for (int j = 0; j < p->hp.cond_depth; j++) {
                const cres_t *r = &st->res[j];
                int64_t n1 = (int64_t)L * cw, n2 = (int64_t)L * cm;
                for (int64_t q = 0; q < n1; q++) c[q] = a[q] > 0 ? a[q] : 0;
                conv1d(b, c, r->w1, r->b1, L, cw, cm, 3, r->dilation, r->dilation);
                for (int64_t q = 0; q < n2; q++) b[q] = b[q] > 0 ? b[q] : 0;
                conv1d(c, b, r->w3, r->b3, L, cm, cw, 1, 1, 0);
                for (int64_t q = 0; q < n1; q++) a[q] = a[q] + p->c_res_scale * c[q];
            }
            convt1d(b, a, st->wt, st->bt, c, L, cw, st->co, 2 * s, s, s / 2);
            L = (L - 1) * s - 2 * (s / 2) + 2 * s;
            float *tmp = a;
            a = b, b = tmp;
        }
        if (L != p->hp.n_ctx) {
            rc = jb_err_set(err, JB_EINTERNAL, "conditioner: %d positions, expected %d", L,
                            p->hp.n_ctx);
            break;
        }
        jb_nn_layernorm(out + (int64_t)n * L * W, a, p->c_ln_g, p->c_ln_b, L, W, 1e-5f);
    }
    jb_free(a), jb_free(b), jb_free(c);
    return rc;
}

int jb_prior_cond_view(const jb_prior_t *p, jb_prior_cond_view_t *v) {
    if (!p->info.x_cond) return -1;
    *v = (jb_prior_cond_view_t){
        .bins = p->info.bins, .W = p->hp.width, .cw = p->c_width, .cm = p->c_mid,
        .stages = p->c_stages, .stride = p->c_stride, .depth = p->hp.cond_depth,
        .L0 = p->hp.n_ctx / p->info.cond_downsample, .res_scale = p->c_res_scale,
        .x_emb = p->c_x_emb, .w0 = p->c_w0, .b0 = p->c_b0, .ln_g = p->c_ln_g, .ln_b = p->c_ln_b};
    return 0;
}

void jb_prior_cond_res(const jb_prior_t *p, int i, int j, const float **w1, const float **b1,
                       const float **w3, const float **b3, int *dilation) {
    const cres_t *r = &p->c_stage[i].res[j];
    *w1 = r->w1, *b1 = r->b1, *w3 = r->w3, *b3 = r->b3, *dilation = r->dilation;
}

void jb_prior_cond_up(const jb_prior_t *p, int i, const float **wt, const float **bt, int *co) {
    *wt = p->c_stage[i].wt, *bt = p->c_stage[i].bt, *co = p->c_stage[i].co;
}

int jb_prior_cond_x(const jb_prior_t *p, const int32_t *y, const int32_t *z_cond, int N,
                    float *out, jb_err_t *err) {
    int64_t n = (int64_t)N * p->hp.n_ctx * p->hp.width;
    if (p->info.x_cond) {
        if (!z_cond) return jb_err_set(err, JB_EINVAL, "level %d needs the codes of level %d",
                                       p->hp.level, p->hp.level + 1);
        return conditioner(p, z_cond, N, out, err);
    }
    if (p->info.include_time_signal) {
        if (!y) return jb_err_set(err, JB_EINVAL, "level %d needs labels", p->hp.level);
        return time_signal(p, y, N, out, err);
    }
    memset(out, 0, sizeof(float) * (size_t)n);
    return 0;
}

int jb_prior_encoder_kv(const jb_prior_t *p, const int32_t *tokens, int N, float *out,
                        jb_err_t *err) {
    if (p->info.lyrics != JB_PRIOR_LYRICS_ENCODER)
        return jb_err_set(err, JB_EINVAL, "prior has no lyrics encoder");
    const jb_prior_hparams_t *hp = &p->hp;
    int T = hp->n_tokens, pw = hp->prime_width, W = hp->width, V = hp->n_vocab;
    for (int64_t i = 0; i < (int64_t)N * T; i++)
        if (tokens[i] < 0 || tokens[i] >= V)
            return jb_err_set(err, JB_EINVAL, "sample %d: lyric token %d at %d outside [0, %d)",
                              (int)(i / T), tokens[i], (int)(i % T), V);
    jb_tcache_t *c = jb_tcache_new(p->ptf, N, T, err);
    float *x = jb_alloc(sizeof(float) * (size_t)N * T * pw);
    if (!c || !x) {
        jb_tcache_destroy(&c);
        jb_free(x);
        return err->code ? -1 : jb_err_set(err, JB_ENOMEM, "out of memory");
    }
    for (int n = 0; n < N; n++)
        for (int t = 0; t < T; t++) {
            const float *e = t == 0 ? p->p_start : p->p_x_emb + (int64_t)tokens[n * T + t - 1] * pw;
            const float *pe = p->p_pos_emb + (int64_t)t * pw;
            float *o = x + ((int64_t)n * T + t) * pw;
            for (int k = 0; k < pw; k++) o[k] = (e[k] + pe[k]) + 0.0f;
        }
    int rc = jb_transformer_forward(p->ptf, c, x, T, NULL, err);
    if (!rc) {
        jb_matmul(out, x, p->p_proj_w, p->p_proj_dt, p->p_proj_b, N * T, pw, W);
        jb_nn_layernorm(out, out, p->p_ln_g, p->p_ln_b, (int64_t)N * T, W, 1e-5f);
    }
    jb_tcache_destroy(&c);
    jb_free(x);
    return rc;
}

// ---- the sequence ------------------------------------------------------------------

// Conditioning row added at sequence position t: (W) or NULL for none (joint lyric part).
static const float *xcond_row(const jb_prior_t *p, const float *cond_x, int n, int t) {
    int off = p->info.seq_len - p->info.n_ctx;
    if (t < off) return NULL;
    return cond_x + ((int64_t)n * p->info.n_ctx + (t - off)) * p->hp.width;
}

// Transformer inputs of positions [t0, t0 + c): x: (N, c, W); seq: (N, seq_len) joint ids.
static void build_inputs(const jb_prior_t *p, float *x, const int32_t *seq, const float *cond_y,
                         const float *cond_x, int N, int t0, int c) {
    int W = p->hp.width, S = p->info.seq_len;
    for (int n = 0; n < N; n++)
        for (int r = 0; r < c; r++) {
            int t = t0 + r;
            const float *e = t == 0 ? cond_y + (int64_t)n * W
                                    : p->x_emb + (int64_t)seq[(int64_t)n * S + t - 1] * W;
            const float *pe = p->pos_emb + (int64_t)t * W;
            const float *xc = xcond_row(p, cond_x, n, t);
            float *o = x + ((int64_t)n * c + r) * W;
            if (xc)
                for (int k = 0; k < W; k++) o[k] = (e[k] + pe[k]) + xc[k];
            else
                for (int k = 0; k < W; k++) o[k] = (e[k] + pe[k]) + 0.0f;
        }
}

// After the transformer: + conditioning (not merged), then logits: (N, c, seq_bins).
static void outputs(const jb_prior_t *p, float *x, const float *cond_x, int N, int t0, int c,
                    float *logits) {
    int W = p->hp.width, B = p->info.seq_bins;
    if (!p->info.merged_decoder)
        for (int n = 0; n < N; n++)
            for (int r = 0; r < c; r++) {
                const float *xc = xcond_row(p, cond_x, n, t0 + r);
                if (!xc) continue;
                float *o = x + ((int64_t)n * c + r) * W;
                for (int k = 0; k < W; k++) o[k] += xc[k];
            }
    jb_matmul_wt(logits, x, p->x_out, N * c, W, B);
}

int jb_prior_fill_seq(const jb_prior_info_t *in, int32_t *seq, const int32_t *y,
                      const int32_t *codes, int P, int N, jb_err_t *err) {
    int S = in->seq_len, off = S - in->n_ctx;
    for (int n = 0; n < N; n++) {
        int32_t *s = seq + (int64_t)n * S;
        if (off) {
            const int32_t *ly = y + (int64_t)n * in->label_len + in->label_len - in->n_tokens;
            for (int t = 0; t < off; t++) {
                if (ly[t] < 0 || ly[t] >= in->n_vocab)
                    return jb_err_set(err, JB_EINVAL, "sample %d: lyric token %d at %d outside "
                                      "[0, %d)", n, ly[t], t, in->n_vocab);
                s[t] = ly[t];
            }
        }
        for (int t = 0; t < P; t++) {
            int32_t z = codes[(int64_t)n * P + t];
            if (z < 0 || z >= in->bins)
                return jb_err_set(err, JB_EINVAL, "sample %d: code %d at %d outside [0, %d)", n, z,
                                  t, in->bins);
            s[off + t] = z + (off ? in->n_vocab : 0);
        }
    }
    return 0;
}

static int check_labels(const jb_prior_t *p, const int32_t *y, const int32_t *z_cond,
                        jb_err_t *err) {
    if ((p->info.labels || p->info.lyrics) && !y)
        return jb_err_set(err, JB_EINVAL, "level %d: labels (y) required", p->hp.level);
    if (p->info.x_cond && !z_cond)
        return jb_err_set(err, JB_EINVAL, "level %d: codes of level %d required", p->hp.level,
                          p->hp.level + 1);
    return 0;
}

int jb_prior_forward(const jb_prior_t *p, const int32_t *z, const int32_t *z_cond,
                     const int32_t *y, int N, float *logits, float *attn, jb_err_t *err) {
    const jb_prior_info_t *in = &p->info;
    if (N < 1) return jb_err_set(err, JB_EINVAL, "batch %d", N);
    if (check_labels(p, y, z_cond, err)) return -1;
    int chunk = in->seq_len < 256 ? in->seq_len : 256;
    jb_prior_sampler_t *s = jb_prior_sampler_new(p, N, chunk, err);
    if (!s) return -1;
    int rc = -1, S = in->seq_len, B = in->seq_bins;
    float *lg = jb_alloc(sizeof(float) * (size_t)N * chunk * B);
    if (!lg) {
        jb_err_set(err, JB_ENOMEM, "out of memory");
        goto done;
    }
    if (jb_prior_fill_seq(&p->info, s->seq, y, z, in->n_ctx, N, err) || jb_prior_cond_y(p, y, N, s->cond_y, err) ||
        jb_prior_cond_x(p, y, z_cond, N, s->cond_x, err))
        goto done;
    if (jb_tcache_set_batch(s->cache, N, err)) goto done;
    jb_tcache_reset(s->cache);
    if (in->lyrics == JB_PRIOR_LYRICS_ENCODER) {
        // The lyric tokens are the last n_tokens entries of y.
        for (int n = 0; n < N; n++)
            memcpy(s->tok + n * in->n_tokens, y + (int64_t)n * in->label_len + in->label_len -
                   in->n_tokens, sizeof(int32_t) * in->n_tokens);
        int e = jb_prior_encoder_kv(p, s->tok, N, s->enc, err);
        if (e || jb_tcache_set_encoder(s->cache, s->enc, err)) goto done;
    }
    jb_attn_record_t rec = {0}, *recp = NULL;
    if (attn && in->lyrics && p->hp.alignment_layer >= 0) {
        memset(attn, 0, sizeof(float) * (size_t)N * in->n_ctx * in->n_tokens);
        rec.layer = p->hp.alignment_layer, rec.head = p->hp.alignment_head, rec.out = attn;
        rec.out_t0 = S - in->n_ctx, rec.out_rows = in->n_ctx, rec.n_keys = in->n_tokens;
        recp = &rec;
    }
    for (int t0 = 0; t0 < S; t0 += chunk) {
        int c = S - t0 < chunk ? S - t0 : chunk;
        build_inputs(p, s->x, s->seq, s->cond_y, s->cond_x, N, t0, c);
        if (jb_transformer_forward(p->tf, s->cache, s->x, c, recp, err)) goto done;
        outputs(p, s->x, s->cond_x, N, t0, c, lg);
        for (int n = 0; n < N; n++)
            memcpy(logits + ((int64_t)n * S + t0) * B, lg + (int64_t)n * c * B,
                   sizeof(float) * (size_t)c * B);
    }
    rc = 0;
done:
    jb_free(lg);
    jb_prior_sampler_destroy(&s);
    return rc;
}

// ---- sampling -------------------------------------------------------------------------

int jb_prior_choose_greedy(void *user, float *logits, int N, int n_bins, int pos, int32_t *out,
                           jb_err_t *err) {
    for (int n = 0; n < N; n++) {
        const float *l = logits + (int64_t)n * n_bins;
        int best = 0;
        for (int k = 1; k < n_bins; k++)
            if (l[k] > l[best]) best = k;
        out[n] = best;
    }
    return 0;
}

jb_prior_sampler_t *jb_prior_sampler_new(const jb_prior_t *p, int max_batch, int max_chunk,
                                         jb_err_t *err) {
    const jb_prior_info_t *in = &p->info;
    if (max_batch < 1) {
        jb_err_set(err, JB_EINVAL, "sampler: batch %d", max_batch);
        return NULL;
    }
    if (max_chunk < 1 || max_chunk > in->seq_len) max_chunk = in->seq_len;
    jb_prior_sampler_t *s = calloc(1, sizeof *s);
    if (!s) {
        jb_err_set(err, JB_ENOMEM, "out of memory");
        return NULL;
    }
    s->p = p, s->max_batch = max_batch, s->max_chunk = max_chunk;
    size_t B = (size_t)max_batch, W = (size_t)in->width;
    if (!(s->cache = jb_tcache_new(p->tf, max_batch, max_chunk, err))) goto fail;
    s->cond_y = jb_alloc(sizeof(float) * B * W);
    s->cond_x = jb_calloc(sizeof(float) * B * (size_t)in->n_ctx * W);
    s->x = jb_alloc(sizeof(float) * B * (size_t)max_chunk * W);
    s->logits = jb_alloc(sizeof(float) * B * (size_t)in->seq_bins);
    s->seq = jb_calloc(sizeof(int32_t) * B * (size_t)in->seq_len);
    s->pick = jb_alloc(sizeof(int32_t) * B);
    if (in->lyrics == JB_PRIOR_LYRICS_ENCODER) {
        s->enc = jb_alloc(sizeof(float) * B * (size_t)in->n_tokens * W);
        s->tok = jb_alloc(sizeof(int32_t) * B * (size_t)in->n_tokens);
    }
    if (!s->cond_y || !s->cond_x || !s->x || !s->logits || !s->seq || !s->pick ||
        (in->lyrics == JB_PRIOR_LYRICS_ENCODER && (!s->enc || !s->tok))) {
        jb_err_set(err, JB_ENOMEM, "sampler: out of memory (batch %d)", max_batch);
        goto fail;
    }
    return s;
fail:
    jb_prior_sampler_destroy(&s);
    return NULL;
}

void jb_prior_sampler_destroy(jb_prior_sampler_t **s_p) {
    if (!s_p || !*s_p) return;
    jb_prior_sampler_t *s = *s_p;
    jb_tcache_destroy(&s->cache);
    jb_free(s->cond_y);
    jb_free(s->cond_x);
    jb_free(s->enc);
    jb_free(s->x);
    jb_free(s->logits);
    jb_free(s->seq);
    jb_free(s->pick);
    jb_free(s->tok);
    free(s);
    *s_p = NULL;
}

const jb_prior_t *jb_prior_sampler_prior(const jb_prior_sampler_t *s) { return s->p; }
int jb_prior_sampler_max_batch(const jb_prior_sampler_t *s) { return s->max_batch; }

void jb_prior_sampler_set_backend(jb_prior_sampler_t *s, jb_prior_sample_backend_fn fn,
                                  void *impl) {
    s->backend = fn, s->backend_impl = impl;
}

void *jb_prior_sampler_backend(const jb_prior_sampler_t *s) { return s->backend_impl; }

int jb_prior_sample(jb_prior_sampler_t *s, int N, const int32_t *y, const int32_t *z_cond,
                    const int32_t *prime, int P, int n_fill, int chunk_size,
                    jb_prior_choose_fn choose, void *user, int32_t *out, int *n_clamped,
                    jb_err_t *err) {
    const jb_prior_t *p = s->p;
    const jb_prior_info_t *in = &p->info;
    if (N < 1 || N > s->max_batch)
        return jb_err_set(err, JB_EINVAL, "batch %d outside [1, %d]", N, s->max_batch);
    if (s->backend)
        return s->backend(s->backend_impl, N, y, z_cond, prime, P, n_fill, chunk_size, choose,
                          user, out, n_clamped, err);
    if (n_fill <= 0) n_fill = in->n_ctx;
    if (P < 0 || P > n_fill || n_fill > in->n_ctx || (P > 0 && !prime))
        return jb_err_set(err, JB_EINVAL, "prime of %d codes, %d to fill (window %d)", P, n_fill,
                          in->n_ctx);
    if (check_labels(p, y, z_cond, err)) return -1;
    if (chunk_size <= 0 || chunk_size > s->max_chunk) chunk_size = s->max_chunk;
    int S = in->seq_len, B = in->seq_bins, off = S - in->n_ctx;
    if (jb_prior_fill_seq(&p->info, s->seq, y, prime, P, N, err) || jb_prior_cond_y(p, y, N, s->cond_y, err) ||
        jb_prior_cond_x(p, y, z_cond, N, s->cond_x, err))
        return -1;
    if (jb_tcache_set_batch(s->cache, N, err)) return -1;
    jb_tcache_reset(s->cache);
    if (in->lyrics == JB_PRIOR_LYRICS_ENCODER) {
        int32_t *tok = s->tok;
        for (int n = 0; n < N; n++)
            memcpy(tok + n * in->n_tokens, y + (int64_t)n * in->label_len + in->label_len -
                   in->n_tokens, sizeof(int32_t) * in->n_tokens);
        int e = jb_prior_encoder_kv(p, tok, N, s->enc, err);
        if (e || jb_tcache_set_encoder(s->cache, s->enc, err)) return -1;
    }
    // Prime: positions [0, off + P) in passes of chunk_size; their outputs are not needed.
    int known = off + P;
    for (int t0 = 0; t0 < known; t0 += chunk_size) {
        int c = known - t0 < chunk_size ? known - t0 : chunk_size;
        build_inputs(p, s->x, s->seq, s->cond_y, s->cond_x, N, t0, c);
        if (jb_transformer_forward(p->tf, s->cache, s->x, c, NULL, err)) return -1;
    }
    int clamped = 0;
    int fill_end = off + n_fill;
    for (int t = known; t < fill_end; t++) {
        build_inputs(p, s->x, s->seq, s->cond_y, s->cond_x, N, t, 1);
        if (jb_transformer_forward(p->tf, s->cache, s->x, 1, NULL, err)) return -1;
        outputs(p, s->x, s->cond_x, N, t, 1, s->logits);
        if (choose(user, s->logits, N, B, t - off, s->pick, err))
            return jb_err_prefix(err, "level %d position %d", p->hp.level, t - off);
        for (int n = 0; n < N; n++) {
            int32_t k = s->pick[n];
            if (k < 0 || k >= B)
                return jb_err_set(err, JB_EINTERNAL, "level %d position %d: token %d outside "
                                  "[0, %d)", p->hp.level, t - off, k, B);
            s->seq[(int64_t)n * S + t] = k;
            if (off && k < in->n_vocab) clamped++;
        }
    }
    for (int n = 0; n < N; n++)
        for (int i = 0; i < n_fill; i++) {
            int32_t k = s->seq[(int64_t)n * S + off + i];
            if (off) k = k - in->n_vocab < 0 ? 0 : k - in->n_vocab;   // clamp(id - n_vocab, 0)
            out[(int64_t)n * n_fill + i] = k;
        }
    if (n_clamped) *n_clamped = clamped;
    return 0;
}

// ---- benchmarks ---------------------------------------------------------------------------

int jb_prior_sampler_bench_setup(jb_prior_sampler_t *s, int N, int pos, uint64_t seed,
                                 jb_err_t *err) {
    const jb_prior_t *p = s->p;
    const jb_prior_info_t *in = &p->info;
    if (N < 1 || N > s->max_batch || pos < 1 || pos >= in->seq_len)
        return jb_err_set(err, JB_EINVAL, "bench setup: batch %d (max %d), position %d (seq_len %d)",
                          N, s->max_batch, pos, in->seq_len);
    if (jb_tcache_set_batch(s->cache, N, err)) return -1;
    int S = in->seq_len, off = S - in->n_ctx, W = in->width;
    uint64_t x = seed | 1;
    for (int n = 0; n < N; n++)
        for (int t = 0; t < pos; t++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            int lim = t < off ? in->n_vocab : in->bins;
            s->seq[(int64_t)n * S + t] = (int32_t)((x >> 33) % (uint64_t)lim) + (t >= off && off ? in->n_vocab : 0);
        }
    memset(s->cond_y, 0, sizeof(float) * (size_t)N * W);
    memset(s->cond_x, 0, sizeof(float) * (size_t)N * in->n_ctx * W);
    return jb_tcache_fill_random(s->cache, pos, seed, err);
}

int jb_prior_sampler_step(jb_prior_sampler_t *s, jb_prior_choose_fn choose, void *user,
                          int32_t *out, jb_err_t *err) {
    const jb_prior_t *p = s->p;
    const jb_prior_info_t *in = &p->info;
    int N = jb_tcache_batch(s->cache);   // the batch of the setup
    int t = jb_tcache_pos(s->cache), S = in->seq_len, off = S - in->n_ctx;
    if (t < 1 || t >= S) return jb_err_set(err, JB_EINVAL, "step at position %d (seq_len %d)", t, S);
    build_inputs(p, s->x, s->seq, s->cond_y, s->cond_x, N, t, 1);
    if (jb_transformer_forward(p->tf, s->cache, s->x, 1, NULL, err)) return -1;
    outputs(p, s->x, s->cond_x, N, t, 1, s->logits);
    if (choose(user, s->logits, N, in->seq_bins, t - off, out, err)) return -1;
    for (int n = 0; n < N; n++) {
        if (out[n] < 0 || out[n] >= in->seq_bins)
            return jb_err_set(err, JB_EINTERNAL, "step: token %d outside [0, %d)", out[n], in->seq_bins);
        s->seq[(int64_t)n * S + t] = out[n];
    }
    return 0;
}
