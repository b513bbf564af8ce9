// jb_grad.c: see jb_grad.h.
#include "jb_grad.h"

#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jb_vexpf.h"

// Loops of fewer element operations than this (about half a millisecond on one core) run on
// the calling thread: a parallel region costs more than it saves there, and far more on a
// loaded machine (measured: the tiny golden top prior took 300-400 ms a step with every loop
// parallel on 2 busy cores, 7 ms with this threshold).
#define PAR_MIN (1 << 20)

// ---- LayerNorm ---------------------------------------------------------------------------

void jb_grad_layernorm_forward(float *out, float *mean, float *rstd, const float *x,
                               const float *g, const float *b, int64_t R, int C) {
#pragma omp parallel for if (R * C > PAR_MIN)
    for (int64_t i = 0; i < R; i++) {
        const float *xr = x + i * C;
        float *yr = out + i * C;
        double s = 0;
        for (int c = 0; c < C; c++) s += xr[c];
        float m = (float)(s / C);
        double v = 0;
        for (int c = 0; c < C; c++) {
            double d = (double)(xr[c] - m);
            v += d * d;
        }
        float rs = (float)(1.0 / sqrt(v / C + 1e-5));
        for (int c = 0; c < C; c++) yr[c] = (xr[c] - m) * rs * g[c] + b[c];
        mean[i] = m, rstd[i] = rs;
    }
}

void jb_grad_layernorm_backward(float *dx, float *dg, float *db, const float *dout,
                                const float *x, const float *mean, const float *rstd,
                                const float *g, int64_t R, int C) {
    // Weight gradients sum over rows (serial: rows race on dg/db); dx rows are independent.
    for (int64_t i = 0; i < R; i++) {
        const float *xr = x + i * C, *dy = dout + i * C;
        for (int c = 0; c < C; c++) {
            float xh = (xr[c] - mean[i]) * rstd[i];
            dg[c] += dy[c] * xh;
            db[c] += dy[c];
        }
    }
#pragma omp parallel for if (R * C > PAR_MIN)
    for (int64_t i = 0; i < R; i++) {
        const float *xr = x + i * C, *dy = dout + i * C;
        float *dxr = dx + i * C;
        double s1 = 0, s2 = 0;
        for (int c = 0; c < C; c++) {
            double xh = (double)(xr[c] - mean[i]) * rstd[i];
            double dxh = (double)dy[c] * g[c];
            s1 += dxh;
            s2 += dxh * xh;
        }
        s1 /= C, s2 /= C;
        for (int c = 0; c < C; c++) {
            double xh = (double)(xr[c] - mean[i]) * rstd[i];
            double dxh = (double)dy[c] * g[c];
            dxr[c] += (float)(rstd[i] * (dxh - s1 - xh * s2));
        }
    }
}

// ---- linear ------------------------------------------------------------------------------

void jb_grad_linear_forward(float *out, const float *x, const float *w, const float *b, int M,
                            int K, int N) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, x, K, w, N, 0.0f, out,
                N);
    if (b)
        for (int64_t i = 0; i < M; i++)
            for (int j = 0; j < N; j++) out[i * N + j] += b[j];
}

void jb_grad_linear_backward(float *dx, float *dw, float *db, const float *dout, const float *x,
                             const float *w, int M, int K, int N) {
    if (dx)   // (M, N)·(K, N)ᵀ
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, K, N, 1.0f, dout, N, w, N, 1.0f,
                    dx, K);
    // (M, K)ᵀ·(M, N)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, N, M, 1.0f, x, K, dout, N, 1.0f, dw,
                N);
    if (db)
        for (int64_t i = 0; i < M; i++)
            for (int j = 0; j < N; j++) db[j] += dout[i * N + j];
}

void jb_grad_proj_t_forward(float *out, const float *x, const float *e, int M, int K, int V) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, V, K, 1.0f, x, K, e, K, 0.0f, out, V);
}

void jb_grad_proj_t_backward(float *dx, float *de, const float *dout, const float *x,
                             const float *e, int M, int K, int V) {
    if (dx)   // (M, V)·(V, K)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, K, V, 1.0f, dout, V, e, K, 1.0f,
                    dx, K);
    // (M, V)ᵀ·(M, K)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, V, K, M, 1.0f, dout, V, x, K, 1.0f, de,
                K);
}

