// jb_nn.h: the element-wise and row-wise kernels of the transformer priors
// (LayerNorm, quick-GELU, add, embedding gather, softmax, attention over a
// key/value cache), written once as JB_HD bodies (see jb_kernels.h).
//
// The bodies below are compiled for the CPU by the launchers in jb_nn.c
// (OpenMP loops) and for CUDA by common/cuda/jb_nn.cu (one thread per index),
// so the CPU tests run the very code the GPU runs.
//
// Thread rules: reentrant; the CPU launchers use the caller's OpenMP pool.
// Ownership: every pointer is borrowed; nothing here allocates.
#ifndef JB_NN_H
#define JB_NN_H

#include <math.h>
#include <stdint.h>

#include "jb_kernels.h"
#include "jb_tensor.h"

// ---- bodies --------------------------------------------------------------

// Row i of a LayerNorm (eps, biased variance, as torch.nn.LayerNorm).
// out, x: (rows, C); g, b: (C). out may alias x.
JB_HD static inline void jb_nn_layernorm_at(int64_t i, float *out, const float *x,
                                            const float *g, const float *b, int C, float eps) {
    const float *xr = x + i * C;
    float *yr = out + i * C;
    // Sums in double, four partial sums each (lane j takes c = j mod 4): a single chain
    // waits on the adder's latency at every element.
    double s[4] = {0, 0, 0, 0}, v[4] = {0, 0, 0, 0};
    int c = 0;
    for (; c + 4 <= C; c += 4)
        for (int j = 0; j < 4; j++) s[j] += xr[c + j];
    for (; c < C; c++) s[0] += xr[c];
    float mean = (float)(((s[0] + s[1]) + (s[2] + s[3])) / C);
    for (c = 0; c + 4 <= C; c += 4)
        for (int j = 0; j < 4; j++) {
            double d = (double)(xr[c + j] - mean);
            v[j] += d * d;
        }
    for (; c < C; c++) {
        double d = (double)(xr[c] - mean);
        v[0] += d * d;
    }
    float rstd = (float)(1.0 / sqrt(((v[0] + v[1]) + (v[2] + v[3])) / C + (double)eps));
    for (c = 0; c < C; c++) yr[c] = (xr[c] - mean) * rstd * g[c] + b[c];
}

// quick_gelu in place: x·sigmoid(1.702·x). x: (n)
JB_HD static inline void jb_nn_quick_gelu_at(int64_t i, float *x) {
    float z = 1.702f * x[i];
    x[i] = x[i] * (1.0f / (1.0f + expf(-z)));
}

// y = a + b elementwise. y: (n) may alias a or b.
JB_HD static inline void jb_nn_add_at(int64_t i, float *y, const float *a, const float *b) {
    y[i] = a[i] + b[i];
}

// y += a elementwise, a repeated with period `period` (a row broadcast over rows).
JB_HD static inline void jb_nn_add_bcast_at(int64_t i, float *y, const float *a, int64_t period) {
    y[i] += a[i % period];
}

// Embedding gather: out[r] = table[ids[r]]. out: (rows, C); table: (V, C); ids: (rows)
// An id outside [0, V) reads row 0 (callers validate ids; a body cannot report errors).
JB_HD static inline void jb_nn_embed_at(int64_t i, float *out, const float *table,
                                        const int32_t *ids, int C, int V) {
    int64_t r = i / C, c = i % C;
    int32_t id = ids[r];
    if (id < 0 || id >= V) id = 0;
    out[i] = table[(int64_t)id * C + c];
}

// Softmax of row i in place (max-subtracted, as torch.softmax). x: (rows, n)
JB_HD static inline void jb_nn_softmax_at(int64_t i, float *x, int n) {
    float *r = x + i * n;
    float m = -INFINITY;
    for (int j = 0; j < n; j++) m = r[j] > m ? r[j] : m;
    float s = 0;
    for (int j = 0; j < n; j++) {
        r[j] = expf(r[j] - m);
        s += r[j];
    }
    for (int j = 0; j < n; j++) r[j] = r[j] / s;
}

// Which keys a query sees: positions lo, lo+step, ..., hi (hi < lo: none).
typedef struct {
    int kind;       // attn_func: 0 dense, 1 block, 2 transpose, 3 previous block, 6 enc-dec, 7 prime
    int block_ctx;  // kinds 1-3
    int n_enc;      // kind 6: encoder positions
    int prime_len;  // kind 7: keys are positions < prime_len
} jb_nn_attn_kind_t;

