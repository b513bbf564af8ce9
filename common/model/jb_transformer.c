// jb_transformer.c: see jb_transformer.h.
#include "jb_transformer.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jb_matmul.h"
#include "jb_nn.h"

typedef struct {
    const void *w;   // (K, N) as stored
    jb_dtype_t dt;
    const float *b;  // (N) or NULL
    jb_matmul_packed_t *pk;   // packed copy (opts.packed) or NULL
    size_t bytes;    // bytes of W
    int64_t params;  // K·N
} lin_t;

typedef struct {
    int kind;
    const float *ln0_g, *ln0_b, *ln1_g, *ln1_b;  // (width)
    lin_t c_attn;     // (width, 3·S), kind 6: (width, S)
    lin_t c_enc_kv;   // kind 6: (width, 2·S)
    lin_t c_proj;     // (S, width)
    lin_t fc;         // (width, M)
    lin_t mlp_proj;   // (M, width)
} layer_t;

struct jb_transformer {
    jb_transformer_hp_t hp;
    int n_state, n_mlp, hd, block_ctx, prime_keys;
    float res_scale;
    layer_t *layers;     // (depth)
    float **owned;       // widened copies of non-F32 vectors, converted weights
    int n_owned, cap_owned;
    jb_weights_opts_t opts;
};

struct jb_tcache {
    const jb_transformer_t *tf;
    int N, max_chunk, pos;
    int n_active;        // sequences in use (<= N)
    int *cap;            // (depth) key slots per sequence
    float **k, **v;      // (depth) each (N, cap, S)
    int w_cap;
    float *h;            // (N·mc, width)   LayerNorm output
    float *qkv;          // (N·mc, 3·S)
    float *a;            // (N·mc, S)       attention output
    float *t;            // (N·mc, width)   projections
    float *r;            // (N·mc, width)   res_scale temporary
    float *m;            // (N·mc, n_mlp)
    float *w;            // (N·mc·H, w_cap) softmax weights
    float *enc;          // (N·encoder_dims, 2·S) c_enc_kv output
};

int jb_transformer_attn_func(int o, int d) {
    static const int p8[10] = {1, 2, 3, 1, 2, 3, 1, 2, 3, 6};
    switch (o) {
    case 0: return 0;
    case 1: return d % 2 == 0 ? 1 : 2;
    case 2: return d % 3 + 1;
    case 3: return d % 2 == 0 ? 1 : 4;
    case 4: return d % 2 == 0 ? 1 : 5;
    case 5: return d % 4 == 1 ? 4 : 1;
    case 6: { static const int p[4] = {1, 2, 3, 6}; return p[d % 4]; }
    case 7: return d % 16 == 15 ? 6 : (d % 16) % 3 + 1;
    case 8: return p8[d % 10];
    case 9: { static const int p[4] = {1, 2, 3, 0}; return p[d % 4]; }
    case 10: {   // [1,2,3]*3 then ([1,2,3]*3 + [6]) * 7, period 79
        int e = d % 79;
        if (e < 9) return e % 3 + 1;
        return p8[(e - 9) % 10];
    }
    case 11: if (d % 16 == 15) return d % 3 == 2 ? 0 : 6; return d % 3 + 1;
    case 12: if (d % 16 == 15) return d % 3 == 2 ? 0 : 7; return d % 3 + 1;
    default: return -1;
    }
}

static int own(jb_transformer_t *tf, float *p) {
    if (tf->n_owned == tf->cap_owned) {
        int nc = tf->cap_owned ? 2 * tf->cap_owned : 64;
        float **o = realloc(tf->owned, sizeof(float *) * (size_t)nc);
        if (!o) return -1;
        tf->owned = o, tf->cap_owned = nc;
    }
    tf->owned[tf->n_owned++] = p;
    return 0;
}

// A float vector of n elements: the file's memory when F32 and aligned, else a widened copy.
static const float *get_vec(jb_transformer_t *tf, const jb_st_t *st, const char *name, int64_t n,
                            jb_err_t *err) {
    const jb_st_entry_t *e = jb_st_get(st, name, 1, &n, err);
    if (!e) return NULL;
    if (e->dtype == JB_F32 && ((uintptr_t)e->data % 4) == 0) return (const float *)e->data;
    float *p = jb_st_get_f32(st, name, 1, &n, err);
    if (!p) return NULL;
    if (own(tf, p)) {
        jb_free(p);
        jb_err_set(err, JB_ENOMEM, "out of memory");
        return NULL;
    }
    return p;
}

