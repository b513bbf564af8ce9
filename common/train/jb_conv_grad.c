// jb_conv_grad.c: forward/backward of conv1d, ConvTranspose1d, ReLU and the residual block.
#include "jb_conv_grad.h"

#include <cblas.h>
#include <string.h>

#include "jb_conv.h"

// Element-wise loops go parallel (OpenMP) only above this many elements: a parallel region
// costs a barrier, which on a loaded machine is far more than a small loop's work.
#define JB_CG_OMP_MIN (1 << 22)

size_t jb_cg_conv_ws_floats(int64_t T_out, int C, int k) { return (size_t)(T_out * C * k); }
size_t jb_cg_convt_ws_floats(int64_t T_in, int OC, int k) { return (size_t)(T_in * OC * k); }
size_t jb_cg_res_ws_floats(int64_t T, int C, int S) {
    int m = C > S ? C : S, col = 3 * C > S ? 3 * C : S;
    return (size_t)(T * (2 * m + col));
}

// col: (T_out, C, k) from x: (T_in, C): col[t, c, j] = x[t*s + j*d - p, c] (0 outside).
static void im2col(float *col, const float *x, int64_t T_in, int C, int64_t T_out, int k, int s,
                   int p, int d) {
#pragma omp parallel for if (T_out * C * k > JB_CG_OMP_MIN) schedule(static)
    for (int64_t t = 0; t < T_out; t++)
        for (int j = 0; j < k; j++) {
            int64_t src = t * s + (int64_t)j * d - p;
            float *row = col + t * C * k + j;
            if (src < 0 || src >= T_in)
                for (int c = 0; c < C; c++) row[(int64_t)c * k] = 0.0f;
            else
                for (int c = 0; c < C; c++) row[(int64_t)c * k] = x[src * C + c];
        }
}

// dx: (T_in, C) = the adjoint of im2col applied to dcol: (T_out, C, k), as a gather (each
// input row sums the taps that read it), so rows are independent.
static void col2im(float *dx, const float *dcol, int64_t T_in, int C, int64_t T_out, int k,
                   int s, int p, int d) {
#pragma omp parallel for if (T_in * C * k > JB_CG_OMP_MIN) schedule(static)
    for (int64_t u = 0; u < T_in; u++) {
        float *row = dx + u * C;
        for (int c = 0; c < C; c++) row[c] = 0.0f;
        for (int j = 0; j < k; j++) {
            int64_t num = u + p - (int64_t)j * d;   // = t * s
            if (num < 0 || num % s) continue;
            int64_t t = num / s;
            if (t >= T_out) continue;
            const float *src = dcol + t * C * k + j;
            for (int c = 0; c < C; c++) row[c] += src[(int64_t)c * k];
        }
    }
}

// db: (OC) += column sums of dout: (T, OC)
static void bias_grad(float *db, const float *dout, int64_t T, int OC) {
    if (!db) return;
    for (int64_t t = 0; t < T; t++)
        for (int o = 0; o < OC; o++) db[o] += dout[t * OC + o];
}

static void add_bias(float *out, const float *b, int64_t T, int OC) {
    if (!b) return;
    for (int64_t t = 0; t < T; t++)
        for (int o = 0; o < OC; o++) out[t * OC + o] += b[o];
}

void jb_cg_conv_forward(float *out, const float *x, int64_t T_in, int C, const float *w,
                        const float *b, int OC, int k, int s, int p, int d, float *ws) {
    int64_t T_out = jb_conv1d_out_len(T_in, k, s, p, d);
    if (T_out <= 0) return;
    int K = C * k;
    im2col(ws, x, T_in, C, T_out, k, s, p, d);
    // out (T_out, OC) = col (T_out, K) · wᵀ, w viewed as (OC, K)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T_out, OC, K, 1.0f, ws, K, w, K,
                0.0f, out, OC);
    add_bias(out, b, T_out, OC);
}

void jb_cg_conv_backward(float *dx, float *dw, float *db, const float *dout, const float *x,
                         int64_t T_in, int C, const float *w, int OC, int k, int s, int p,
                         int d, float *ws) {
    int64_t T_out = jb_conv1d_out_len(T_in, k, s, p, d);
    if (T_out <= 0) {
        if (dx) memset(dx, 0, sizeof(float) * (size_t)(T_in * C));
        return;
    }
    int K = C * k;
    im2col(ws, x, T_in, C, T_out, k, s, p, d);
    // dw (OC, K) += doutᵀ (OC, T_out) · col (T_out, K)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, K, (int)T_out, 1.0f, dout, OC, ws,
                K, 1.0f, dw, K);
    bias_grad(db, dout, T_out, OC);
    if (!dx) return;
    // dcol (T_out, K) = dout (T_out, OC) · w (OC, K), into the same scratch
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T_out, K, OC, 1.0f, dout, OC, w,
                K, 0.0f, ws, K);
    col2im(dx, ws, T_in, C, T_out, k, s, p, d);
}

