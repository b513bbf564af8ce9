// jb_conv.c: CPU launchers of the conv bodies in jb_conv.h: OpenMP loops over blocks of
// output rows, each block's product one single-threaded cblas_sgemm.
#include "jb_conv.h"

#include <cblas.h>
#include <omp.h>
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

static int64_t n_blocks(int64_t rows) { return (rows + JB_CONV_BLOCK - 1) / JB_CONV_BLOCK; }

// Threads for a loop over nb blocks: at most one scratch slot each.
static int n_threads(int64_t nb) {
    int64_t t = omp_get_max_threads();
    if (t > JB_CONV_MAX_THREADS) t = JB_CONV_MAX_THREADS;
    if (t > nb) t = nb;
    return t < 1 ? 1 : (int)t;
}

size_t jb_conv1d_ws_floats(int64_t T_in, int C, int k, int s, int p, int d, int flags) {
    if (is_plain_1x1(k, s, p, flags)) return 0;
    int64_t T_out = jb_conv1d_out_len(T_in, k, s, p, d);
    if (T_out <= 0) return 0;
    if (flags & JB_CONV_DIRECT) return (size_t)(((T_out - 1) * s + (int64_t)(k - 1) * d + 1) * C);
    int64_t nb = n_blocks(T_out), slots = nb < JB_CONV_MAX_THREADS ? nb : JB_CONV_MAX_THREADS;
    int64_t rows = T_out < JB_CONV_BLOCK ? T_out : JB_CONV_BLOCK;
    return (size_t)(slots * rows * k * C);
}

size_t jb_convt1d_ws_floats(int64_t T_in, int C, int OC, int k, int s, int flags) {
    return (flags & JB_CONV_DIRECT) ? 0 : (size_t)(T_in * k * OC);
}

void jb_conv1d_pack(float *wp, const float *w, int OC, int C, int k) {
    for (int o = 0; o < OC; o++)
        for (int c = 0; c < C; c++)
            for (int j = 0; j < k; j++)
                wp[((int64_t)j * C + c) * OC + o] = w[((int64_t)o * C + c) * k + j];
}

void jb_conv1d_pack_wino(float *wg, const float *w, int OC, int C) {
    int64_t n = (int64_t)C * OC;
    for (int o = 0; o < OC; o++)
        for (int c = 0; c < C; c++) {
            const float *g = w + ((int64_t)o * C + c) * 3;
            int64_t i = (int64_t)c * OC + o;
            wg[i] = g[0];
            wg[n + i] = 0.5f * (g[0] + g[1] + g[2]);
            wg[2 * n + i] = 0.5f * (g[0] - g[1] + g[2]);
            wg[3 * n + i] = g[2];
        }
}

static int64_t wino_tiles(int64_t T, int d) { return jb_wino_tiles(T, d); }

size_t jb_conv1d_wino_ws_floats(int64_t T_in, int C, int OC, int d) {
    int64_t nt = wino_tiles(T_in, d);
    int64_t nb = n_blocks(nt), slots = nb < JB_CONV_MAX_THREADS ? nb : JB_CONV_MAX_THREADS;
    int64_t rows = nt < JB_CONV_BLOCK ? nt : JB_CONV_BLOCK;
    return (size_t)(C + slots * 4 * rows * (C + OC));
}

