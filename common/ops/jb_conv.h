// jb_conv.h: 1-D convolutions of the VQ-VAE and the Conditioner.
//
// Layout: one item at a time, channels last: a signal is (T, C) row-major
// (time rows, channel columns). Batches are independent items; the caller
// loops. Channels-last keeps a time chunk a contiguous block of memory (the
// chunked VQ-VAE cuts songs along T) and makes an im2col row a few memcpys.
//
// Weights are packed once, at load, from the PyTorch layouts:
//   Conv1d           [OC, C, k]  -> jb_conv1d_pack  -> (k, C, OC)
//   ConvTranspose1d  [C, OC, k]  -> jb_convt1d_pack -> (C, k, OC)
// so that every product is a plain row-major cblas_sgemm.
//
// Semantics (PyTorch): conv1d out[t, o] = b[o] + sum_{j, c} x[t*s + j*d - p, c] W[o, c, j]
// with x = 0 outside [0, T_in); T_out = (T_in + 2p - d(k-1) - 1)/s + 1.
// Transposed: out[t*s - p + j, o] += x[t, c] W[c, o, j]; T_out = (T_in - 1)s - 2p + k.
//
// Two ways to compute a conv1d (JB_CONV_DIRECT picks the second):
//   im2col: col (T_out, k*C) gathered (with the optional input ReLU), one sgemm with K = k*C;
//   direct: the input copied once into a zero-margined scratch, then k sgemms with K = C
//           accumulating into out (tap j reads the scratch shifted by j*d rows, stride s).
// Both give the same sums up to rounding; the VQ-VAE uses the faster one (docs/vqvae.md).
//
// Element-wise bodies are JB_HD functions of one index (jb_kernels.h); the CPU
// launchers here are OpenMP loops, common/cuda/jb_conv.cu runs the same bodies on a GPU.
//
// Thread rules: reentrant; the caller's OpenMP/OpenBLAS thread settings apply.
// No allocation: the caller passes a scratch buffer of jb_conv1d_ws_floats() floats.
#ifndef JB_CONV_H
#define JB_CONV_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "jb_kernels.h"

// Flags of jb_conv1d / jb_convt1d.
#define JB_CONV_RELU_IN  1   // convolve relu(x) instead of x
#define JB_CONV_RELU_OUT 2   // out = relu(conv + b)
#define JB_CONV_ACC      4   // out += conv + b (a residual add); not with RELU_OUT
#define JB_CONV_DIRECT   8   // k sgemms on a margined copy instead of im2col
#define JB_CONV_WINOGRAD 16  // k=3, stride 1, padding = dilation: Winograd F(2,3), see below

// ---- kernel bodies (one flat index each) -------------------------------------

// max(v, 0) on the bits (clear a negative number): branch-free, so gcc -O2 vectorises the
// loops that use it (a `v > 0 ? v : 0` stays scalar: "control flow in loop").
JB_HD static inline float jb_relu_f(float v) {
    int32_t i;
    memcpy(&i, &v, sizeof i);
    i &= ~(i >> 31);
    memcpy(&v, &i, sizeof v);
    return v;
}

// Vectorise a channel loop on the CPU: gcc -O2's cheap cost model would leave these loops
// scalar (b and y may alias as far as it knows). Nothing on the device side.
#if defined(__CUDA_ARCH__) || !defined(_OPENMP)
#define JB_SIMD
#else
#define JB_SIMD _Pragma("omp simd")
#endif

// Bodies work on one time row (C or OC contiguous channels): the index is the row. An
// index per element would pay 64-bit divisions per float on the CPU; a row's inner loop
// vectorises. On the GPU that is one thread per row.

// Row t of col: (T_out, k, C) from x: (T_in, C); zero outside [0, T_in); relu when relu_in.
JB_HD static inline void jb_im2col_row(int64_t t, float *col, const float *x, int64_t T_in,
                                       int C, int k, int s, int p, int d, int relu_in) {
    float *dst = col + t * k * C;
    for (int j = 0; j < k; j++, dst += C) {
        int64_t src = t * s + (int64_t)j * d - p;
        const float *in = x + src * C;
        if (src < 0 || src >= T_in) {
            JB_SIMD for (int c = 0; c < C; c++) dst[c] = 0.0f;
        } else if (relu_in) {
            JB_SIMD for (int c = 0; c < C; c++) dst[c] = jb_relu_f(in[c]);
        } else {
            JB_SIMD for (int c = 0; c < C; c++) dst[c] = in[c];
        }
    }
}

