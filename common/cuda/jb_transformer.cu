// jb_transformer.cu: see jb_transformer_cuda.h. Follows the conventions of jb_cuda.h.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "jb_cuda.h"

extern "C" {
#include "jb_gpu.h"
#include "jb_matmul.h"
#include "jb_matmul_cuda.h"
#include "jb_nn.h"
#include "jb_tensor.h"
#include "jb_transformer_cuda.h"
}

namespace {

const size_t kAlign = 256;

size_t align_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

// ---- bodies (one index each) ----------------------------------------------------------------

// Element idx of a cache of float32 (kv_f16 0) or float16 (kv_f16 1, rounded to nearest even).
JB_HD inline void kv_put(void *c, int64_t idx, float x, int kv_f16) {
    if (kv_f16) ((uint16_t *)c)[idx] = jb_f32_to_f16(x);
    else ((float *)c)[idx] = x;
}

// Keys and values of a pass into the cache: i over (N, n_tok, S). qkv: (N, n_tok, 3S);
// k, v: (N, cap, S). Kind 7 keeps only positions < cap.
JB_HD inline void kv_store_at(int64_t i, void *k, void *v, const float *qkv, int n_tok, int S,
                              int cap, int t0, int prime_only, int kv_f16) {
    int64_t s = i % S, br = i / S;
    int64_t r = br % n_tok, b = br / n_tok;
    int p = t0 + (int)r;
    if (prime_only && p >= cap) return;
    int64_t dst = (b * cap + p % cap) * S + s;
    const float *src = qkv + br * 3 * S;
    kv_put(k, dst, src[S + s], kv_f16);
    kv_put(v, dst, src[2 * S + s], kv_f16);
}

// c_enc_kv output (rows, 2S) split into keys and values (rows, S) each.
JB_HD inline void enc_split_at(int64_t i, void *k, void *v, const float *enc, int S, int kv_f16) {
    int64_t r = i / S, s = i % S;
    kv_put(k, i, enc[r * 2 * S + s], kv_f16);
    kv_put(v, i, enc[r * 2 * S + S + s], kv_f16);
}

// res_scale residuals: r = x + s·t, then x = x + s·(t + r) (r reused for the MLP output).
JB_HD inline void res_half_at(int64_t i, float *r, const float *x, const float *t, float s) {
    r[i] = x[i] + s * t[i];
}
JB_HD inline void res_full_at(int64_t i, float *x, const float *t, const float *r, float s) {
    x[i] = x[i] + s * (t[i] + r[i]);
}

JB_CUDA_KERNEL(k_enc_split, enc_split_at,
               (int64_t n, void *k, void *v, const float *enc, int S, int kv_f16),
               (i, k, v, enc, S, kv_f16))
JB_CUDA_KERNEL(k_res_half, res_half_at, (int64_t n, float *r, const float *x, const float *t,
                                         float s),
               (i, r, x, t, s))
JB_CUDA_KERNEL(k_res_full, res_full_at, (int64_t n, float *x, const float *t, const float *r,
                                         float s),
               (i, x, t, r, s))

// The jb_nn bodies again, launched on the cache's stream (the jb_nn_cuda_* launchers use the
// legacy default stream, which a graph capture cannot record).
JB_CUDA_KERNEL(k_ln, jb_nn_layernorm_at,
               (int64_t n, float *out, const float *x, const float *g, const float *b, int C,
                float eps),
               (i, out, x, g, b, C, eps))
JB_CUDA_KERNEL(k_gelu, jb_nn_quick_gelu_at, (int64_t n, float *x), (i, x))
JB_CUDA_KERNEL(k_add2, jb_nn_add_at, (int64_t n, float *y, const float *a, const float *b),
               (i, y, a, b))

// Kernels that read the position from device memory, so that one captured step serves every
// position: attention, the key/value scatter, and the position's advance.
__global__ void k_attn_pos(int64_t n, float *out, float *w, const float *q, int q_stride,
                           const void *kc, const void *vc, int kv_f16, jb_nn_attn_kind_t kind,
                           int rows, int H, int hd, int cap, const int *pos, int w_cap,
                           float scale) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        jb_nn_attn_kv_at(i, out, w, q, q_stride, kc, vc, kv_f16, kind, rows, H, hd, cap, *pos,
                         w_cap, scale);
}
__global__ void k_kv_store_pos(int64_t n, void *k, void *v, const float *qkv, int n_tok, int S,
                               int cap, const int *pos, int prime_only, int kv_f16) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) kv_store_at(i, k, v, qkv, n_tok, S, cap, *pos, prime_only, kv_f16);
}
__global__ void k_pos_add(int64_t n, int *pos, int d) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) *pos += d;
}

