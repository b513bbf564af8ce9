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

#include "jb_kernels.h"

// Flags of jb_conv1d / jb_convt1d.
#define JB_CONV_RELU_IN  1   // convolve relu(x) instead of x
#define JB_CONV_RELU_OUT 2   // out = relu(conv + b)
#define JB_CONV_ACC      4   // out += conv + b (a residual add); not with RELU_OUT
#define JB_CONV_DIRECT   8   // k sgemms on a margined copy instead of im2col

// ---- kernel bodies (one flat index each) -------------------------------------

JB_HD static inline float jb_relu_f(float v) { return v > 0.0f ? v : 0.0f; }

// Bodies work on one time row (C or OC contiguous channels): the index is the row. An
// index per element would pay 64-bit divisions per float on the CPU; a row's inner loop
// vectorises. On the GPU that is one thread per row.

// Row t of col: (T_out, k, C) from x: (T_in, C); zero outside [0, T_in); relu when relu_in.
JB_HD static inline void jb_im2col_row(int64_t t, float *col, const float *x, int64_t T_in,
                                       int C, int k, int s, int p, int d, int relu_in) {
    float *dst = col + t * k * C;
    for (int j = 0; j < k; j++, dst += C) {
        int64_t src = t * s + (int64_t)j * d - p;
        if (src < 0 || src >= T_in) {
            for (int c = 0; c < C; c++) dst[c] = 0.0f;
        } else if (relu_in) {
            for (int c = 0; c < C; c++) dst[c] = jb_relu_f(x[src * C + c]);
        } else {
            for (int c = 0; c < C; c++) dst[c] = x[src * C + c];
        }
    }
}

// Row r of pad: (T_in + 2*margin, C): x in the middle rows, zeros in the margins.
JB_HD static inline void jb_pad_rows_row(int64_t r, float *pad, const float *x, int64_t T_in,
                                         int C, int64_t margin, int relu_in) {
    int64_t src = r - margin;
    float *dst = pad + r * C;
    if (src < 0 || src >= T_in) {
        for (int c = 0; c < C; c++) dst[c] = 0.0f;
    } else if (relu_in) {
        for (int c = 0; c < C; c++) dst[c] = jb_relu_f(x[src * C + c]);
    } else {
        for (int c = 0; c < C; c++) dst[c] = x[src * C + c];
    }
}

// Row r of y: (T, C) = y + b (b: (C) or NULL), then relu when relu.
JB_HD static inline void jb_bias_act_row(int64_t r, float *y, const float *b, int C, int relu) {
    float *row = y + r * C;
    for (int c = 0; c < C; c++) {
        float v = row[c] + (b ? b[c] : 0.0f);
        row[c] = relu ? jb_relu_f(v) : v;
    }
}

// Transposed conv, gather form: row t of out: (T_out, OC) from cols y: (T_in, k, OC) = x · W.
// out[t, o] (+)= b[o] + sum over taps j with t + p - j = u*s, 0 <= u < T_in, of y[u, j, o].
JB_HD static inline void jb_col2im_t_row(int64_t t, float *out, const float *y, const float *b,
                                         int64_t T_in, int OC, int k, int s, int p, int acc) {
    float *dst = out + t * OC;
    for (int o = 0; o < OC; o++) dst[o] = (acc ? dst[o] : 0.0f) + (b ? b[o] : 0.0f);
    for (int64_t j = (t + p) % s; j < k; j += s) {   // taps with (t + p - j) divisible by s
        int64_t u = (t + p - j) / s;
        if (u < 0 || u >= T_in) continue;
        const float *src = y + (u * k + j) * OC;
        for (int o = 0; o < OC; o++) dst[o] += src[o];
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
// Scratch floats jb_convt1d needs (CPU): (T_in, k, OC) cols; 0 with JB_CONV_DIRECT.
size_t jb_convt1d_ws_floats(int64_t T_in, int C, int OC, int k, int s, int flags);

// ---- weights ------------------------------------------------------------------

// wp: (k, C, OC) from w: (OC, C, k) (Conv1d as stored).
void jb_conv1d_pack(float *wp, const float *w, int OC, int C, int k);
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
#endif

#endif