// Row r of pad: (T_in + 2*margin, C): x in the middle rows, zeros in the margins.
JB_HD static inline void jb_pad_rows_row(int64_t r, float *pad, const float *x, int64_t T_in,
                                         int C, int64_t margin, int relu_in) {
    int64_t src = r - margin;
    float *dst = pad + r * C;
    const float *in = x + src * C;
    if (src < 0 || src >= T_in) {
        JB_SIMD for (int c = 0; c < C; c++) dst[c] = 0.0f;
    } else if (relu_in) {
        JB_SIMD for (int c = 0; c < C; c++) dst[c] = jb_relu_f(in[c]);
    } else {
        JB_SIMD for (int c = 0; c < C; c++) dst[c] = in[c];
    }
}

// Row r of y: (T, C) = y + b (b: (C) or NULL), then relu when relu.
JB_HD static inline void jb_bias_act_row(int64_t r, float *y, const float *b, int C, int relu) {
    float *row = y + r * C;
    if (b && relu) {
        JB_SIMD for (int c = 0; c < C; c++) row[c] = jb_relu_f(row[c] + b[c]);
    } else if (b) {
        JB_SIMD for (int c = 0; c < C; c++) row[c] += b[c];
    } else if (relu) {
        JB_SIMD for (int c = 0; c < C; c++) row[c] = jb_relu_f(row[c]);
    }
}

// Transposed conv, gather form: row t of out: (T_out, OC) from cols y: (T_in, k, OC) = x · W.
// out[t, o] (+)= b[o] + sum over taps j with t + p - j = u*s, 0 <= u < T_in, of y[u, j, o].
JB_HD static inline void jb_col2im_t_row(int64_t t, float *out, const float *y, const float *b,
                                         int64_t T_in, int OC, int k, int s, int p, int acc) {
    float *dst = out + t * OC;
    if (!acc) {
        JB_SIMD for (int o = 0; o < OC; o++) dst[o] = 0.0f;
    }
    if (b) {
        JB_SIMD for (int o = 0; o < OC; o++) dst[o] += b[o];
    }
    for (int64_t j = (t + p) % s; j < k; j += s) {   // taps with (t + p - j) divisible by s
        int64_t u = (t + p - j) / s;
        if (u < 0 || u >= T_in) continue;
        const float *src = y + (u * k + j) * OC;
        JB_SIMD for (int o = 0; o < OC; o++) dst[o] += src[o];
    }
}

// Winograd F(2,3) for the resnets' dilated k=3 convs (stride 1, padding d): a tile is the
// output pair (t, t+d) with t = 2d*B + i (0 <= i < d); from inputs x0..x3 = x[t-d], x[t],
// x[t+d], x[t+2d] it forms u = (x0-x2, x1+x2, x2-x1, x1-x3), multiplies each u_i by the
// transformed weights G_i = (g0, (g0+g1+g2)/2, (g0-g1+g2)/2, g2) (four sgemms with K = C),
// and y[t] = M0+M1+M2, y[t+d] = M1-M2-M3: 4 products per 2 outputs instead of 6.
// Tiles are numbered q = B*d + i, and only tiles with t < T exist (jb_wino_tiles), so a
// large dilation on a short signal wastes at most the second output of a tile.
JB_HD static inline int64_t jb_wino_tiles(int64_t T, int d) {
    int64_t rem = T % (2 * (int64_t)d);
    return T / (2 * (int64_t)d) * d + (rem < d ? rem : d);
}

