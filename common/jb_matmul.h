// jb_matmul.h: the matrix products of the model, weights kept as stored.
//
// The reference's Conv1D stores its weight as [n_in, n_out] and computes
// y = x·W + b. Here:
//   y: (M, N)  x: (M, K)  W: (K, N) in dtype wdt (F32, F16 or BF16)  bias: (N) or NULL
// Small M (a sampling step: one row per sample in the batch) is bound by the
// weight traffic, so those products stream W once for all M rows and widen
// f16/bf16 in registers; large M (priming, teacher forcing) goes to BLAS sgemm.
//
// Thread rules: reentrant; uses the OpenMP thread pool of the caller.
#ifndef JB_MATMUL_H
#define JB_MATMUL_H

#include "jb_tensor.h"

// y = x·W (+ bias). y must not alias x.
void jb_matmul(float *y, const float *x, const void *w, jb_dtype_t wdt, const float *bias,
               int M, int K, int N);
// y += x·W (no bias): for accumulating into a residual stream.
void jb_matmul_acc(float *y, const float *x, const void *w, jb_dtype_t wdt, int M, int K, int N);
// y = x·Wᵀ with W: (N, K) float32 (an embedding used as the output projection).
void jb_matmul_wt(float *y, const float *x, const float *w, int M, int K, int N);

#endif