size_t fixed_bytes(int depth) { return kAlign * (size_t)(2 * depth + 14); }

struct DLin {
    jb_matmul_cuda_w_t m;   // device weights (K, N) for jb_matmul_cuda; m.w NULL: absent
    const float *b;         // (N) or NULL
};

struct DLayer {
    int kind;
    const float *ln0_g, *ln0_b, *ln1_g, *ln1_b;
    DLin c_attn, c_enc_kv, c_proj, fc, mlp_proj;
};

double gib(size_t b) { return (double)b / (double)((size_t)1 << 30); }

// An int8 matrix (INT8 weights): the CPU's jb_matmul_pack_q8 tiles, uploaded as they are.
bool is_q8(const jb_transformer_lin_t &l) {
    return !l.w && l.pk && jb_matmul_packed_dtype(l.pk) == JB_I8;
}

// Device bytes of a matrix: as stored, or int8 tiles + scales; + its bias.
size_t lin_bytes(const jb_transformer_lin_t &l) {
    size_t b = l.b ? align_up(sizeof(float) * (size_t)l.N) : 0;
    if (l.w) return align_up((size_t)l.K * (size_t)l.N * jb_dtype_size(l.dt)) + b;
    if (!is_q8(l)) return 0;
    const void *d;
    const float *sc;
    size_t db, sb;
    jb_matmul_packed_arrays(l.pk, &d, &db, &sc, &sb);
    return align_up(db) + align_up(sb) + b;
}

}  // namespace

struct jb_transformer_cuda {
    const jb_transformer_t *tf;   // for sizes only (hp, cache layout)
    jb_transformer_hp_t hp;
    int S, M, hd, block_ctx, prime_keys;
    float res_scale, scale;
    DLayer *layers;   // (depth), host array of device pointers
    void *mem;        // all weights
    size_t bytes;
};

struct jb_tcache_cuda {
    jb_transformer_cuda_t *dt;
    int N, n_active, max_chunk, pos, w_cap;
    int *cap;          // (depth)
    void **k, **v;     // (depth) device (N, cap, S), float32 or (kv_f16) float16
    int kv_f16;
    float *x, *h, *qkv, *a, *t, *r, *m, *w, *enc, *enc_in;
    int *pos_dev;      // the position, on the device (read by the kernels of a pass)
    void *mem;
    cudaStream_t st;
    cudaGraphExec_t graph;   // the captured one-token step for graph_n sequences
    int graph_n, use_graph;
    int block_ln;            // LayerNorm by the block-cooperative kernel (a block per row)
    long captures, replays;
};