// Tile q (block-relative row q - q0) of U: (4, nrow, C) from x: (T, C); zrow: (C) zeros,
// read for the rows outside the signal (so every tile runs the same vector loop).
JB_HD static inline void jb_wino_in_tile(int64_t q, float *U, const float *x, const float *zrow,
                                         int64_t T, int C, int d, int relu_in, int64_t q0,
                                         int64_t nrow) {
    int64_t t = (q / d) * 2 * d + q % d;
    const float *r[4];
    for (int j = 0; j < 4; j++) {
        int64_t src = t + (int64_t)(j - 1) * d;
        r[j] = (src >= 0 && src < T) ? x + src * C : zrow;
    }
    float *u0 = U + (q - q0) * C, *u1 = u0 + nrow * C, *u2 = u1 + nrow * C, *u3 = u2 + nrow * C;
    const float *x0 = r[0], *x1 = r[1], *x2 = r[2], *x3 = r[3];
    if (!relu_in) {
        JB_SIMD for (int c = 0; c < C; c++) {
            u0[c] = x0[c] - x2[c], u1[c] = x1[c] + x2[c];
            u2[c] = x2[c] - x1[c], u3[c] = x1[c] - x3[c];
        }
    } else {
        JB_SIMD for (int c = 0; c < C; c++) {
            float a = jb_relu_f(x0[c]), b = jb_relu_f(x1[c]);
            float e = jb_relu_f(x2[c]), f = jb_relu_f(x3[c]);
            u0[c] = a - e, u1[c] = b + e, u2[c] = e - b, u3[c] = b - f;
        }
    }
}

// Tile q of y: (T, OC) from M: (4, nrow, OC): y[t] (+)= M0+M1+M2 + b, y[t+d] (+)= M1-M2-M3 + b,
// relu after when relu_out; rows past T are dropped.
JB_HD static inline void jb_wino_out_tile(int64_t q, float *y, const float *M, const float *b,
                                          int64_t T, int OC, int d, int acc, int relu_out,
                                          int64_t q0, int64_t nrow) {
    int64_t t = (q / d) * 2 * d + q % d;
    const float *m0 = M + (q - q0) * OC, *m1 = m0 + nrow * OC, *m2 = m1 + nrow * OC;
    const float *m3 = m2 + nrow * OC;
    float *y0 = y + t * OC, *y1 = y0 + (int64_t)d * OC;
    if (t < T) {
        if (!acc) {
            JB_SIMD for (int o = 0; o < OC; o++) y0[o] = m0[o] + m1[o] + m2[o];
        } else {
            JB_SIMD for (int o = 0; o < OC; o++) y0[o] += m0[o] + m1[o] + m2[o];
        }
        if (b || relu_out) jb_bias_act_row(0, y0, b, OC, relu_out);
    }
    if (t + d < T) {
        if (!acc) {
            JB_SIMD for (int o = 0; o < OC; o++) y1[o] = m1[o] - m2[o] - m3[o];
        } else {
            JB_SIMD for (int o = 0; o < OC; o++) y1[o] += m1[o] - m2[o] - m3[o];
        }
        if (b || relu_out) jb_bias_act_row(0, y1, b, OC, relu_out);
    }
}

// ---- sizes --------------------------------------------------------------------

// Output rows per block: the CPU launchers run an OpenMP loop over blocks of output rows,
// each block one single-threaded sgemm on data that stays in the core's cache.
#define JB_CONV_BLOCK 512
#define JB_CONV_MAX_THREADS 64   // scratch holds one im2col block per thread, at most this many

int64_t jb_conv1d_out_len(int64_t T_in, int k, int s, int p, int d);
int64_t jb_convt1d_out_len(int64_t T_in, int k, int s, int p);
// Scratch floats jb_conv1d needs (CPU): im2col: one (JB_CONV_BLOCK, k*C) block per thread;
// JB_CONV_DIRECT: a zero-margined copy of the input, ((T_out-1)s + (k-1)d + 1, C);
// 0 for a 1x1 stride-1 conv without RELU_IN (it multiplies x itself).
size_t jb_conv1d_ws_floats(int64_t T_in, int C, int k, int s, int p, int d, int flags);
// Scratch of jb_conv1d_wino: a zero row (C), then one (4, JB_CONV_BLOCK, C + OC) block of
// U and M per thread.
size_t jb_conv1d_wino_ws_floats(int64_t T_in, int C, int OC, int d);
// Scratch floats jb_convt1d needs (CPU): (T_in, k, OC) cols; 0 with JB_CONV_DIRECT.
size_t jb_convt1d_ws_floats(int64_t T_in, int C, int OC, int k, int s, int flags);

// ---- weights ------------------------------------------------------------------