// ---- element-wise ------------------------------------------------------------------------

void jb_grad_embed_backward(float *dtable, const float *dout, const int32_t *ids, int64_t rows,
                            int C) {
    for (int64_t r = 0; r < rows; r++) {
        if (ids[r] < 0) continue;
        float *d = dtable + (int64_t)ids[r] * C;
        const float *s = dout + r * C;
        for (int c = 0; c < C; c++) d[c] += s[c];
    }
}

void jb_grad_quick_gelu_forward(float *out, const float *u, int64_t n) {
    if (out != u) memcpy(out, u, sizeof(float) * (size_t)n);
    jb_nn_quick_gelu(out, n);   // the inference launcher: the same floats
}

// exp(-1.702 u) through jb_vexpf_scaled (expf's bits, eight at a time) in chunks of GELU_CHUNK
#define GELU_CHUNK 1024

void jb_grad_quick_gelu_backward(float *du, const float *dout, const float *u, int64_t n) {
    int64_t chunks = (n + GELU_CHUNK - 1) / GELU_CHUNK;
#pragma omp parallel for if (n > PAR_MIN)
    for (int64_t c = 0; c < chunks; c++) {
        int64_t i0 = c * GELU_CHUNK, m = n - i0 < GELU_CHUNK ? n - i0 : GELU_CHUNK;
        float e[GELU_CHUNK];
        jb_vexpf_scaled(e, u + i0, -1.702f, m);   // exp(-z), z = 1.702 u
        for (int64_t i = 0; i < m; i++) {
            float z = 1.702f * u[i0 + i];
            float sg = 1.0f / (1.0f + e[i]);
            du[i0 + i] += dout[i0 + i] * sg * (z * (1.0f - sg) + 1.0f);
        }
    }
}

void jb_grad_relu_forward(float *out, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = x[i] > 0 ? x[i] : 0.0f;
}

void jb_grad_relu_backward(float *dx, const float *dout, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (x[i] > 0) dx[i] += dout[i];
}

// ---- attention ------------------------------------------------------------------------------

// The reference computes 1/sqrt(sqrt(hd)) in double and multiplies float32 q and k by it.
static float attn_scale(int hd) { return (float)(1.0 / sqrt(sqrt((double)hd))); }

// The keys of every query of a kind but the transposed one (2) are one contiguous run, so
// a tile of queries sees one contiguous span of keys and its scores are one product. Those
// kinds run as products over tiles of ATTN_TILE queries (the span's scores stay in cache);
// kind 2 walks its strided keys one at a time. Measured on the bundled top prior (hd 16,
// 1072 positions, 1 thread): the per-key loops took 35 % of a training step.
#define ATTN_TILE 64

// The keys of queries t0 .. t1-1: [*klo, *khi). Returns 0 when none sees any key.
static int tile_key_span(jb_nn_attn_kind_t kind, int t0, int t1, int *klo, int *khi) {
    int lo_min = INT32_MAX, hi_max = 0;
    for (int t = t0; t < t1; t++) {
        int lo, step;
        int nk = jb_nn_attn_keys(&kind, t, &lo, &step);
        if (nk == 0) continue;
        if (lo < lo_min) lo_min = lo;
        if (lo + nk > hi_max) hi_max = lo + nk;
    }
    *klo = lo_min;
    *khi = hi_max;
    return hi_max > 0;
}

// A thread's scratch for one tile; these void functions cannot return an error, and a
// trainer without its few hundred KiB cannot go on.
static float *tile_alloc(size_t floats) {
    float *p = malloc(sizeof(float) * floats);
    if (!p) {
        fprintf(stderr, "jb_grad attention: out of memory (%zu bytes of tile scratch)\n",
                sizeof(float) * floats);
        abort();
    }
    return p;
}