static const jb_dtype_t weights_dt[4] = {JB_F32, JB_F32, JB_F16, JB_BF16};
static const char *const weights_names[5] = {"stored", "f32", "f16", "bf16", "int8"};

int jb_weights_parse(const char *name) {
    for (int i = 0; name && i < 5; i++)
        if (!strcmp(name, weights_names[i])) return i;
    return -1;
}

const char *jb_weights_name(int weights) {
    return weights >= 0 && weights < 5 ? weights_names[weights] : "?";
}

// Applies tf->opts to a matrix l: (K, N): converts to the chosen dtype (a copy the
// transformer owns, or only a temporary when packing) and packs.
static int convert_lin(jb_transformer_t *tf, lin_t *l, int64_t K, int64_t N, jb_err_t *err) {
    size_t n = (size_t)K * (size_t)N;
    void *tmp = NULL;
    l->params = K * N;
    if (tf->opts.weights == JB_WEIGHTS_INT8) {   // quantized from the weights as stored
        l->pk = jb_matmul_pack_q8(l->w, l->dt, (int)K, (int)N, err);
        if (!l->pk) return -1;
        l->bytes = jb_matmul_packed_bytes(l->pk);
        l->w = NULL;
        return 0;
    }
    if (tf->opts.weights != JB_WEIGHTS_STORED && weights_dt[tf->opts.weights] != l->dt) {
        jb_dtype_t to = weights_dt[tf->opts.weights];
        tmp = jb_alloc(n * (to == JB_F32 ? 4 : 2));
        if (!tmp) return jb_err_set(err, JB_ENOMEM, "out of memory converting weights");
        for (size_t i = 0; i < n; i++) {
            float v = l->dt == JB_F32 ? ((const float *)l->w)[i]
                      : l->dt == JB_F16 ? jb_f16_to_f32(((const uint16_t *)l->w)[i])
                                        : jb_bf16_to_f32(((const uint16_t *)l->w)[i]);
            if (to == JB_F32) ((float *)tmp)[i] = v;
            else ((uint16_t *)tmp)[i] = to == JB_F16 ? jb_f32_to_f16(v) : jb_f32_to_bf16(v);
        }
        l->w = tmp, l->dt = to;
    }
    l->bytes = n * (l->dt == JB_F32 ? 4 : 2);
    if (tf->opts.packed) {
        l->pk = jb_matmul_pack(l->w, l->dt, (int)K, (int)N, err);
        jb_free(tmp);
        if (!l->pk) return -1;
        l->w = NULL;   // only the packed copy is used
        return 0;
    }
    if (tmp && own(tf, (float *)tmp)) {
        jb_free(tmp);
        return jb_err_set(err, JB_ENOMEM, "out of memory");
    }
    return 0;
}

static int get_lin(jb_transformer_t *tf, const jb_st_t *st, const char *base, int64_t K,
                   int64_t N, lin_t *l, jb_err_t *err) {
    char name[256];
    int64_t shp[2] = {K, N};
    snprintf(name, sizeof name, "%s.w", base);
    const jb_st_entry_t *e = jb_st_get(st, name, 2, shp, err);
    if (!e) return -1;
    if (e->dtype != JB_F32 && e->dtype != JB_F16 && e->dtype != JB_BF16)
        return jb_err_set(err, JB_EUNSUP, "%s: tensor '%s': dtype %s (expected F32, F16 or BF16)",
                          jb_st_path(st), name, jb_dtype_name(e->dtype));
    size_t al = e->dtype == JB_F32 ? 4 : 2;
    if ((uintptr_t)e->data % al) {
        // Misaligned weights: keep a widened aligned copy (never the case for files we write).
        float *p = jb_st_get_f32(st, name, 2, shp, err);
        if (!p || own(tf, p)) {
            jb_free(p);
            return jb_err_set(err, JB_ENOMEM, "out of memory");
        }
        l->w = p, l->dt = JB_F32;
    } else {
        l->w = e->data, l->dt = e->dtype;
    }
    if (convert_lin(tf, l, K, N, err)) return jb_err_prefix(err, "%s: tensor '%s'", jb_st_path(st), name);
    snprintf(name, sizeof name, "%s.b", base);
    l->b = get_vec(tf, st, name, N, err);
    return l->b ? 0 : -1;
}

