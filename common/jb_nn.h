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

// ---- bodies --------------------------------------------------------------

// Row i of a LayerNorm (eps, biased variance, as torch.nn.LayerNorm).
// out, x: (rows, C); g, b: (C). out may alias x.
JB_HD static inline void jb_nn_layernorm_at(int64_t i, float *out, const float *x,
                                            const float *g, const float *b, int C, float eps) {
    const float *xr = x + i * C;
    float *yr = out + i * C;
    double s = 0;
    for (int c = 0; c < C; c++) s += xr[c];
    float mean = (float)(s / C);
    double v = 0;
    for (int c = 0; c < C; c++) {
        double d = (double)(xr[c] - mean);
        v += d * d;
    }
    float rstd = (float)(1.0 / sqrt(v / C + (double)eps));
    for (int c = 0; c < C; c++) yr[c] = (xr[c] - mean) * rstd * g[c] + b[c];
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

// Attention of one (batch n, query row r, head h), i = (n·rows + r)·H + h.
//   out: (N, rows, S) head slice h written      q: (N, rows, S) (q_stride floats per row)
//   kc, vc: (N, cap, S) caches; key position j lives in slot j % cap
//   w: (N·rows·H, w_cap) scratch; receives the softmax weights of the row
// S = n_state = H·hd; query row r is at position t0 + r. scale = 1/sqrt(hd).
JB_HD static inline void jb_nn_attn_at(int64_t i, float *out, float *w, const float *q,
                                       int q_stride, const float *kc, const float *vc,
                                       jb_nn_attn_kind_t kind, int rows, int H, int hd, int cap,
                                       int t0, int w_cap, float scale) {
    int h = (int)(i % H);
    int64_t nr = i / H;
    int r = (int)(nr % rows);
    int64_t n = nr / rows;
    int S = H * hd;
    int lo, step;
    int nk = jb_nn_attn_keys(&kind, t0 + r, &lo, &step);
    const float *qr = q + nr * q_stride + h * hd;
    float *o = out + nr * S + h * hd;
    float *wr = w + i * w_cap;
    if (nk == 0) {
        for (int d = 0; d < hd; d++) o[d] = 0.0f;
        return;
    }
    const float *kb = kc + n * (int64_t)cap * S + h * hd;
    const float *vb = vc + n * (int64_t)cap * S + h * hd;
    float m = -INFINITY;
    for (int e = 0; e < nk; e++) {
        int slot = (lo + e * step) % cap;
        const float *kr = kb + (int64_t)slot * S;
        float s = 0;
        for (int d = 0; d < hd; d++) s += qr[d] * kr[d];
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
        const float *vr = vb + (int64_t)slot * S;
        float p = wr[e];
        for (int d = 0; d < hd; d++) o[d] += p * vr[d];
    }
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
#endif

#endif