void jb_conv1d_wino(float *out, const float *x, int64_t T, int C, const float *wg, const float *b,
                    int OC, int d, int flags, float *ws) {
    if (T <= 0) return;
    int relu_in = (flags & JB_CONV_RELU_IN) != 0, relu_out = (flags & JB_CONV_RELU_OUT) != 0;
    int acc = (flags & JB_CONV_ACC) != 0;
    int64_t nt = wino_tiles(T, d), nb = n_blocks(nt);
    int64_t rows = nt < JB_CONV_BLOCK ? nt : JB_CONV_BLOCK;
    int64_t n = (int64_t)C * OC;
    float *zrow = ws;
    memset(zrow, 0, sizeof(float) * C);
    #pragma omp parallel for schedule(static) num_threads(n_threads(nb))
    for (int64_t blk = 0; blk < nb; blk++) {
        int64_t q0 = blk * JB_CONV_BLOCK;
        int m = (int)(nt - q0 < JB_CONV_BLOCK ? nt - q0 : JB_CONV_BLOCK);
        float *U = ws + C + (int64_t)omp_get_thread_num() * 4 * rows * (C + OC);
        float *M = U + 4 * rows * C;
        for (int64_t q = q0; q < q0 + m; q++)
            jb_wino_in_tile(q, U, x, zrow, T, C, d, relu_in, q0, rows);
        for (int i = 0; i < 4; i++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, OC, C, 1.0f,
                        U + i * rows * C, C, wg + i * n, OC, 0.0f, M + i * rows * OC, OC);
        for (int64_t q = q0; q < q0 + m; q++)
            jb_wino_out_tile(q, out, M, b, T, OC, d, acc, relu_out, q0, rows);
    }
}

void jb_convt1d_pack(float *wp, const float *w, int C, int OC, int k) {
    for (int c = 0; c < C; c++)
        for (int o = 0; o < OC; o++)
            for (int j = 0; j < k; j++)
                wp[((int64_t)c * k + j) * OC + o] = w[((int64_t)c * OC + o) * k + j];
}

void jb_bias_act(float *y, const float *b, int64_t n, int C, int relu) {
    if (!b && !relu) return;
    JB_CPU_LAUNCH(n / C, jb_bias_act_row, y, b, C, relu);
}

void jb_relu(float *x, int64_t n) {
    #pragma omp parallel for schedule(static) if (n >= 65536)
    for (int64_t i = 0; i < n; i++) x[i] = jb_relu_f(x[i]);
}

void jb_conv1d(float *out, const float *x, int64_t T_in, int C, const float *wp, const float *b,
               int OC, int k, int s, int p, int d, int flags, float *ws) {
    int64_t T_out = jb_conv1d_out_len(T_in, k, s, p, d);
    if (T_out <= 0) return;
    int relu_in = (flags & JB_CONV_RELU_IN) != 0, relu_out = (flags & JB_CONV_RELU_OUT) != 0;
    float beta = (flags & JB_CONV_ACC) ? 1.0f : 0.0f;
    int plain = is_plain_1x1(k, s, p, flags), direct = (flags & JB_CONV_DIRECT) != 0;
    if (!plain && direct) {
        // row r of ws is input position r - p (zeros outside the signal)
        int64_t rows = (T_out - 1) * s + (int64_t)(k - 1) * d + 1;
        JB_CPU_LAUNCH(rows, jb_pad_rows_row, ws, x, T_in, C, (int64_t)p, relu_in);
    }
    int64_t nb = n_blocks(T_out);
    #pragma omp parallel for schedule(static) num_threads(n_threads(nb))
    for (int64_t blk = 0; blk < nb; blk++) {
        int64_t t0 = blk * JB_CONV_BLOCK;
        int m = (int)(T_out - t0 < JB_CONV_BLOCK ? T_out - t0 : JB_CONV_BLOCK);
        float *o = out + t0 * OC;
        if (plain) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, OC, C, 1.0f, x + t0 * C, C,
                        wp, OC, beta, o, OC);
        } else if (direct) {   // tap j: rows t*s + j*d of the margined copy
            for (int j = 0; j < k; j++)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, OC, C, 1.0f,
                            ws + (t0 * s + (int64_t)j * d) * C, s * C, wp + (int64_t)j * C * OC,
                            OC, j == 0 ? beta : 1.0f, o, OC);
        } else {   // im2col of this block into this thread's slot
            int64_t rows = T_out < JB_CONV_BLOCK ? T_out : JB_CONV_BLOCK;
            float *col = ws + (int64_t)omp_get_thread_num() * rows * k * C - t0 * k * C;
            for (int64_t t = t0; t < t0 + m; t++)
                jb_im2col_row(t, col, x, T_in, C, k, s, p, d, relu_in);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, OC, k * C, 1.0f,
                        col + t0 * k * C, k * C, wp, OC, beta, o, OC);
        }
        if (b || relu_out)
            for (int64_t t = 0; t < m; t++) jb_bias_act_row(t, o, b, OC, relu_out);
    }
}