jb_transformer_t *jb_transformer_new(const jb_st_t *st, const char *prefix,
                                     const jb_transformer_hp_t *hp, jb_err_t *err) {
    return jb_transformer_new_opts(st, prefix, hp, NULL, err);
}

jb_transformer_t *jb_transformer_new_opts(const jb_st_t *st, const char *prefix,
                                          const jb_transformer_hp_t *hp,
                                          const jb_weights_opts_t *opts, jb_err_t *err) {
    if (opts && (opts->weights < 0 || opts->weights > JB_WEIGHTS_INT8)) {
        jb_err_set(err, JB_EINVAL, "transformer '%s': weights option %d", prefix, opts->weights);
        return NULL;
    }
    jb_transformer_t *tf = calloc(1, sizeof *tf);
    if (!tf) {
        jb_err_set(err, JB_ENOMEM, "out of memory");
        return NULL;
    }
    if (opts) tf->opts = *opts;
    tf->hp = *hp;
    int W = hp->width;
    tf->n_state = (int)(hp->m_attn * W);
    tf->n_mlp = (int)(hp->m_mlp * W);
    if (W <= 0 || hp->depth <= 0 || hp->heads <= 0 || hp->n_ctx <= 0 || tf->n_state <= 0 ||
        tf->n_mlp <= 0 || tf->n_state % hp->heads) {
        jb_err_set(err, JB_EINVAL, "%s: transformer '%s': bad sizes (width %d, depth %d, heads %d, "
                   "n_ctx %d, n_state %d)", jb_st_path(st), prefix, W, hp->depth, hp->heads,
                   hp->n_ctx, tf->n_state);
        goto fail;
    }
    tf->hd = tf->n_state / hp->heads;
    tf->res_scale = hp->res_scale ? 1.0f / (float)hp->depth : 1.0f;
    if (hp->blocks > 0) {
        if (hp->n_ctx % hp->blocks) {
            jb_err_set(err, JB_EINVAL, "transformer '%s': n_ctx %d not a multiple of blocks %d",
                       prefix, hp->n_ctx, hp->blocks);
            goto fail;
        }
        tf->block_ctx = hp->n_ctx / hp->blocks;
        tf->prime_keys = (hp->prime_len / hp->blocks + 1) * hp->blocks;
    }
    tf->layers = calloc((size_t)hp->depth, sizeof(layer_t));
    if (!tf->layers) {
        jb_err_set(err, JB_ENOMEM, "out of memory");
        goto fail;
    }
    int S = tf->n_state;
    for (int d = 0; d < hp->depth; d++) {
        layer_t *L = &tf->layers[d];
        int kind = jb_transformer_attn_func(hp->attn_order, d);
        L->kind = kind;
        int ok = kind == 0 || ((kind == 1 || kind == 2 || kind == 3) && tf->block_ctx > 0) ||
                 (kind == 6 && hp->encoder_dims > 0) ||
                 (kind == 7 && tf->block_ctx > 0 && hp->prime_len > 0 &&
                  tf->prime_keys <= hp->n_ctx);
        if (!ok) {
            jb_err_set(err, JB_EUNSUP, "transformer '%s': layer %d: attn_func %d (attn_order %d) "
                       "not supported with blocks %d, encoder_dims %d, prime_len %d", prefix, d,
                       kind, hp->attn_order, hp->blocks, hp->encoder_dims, hp->prime_len);
            goto fail;
        }
        char base[224], name[256];
        snprintf(base, sizeof base, "%s_attn_mods.%d.", prefix, d);
#define VEC(dst, suffix)                                                  \
        snprintf(name, sizeof name, "%s" suffix, base);                   \
        if (!(L->dst = get_vec(tf, st, name, W, err))) goto fail;
        VEC(ln0_g, "ln_0.weight") VEC(ln0_b, "ln_0.bias")
        VEC(ln1_g, "ln_1.weight") VEC(ln1_b, "ln_1.bias")
#undef VEC
#define LIN(dst, suffix, K, N)                                            \
        snprintf(name, sizeof name, "%s" suffix, base);                   \
        if (get_lin(tf, st, name, K, N, &L->dst, err)) goto fail;
        LIN(c_attn, "attn.c_attn", W, kind == 6 ? S : 3 * S)
        if (kind == 6) { LIN(c_enc_kv, "attn.c_enc_kv", W, 2 * S) }
        LIN(c_proj, "attn.c_proj", S, W)
        LIN(fc, "mlp.c_fc", W, tf->n_mlp)
        LIN(mlp_proj, "mlp.c_proj", tf->n_mlp, W)
#undef LIN
    }
    return tf;
fail:
    jb_transformer_destroy(&tf);
    return NULL;
}