namespace {

// Per-sequence buffer sizes in bytes, in allocation order (kv caches first).
struct Sizes {
    size_t kv, x, h, qkv, a, t, r, m, w, enc, enc_in;
    int w_cap;
};

Sizes sizes_of(const jb_transformer_t *tf, int mc, size_t kv_esz) {
    const jb_transformer_hp_t *hp = jb_transformer_hp(tf);
    if (mc > hp->n_ctx) mc = hp->n_ctx;
    Sizes z;
    memset(&z, 0, sizeof z);
    size_t W = (size_t)hp->width, S = (size_t)jb_transformer_n_state(tf);
    size_t M = (size_t)jb_transformer_n_mlp(tf), R = (size_t)mc;
    size_t E = (size_t)(hp->encoder_dims > 0 ? hp->encoder_dims : 0);
    for (int d = 0; d < hp->depth; d++) {
        z.kv += 2 * kv_esz * (size_t)jb_transformer_cache_cap(tf, d, mc) * S;
        int km = jb_transformer_keys_max(tf, d);
        if (km > z.w_cap) z.w_cap = km;
    }
    z.x = z.h = z.t = z.r = sizeof(float) * R * W;
    z.qkv = sizeof(float) * R * 3 * S;
    z.a = sizeof(float) * R * S;
    z.m = sizeof(float) * R * M;
    z.w = sizeof(float) * R * (size_t)hp->heads * (size_t)(z.w_cap > 0 ? z.w_cap : 1);
    z.enc = sizeof(float) * E * 2 * S;
    z.enc_in = sizeof(float) * E * W;
    return z;
}

size_t per_sample(const Sizes &z) {
    return z.kv + z.x + z.h + z.qkv + z.a + z.t + z.r + z.m + z.w + z.enc + z.enc_in;
}

}  // namespace

