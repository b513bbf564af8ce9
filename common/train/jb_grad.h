// jb_grad.h: forward/backward pairs of the layers the priors train through (llm.c style:
// plain functions over raw pointers, every argument's shape in the comment above it).
//
// Conventions: a forward writes its output (overwrites); a backward ADDS into every gradient
// it produces (activation gradients and weight gradients alike), so callers zero them once
// and several uses of one tensor (a tied embedding, a residual branch) simply accumulate.
// Forwards save what their backward needs in buffers the caller owns (LayerNorm mean/rstd,
// softmax weights); nothing here allocates.
//
// Numerics follow the reference in float32: LayerNorm eps and biased variance as
// torch.nn.LayerNorm; quick_gelu x·σ(1.702x); training-mode attention scales q and k each by
// s = head_dim^(-1/4) in float32 before their product (eval mode scales the product by s²).
//
// Thread rules: reentrant; loops use the caller's OpenMP pool; products go to BLAS sgemm.
// Ownership: every pointer is borrowed.
#ifndef JB_GRAD_H
#define JB_GRAD_H

#include <stdint.h>

#include "jb_nn.h"

// ---- LayerNorm (eps 1e-5, biased variance) -----------------------------------------------
// out, x: (R, C); g, b: (C); mean, rstd: (R) saved for the backward. out must not alias x.
void jb_grad_layernorm_forward(float *out, float *mean, float *rstd, const float *x,
                               const float *g, const float *b, int64_t R, int C);
// dx: (R, C) +=; dg, db: (C) +=; dout, x: (R, C); mean, rstd: (R); g: (C)
void jb_grad_layernorm_backward(float *dx, float *dg, float *db, const float *dout,
                                const float *x, const float *mean, const float *rstd,
                                const float *g, int64_t R, int C);

// ---- linear (the reference's Conv1D: y = x·W + b) ----------------------------------------
// out: (M, N); x: (M, K); w: (K, N); b: (N) or NULL
void jb_grad_linear_forward(float *out, const float *x, const float *w, const float *b, int M,
                            int K, int N);
// dx: (M, K) += dout·Wᵀ (NULL: not wanted); dw: (K, N) += xᵀ·dout; db: (N) += Σ_rows dout (NULL
// when there is no bias); dout: (M, N); x: (M, K); w: (K, N)
void jb_grad_linear_backward(float *dx, float *dw, float *db, const float *dout, const float *x,
                             const float *w, int M, int K, int N);

// ---- output projection by an embedding table (nn.Linear without bias: y = x·Eᵀ) -------------
// out: (M, V); x: (M, K); e: (V, K)
void jb_grad_proj_t_forward(float *out, const float *x, const float *e, int M, int K, int V);
// dx: (M, K) += dout·E (NULL: not wanted); de: (V, K) += doutᵀ·x; dout: (M, V); x: (M, K)
void jb_grad_proj_t_backward(float *dx, float *de, const float *dout, const float *x,
                             const float *e, int M, int K, int V);

// ---- embedding ------------------------------------------------------------------------------
// dtable: (V, C) += dout rows at ids; dout: (rows, C); ids: (rows), id < 0 skipped (a masked
// slot); the ids must be < V.
void jb_grad_embed_backward(float *dtable, const float *dout, const int32_t *ids, int64_t rows,
                            int C);

// ---- quick_gelu -------------------------------------------------------------------------------
// out, u: (n); out = u·σ(1.702u)
void jb_grad_quick_gelu_forward(float *out, const float *u, int64_t n);
// du: (n) += dout·σ(1.702u)·(1.702u(1 − σ) + 1); dout, u: (n)
void jb_grad_quick_gelu_backward(float *du, const float *dout, const float *u, int64_t n);

// ---- ReLU ------------------------------------------------------------------------------------
// out, x: (n); out may alias x
void jb_grad_relu_forward(float *out, const float *x, int64_t n);
// dx: (n) += dout where x > 0
void jb_grad_relu_backward(float *dx, const float *dout, const float *x, int64_t n);

// ---- masked softmax attention (training mode) ----------------------------------------------
// Query row t of sequence n sees the keys jb_nn_attn_keys(kind, t) lists (kind 6: all Tk encoder
// rows; kind 3 in the first block: none, output 0 as the reference's zero-padded keys give).
// Heads are contiguous slices of hd columns: S = H·hd.
//   a: (N, T, S) attention output
//   w: (N, T, H, kmax) softmax weights saved for the backward (kmax >= most keys of a query)
//   q: (N, T) rows of q_stride floats, the first S used
//   k, v: (N, Tk) rows of kv_stride floats, the first S used
void jb_grad_attn_forward(float *a, float *w, const float *q, int q_stride, const float *k,
                          const float *v, int kv_stride, jb_nn_attn_kind_t kind, int N, int T,
                          int Tk, int H, int hd, int kmax);
// dq, dk, dv: +=, laid out as q, k, v (same strides); da: (N, T, S); w as saved by the forward.
void jb_grad_attn_backward(float *dq, float *dk, float *dv, const float *da, const float *w,
                           const float *q, int q_stride, const float *k, const float *v,
                           int kv_stride, jb_nn_attn_kind_t kind, int N, int T, int Tk, int H,
                           int hd, int kmax);

// ---- cross-entropy in bits ------------------------------------------------------------------
// Mean over rows of −log2 softmax(logits)[target]; returns it (double accumulation).
// dlogits (may be NULL): (rows, V) += weight·(softmax − onehot)/(rows·ln 2), the gradient of
// weight·(returned loss). logits: (rows, V); targets: (rows) in [0, V).
double jb_grad_ce_bits(float *dlogits, const float *logits, const int32_t *targets,
                       int64_t rows, int V, double weight);

// ---- 1-D convolutions, time-major ---------------------------------------------------------
// Conv1d with stride 1 and an output as long as the input (pad = dil·(k−1)/2):
// out: (L, Co); in: (L, Ci); w: (Co, Ci, k) as PyTorch stores it; b: (Co)
void jb_grad_conv1d_forward(float *out, const float *in, const float *w, const float *b, int L,
                            int Ci, int Co, int k, int dil, int pad);
// din: (L, Ci) += (NULL: not wanted); dw: (Co, Ci, k) +=; db: (Co) +=; dout: (L, Co)
void jb_grad_conv1d_backward(float *din, float *dw, float *db, const float *dout,
                             const float *in, const float *w, int L, int Ci, int Co, int k,
                             int dil, int pad);
// ConvTranspose1d: out: (Lo, Co), Lo = (L − 1)·s − 2·pad + k; in: (L, Ci);
// w: (Ci, Co, k) as PyTorch stores it; b: (Co)
void jb_grad_convt1d_forward(float *out, const float *in, const float *w, const float *b, int L,
                             int Ci, int Co, int k, int s, int pad);
// din: (L, Ci) +=; dw: (Ci, Co, k) +=; db: (Co) +=; dout: (Lo, Co)
void jb_grad_convt1d_backward(float *din, float *dw, float *db, const float *dout,
                              const float *in, const float *w, int L, int Ci, int Co, int k,
                              int s, int pad);

#endif