void jb_transformer_destroy(jb_transformer_t **tf_p) {
    if (!tf_p || !*tf_p) return;
    jb_transformer_t *tf = *tf_p;
    for (int i = 0; i < tf->n_owned; i++) jb_free(tf->owned[i]);
    free(tf->owned);
    for (int d = 0; tf->layers && d < tf->hp.depth; d++) {
        layer_t *L = &tf->layers[d];
        jb_matmul_packed_destroy(&L->c_attn.pk);
        jb_matmul_packed_destroy(&L->c_enc_kv.pk);
        jb_matmul_packed_destroy(&L->c_proj.pk);
        jb_matmul_packed_destroy(&L->fc.pk);
        jb_matmul_packed_destroy(&L->mlp_proj.pk);
    }
    free(tf->layers);
    free(tf);
    *tf_p = NULL;
}

size_t jb_transformer_step_weight_bytes(const jb_transformer_t *tf) {
    size_t s = 0;
    for (int d = 0; d < tf->hp.depth; d++) {
        const layer_t *L = &tf->layers[d];
        s += L->c_attn.bytes + L->c_proj.bytes + L->fc.bytes + L->mlp_proj.bytes;
    }
    return s;
}

int64_t jb_transformer_step_weight_params(const jb_transformer_t *tf) {
    int64_t s = 0;
    for (int d = 0; d < tf->hp.depth; d++) {
        const layer_t *L = &tf->layers[d];
        s += L->c_attn.params + L->c_proj.params + L->fc.params + L->mlp_proj.params;
    }
    return s;
}

const jb_transformer_hp_t *jb_transformer_hp(const jb_transformer_t *tf) { return &tf->hp; }
int jb_transformer_n_state(const jb_transformer_t *tf) { return tf->n_state; }
int jb_transformer_layer_kind(const jb_transformer_t *tf, int d) { return tf->layers[d].kind; }
int jb_transformer_prime_keys(const jb_transformer_t *tf) { return tf->prime_keys; }

// Key slots a layer keeps per sequence, for passes of at most mc tokens (docs/prior.md).
static int cache_cap(const jb_transformer_t *tf, int kind, int mc) {
    int n = tf->hp.n_ctx, bc = tf->block_ctx, c;
    switch (kind) {
    case 1: c = bc + mc; break;       // current block + the pass
    case 3: c = 2 * bc + mc; break;   // previous block, current block + the pass
    case 6: return tf->hp.encoder_dims;
    case 7: return tf->prime_keys;
    default: return n;                // dense, transpose: everything
    }
    return c < n ? c : n;
}

// Most keys one query sees in a layer (the softmax row length).
static int keys_max(const jb_transformer_t *tf, int kind) {
    switch (kind) {
    case 1: case 3: return tf->block_ctx;
    case 2: return tf->hp.n_ctx / tf->block_ctx;
    case 6: return tf->hp.encoder_dims;
    case 7: return tf->prime_keys;
    default: return tf->hp.n_ctx;
    }
}

static jb_transformer_lin_t lin_view(const lin_t *l, int K, int N) {
    jb_transformer_lin_t v = {l->w, l->dt, l->b, K, N, l->pk};
    return v;
}