void jb_cg_convt_forward(float *out, const float *x, int64_t T_in, int C, const float *w,
                         const float *b, int OC, int k, int s, int p, float *ws) {
    int64_t T_out = jb_convt1d_out_len(T_in, k, s, p);
    if (T_out <= 0) return;
    int K = OC * k;
    // cols (T_in, OC, k) = x (T_in, C) · w (C, OC*k)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T_in, K, C, 1.0f, x, C, w, K,
                0.0f, ws, K);
    // gather: out[t, o] = sum over taps j with t + p - j = u s, 0 <= u < T_in, of cols[u, o, j]
#pragma omp parallel for if (T_out * K > JB_CG_OMP_MIN) schedule(static)
    for (int64_t t = 0; t < T_out; t++) {
        float *row = out + t * OC;
        for (int o = 0; o < OC; o++) row[o] = 0.0f;
        for (int j = 0; j < k; j++) {
            int64_t num = t + p - j;
            if (num < 0 || num % s) continue;
            int64_t u = num / s;
            if (u >= T_in) continue;
            const float *src = ws + u * K + j;
            for (int o = 0; o < OC; o++) row[o] += src[(int64_t)o * k];
        }
    }
    add_bias(out, b, T_out, OC);
}

void jb_cg_convt_backward(float *dx, float *dw, float *db, const float *dout, const float *x,
                          int64_t T_in, int C, const float *w, int OC, int k, int s, int p,
                          float *ws) {
    int64_t T_out = jb_convt1d_out_len(T_in, k, s, p);
    int K = OC * k;
    // dcols (T_in, OC, k): dcols[u, o, j] = dout[u*s - p + j, o] (0 outside)
#pragma omp parallel for if (T_in * K > JB_CG_OMP_MIN) schedule(static)
    for (int64_t u = 0; u < T_in; u++)
        for (int j = 0; j < k; j++) {
            int64_t t = u * s - p + j;
            float *row = ws + u * K + j;
            if (t < 0 || t >= T_out)
                for (int o = 0; o < OC; o++) row[(int64_t)o * k] = 0.0f;
            else
                for (int o = 0; o < OC; o++) row[(int64_t)o * k] = dout[t * OC + o];
        }
    // dw (C, K) += xᵀ (C, T_in) · dcols (T_in, K)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, C, K, (int)T_in, 1.0f, x, C, ws, K,
                1.0f, dw, K);
    bias_grad(db, dout, T_out, OC);
    // dx (T_in, C) = dcols (T_in, K) · wᵀ (K, C)
    if (dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T_in, C, K, 1.0f, ws, K, w, K,
                    0.0f, dx, C);
}

void jb_cg_relu_forward(float *y, const float *x, int64_t n) {
#pragma omp parallel for if (n > JB_CG_OMP_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void jb_cg_relu_backward(float *dx, const float *dy, const float *x, int64_t n) {
#pragma omp parallel for if (n > JB_CG_OMP_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) dx[i] = x[i] > 0.0f ? dy[i] : 0.0f;
}

void jb_cg_res_forward(float *y, float *a, const float *x, int64_t T, int C, int S,
                       const float *w3, const float *b3, const float *w1, const float *b1,
                       int d, float *ws) {
    int m = C > S ? C : S;
    float *r0 = ws, *r1 = ws + T * m, *col = r1 + T * m;
    jb_cg_relu_forward(r0, x, T * C);
    jb_cg_conv_forward(a, r0, T, C, w3, b3, S, 3, 1, d, d, col);
    jb_cg_relu_forward(r1, a, T * S);
    jb_cg_conv_forward(y, r1, T, S, w1, b1, C, 1, 1, 0, 1, col);
    for (int64_t i = 0; i < T * C; i++) y[i] += x[i];
}

void jb_cg_res_backward(float *dx, float *dw3, float *db3, float *dw1, float *db1,
                        const float *dy, const float *x, const float *a, int64_t T, int C,
                        int S, const float *w3, const float *w1, int d, float *ws) {
    int m = C > S ? C : S;
    float *r = ws, *dr = ws + T * m, *col = dr + T * m;
    // conv1 (1x1) on r1 = relu(a): dr1 and its weight gradients
    jb_cg_relu_forward(r, a, T * S);
    jb_cg_conv_backward(dr, dw1, db1, dy, r, T, S, w1, C, 1, 1, 0, 1, col);
    jb_cg_relu_backward(dr, dr, a, T * S);
    // conv3 on r0 = relu(x)
    jb_cg_relu_forward(r, x, T * C);
    jb_cg_conv_backward(r, dw3, db3, dr, r, T, C, w3, S, 3, 1, d, d, col);
    for (int64_t i = 0; i < T * C; i++) dx[i] = dy[i] + (x[i] > 0.0f ? r[i] : 0.0f);
}
