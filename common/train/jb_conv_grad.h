// jb_conv_grad.h: training forward/backward pairs of the VQ-VAE's layers (llm.c style):
// 1-D convolution (dilated, strided, padded), ConvTranspose1d, ReLU, the residual block
// x + conv1x1(relu(conv3_d(relu(x)))).
//
// Layout: one item at a time, channels last: a signal is (T, C) row-major. Weights stay in
// the PyTorch layouts (the gradients are returned in them too):
//   Conv1d           w [OC, C, k], b [OC]
//   ConvTranspose1d  w [C, OC, k], b [OC]
// Semantics (PyTorch): conv  out[t, o] = b[o] + sum_{c, j} x[t*s + j*d - p, c] w[o, c, j]
//                      convT out[u*s - p + j, o] += x[u, c] w[c, o, j]   (+ b[o])
// Products go through cblas_sgemm on an im2col (conv) or a cols (convT) scratch.
//
// Gradient rules: weight and bias gradients ACCUMULATE (+=) into dw/db, because a parameter
// is used by every item of a batch; input gradients are WRITTEN (=), because each input
// feeds exactly one layer here (the residual block adds its own skip path itself).
//
// Thread rules: reentrant; no allocation: the caller passes scratch `ws` of the size the
// *_ws_floats function gives. Products use OpenBLAS with the caller's thread settings; the
// gather loops (im2col, its adjoint written as a gather, the transposed conv's overlap-add
// also as a gather, ReLU) are OpenMP loops over rows for large signals (JB_CG_OMP_MIN).
#ifndef JB_CONV_GRAD_H
#define JB_CONV_GRAD_H

#include <stddef.h>
#include <stdint.h>

// Scratch floats of jb_cg_conv_forward / _backward: (T_out, C*k).
size_t jb_cg_conv_ws_floats(int64_t T_out, int C, int k);
// Scratch floats of jb_cg_convt_forward / _backward: (T_in, OC*k).
size_t jb_cg_convt_ws_floats(int64_t T_in, int OC, int k);
// Scratch floats of jb_cg_res_forward / _backward: T (2 max(C, S) + max(3C, S)).
size_t jb_cg_res_ws_floats(int64_t T, int C, int S);

// out: (T_out, OC); x: (T_in, C); w: [OC, C, k]; b: (OC) or NULL; ws: scratch.
// T_out = jb_conv1d_out_len(T_in, k, s, p, d) (jb_conv.h).
void jb_cg_conv_forward(float *out, const float *x, int64_t T_in, int C, const float *w,
                        const float *b, int OC, int k, int s, int p, int d, float *ws);
// dx: (T_in, C) written, or NULL; dw: [OC, C, k] +=; db: (OC) += or NULL;
// dout: (T_out, OC); x: (T_in, C) the forward input; w: [OC, C, k].
void jb_cg_conv_backward(float *dx, float *dw, float *db, const float *dout, const float *x,
                         int64_t T_in, int C, const float *w, int OC, int k, int s, int p,
                         int d, float *ws);

// out: (T_out, OC), T_out = (T_in - 1) s - 2p + k; x: (T_in, C); w: [C, OC, k]; b: (OC) or NULL.
void jb_cg_convt_forward(float *out, const float *x, int64_t T_in, int C, const float *w,
                         const float *b, int OC, int k, int s, int p, float *ws);
// dx: (T_in, C) written, or NULL; dw: [C, OC, k] +=; db: (OC) += or NULL; dout: (T_out, OC).
void jb_cg_convt_backward(float *dx, float *dw, float *db, const float *dout, const float *x,
                          int64_t T_in, int C, const float *w, int OC, int k, int s, int p,
                          float *ws);

// y: (n) = relu(x: (n)); may alias.
void jb_cg_relu_forward(float *y, const float *x, int64_t n);
// dx: (n) = dy * (x > 0); x the forward input; dx may alias dy.
void jb_cg_relu_backward(float *dx, const float *dy, const float *x, int64_t n);

// Residual block (ResConv1DBlock, res_scale 1): y = x + conv1(relu(conv3(relu(x)))).
// conv3: w3 [S, C, 3], b3 (S), dilation d, padding d; conv1: w1 [C, S, 1], b1 (C).
// y: (T, C) (must not alias x); x: (T, C); a: (T, S) saved pre-activation of conv3.
void jb_cg_res_forward(float *y, float *a, const float *x, int64_t T, int C, int S,
                       const float *w3, const float *b3, const float *w1, const float *b1,
                       int d, float *ws);
// dx: (T, C) written (may alias dy); dw3/db3/dw1/db1 +=; dy: (T, C); x, a as saved.
void jb_cg_res_backward(float *dx, float *dw3, float *db3, float *dw1, float *db1,
                        const float *dy, const float *x, const float *a, int64_t T, int C,
                        int S, const float *w3, const float *w1, int d, float *ws);

#endif