int jb_transformer_layer(const jb_transformer_t *tf, int d, jb_transformer_layer_t *out) {
    if (d < 0 || d >= tf->hp.depth) return -1;
    const layer_t *L = &tf->layers[d];
    int W = tf->hp.width, S = tf->n_state, M = tf->n_mlp;
    memset(out, 0, sizeof *out);
    out->kind = L->kind;
    out->ln0_g = L->ln0_g, out->ln0_b = L->ln0_b, out->ln1_g = L->ln1_g, out->ln1_b = L->ln1_b;
    out->c_attn = lin_view(&L->c_attn, W, L->kind == 6 ? S : 3 * S);
    if (L->kind == 6) out->c_enc_kv = lin_view(&L->c_enc_kv, W, 2 * S);
    out->c_proj = lin_view(&L->c_proj, S, W);
    out->fc = lin_view(&L->fc, W, M);
    out->mlp_proj = lin_view(&L->mlp_proj, M, W);
    return 0;
}
int jb_transformer_block_ctx(const jb_transformer_t *tf) { return tf->block_ctx; }
int jb_transformer_n_mlp(const jb_transformer_t *tf) { return tf->n_mlp; }
int jb_transformer_cache_cap(const jb_transformer_t *tf, int d, int max_chunk) {
    if (max_chunk > tf->hp.n_ctx) max_chunk = tf->hp.n_ctx;
    return cache_cap(tf, tf->layers[d].kind, max_chunk);
}
int jb_transformer_keys_max(const jb_transformer_t *tf, int d) {
    return keys_max(tf, tf->layers[d].kind);
}

jb_tcache_t *jb_tcache_new(const jb_transformer_t *tf, int n_batch, int max_chunk, jb_err_t *err) {
    const jb_transformer_hp_t *hp = &tf->hp;
    if (n_batch <= 0 || max_chunk <= 0) {
        jb_err_set(err, JB_EINVAL, "cache: batch %d, chunk %d", n_batch, max_chunk);
        return NULL;
    }
    if (max_chunk > hp->n_ctx) max_chunk = hp->n_ctx;
    jb_tcache_t *c = calloc(1, sizeof *c);
    if (!c) goto oom;
    c->tf = tf, c->N = n_batch, c->n_active = n_batch, c->max_chunk = max_chunk;
    int D = hp->depth, S = tf->n_state, W = hp->width, H = hp->heads;
    c->cap = calloc((size_t)D, sizeof(int));
    c->k = calloc((size_t)D, sizeof(float *));
    c->v = calloc((size_t)D, sizeof(float *));
    if (!c->cap || !c->k || !c->v) goto oom;
    for (int d = 0; d < D; d++) {
        int kind = tf->layers[d].kind;
        c->cap[d] = cache_cap(tf, kind, max_chunk);
        size_t sz = sizeof(float) * (size_t)n_batch * (size_t)c->cap[d] * (size_t)S;
        c->k[d] = jb_calloc(sz);
        c->v[d] = jb_calloc(sz);
        if (!c->k[d] || !c->v[d]) goto oom;
        int km = keys_max(tf, kind);
        if (km > c->w_cap) c->w_cap = km;
    }
    size_t R = (size_t)n_batch * (size_t)max_chunk;
    c->h = jb_alloc(sizeof(float) * R * (size_t)W);
    c->qkv = jb_alloc(sizeof(float) * R * 3 * (size_t)S);
    c->a = jb_alloc(sizeof(float) * R * (size_t)S);
    c->t = jb_alloc(sizeof(float) * R * (size_t)W);
    c->r = jb_alloc(sizeof(float) * R * (size_t)W);
    c->m = jb_alloc(sizeof(float) * R * (size_t)tf->n_mlp);
    c->w = jb_alloc(sizeof(float) * R * (size_t)H * (size_t)(c->w_cap > 0 ? c->w_cap : 1));
    if (!c->h || !c->qkv || !c->a || !c->t || !c->r || !c->m || !c->w) goto oom;
    if (hp->encoder_dims > 0) {
        c->enc = jb_alloc(sizeof(float) * (size_t)n_batch * (size_t)hp->encoder_dims * 2 *
                          (size_t)S);
        if (!c->enc) goto oom;
    }
    return c;
oom:
    jb_err_set(err, JB_ENOMEM, "cache: out of memory (batch %d, chunk %d)", n_batch, max_chunk);
    jb_tcache_destroy(&c);
    return NULL;
}