extern "C" {

void jb_transformer_cuda_plan(const jb_transformer_t *tf, int max_chunk,
                              jb_transformer_cuda_plan_t *plan) {
    memset(plan, 0, sizeof *plan);
    const jb_transformer_hp_t *hp = jb_transformer_hp(tf);
    for (int d = 0; d < hp->depth; d++) {
        jb_transformer_layer_t L;
        jb_transformer_layer(tf, d, &L);
        plan->weights += 4 * align_up(sizeof(float) * (size_t)hp->width);
        plan->weights += lin_bytes(L.c_attn) + lin_bytes(L.c_enc_kv) + lin_bytes(L.c_proj) +
                         lin_bytes(L.fc) + lin_bytes(L.mlp_proj);
    }
    Sizes z = sizes_of(tf, max_chunk, sizeof(float));
    plan->per_sample = per_sample(z);
    plan->kv_per_sample = z.kv;
    plan->per_sample_kv_f16 = per_sample(sizes_of(tf, max_chunk, sizeof(uint16_t)));
    plan->fixed = fixed_bytes(hp->depth);
}

jb_transformer_cuda_t *jb_transformer_cuda_new(const jb_transformer_t *tf, jb_err_t *err) {
    const jb_transformer_hp_t *hp = jb_transformer_hp(tf);
    jb_transformer_cuda_plan_t plan;
    jb_transformer_cuda_plan(tf, 1, &plan);
    size_t free_b = 0, total_b = 0;
    if (jb_gpu_mem_info(&free_b, &total_b, err)) return NULL;
    if (plan.weights > free_b) {
        jb_err_set(err, JB_ENOMEM, "transformer weights on the device: needs %.3f GiB, %.3f GiB "
                   "free (of %.3f GiB)", gib(plan.weights), gib(free_b), gib(total_b));
        return NULL;
    }
    jb_transformer_cuda_t *dt = (jb_transformer_cuda_t *)calloc(1, sizeof *dt);
    if (!dt) {
        jb_err_set(err, JB_ENOMEM, "out of memory");
        return NULL;
    }
    dt->tf = tf, dt->hp = *hp;
    dt->S = jb_transformer_n_state(tf), dt->M = jb_transformer_n_mlp(tf);
    dt->hd = dt->S / hp->heads;
    dt->block_ctx = jb_transformer_block_ctx(tf), dt->prime_keys = jb_transformer_prime_keys(tf);
    dt->res_scale = hp->res_scale ? 1.0f / (float)hp->depth : 1.0f;
    {
        double s = 1.0 / sqrt(sqrt((double)dt->hd));   // as the CPU pass (the reference)
        dt->scale = (float)(s * s);
    }
    dt->layers = (DLayer *)calloc((size_t)hp->depth, sizeof(DLayer));
    if (!dt->layers) {
        jb_err_set(err, JB_ENOMEM, "out of memory");
        goto fail;
    }
    if (!(dt->mem = jb_gpu_alloc(plan.weights, err))) {
        jb_err_prefix(err, "transformer weights (%.3f GiB)", gib(plan.weights));
        goto fail;
    }
    dt->bytes = plan.weights;
    {
        char *base = (char *)dt->mem;
        size_t off = 0;
        // Upload n bytes from src to the next aligned slot; the slot's device address.
        auto put = [&](const void *src, size_t n) -> void * {
            void *d = base + off;
            off += align_up(n);
            return jb_gpu_upload(d, src, n, err) ? NULL : d;
        };
        auto put_lin = [&](const jb_transformer_lin_t &l, DLin *o) -> bool {
            o->m = jb_matmul_cuda_w_t{NULL, NULL, l.dt, l.K, l.N}, o->b = NULL;
            if (is_q8(l)) {
                const void *d;
                const float *sc;
                size_t db, sb;
                jb_matmul_packed_arrays(l.pk, &d, &db, &sc, &sb);
                o->m.dt = JB_I8;
                if (!(o->m.w = put(d, db)) || !(o->m.scales = (const float *)put(sc, sb)))
                    return false;
            } else if (l.pk) {
                jb_err_set(err, JB_EINVAL, "packed %s weights: the device takes weights as "
                           "stored or int8 (load with packed 0)",
                           jb_dtype_name(jb_matmul_packed_dtype(l.pk)));
                return false;
            } else if (!l.w) {
                return true;   // no such matrix (c_enc_kv outside enc-dec layers)
            } else if (!(o->m.w = put(l.w, (size_t)l.K * (size_t)l.N * jb_dtype_size(l.dt)))) {
                return false;
            }
            if (l.b && !(o->b = (const float *)put(l.b, sizeof(float) * (size_t)l.N)))
                return false;
            return true;
        };
        size_t vb = sizeof(float) * (size_t)hp->width;
        for (int d = 0; d < hp->depth; d++) {
            jb_transformer_layer_t L;
            jb_transformer_layer(tf, d, &L);
            DLayer *o = &dt->layers[d];
            o->kind = L.kind;
            if (!(o->ln0_g = (const float *)put(L.ln0_g, vb)) ||
                !(o->ln0_b = (const float *)put(L.ln0_b, vb)) ||
                !(o->ln1_g = (const float *)put(L.ln1_g, vb)) ||
                !(o->ln1_b = (const float *)put(L.ln1_b, vb)) || !put_lin(L.c_attn, &o->c_attn) ||
                !put_lin(L.c_enc_kv, &o->c_enc_kv) || !put_lin(L.c_proj, &o->c_proj) ||
                !put_lin(L.fc, &o->fc) || !put_lin(L.mlp_proj, &o->mlp_proj)) {
                jb_err_prefix(err, "transformer layer %d upload", d);
                goto fail;
            }
        }
    }
    return dt;
fail:
    jb_transformer_cuda_destroy(&dt);
    return NULL;
}

void jb_transformer_cuda_destroy(jb_transformer_cuda_t **dt_p) {
    if (!dt_p || !*dt_p) return;
    jb_transformer_cuda_t *dt = *dt_p;
    jb_gpu_free(dt->mem);
    free(dt->layers);
    free(dt);
    *dt_p = NULL;
}

jb_tcache_cuda_t *jb_tcache_cuda_new(jb_transformer_cuda_t *dt, int n_batch, int max_chunk,
                                     int fit, jb_err_t *err) {
    return jb_tcache_cuda_new_kv(dt, n_batch, max_chunk, fit, JB_F32, err);
}

jb_tcache_cuda_t *jb_tcache_cuda_new_kv(jb_transformer_cuda_t *dt, int n_batch, int max_chunk,
                                        int fit, jb_dtype_t kv_dtype, jb_err_t *err) {
    const jb_transformer_hp_t *hp = &dt->hp;
    if (n_batch <= 0 || max_chunk <= 0 || (kv_dtype != JB_F32 && kv_dtype != JB_F16)) {
        jb_err_set(err, JB_EINVAL, "device cache: batch %d, chunk %d, key/value dtype %d",
                   n_batch, max_chunk, (int)kv_dtype);
        return NULL;
    }
    if (max_chunk > hp->n_ctx) max_chunk = hp->n_ctx;
    size_t kv_esz = kv_dtype == JB_F16 ? sizeof(uint16_t) : sizeof(float);
    Sizes z = sizes_of(dt->tf, max_chunk, kv_esz);
    size_t ps = per_sample(z), fixed = fixed_bytes(hp->depth);
    size_t free_b = 0, total_b = 0;
    if (jb_gpu_mem_info(&free_b, &total_b, err)) return NULL;
    size_t need = fixed + ps * (size_t)n_batch;
    if (need > free_b) {
        size_t n_fit = free_b > fixed ? (free_b - fixed) / ps : 0;
        if (!fit || n_fit == 0) {
            jb_err_set(err, JB_ENOMEM, "device cache for batch %d (%d-token passes): needs %.3f "
                       "GiB (%.3f GiB per sequence), %.3f GiB free", fit ? 1 : n_batch, max_chunk,
                       gib(fit ? fixed + ps : need), gib(ps), gib(free_b));
            return NULL;
        }
        n_batch = (int)n_fit;
        need = fixed + ps * (size_t)n_batch;
    }
    jb_tcache_cuda_t *c = (jb_tcache_cuda_t *)calloc(1, sizeof *c);
    if (!c) {
        jb_err_set(err, JB_ENOMEM, "out of memory");
        return NULL;
    }
    c->dt = dt, c->N = n_batch, c->n_active = n_batch, c->max_chunk = max_chunk, c->w_cap = z.w_cap;
    c->kv_f16 = kv_dtype == JB_F16;
    int D = hp->depth;
    c->cap = (int *)calloc((size_t)D, sizeof(int));
    c->k = (void **)calloc((size_t)D, sizeof(void *));
    c->v = (void **)calloc((size_t)D, sizeof(void *));
    if (!c->cap || !c->k || !c->v) {
        jb_err_set(err, JB_ENOMEM, "out of memory");
        jb_tcache_cuda_destroy(&c);
        return NULL;
    }
    if (!(c->mem = jb_gpu_alloc(need, err))) {
        jb_err_prefix(err, "device cache for batch %d", n_batch);
        jb_tcache_cuda_destroy(&c);
        return NULL;
    }
    char *p = (char *)c->mem;
    size_t N = (size_t)n_batch, S = (size_t)dt->S;
    auto take = [&](size_t per) -> char * {
        char *q = p;
        p += align_up(per * N);
        return q;
    };
    for (int d = 0; d < D; d++) {
        c->cap[d] = jb_transformer_cache_cap(dt->tf, d, max_chunk);
        size_t one = kv_esz * (size_t)c->cap[d] * S;
        c->k[d] = take(one);
        c->v[d] = take(one);
    }
    c->x = (float *)take(z.x), c->h = (float *)take(z.h), c->qkv = (float *)take(z.qkv);
    c->a = (float *)take(z.a), c->t = (float *)take(z.t), c->r = (float *)take(z.r);
    c->m = (float *)take(z.m), c->w = (float *)take(z.w), c->enc = (float *)take(z.enc);
    c->enc_in = (float *)take(z.enc_in);
    c->pos_dev = (int *)p;
    c->use_graph = 1;
    cudaError_t e = cudaStreamCreate(&c->st);
    if (e == cudaSuccess) e = cudaMemsetAsync(c->pos_dev, 0, sizeof(int), c->st);
    if (e == cudaSuccess) e = cudaStreamSynchronize(c->st);
    if (e != cudaSuccess) {
        jb_cuda_fail(err, __FILE__, __LINE__, "device cache stream", e);
        jb_tcache_cuda_destroy(&c);
        return NULL;
    }
    return c;
}

void jb_tcache_cuda_destroy(jb_tcache_cuda_t **c_p) {
    if (!c_p || !*c_p) return;
    jb_tcache_cuda_t *c = *c_p;
    if (c->graph) cudaGraphExecDestroy(c->graph);
    if (c->st) {
        cudaStreamSynchronize(c->st);
        cudaStreamDestroy(c->st);
    }
    jb_gpu_free(c->mem);
    free(c->cap);
    free(c->k);
    free(c->v);
    free(c);
    *c_p = NULL;
}

int jb_tcache_cuda_batch(const jb_tcache_cuda_t *c) { return c->N; }
int jb_tcache_cuda_pos(const jb_tcache_cuda_t *c) { return c->pos; }
int jb_tcache_cuda_reset(jb_tcache_cuda_t *c, jb_err_t *err) {
    c->pos = 0;
    JB_CUDA_CHECK(cudaMemsetAsync(c->pos_dev, 0, sizeof(int), c->st), err);
    return 0;
}
void jb_tcache_cuda_use_graph(jb_tcache_cuda_t *c, int on) { c->use_graph = on != 0; }

void jb_tcache_cuda_use_block_ln(jb_tcache_cuda_t *c, int on) {
    if (c->block_ln == (on != 0)) return;
    c->block_ln = on != 0;
    if (c->graph) {   // the captured step holds the other kernel
        cudaGraphExecDestroy(c->graph);
        c->graph = NULL;
    }
}
void jb_tcache_cuda_graph_stats(const jb_tcache_cuda_t *c, long *captures, long *replays) {
    *captures = c->captures, *replays = c->replays;
}
float *jb_tcache_cuda_x(jb_tcache_cuda_t *c) { return c->x; }
void *jb_tcache_cuda_stream(jb_tcache_cuda_t *c) { return (void *)c->st; }

int jb_tcache_cuda_set_batch(jb_tcache_cuda_t *c, int n, jb_err_t *err) {
    if (n < 1 || n > c->N)
        return jb_err_set(err, JB_EINVAL, "device cache: batch %d outside [1, %d]", n, c->N);
    c->n_active = n;
    return 0;
}

}  // extern "C"

