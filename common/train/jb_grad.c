// jb_grad.c: see jb_grad.h.
#include "jb_grad.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

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
#pragma omp parallel for if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) out[i] = u[i] * (1.0f / (1.0f + expf(-1.702f * u[i])));
}

void jb_grad_quick_gelu_backward(float *du, const float *dout, const float *u, int64_t n) {
#pragma omp parallel for if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        float z = 1.702f * u[i];
        float sg = 1.0f / (1.0f + expf(-z));
        du[i] += dout[i] * sg * (z * (1.0f - sg) + 1.0f);
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

void jb_grad_attn_forward(float *a, float *w, const float *q, int q_stride, const float *k,
                          const float *v, int kv_stride, jb_nn_attn_kind_t kind, int N, int T,
                          int Tk, int H, int hd, int kmax) {
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
        for (int e = 0; e < nk; e++) {
            wr[e] = expf(wr[e] - m);
            sum += wr[e];
        }
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

// ---- convolutions -------------------------------------------------------------------------------

void jb_grad_conv1d_forward(float *out, const float *in, const float *w, const float *b, int L,
                            int Ci, int Co, int k, int dil, int pad) {
#pragma omp parallel for if ((int64_t)L * Co * Ci * k > PAR_MIN)
    for (int t = 0; t < L; t++) {
        float *o = out + (int64_t)t * Co;
        for (int co = 0; co < Co; co++) {
            float acc = b[co];
            for (int j = 0; j < k; j++) {
                int src = t + j * dil - pad;
                if (src < 0 || src >= L) continue;
                const float *x = in + (int64_t)src * Ci;
                const float *wr = w + (int64_t)co * Ci * k + j;
                for (int ci = 0; ci < Ci; ci++) acc += x[ci] * wr[(int64_t)ci * k];
            }
            o[co] = acc;
        }
    }
}

void jb_grad_conv1d_backward(float *din, float *dw, float *db, const float *dout,
                             const float *in, const float *w, int L, int Ci, int Co, int k,
                             int dil, int pad) {
    for (int t = 0; t < L; t++) {
        const float *dy = dout + (int64_t)t * Co;
        for (int co = 0; co < Co; co++) {
            float g = dy[co];
            db[co] += g;
            for (int j = 0; j < k; j++) {
                int src = t + j * dil - pad;
                if (src < 0 || src >= L) continue;
                const float *x = in + (int64_t)src * Ci;
                float *dx = din ? din + (int64_t)src * Ci : NULL;
                const float *wr = w + (int64_t)co * Ci * k + j;
                float *dwr = dw + (int64_t)co * Ci * k + j;
                for (int ci = 0; ci < Ci; ci++) {
                    dwr[(int64_t)ci * k] += g * x[ci];
                    if (dx) dx[ci] += g * wr[(int64_t)ci * k];
                }
            }
        }
    }
}

void jb_grad_convt1d_forward(float *out, const float *in, const float *w, const float *b, int L,
                             int Ci, int Co, int k, int s, int pad) {
    int Lo = (L - 1) * s - 2 * pad + k;
    for (int o = 0; o < Lo; o++) memcpy(out + (int64_t)o * Co, b, sizeof(float) * (size_t)Co);
    for (int t = 0; t < L; t++) {
        const float *x = in + (int64_t)t * Ci;
        for (int j = 0; j < k; j++) {
            int o = t * s + j - pad;
            if (o < 0 || o >= Lo) continue;
            float *y = out + (int64_t)o * Co;
            for (int ci = 0; ci < Ci; ci++) {
                const float *wr = w + (int64_t)ci * Co * k + j;
                for (int co = 0; co < Co; co++) y[co] += x[ci] * wr[(int64_t)co * k];
            }
        }
    }
}

void jb_grad_convt1d_backward(float *din, float *dw, float *db, const float *dout,
                              const float *in, const float *w, int L, int Ci, int Co, int k,
                              int s, int pad) {
    int Lo = (L - 1) * s - 2 * pad + k;
    for (int o = 0; o < Lo; o++)
        for (int co = 0; co < Co; co++) db[co] += dout[(int64_t)o * Co + co];
    for (int t = 0; t < L; t++) {
        const float *x = in + (int64_t)t * Ci;
        float *dx = din + (int64_t)t * Ci;
        for (int j = 0; j < k; j++) {
            int o = t * s + j - pad;
            if (o < 0 || o >= Lo) continue;
            const float *dy = dout + (int64_t)o * Co;
            for (int ci = 0; ci < Ci; ci++) {
                const float *wr = w + (int64_t)ci * Co * k + j;
                float *dwr = dw + (int64_t)ci * Co * k + j;
                float acc = 0;
                for (int co = 0; co < Co; co++) {
                    acc += dy[co] * wr[(int64_t)co * k];
                    dwr[(int64_t)co * k] += x[ci] * dy[co];
                }
                dx[ci] += acc;
            }
        }
    }
}