void jb_tcache_destroy(jb_tcache_t **c_p) {
    if (!c_p || !*c_p) return;
    jb_tcache_t *c = *c_p;
    if (c->k)
        for (int d = 0; d < c->tf->hp.depth; d++) jb_free(c->k[d]);
    if (c->v)
        for (int d = 0; d < c->tf->hp.depth; d++) jb_free(c->v[d]);
    free(c->k);
    free(c->v);
    free(c->cap);
    jb_free(c->h);
    jb_free(c->qkv);
    jb_free(c->a);
    jb_free(c->t);
    jb_free(c->r);
    jb_free(c->m);
    jb_free(c->w);
    jb_free(c->enc);
    free(c);
    *c_p = NULL;
}

void jb_tcache_reset(jb_tcache_t *c) { c->pos = 0; }

int jb_tcache_set_batch(jb_tcache_t *c, int n, jb_err_t *err) {
    if (n < 1 || n > c->N)
        return jb_err_set(err, JB_EINVAL, "cache: batch %d outside [1, %d]", n, c->N);
    c->n_active = n;
    return 0;
}
int jb_tcache_pos(const jb_tcache_t *c) { return c->pos; }
int jb_tcache_batch(const jb_tcache_t *c) { return c->n_active; }

size_t jb_tcache_kv_bytes(const jb_tcache_t *c) {
    size_t s = 0;
    for (int d = 0; d < c->tf->hp.depth; d++)
        s += 2 * sizeof(float) * (size_t)c->N * (size_t)c->cap[d] * (size_t)c->tf->n_state;
    return s;
}

static void lin(float *y, const float *x, const lin_t *l, int M, int K, int N) {
    if (l->pk)
        jb_matmul_packed(y, x, l->pk, l->b, M);
    else
        jb_matmul(y, x, l->w, l->dt, l->b, M, K, N);
}

int jb_tcache_fill_random(jb_tcache_t *c, int n, uint64_t seed, jb_err_t *err) {
    const jb_transformer_t *tf = c->tf;
    if (n < 0 || n >= tf->hp.n_ctx)
        return jb_err_set(err, JB_EINVAL, "cache: fill %d positions (n_ctx %d)", n, tf->hp.n_ctx);
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    for (int d = 0; d < tf->hp.depth; d++) {
        // Every slot of the active sequences: a ring (kinds 1, 3) holds keys of the positions
        // before n; dense/transpose/prime/encoder slots beyond what is seen are never read.
        size_t m = (size_t)c->n_active * (size_t)c->cap[d] * (size_t)tf->n_state;
        float *kv[2] = {c->k[d], c->v[d]};
        for (int i = 0; i < 2; i++)
            for (size_t j = 0; j < m; j++) {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;   // xorshift64
                kv[i][j] = (float)(int32_t)(x >> 32) * (1.0f / 2147483648.0f);
            }
    }
    c->pos = n;
    return 0;
}

int jb_tcache_set_encoder(jb_tcache_t *c, const float *encoder_kv, jb_err_t *err) {
    const jb_transformer_t *tf = c->tf;
    int E = tf->hp.encoder_dims, S = tf->n_state, W = tf->hp.width;
    if (E <= 0) return jb_err_set(err, JB_EINVAL, "transformer has no encoder-decoder layers");
    int64_t rows = (int64_t)c->n_active * E;
    for (int d = 0; d < tf->hp.depth; d++) {
        const layer_t *L = &tf->layers[d];
        if (L->kind != 6) continue;
        lin(c->enc, encoder_kv, &L->c_enc_kv, (int)rows, W, 2 * S);
        for (int64_t r = 0; r < rows; r++) {
            memcpy(c->k[d] + r * S, c->enc + r * 2 * S, sizeof(float) * (size_t)S);
            memcpy(c->v[d] + r * S, c->enc + r * 2 * S + S, sizeof(float) * (size_t)S);
        }
    }
    return 0;
}


