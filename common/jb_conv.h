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

// col: (T_out, k, C) from x: (T_in, C); zero outside [0, T_in); relu when relu_in.
JB_HD static inline void jb_im2col_at(int64_t i, float *col, const float *x, int64_t T_in,
                                      int C, int k, int s, int p, int d, int relu_in) {
    int64_t c = i % C, j = (i / C) % k, t = i / ((int64_t)C * k);
    int64_t src = t * s + (int64_t)j * d - p;
    float v = (src >= 0 && src < T_in) ? x[src * C + c] : 0.0f;
    col[i] = relu_in ? jb_relu_f(v) : v;
}

// pad: (T_in + 2*margin, C): x copied into the middle rows, zeros in the margins.
JB_HD static inline void jb_pad_rows_at(int64_t i, float *pad, const float *x, int64_t T_in,
                                        int C, int64_t margin, int relu_in) {
    int64_t c = i % C, r = i / C - margin;
    float v = (r >= 0 && r < T_in) ? x[r * C + c] : 0.0f;
    pad[i] = relu_in ? jb_relu_f(v) : v;
}

// y: (T, C) = y + b (b: (C) or NULL), then relu when relu.
JB_HD static inline void jb_bias_act_at(int64_t i, float *y, const float *b, int C, int relu) {
    float v = y[i] + (b ? b[i % C] : 0.0f);
    y[i] = relu ? jb_relu_f(v) : v;
}

// Transposed conv, gather form: out: (T_out, OC) from cols y: (T_in, k, OC) = x · W.
// out[t, o] (+)= b[o] + sum over taps j with t + p - j = u*s, 0 <= u < T_in, of y[u, j, o].
JB_HD static inline void jb_col2im_t_at(int64_t i, float *out, const float *y, const float *b,
                                        int64_t T_in, int OC, int k, int s, int p, int acc) {
    int64_t o = i % OC, t = i / OC;
    float v = b ? b[o] : 0.0f;
    // first tap with (t + p - j) divisible by s, then every s-th
    int64_t j0 = (t + p) % s;
    for (int64_t j = j0; j < k; j += s) {
        int64_t u = (t + p - j) / s;
        if (u >= 0 && u < T_in) v += y[(u * k + j) * OC + o];
    }
    out[i] = acc ? out[i] + v : v;
}

// dst: (T_dst, C) = rows [r0, r0 + T_dst) of src: (T_src, C), zeros outside.
JB_HD static inline void jb_copy_rows_at(int64_t i, float *dst, const float *src, int64_t T_src,
                                         int C, int64_t r0) {
    int64_t c = i % C, r = i / C + r0;
    dst[i] = (r >= 0 && r < T_src) ? src[r * C + c] : 0.0f;
}

// ---- sizes --------------------------------------------------------------------

int64_t jb_conv1d_out_len(int64_t T_in, int k, int s, int p, int d);
int64_t jb_convt1d_out_len(int64_t T_in, int k, int s, int p);
// Scratch floats jb_conv1d needs for these dims and flags (0 for a 1x1 stride-1 conv
// without RELU_IN, which multiplies x in place).
size_t jb_conv1d_ws_floats(int64_t T_in, int C, int k, int s, int p, int d, int flags);
// Scratch floats jb_convt1d needs: (T_in, k, OC) cols, or with JB_CONV_DIRECT a margined
// copy of x: (T_in + 2 ceil(k/s) + 1, C).
size_t jb_convt1d_ws_floats(int64_t T_in, int C, int OC, int k, int s, int flags);

// ---- weights ------------------------------------------------------------------

// wp: (k, C, OC) from w: (OC, C, k) (Conv1d as stored).
void jb_conv1d_pack(float *wp, const float *w, int OC, int C, int k);
// wp: (C, k, OC) from w: (C, OC, k) (ConvTranspose1d as stored).
void jb_convt1d_pack(float *wp, const float *w, int C, int OC, int k);

// ---- CPU operations -----------------------------------------------------------

// out: (T_out, OC); x: (T_in, C); wp: (k, C, OC) packed; b: (OC) or NULL; ws: scratch.
// out must not alias x (except for JB_CONV_ACC with a 1x1 conv: still not allowed).
void jb_conv1d(float *out, const float *x, int64_t T_in, int C, const float *wp, const float *b,
               int OC, int k, int s, int p, int d, int flags, float *ws);
// out: (T_out, OC); x: (T_in, C); wp: (C, k, OC) packed; b: (OC) or NULL; ws: scratch.
// flags: JB_CONV_ACC, JB_CONV_RELU_OUT, JB_CONV_DIRECT (per output phase, taps as sgemms
// writing rows of stride s; otherwise one sgemm into cols and a gather).
void jb_convt1d(float *out, const float *x, int64_t T_in, int C, const float *wp, const float *b,
                int OC, int k, int s, int p, int flags, float *ws);
// y: (n / C, C) += b, then relu when relu.
void jb_bias_act(float *y, const float *b, int64_t n, int C, int relu);
// x: (n) = relu(x)
void jb_relu(float *x, int64_t n);

#ifdef JB_HAVE_CUDA
// The same operations on device pointers (common/cuda/jb_conv.cu). cublas: a cublasHandle_t.
// Return 0, or -1 when a launch or a cuBLAS call failed.
int jb_conv1d_cuda(void *cublas, float *out, const float *x, int64_t T_in, int C,
                   const float *wp, const float *b, int OC, int k, int s, int p, int d,
                   int flags, float *ws);
int jb_convt1d_cuda(void *cublas, float *out, const float *x, int64_t T_in, int C,
                    const float *wp, const float *b, int OC, int k, int s, int p, int flags,
                    float *ws);
int jb_bias_act_cuda(float *y, const float *b, int64_t n, int C, int relu);
#endif

#endif