// rows (n, t0 .. t0+rows-1) of x, head h, times s, into out: (rows, hd)
static void gather_scaled(float *out, const float *x, int stride, int64_t row0, int rows, int h,
                          int hd, float s) {
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (row0 + r) * stride + h * hd;
        for (int d = 0; d < hd; d++) out[(int64_t)r * hd + d] = xr[d] * s;
    }
}

static void attn_forward_tiled(float *a, float *w, const float *q, int q_stride, const float *k,
                               const float *v, int kv_stride, jb_nn_attn_kind_t kind, int N,
                               int T, int Tk, int H, int hd, int kmax) {
    float s = attn_scale(hd);
    int S = H * hd;
    int tiles = (T + ATTN_TILE - 1) / ATTN_TILE;
    int64_t jobs = (int64_t)N * H * tiles;
    int nb = openblas_get_num_threads();
    openblas_set_num_threads(1);   // the products run inside the parallel loop
#pragma omp parallel if ((int64_t)N * H * T * Tk * hd > PAR_MIN)
    {
        float *qs = tile_alloc((size_t)ATTN_TILE * hd);
        float *ks = tile_alloc((size_t)Tk * hd);
        float *p = tile_alloc((size_t)ATTN_TILE * Tk);
#pragma omp for schedule(dynamic)
        for (int64_t j = 0; j < jobs; j++) {
            int tile = (int)(j % tiles), h = (int)(j / tiles % H);
            int64_t n = j / tiles / H;
            int t0 = tile * ATTN_TILE, rows = T - t0 < ATTN_TILE ? T - t0 : ATTN_TILE;
            int klo, khi;
            if (!tile_key_span(kind, t0, t0 + rows, &klo, &khi)) {
                for (int r = 0; r < rows; r++)
                    memset(a + (n * T + t0 + r) * S + h * hd, 0, sizeof(float) * hd);
                continue;
            }
            int span = khi - klo;
            gather_scaled(qs, q, q_stride, n * T + t0, rows, h, hd, s);
            gather_scaled(ks, k, kv_stride, n * Tk + klo, span, h, hd, s);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, span, hd, 1.0f, qs, hd, ks,
                        hd, 0.0f, p, span);
            for (int r = 0; r < rows; r++) {
                int lo, step;
                int nk = jb_nn_attn_keys(&kind, t0 + r, &lo, &step);
                float *pr = p + (int64_t)r * span;
                float *wr = w + ((n * T + t0 + r) * H + h) * kmax;
                float m = -INFINITY, sum = 0;
                for (int e = 0; e < nk; e++) m = pr[lo - klo + e] > m ? pr[lo - klo + e] : m;
                jb_vexpf_shifted(wr, pr + lo - klo, m, nk);   // expf's bits, eight at a time
                for (int e = 0; e < nk; e++) sum += wr[e];
                for (int e = 0; e < nk; e++) wr[e] = wr[e] / sum;
                // the row of P over the span: the weights inside the query's keys, 0 elsewhere
                memset(pr, 0, sizeof(float) * span);
                if (nk > 0) memcpy(pr + lo - klo, wr, sizeof(float) * nk);
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, hd, span, 1.0f, p, span,
                        v + (n * Tk + klo) * kv_stride + h * hd, kv_stride, 0.0f,
                        a + (n * T + t0) * S + h * hd, S);
        }
        free(qs);
        free(ks);
        free(p);
    }
    openblas_set_num_threads(nb);
}