// wp: (k, C, OC) from w: (OC, C, k) (Conv1d as stored).
void jb_conv1d_pack(float *wp, const float *w, int OC, int C, int k);
// wg: (4, C, OC) Winograd F(2,3) weights G_i from w: (OC, C, 3).
void jb_conv1d_pack_wino(float *wg, const float *w, int OC, int C);
// wp: (C, k, OC) from w: (C, OC, k) (ConvTranspose1d as stored).
void jb_convt1d_pack(float *wp, const float *w, int C, int OC, int k);

// ---- CPU operations -----------------------------------------------------------
// The products are cblas_sgemm calls made from inside OpenMP loops: OpenBLAS must be
// single-threaded meanwhile (openblas_set_num_threads(1)), or its threads and OpenMP's
// fight for the cores. jb_vqvae sets that around its calls and restores it.

// out: (T_out, OC); x: (T_in, C); wp: (k, C, OC) packed; b: (OC) or NULL; ws: scratch.
// out must not alias x (except for JB_CONV_ACC with a 1x1 conv: still not allowed).
void jb_conv1d(float *out, const float *x, int64_t T_in, int C, const float *wp, const float *b,
               int OC, int k, int s, int p, int d, int flags, float *ws);
// out: (T_out, OC); x: (T_in, C); wp: (C, k, OC) packed; b: (OC) or NULL; ws: scratch.
// flags: JB_CONV_ACC, JB_CONV_RELU_OUT, JB_CONV_DIRECT (per output phase, each tap an sgemm
// writing every s-th output row, no scratch; otherwise sgemms into cols, then a gather).
void jb_convt1d(float *out, const float *x, int64_t T_in, int C, const float *wp, const float *b,
                int OC, int k, int s, int p, int flags, float *ws);
// Winograd F(2,3) conv: k=3, stride 1, padding d, dilation d (T_out = T_in).
// out: (T, OC); x: (T, C); wg: (4, C, OC) from jb_conv1d_pack_wino; b: (OC) or NULL;
// flags: RELU_IN, RELU_OUT, ACC; ws: jb_conv1d_wino_ws_floats floats.
void jb_conv1d_wino(float *out, const float *x, int64_t T, int C, const float *wg, const float *b,
                    int OC, int d, int flags, float *ws);
// y: (n / C, C) += b, then relu when relu.
void jb_bias_act(float *y, const float *b, int64_t n, int C, int relu);
// x: (n) = relu(x)
void jb_relu(float *x, int64_t n);

#ifdef JB_HAVE_CUDA
// The same operations on device pointers (common/cuda/jb_conv.cu). cublas: a cublasHandle_t.
// Whole-tensor products (no blocks): scratch of jb_conv1d_cuda_ws_floats floats for conv1d;
// jb_convt1d_cuda takes the CPU's jb_convt1d_ws_floats (cols) or, with JB_CONV_DIRECT, a
// margined input copy of (T_in + 2 ceil(k/s) + 1, C) floats.
// Return 0, or -1 when a launch or a cuBLAS call failed.
size_t jb_conv1d_cuda_ws_floats(int64_t T_in, int C, int k, int s, int p, int d, int flags);
size_t jb_convt1d_cuda_ws_floats(int64_t T_in, int C, int OC, int k, int s, int flags);
int jb_conv1d_cuda(void *cublas, float *out, const float *x, int64_t T_in, int C,
                   const float *wp, const float *b, int OC, int k, int s, int p, int d,
                   int flags, float *ws);
int jb_convt1d_cuda(void *cublas, float *out, const float *x, int64_t T_in, int C,
                    const float *wp, const float *b, int OC, int k, int s, int p, int flags,
                    float *ws);
int jb_bias_act_cuda(float *y, const float *b, int64_t n, int C, int relu);
// Winograd F(2,3) as jb_conv1d_wino, every tile at once: scratch of
// jb_conv1d_wino_cuda_ws_floats floats (a zero row, U (4, tiles, C), M (4, tiles, OC)).
size_t jb_conv1d_wino_cuda_ws_floats(int64_t T, int C, int OC, int d);
int jb_conv1d_wino_cuda(void *cublas, float *out, const float *x, int64_t T, int C,
                        const float *wg, const float *b, int OC, int d, int flags, float *ws);
#endif

#endif