namespace {

// y (M, l.N) = x (M, l.K) · W (+ b) on the cache's stream: the batch-invariant product of
// jb_matmul_cuda.h (a row's result does not depend on the other rows of the pass).
int linear(jb_tcache_cuda_t *c, float *y, const float *x, const DLin &l, int M, jb_err_t *err) {
    return jb_matmul_cuda(y, x, &l.m, l.b, M, c->st, err);
}

// out: (R, W) = LayerNorm of x: (R, W), on the cache's stream: one thread per row, or (block_ln)
// one block of JB_NN_ROW_THREADS threads per row.
int layernorm(jb_tcache_cuda_t *c, float *out, const float *x, const float *g, const float *b,
              int R, int W, jb_err_t *err) {
    if (c->block_ln) {
        if (jb_nn_cuda_layernorm_block(out, x, g, b, R, W, 1e-5f, c->st))
            return jb_err_set(err, JB_EUNAVAIL, "block LayerNorm launch: %s",
                              cudaGetErrorString(cudaGetLastError()));
        return 0;
    }
    JB_LAUNCH(k_ln, jb_cuda_blocks(R), JB_CUDA_BLOCK, c->st, (int64_t)R, out, x, g, b, W, 1e-5f);
    JB_CUDA_LAUNCHED(err);
    return 0;
}

// Issue one pass of n_tok tokens on c->st (positions from c->pos_dev, advanced at the end).
int enqueue_pass(jb_transformer_cuda_t *dt, jb_tcache_cuda_t *c, int n_tok, jb_err_t *err) {
    const jb_transformer_hp_t *hp = &dt->hp;
    int N = c->n_active, W = hp->width, S = dt->S, H = hp->heads, hd = dt->hd;
    int R = N * n_tok;
    int64_t RW = (int64_t)R * W, RM = (int64_t)R * dt->M;
    unsigned gRW = jb_cuda_blocks(RW), gRM = jb_cuda_blocks(RM);
    cudaStream_t st = c->st;
    float *x = c->x;
    for (int d = 0; d < hp->depth; d++) {
        const DLayer &L = dt->layers[d];
        int cap = c->cap[d];
        if (layernorm(c, c->h, x, L.ln0_g, L.ln0_b, R, W, err)) return -1;
        if (linear(c, c->qkv, c->h, L.c_attn, R, err)) return -1;
        int q_stride = S;
        if (L.kind != 6) {
            q_stride = 3 * S;
            int64_t n = (int64_t)R * S;
            JB_LAUNCH(k_kv_store_pos, jb_cuda_blocks(n), JB_CUDA_BLOCK, st, n, c->k[d], c->v[d],
                      (const float *)c->qkv, n_tok, S, cap, (const int *)c->pos_dev,
                      L.kind == 7 ? 1 : 0, c->kv_f16);
            JB_CUDA_LAUNCHED(err);
        }
        jb_nn_attn_kind_t kind = {L.kind, dt->block_ctx, hp->encoder_dims, dt->prime_keys};
        int64_t na = (int64_t)R * H;
        JB_LAUNCH(k_attn_pos, jb_cuda_blocks(na), JB_CUDA_BLOCK, st, na, c->a, c->w,
                  (const float *)c->qkv, q_stride, (const void *)c->k[d],
                  (const void *)c->v[d], c->kv_f16, kind, n_tok, H, hd, cap,
                  (const int *)c->pos_dev,
                  c->w_cap, dt->scale);
        JB_CUDA_LAUNCHED(err);
        if (linear(c, c->t, c->a, L.c_proj, R, err)) return -1;
        const float *ln1_in = x;
        if (dt->res_scale == 1.0f) {
            JB_LAUNCH(k_add2, gRW, JB_CUDA_BLOCK, st, RW, x, (const float *)x,
                      (const float *)c->t);
        } else {
            JB_LAUNCH(k_res_half, gRW, JB_CUDA_BLOCK, st, RW, c->r, (const float *)x,
                      (const float *)c->t, dt->res_scale);
            ln1_in = c->r;
        }
        JB_CUDA_LAUNCHED(err);
        if (layernorm(c, c->h, ln1_in, L.ln1_g, L.ln1_b, R, W, err)) return -1;
        if (linear(c, c->m, c->h, L.fc, R, err)) return -1;
        JB_LAUNCH(k_gelu, gRM, JB_CUDA_BLOCK, st, RM, c->m);
        JB_CUDA_LAUNCHED(err);
        if (linear(c, c->r, c->m, L.mlp_proj, R, err)) return -1;
        if (dt->res_scale == 1.0f)
            JB_LAUNCH(k_add2, gRW, JB_CUDA_BLOCK, st, RW, x, (const float *)x,
                      (const float *)c->r);
        else
            JB_LAUNCH(k_res_full, gRW, JB_CUDA_BLOCK, st, RW, x, (const float *)c->t,
                      (const float *)c->r, dt->res_scale);
        JB_CUDA_LAUNCHED(err);
    }
    JB_LAUNCH(k_pos_add, 1, 1, st, (int64_t)1, c->pos_dev, n_tok);
    JB_CUDA_LAUNCHED(err);
    return 0;
}

// Capture the one-token step for the active batch as a graph.
int capture_step(jb_transformer_cuda_t *dt, jb_tcache_cuda_t *c, jb_err_t *err) {
    if (c->graph) {
        cudaGraphExecDestroy(c->graph);
        c->graph = NULL;
    }
    JB_CUDA_CHECK(cudaStreamBeginCapture(c->st, cudaStreamCaptureModeThreadLocal), err);
    int rc = enqueue_pass(dt, c, 1, err);
    cudaGraph_t g = NULL;
    cudaError_t e = cudaStreamEndCapture(c->st, &g);
    if (rc != 0) {
        if (g) cudaGraphDestroy(g);
        return jb_err_prefix(err, "capturing the step");
    }
    if (e != cudaSuccess) return jb_cuda_fail(err, __FILE__, __LINE__, "cudaStreamEndCapture", e);
    e = cudaGraphInstantiate(&c->graph, g, 0);
    cudaGraphDestroy(g);
    if (e != cudaSuccess) {
        c->graph = NULL;
        return jb_cuda_fail(err, __FILE__, __LINE__, "cudaGraphInstantiate", e);
    }
    c->graph_n = c->n_active;
    c->captures++;
    return 0;
}

}  // namespace