// One (sequence, head) per parallel iteration and its tiles in order, so every key's dk and dv
// sums run in one order whatever the thread count.
static void attn_backward_tiled(float *dq, float *dk, float *dv, const float *da, const float *w,
                                const float *q, int q_stride, const float *k, const float *v,
                                int kv_stride, jb_nn_attn_kind_t kind, int N, int T, int Tk,
                                int H, int hd, int kmax) {
    float s = attn_scale(hd);
    int S = H * hd;
    int tiles = (T + ATTN_TILE - 1) / ATTN_TILE;
    int nb = openblas_get_num_threads();
    openblas_set_num_threads(1);
#pragma omp parallel if ((int64_t)N * H * T * Tk * hd > PAR_MIN)
    {
        float *qs = tile_alloc((size_t)ATTN_TILE * hd);
        float *ks = tile_alloc((size_t)Tk * hd);
        float *p = tile_alloc((size_t)ATTN_TILE * Tk);
        float *dp = tile_alloc((size_t)ATTN_TILE * Tk);
#pragma omp for schedule(dynamic)
        for (int64_t nh = 0; nh < (int64_t)N * H; nh++) {
            int h = (int)(nh % H);
            int64_t n = nh / H;
            for (int tile = 0; tile < tiles; tile++) {
                int t0 = tile * ATTN_TILE, rows = T - t0 < ATTN_TILE ? T - t0 : ATTN_TILE;
                int klo, khi;
                if (!tile_key_span(kind, t0, t0 + rows, &klo, &khi)) continue;
                int span = khi - klo;
                const float *dat = da + (n * T + t0) * S + h * hd;
                const float *vt = v + (n * Tk + klo) * kv_stride + h * hd;
                // dP = dA · Vᵀ over the span
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, span, hd, 1.0f, dat, S,
                            vt, kv_stride, 0.0f, dp, span);
                for (int r = 0; r < rows; r++) {
                    int lo, step;
                    int nk = jb_nn_attn_keys(&kind, t0 + r, &lo, &step);
                    const float *wr = w + ((n * T + t0 + r) * H + h) * kmax;
                    float *pr = p + (int64_t)r * span, *dpr = dp + (int64_t)r * span;
                    float dot = 0;
                    for (int e = 0; e < nk; e++) dot += wr[e] * dpr[lo - klo + e];
                    memset(pr, 0, sizeof(float) * span);
                    // p keeps P (for dV), dp becomes the scaled logits' gradient P ⊙ (dP − dot)
                    for (int e = 0; e < span; e++) {
                        int in = e >= lo - klo && e < lo - klo + nk;
                        float pw = in ? wr[e - (lo - klo)] : 0.0f;
                        pr[e] = pw;
                        dpr[e] = pw * (dpr[e] - dot);
                    }
                }
                // dV += Pᵀ · dA
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, span, hd, rows, 1.0f, p, span,
                            dat, S, 1.0f, dv + (n * Tk + klo) * kv_stride + h * hd, kv_stride);
                // dQ += s · dS · (s K), dK += s · dSᵀ · (s Q): the logits are (s q) · (s k)
                gather_scaled(ks, k, kv_stride, n * Tk + klo, span, h, hd, s);
                gather_scaled(qs, q, q_stride, n * T + t0, rows, h, hd, s);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, hd, span, s, dp, span,
                            ks, hd, 1.0f, dq + (n * T + t0) * q_stride + h * hd, q_stride);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, span, hd, rows, s, dp, span,
                            qs, hd, 1.0f, dk + (n * Tk + klo) * kv_stride + h * hd, kv_stride);
            }
        }
        free(qs);
        free(ks);
        free(p);
        free(dp);
    }
    openblas_set_num_threads(nb);
}

void jb_grad_attn_forward(float *a, float *w, const float *q, int q_stride, const float *k,
                          const float *v, int kv_stride, jb_nn_attn_kind_t kind, int N, int T,
                          int Tk, int H, int hd, int kmax) {
    if (kind.kind != 2) {
        attn_forward_tiled(a, w, q, q_stride, k, v, kv_stride, kind, N, T, Tk, H, hd, kmax);
        return;
    }
    float s = attn_scale(hd);
    int S = H * hd;
    int64_t total = (int64_t)N * T * H;
#pragma omp parallel for if (total * Tk * hd > PAR_MIN)
    for (int64_t i = 0; i < total; i++) {
        int h = (int)(i % H);
        int64_t nt = i / H;
        int t = (int)(nt % T);
        int64_t n = nt / T;
        int lo, step;
        int nk = jb_nn_attn_keys(&kind, t, &lo, &step);
        const float *qr = q + nt * q_stride + h * hd;
        float *o = a + nt * S + h * hd;
        float *wr = w + i * kmax;
        for (int d = 0; d < hd; d++) o[d] = 0.0f;
        if (nk == 0) continue;
        float m = -INFINITY;
        for (int e = 0; e < nk; e++) {
            const float *kr = k + (n * Tk + lo + (int64_t)e * step) * kv_stride + h * hd;
            float acc = 0;
            for (int d = 0; d < hd; d++) acc += (qr[d] * s) * (kr[d] * s);
            wr[e] = acc;
            m = acc > m ? acc : m;
        }
        float sum = 0;
        jb_vexpf_shifted(wr, wr, m, nk);
        for (int e = 0; e < nk; e++) sum += wr[e];
        for (int e = 0; e < nk; e++) wr[e] = wr[e] / sum;
        for (int e = 0; e < nk; e++) {
            const float *vr = v + (n * Tk + lo + (int64_t)e * step) * kv_stride + h * hd;
            for (int d = 0; d < hd; d++) o[d] += wr[e] * vr[d];
        }
    }
}