// Key positions of the query at position pos (README section F's masks).
// Returns the number of keys; *lo and *step describe them. Kind 3 in the
// first block returns 0: the reference pads with zero keys and values, so its
// output is 0.
JB_HD static inline int jb_nn_attn_keys(const jb_nn_attn_kind_t *k, int pos, int *lo,
                                        int *step) {
    int bc = k->block_ctx;
    *step = 1;
    switch (k->kind) {
    case 0: *lo = 0; return pos + 1;
    case 1: *lo = pos - pos % bc; return pos % bc + 1;
    case 2: *lo = pos % bc; *step = bc; return pos / bc + 1;
    case 3:
        if (pos < bc) { *lo = 0; return 0; }
        *lo = (pos / bc - 1) * bc;
        return bc;
    case 6: *lo = 0; return k->n_enc;
    case 7: *lo = 0; return (pos < k->prime_len ? pos : k->prime_len - 1) + 1;
    default: *lo = 0; return 0;
    }
}

// Key/value cache rows in float32 or float16 (a device cache may keep them as f16): the
// element type is chosen per row, outside the inner loops.
// q · k over hd values of row kr (element offset off of kc)
JB_HD static inline float jb_nn_kv_dot(const float *q, const void *kc, int64_t off, int hd,
                                       int kv_f16) {
    // Eight partial sums (lane j takes d = j mod 8), added pairwise at the end: one chain
    // of hd additions would leave a core waiting on the adder's latency (a step's attention
    // over 128 keys of hd 480 took ~8 % of an upsampler's step); eight vectorize.
    float a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int d = 0;
    if (kv_f16) {
        const uint16_t *kr = (const uint16_t *)kc + off;
        for (; d + 8 <= hd; d += 8)
            for (int j = 0; j < 8; j++) a[j] += q[d + j] * jb_f16_to_f32(kr[d + j]);
        for (; d < hd; d++) a[0] += q[d] * jb_f16_to_f32(kr[d]);
    } else {
        const float *kr = (const float *)kc + off;
        for (; d + 8 <= hd; d += 8)
            for (int j = 0; j < 8; j++) a[j] += q[d + j] * kr[d + j];
        for (; d < hd; d++) a[0] += q[d] * kr[d];
    }
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}
// o += p · v over hd values of row off of vc. Written in blocks of eight: as a plain loop the
// compiler could not rule out o overlapping the cache and kept it scalar (a load, add and
// store an element), 40 % of a top-prior step (width 192, 4 heads of 24, 1072 keys).
JB_HD static inline void jb_nn_kv_axpy(float *o, float p, const void *vc, int64_t off, int hd,
                                       int kv_f16) {
    if (kv_f16) {
        const uint16_t *vr = (const uint16_t *)vc + off;
        for (int d = 0; d < hd; d++) o[d] += p * jb_f16_to_f32(vr[d]);
    } else {
        const float *vr = (const float *)vc + off;
        int d = 0;
        for (; d + 8 <= hd; d += 8) {   // all eight loaded before any is stored: one vector
            float t[8];
            for (int j = 0; j < 8; j++) t[j] = o[d + j] + p * vr[d + j];
            for (int j = 0; j < 8; j++) o[d + j] = t[j];
        }
        for (; d < hd; d++) o[d] += p * vr[d];
    }
}

// Item i = (n·rows + r)·H + h of an attention pass: its head h, its (batch, row) index
// nr = n·rows + r, its batch n, and the keys its query (position t0 + r) sees.
typedef struct {
    int h, nk, lo, step;   // nk keys at positions lo, lo + step, ... (jb_nn_attn_keys)
    int64_t nr, n;
} jb_nn_attn_item_t;

JB_HD static inline jb_nn_attn_item_t jb_nn_attn_item(int64_t i, const jb_nn_attn_kind_t *kind,
                                                      int rows, int H, int t0) {
    jb_nn_attn_item_t it;
    it.h = (int)(i % H);
    it.nr = i / H;
    it.n = it.nr / rows;
    it.nk = jb_nn_attn_keys(kind, t0 + (int)(it.nr % rows), &it.lo, &it.step);
    return it;
}