static int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

void jb_convt1d(float *out, const float *x, int64_t T_in, int C, const float *wp, const float *b,
                int OC, int k, int s, int p, int flags, float *ws) {
    int64_t T_out = jb_convt1d_out_len(T_in, k, s, p);
    if (T_out <= 0) return;
    int acc = (flags & JB_CONV_ACC) != 0, relu_out = (flags & JB_CONV_RELU_OUT) != 0;
    if (flags & JB_CONV_DIRECT) {
        // Output row t = q*s + r - p (phase r) gets taps j = r + m*s from inputs u = q - m:
        // out[q*s + r - p] = b + sum_m x[q - m] W_{r+ms}. A block is a range of q; within it,
        // phase r and tap m is one sgemm writing every s-th output row (ldc = s*OC).
        int64_t q_end = floor_div(T_out - 1 + p, s) + 1;   // q of the last output row, + 1
        int64_t nb = n_blocks(q_end);
        #pragma omp parallel for schedule(static) num_threads(n_threads(nb))
        for (int64_t blk = 0; blk < nb; blk++) {
            int64_t qb0 = blk * JB_CONV_BLOCK, qb1 = qb0 + JB_CONV_BLOCK;
            if (qb1 > q_end) qb1 = q_end;
            int64_t r0 = qb0 * s - p, r1 = qb1 * s - p;   // output rows of this block
            if (r0 < 0) r0 = 0;
            if (r1 > T_out) r1 = T_out;
            for (int64_t t = r0; t < r1; t++) {
                float *row = out + t * OC;
                if (!acc) memset(row, 0, sizeof(float) * OC);
                if (b) jb_bias_act_row(t, out, b, OC, 0);
            }
            for (int r = 0; r < s; r++) {
                // q with 0 <= q*s + r - p < T_out
                int64_t q_lo = -floor_div(r - p, s), q_hi = floor_div(T_out - 1 + p - r, s) + 1;
                for (int64_t m = 0; r + m * s < k; m++) {
                    int64_t a = qb0 > q_lo ? qb0 : q_lo, e = qb1 < q_hi ? qb1 : q_hi;
                    if (a < m) a = m;                 // input row q - m >= 0
                    if (e > T_in + m) e = T_in + m;   // input row q - m < T_in
                    if (e <= a) continue;
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(e - a), OC, C,
                                1.0f, x + (a - m) * C, C, wp + (r + m * s) * (int64_t)OC, k * OC,
                                1.0f, out + (a * s + r - p) * OC, s * OC);
                }
            }
            if (relu_out)
                for (int64_t t = r0; t < r1; t++) jb_bias_act_row(t, out, NULL, OC, 1);
        }
        return;
    }
    // cols (T_in, k*OC): every input row's contribution to each of its k output taps
    int64_t nb = n_blocks(T_in);
    #pragma omp parallel for schedule(static) num_threads(n_threads(nb))
    for (int64_t blk = 0; blk < nb; blk++) {
        int64_t u0 = blk * JB_CONV_BLOCK;
        int m = (int)(T_in - u0 < JB_CONV_BLOCK ? T_in - u0 : JB_CONV_BLOCK);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, k * OC, C, 1.0f, x + u0 * C, C,
                    wp, k * OC, 0.0f, ws + u0 * k * OC, k * OC);
    }
    JB_CPU_LAUNCH(T_out, jb_col2im_t_row, out, ws, b, T_in, OC, k, s, p, acc);
    if (relu_out) jb_relu(out, T_out * OC);
}