extern "C" {

int jb_tcache_cuda_set_encoder(jb_tcache_cuda_t *c, const float *encoder_kv, jb_err_t *err) {
    jb_transformer_cuda_t *dt = c->dt;
    int E = dt->hp.encoder_dims, S = dt->S, W = dt->hp.width;
    if (E <= 0) return jb_err_set(err, JB_EINVAL, "transformer has no encoder-decoder layers");
    int rows = c->n_active * E;
    JB_CUDA_CHECK(cudaMemcpyAsync(c->enc_in, encoder_kv, sizeof(float) * (size_t)rows * (size_t)W,
                                  cudaMemcpyHostToDevice, c->st),
                  err);
    for (int d = 0; d < dt->hp.depth; d++) {
        const DLayer &L = dt->layers[d];
        if (L.kind != 6) continue;
        if (linear(c, c->enc, c->enc_in, L.c_enc_kv, rows, err)) return -1;
        int64_t n = (int64_t)rows * S;
        JB_LAUNCH(k_enc_split, jb_cuda_blocks(n), JB_CUDA_BLOCK, c->st, n, c->k[d], c->v[d],
                  (const float *)c->enc, S, c->kv_f16);
        JB_CUDA_LAUNCHED(err);
    }
    JB_CUDA_CHECK(cudaStreamSynchronize(c->st), err);
    return 0;
}

int jb_transformer_cuda_forward(jb_transformer_cuda_t *dt, jb_tcache_cuda_t *c, int n_tok,
                                jb_err_t *err) {
    const jb_transformer_hp_t *hp = &dt->hp;
    if (c->dt != dt)
        return jb_err_set(err, JB_EINVAL, "device cache belongs to another transformer");
    if (n_tok < 1 || n_tok > c->max_chunk || c->pos + n_tok > hp->n_ctx)
        return jb_err_set(err, JB_EINVAL, "device pass of %d tokens at position %d (chunk max %d, "
                          "n_ctx %d)", n_tok, c->pos, c->max_chunk, hp->n_ctx);
    if (n_tok == 1 && c->use_graph) {
        if ((!c->graph || c->graph_n != c->n_active) && capture_step(dt, c, err)) return -1;
        JB_CUDA_CHECK(cudaGraphLaunch(c->graph, c->st), err);
        c->replays++;
    } else if (enqueue_pass(dt, c, n_tok, err)) {
        return -1;
    }
    c->pos += n_tok;
    return 0;
}

int jb_transformer_cuda_forward_host(jb_transformer_cuda_t *dt, jb_tcache_cuda_t *c, float *x,
                                     int n_tok, jb_err_t *err) {
    if (n_tok < 1 || n_tok > c->max_chunk)
        return jb_err_set(err, JB_EINVAL, "device pass of %d tokens (chunk max %d)", n_tok,
                          c->max_chunk);
    size_t bytes = sizeof(float) * (size_t)c->n_active * (size_t)n_tok * (size_t)dt->hp.width;
    JB_CUDA_CHECK(cudaMemcpyAsync(c->x, x, bytes, cudaMemcpyHostToDevice, c->st), err);
    if (jb_transformer_cuda_forward(dt, c, n_tok, err)) return -1;
    JB_CUDA_CHECK(cudaMemcpyAsync(x, c->x, bytes, cudaMemcpyDeviceToHost, c->st), err);
    JB_CUDA_CHECK(cudaStreamSynchronize(c->st), err);
    return 0;
}

}  // extern "C"