// Attention of one (batch n, query row r, head h), i = (n·rows + r)·H + h.
//   out: (N, rows, S) head slice h written      q: (N, rows, S) (q_stride floats per row)
//   kc, vc: (N, cap, S) caches, float32 (kv_f16 0) or float16 (kv_f16 1); key position j
//           lives in slot j % cap
//   w: (N·rows·H, w_cap) scratch; receives the softmax weights of the row
// S = n_state = H·hd; query row r is at position t0 + r. scale = 1/sqrt(hd).
JB_HD static inline void jb_nn_attn_kv_at(int64_t i, float *out, float *w, const float *q,
                                          int q_stride, const void *kc, const void *vc,
                                          int kv_f16, jb_nn_attn_kind_t kind, int rows, int H,
                                          int hd, int cap, int t0, int w_cap, float scale) {
    jb_nn_attn_item_t it = jb_nn_attn_item(i, &kind, rows, H, t0);
    int h = it.h, nk = it.nk, lo = it.lo, step = it.step;
    int64_t nr = it.nr, n = it.n;
    int S = H * hd;
    const float *qr = q + nr * q_stride + h * hd;
    float *o = out + nr * S + h * hd;
    float *wr = w + i * w_cap;
    if (nk == 0) {
        for (int d = 0; d < hd; d++) o[d] = 0.0f;
        return;
    }
    int64_t base = n * (int64_t)cap * S + h * hd;
    float m = -INFINITY;
    for (int e = 0; e < nk; e++) {
        int slot = (lo + e * step) % cap;
        float s = jb_nn_kv_dot(qr, kc, base + (int64_t)slot * S, hd, kv_f16);
        s *= scale;
        wr[e] = s;
        m = s > m ? s : m;
    }
    float sum = 0;
    for (int e = 0; e < nk; e++) {
        wr[e] = expf(wr[e] - m);
        sum += wr[e];
    }
    for (int e = 0; e < nk; e++) wr[e] = wr[e] / sum;
    for (int d = 0; d < hd; d++) o[d] = 0.0f;
    for (int e = 0; e < nk; e++) {
        int slot = (lo + e * step) % cap;
        jb_nn_kv_axpy(o, wr[e], vc, base + (int64_t)slot * S, hd, kv_f16);
    }
}

// The same with float32 caches kc, vc: (N, cap, S).
JB_HD static inline void jb_nn_attn_at(int64_t i, float *out, float *w, const float *q,
                                       int q_stride, const float *kc, const float *vc,
                                       jb_nn_attn_kind_t kind, int rows, int H, int hd, int cap,
                                       int t0, int w_cap, float scale) {
    jb_nn_attn_kv_at(i, out, w, q, q_stride, kc, vc, 0, kind, rows, H, hd, cap, t0, w_cap,
                     scale);
}

// ---- CPU launchers (jb_nn.c) -----------------------------------------------

// out, x: (rows, C); g, b: (C); out may alias x
void jb_nn_layernorm(float *out, const float *x, const float *g, const float *b, int64_t rows,
                     int C, float eps);
// x: (n) in place
void jb_nn_quick_gelu(float *x, int64_t n);
// y, a, b: (n)
void jb_nn_add(float *y, const float *a, const float *b, int64_t n);
// y: (n) += a[i % period]; a: (period)
void jb_nn_add_bcast(float *y, const float *a, int64_t n, int64_t period);
// out: (rows, C); table: (V, C); ids: (rows)
void jb_nn_embed(float *out, const float *table, const int32_t *ids, int64_t rows, int C, int V);
// x: (rows, n) in place
void jb_nn_softmax(float *x, int64_t rows, int n);
// See jb_nn_attn_at: all N·rows·H (batch, row, head) triples.
void jb_nn_attn(float *out, float *w, const float *q, int q_stride, const float *kc,
                const float *vc, jb_nn_attn_kind_t kind, int N, int rows, int H, int hd, int cap,
                int t0, int w_cap, float scale);

#ifdef JB_HAVE_CUDA
// CUDA launchers (common/cuda/jb_nn.cu): same arguments, device pointers,
// asynchronous on the default stream. Return 0, or -1 when the launch fails.
int jb_nn_cuda_layernorm(float *out, const float *x, const float *g, const float *b,
                         int64_t rows, int C, float eps);
int jb_nn_cuda_quick_gelu(float *x, int64_t n);
int jb_nn_cuda_add(float *y, const float *a, const float *b, int64_t n);
int jb_nn_cuda_add_bcast(float *y, const float *a, int64_t n, int64_t period);
int jb_nn_cuda_embed(float *out, const float *table, const int32_t *ids, int64_t rows, int C,
                     int V);
int jb_nn_cuda_softmax(float *x, int64_t rows, int n);
int jb_nn_cuda_attn(float *out, float *w, const float *q, int q_stride, const float *kc,
                    const float *vc, jb_nn_attn_kind_t kind, int N, int rows, int H, int hd,
                    int cap, int t0, int w_cap, float scale);
// Block-cooperative versions of jb_nn_cuda_layernorm / _softmax: one block of
// JB_NN_ROW_THREADS threads per row, a shared-memory tree reduction with barriers (on a GPU a
// row of 4800 values is then 256 threads' work instead of one's). stream: a cudaStream_t
// (NULL: the legacy default stream). Same results up to the order of the sums.
#define JB_NN_ROW_THREADS 256
int jb_nn_cuda_layernorm_block(float *out, const float *x, const float *g, const float *b,
                               int64_t rows, int C, float eps, void *stream);
int jb_nn_cuda_softmax_block(float *x, int64_t rows, int n, void *stream);
#endif

#endif