void jb_grad_attn_backward(float *dq, float *dk, float *dv, const float *da, const float *w,
                           const float *q, int q_stride, const float *k, const float *v,
                           int kv_stride, jb_nn_attn_kind_t kind, int N, int T, int Tk, int H,
                           int hd, int kmax) {
    if (kind.kind != 2) {
        attn_backward_tiled(dq, dk, dv, da, w, q, q_stride, k, v, kv_stride, kind, N, T, Tk, H,
                            hd, kmax);
        return;
    }
    float s = attn_scale(hd);
    int S = H * hd;
    // One (sequence, head) per iteration: keys and values of a head are shared by its queries.
#pragma omp parallel if ((int64_t)N * H * T * Tk * hd > PAR_MIN)
    {
        float dp[kmax > 0 ? kmax : 1];
#pragma omp for
        for (int64_t nh = 0; nh < (int64_t)N * H; nh++) {
            int h = (int)(nh % H);
            int64_t n = nh / H;
            for (int t = 0; t < T; t++) {
                int64_t nt = n * T + t;
                int lo, step;
                int nk = jb_nn_attn_keys(&kind, t, &lo, &step);
                if (nk == 0) continue;
                const float *wr = w + (nt * H + h) * kmax;
                const float *dar = da + nt * S + h * hd;
                const float *qr = q + nt * q_stride + h * hd;
                float *dqr = dq + nt * q_stride + h * hd;
                float dot = 0;
                for (int e = 0; e < nk; e++) {
                    int64_t row = (n * Tk + lo + (int64_t)e * step) * kv_stride + h * hd;
                    const float *vr = v + row;
                    float *dvr = dv + row;
                    float acc = 0;
                    for (int d = 0; d < hd; d++) {
                        acc += dar[d] * vr[d];
                        dvr[d] += wr[e] * dar[d];
                    }
                    dp[e] = acc;
                    dot += wr[e] * acc;
                }
                for (int e = 0; e < nk; e++) {
                    float dsc = wr[e] * (dp[e] - dot);   // gradient of the scaled logit
                    int64_t row = (n * Tk + lo + (int64_t)e * step) * kv_stride + h * hd;
                    const float *kr = k + row;
                    float *dkr = dk + row;
                    for (int d = 0; d < hd; d++) {
                        dqr[d] += dsc * (kr[d] * s) * s;
                        dkr[d] += dsc * (qr[d] * s) * s;
                    }
                }
            }
        }
    }
}

// ---- cross-entropy ----------------------------------------------------------------------------

double jb_grad_ce_bits(float *dlogits, const float *logits, const int32_t *targets,
                       int64_t rows, int V, double weight) {
    double total = 0;
    double f = weight / ((double)rows * M_LN2);
#pragma omp parallel for reduction(+ : total) if (rows * V > PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *l = logits + r * V;
        float m = -INFINITY;
        for (int j = 0; j < V; j++) m = l[j] > m ? l[j] : m;
        double sum = 0;
        for (int j = 0; j < V; j++) sum += exp((double)l[j] - m);
        double lse = m + log(sum);
        total += lse - l[targets[r]];
        if (dlogits) {
            float *d = dlogits + r * V;
            for (int j = 0; j < V; j++) {
                double p = exp((double)l[j] - lse);
                d[j] += (float)(f * (p - (j == targets[r])));
            }
        }
    }
    return total / (double)rows / M_LN2;
}
