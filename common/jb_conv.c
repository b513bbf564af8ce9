// jb_conv.c: CPU launchers of the conv bodies in jb_conv.h, products through cblas_sgemm.
#include "jb_conv.h"

#include <cblas.h>
#include <string.h>

int64_t jb_conv1d_out_len(int64_t T_in, int k, int s, int p, int d) {
    int64_t span = T_in + 2 * (int64_t)p - (int64_t)d * (k - 1) - 1;
    return span < 0 ? 0 : span / s + 1;
}

int64_t jb_convt1d_out_len(int64_t T_in, int k, int s, int p) {
    return T_in <= 0 ? 0 : (T_in - 1) * s - 2 * (int64_t)p + k;
}

// A 1x1 stride-1 conv without input ReLU multiplies x itself: no copy.
static int is_plain_1x1(int k, int s, int p, int flags) {
    return k == 1 && s == 1 && p == 0 && !(flags & JB_CONV_RELU_IN);
}

size_t jb_conv1d_ws_floats(int64_t T_in, int C, int k, int s, int p, int d, int flags) {
    if (is_plain_1x1(k, s, p, flags)) return 0;
    int64_t T_out = jb_conv1d_out_len(T_in, k, s, p, d);
    if (T_out <= 0) return 0;
    if (flags & JB_CONV_DIRECT) return (size_t)(((T_out - 1) * s + (int64_t)(k - 1) * d + 1) * C);
    return (size_t)(T_out * k * C);
}

size_t jb_convt1d_ws_floats(int64_t T_in, int C, int OC, int k, int s, int flags) {
    if (flags & JB_CONV_DIRECT) return (size_t)((T_in + 2 * ((k + s - 1) / s) + 1) * C);
    return (size_t)(T_in * k * OC);
}

static int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

void jb_conv1d_pack(float *wp, const float *w, int OC, int C, int k) {
    for (int o = 0; o < OC; o++)
        for (int c = 0; c < C; c++)
            for (int j = 0; j < k; j++) wp[((int64_t)j * C + c) * OC + o] = w[((int64_t)o * C + c) * k + j];
}

void jb_convt1d_pack(float *wp, const float *w, int C, int OC, int k) {
    for (int c = 0; c < C; c++)
        for (int o = 0; o < OC; o++)
            for (int j = 0; j < k; j++) wp[((int64_t)c * k + j) * OC + o] = w[((int64_t)c * OC + o) * k + j];
}

void jb_bias_act(float *y, const float *b, int64_t n, int C, int relu) {
    if (!b && !relu) return;
    JB_CPU_LAUNCH(n, jb_bias_act_at, y, b, C, relu);
}

static inline void relu_at(int64_t i, float *x) { x[i] = jb_relu_f(x[i]); }

void jb_relu(float *x, int64_t n) { JB_CPU_LAUNCH(n, relu_at, x); }

void jb_conv1d(float *out, const float *x, int64_t T_in, int C, const float *wp, const float *b,
               int OC, int k, int s, int p, int d, int flags, float *ws) {
    int64_t T_out = jb_conv1d_out_len(T_in, k, s, p, d);
    if (T_out <= 0) return;
    int relu_in = (flags & JB_CONV_RELU_IN) != 0;
    float beta = (flags & JB_CONV_ACC) ? 1.0f : 0.0f;
    if (is_plain_1x1(k, s, p, flags)) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T_out, OC, C, 1.0f, x, C, wp,
                    OC, beta, out, OC);
    } else if (flags & JB_CONV_DIRECT) {
        int64_t rows = (T_out - 1) * s + (int64_t)(k - 1) * d + 1;
        // row r of ws is input position r - p (zeros outside the signal)
        JB_CPU_LAUNCH(rows * C, jb_pad_rows_at, ws, x, T_in, C, (int64_t)p, relu_in);
        for (int j = 0; j < k; j++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T_out, OC, C, 1.0f,
                        ws + (int64_t)j * d * C, s * C, wp + (int64_t)j * C * OC, OC,
                        j == 0 ? beta : 1.0f, out, OC);
    } else {
        JB_CPU_LAUNCH(T_out * k * C, jb_im2col_at, ws, x, T_in, C, k, s, p, d, relu_in);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T_out, OC, k * C, 1.0f, ws,
                    k * C, wp, OC, beta, out, OC);
    }
    jb_bias_act(out, b, T_out * OC, OC, (flags & JB_CONV_RELU_OUT) != 0);
}

void jb_convt1d(float *out, const float *x, int64_t T_in, int C, const float *wp, const float *b,
                int OC, int k, int s, int p, int flags, float *ws) {
    int64_t T_out = jb_convt1d_out_len(T_in, k, s, p);
    if (T_out <= 0) return;
    int acc = (flags & JB_CONV_ACC) != 0;
    if (flags & JB_CONV_DIRECT) {
        // Output phase r = (t + p) mod s gets taps j = r, r + s, ...: for t = q*s + r - p,
        // out[t] = sum_m x[q - m] W_{r + m s}. Each phase is a row set of stride s in out
        // (ldc = s*OC) and each tap a shifted view of a zero-margined copy of x.
        int64_t ml = (k + s - 1) / s;   // margin rows: at most that many taps per phase
        int64_t rows = T_in + 2 * ml + 1;
        JB_CPU_LAUNCH(rows * C, jb_pad_rows_at, ws, x, T_in, C, ml, 0);
        for (int r = 0; r < s; r++) {
            int64_t q_lo = -floor_div(r - p, s), q_hi = floor_div(T_out - 1 + p - r, s);
            if (q_hi < q_lo) continue;
            int64_t nq = q_hi - q_lo + 1;
            float *o = out + (q_lo * s + r - p) * OC;
            if (r >= k) {   // no tap reaches this phase (k < s)
                if (!acc)
                    for (int64_t q = 0; q < nq; q++) memset(o + q * s * OC, 0, sizeof(float) * OC);
                continue;
            }
            for (int64_t m = 0; r + m * s < k; m++)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nq, OC, C, 1.0f,
                            ws + (ml + q_lo - m) * C, C, wp + (r + m * s) * (int64_t)OC, k * OC,
                            (m == 0 && !acc) ? 0.0f : 1.0f, o, s * OC);
        }
        jb_bias_act(out, b, T_out * OC, OC, (flags & JB_CONV_RELU_OUT) != 0);
        return;
    }
    // cols (T_in, k*OC): every input row's contribution to each of its k output taps
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T_in, k * OC, C, 1.0f, x, C, wp,
                k * OC, 0.0f, ws, k * OC);
    JB_CPU_LAUNCH(T_out * OC, jb_col2im_t_at, out, ws, b, T_in, OC, k, s, p, acc);
    if (flags & JB_CONV_RELU_OUT) jb_relu(out, T_out * OC);
}