int jb_transformer_forward(const jb_transformer_t *tf, jb_tcache_t *c, float *x, int n,
                           const jb_attn_record_t *rec, jb_err_t *err) {
    const jb_transformer_hp_t *hp = &tf->hp;
    if (c->tf != tf) return jb_err_set(err, JB_EINVAL, "cache belongs to another transformer");
    if (n < 1 || n > c->max_chunk || c->pos + n > hp->n_ctx)
        return jb_err_set(err, JB_EINVAL, "pass of %d tokens at position %d (chunk max %d, n_ctx %d)",
                          n, c->pos, c->max_chunk, hp->n_ctx);
    int N = c->n_active, W = hp->width, S = tf->n_state, H = hp->heads, hd = tf->hd, M = tf->n_mlp;
    int R = N * n, t0 = c->pos;
    float scale;
    {
        // The reference multiplies q·k by (1/sqrt(sqrt(hd)))² computed in double.
        double s = 1.0 / sqrt(sqrt((double)hd));
        scale = (float)(s * s);
    }
    for (int d = 0; d < hp->depth; d++) {
        const layer_t *L = &tf->layers[d];
        int cap = c->cap[d];
        jb_nn_layernorm(c->h, x, L->ln0_g, L->ln0_b, R, W, 1e-5f);
        int q_stride;
        if (L->kind == 6) {
            lin(c->qkv, c->h, &L->c_attn, R, W, S);
            q_stride = S;
        } else {
            lin(c->qkv, c->h, &L->c_attn, R, W, 3 * S);
            q_stride = 3 * S;
            for (int b = 0; b < N; b++)
                for (int r = 0; r < n; r++) {
                    int p = t0 + r;
                    if (L->kind == 7 && p >= cap) continue;   // only the prime keys are kept
                    const float *src = c->qkv + ((int64_t)b * n + r) * 3 * S;
                    int64_t dst = ((int64_t)b * cap + p % cap) * S;
                    memcpy(c->k[d] + dst, src + S, sizeof(float) * (size_t)S);
                    memcpy(c->v[d] + dst, src + 2 * S, sizeof(float) * (size_t)S);
                }
        }
        jb_nn_attn_kind_t kind = {L->kind, tf->block_ctx, hp->encoder_dims, tf->prime_keys};
        jb_nn_attn(c->a, c->w, c->qkv, q_stride, c->k[d], c->v[d], kind, N, n, H, hd, cap, t0,
                   c->w_cap, scale);
        if (rec && rec->layer == d && rec->head >= 0 && rec->head < H) {
            for (int b = 0; b < N; b++)
                for (int r = 0; r < n; r++) {
                    int p = t0 + r;
                    if (p < rec->out_t0 || p >= rec->out_t0 + rec->out_rows) continue;
                    int lo, step;
                    int nk = jb_nn_attn_keys(&kind, p, &lo, &step);
                    const float *wr = c->w + (((int64_t)b * n + r) * H + rec->head) * c->w_cap;
                    float *o = rec->out + ((int64_t)b * rec->out_rows + (p - rec->out_t0)) *
                                              rec->n_keys;
                    for (int e = 0; e < nk; e++) {
                        int j = lo + e * step;
                        if (j < rec->n_keys) o[j] = wr[e];
                    }
                }
        }
        lin(c->t, c->a, &L->c_proj, R, S, W);   // attention output a
        if (tf->res_scale == 1.0f) {
            jb_nn_add(x, x, c->t, (int64_t)R * W);                    // x + a
            jb_nn_layernorm(c->h, x, L->ln1_g, L->ln1_b, R, W, 1e-5f);
            lin(c->m, c->h, &L->fc, R, W, M);
            jb_nn_quick_gelu(c->m, (int64_t)R * M);
            lin(c->r, c->m, &L->mlp_proj, R, M, W);
            jb_nn_add(x, x, c->r, (int64_t)R * W);                    // (x + a) + m
        } else {
            float s = tf->res_scale;
            int64_t RW = (int64_t)R * W;
            for (int64_t i = 0; i < RW; i++) c->r[i] = x[i] + s * c->t[i];
            jb_nn_layernorm(c->h, c->r, L->ln1_g, L->ln1_b, R, W, 1e-5f);
            lin(c->m, c->h, &L->fc, R, W, M);
            jb_nn_quick_gelu(c->m, (int64_t)R * M);
            lin(c->r, c->m, &L->mlp_proj, R, M, W);
            for (int64_t i = 0; i < RW; i++) x[i] = x[i] + s * (c->t[i] + c->r[i]);
        }
    }
    c->pos += n;
    return 0;
}
