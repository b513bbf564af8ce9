// jb_matmul.h: the matrix products of the model, weights kept as stored.
//
// The reference's Conv1D stores its weight as [n_in, n_out] and computes
// y = x·W + b. Here:
//   y: (M, N)  x: (M, K)  W: (K, N) in dtype wdt (F32, F16 or BF16)  bias: (N) or NULL
// Small M (a sampling step: one row per sample in the batch) is bound by the
// weight traffic, so those products stream W once for all M rows and widen
// f16/bf16 in registers; large M (priming, teacher forcing, the conditioner)
// runs the same kernels (AVX2: through packed copies of 64 columns at a time),
// so that a row's bits never depend on M; only the plain C kernel hands it to
// BLAS sgemm. For sampling, weights
// packed at load time (jb_matmul_pack) stream faster than weights as stored.
// Float32 accumulation; not bit-identical to sgemm (another summation order).
// See docs/matmul.md for the design and figures.
//
// Thread rules: reentrant; uses the OpenMP thread pool of the caller (inside a
// parallel region a call runs on the calling thread).
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

// Weights repacked once, at load time, into tiles of 32 columns each stored
// (K, 32) contiguously, so that the streaming kernel reads memory strictly in
// sequence. Opaque; owns a copy of the weights (the source may be freed).
typedef struct jb_matmul_packed jb_matmul_packed_t;
// w: (K, N) in wdt (F32, F16 or BF16). NULL + err on a bad dtype/shape or no memory.
jb_matmul_packed_t *jb_matmul_pack(const void *w, jb_dtype_t wdt, int K, int N, jb_err_t *err);
// 8-bit weights: w (K, N) in wdt (F32, F16 or BF16) quantized to int8 with one float scale per
// column and group of JB_MATMUL_Q8_GROUP rows (symmetric: scale = max |w| / 127 over the
// group, q = round(w / scale)), packed in the same tiles: a quarter of f32's bytes, half of
// bf16's, +1/16 for the scales. The products use the f32 x as it is (no quantized
// activations): y = Σ_groups scale · Σ_k x_k q_kn. NULL + err as jb_matmul_pack.
#define JB_MATMUL_Q8_GROUP 64
jb_matmul_packed_t *jb_matmul_pack_q8(const void *w, jb_dtype_t wdt, int K, int N,
                                      jb_err_t *err);
// JB_F32, JB_F16, JB_BF16, or JB_I8 for jb_matmul_pack_q8.
jb_dtype_t jb_matmul_packed_dtype(const jb_matmul_packed_t *p);
// Columns of a packed tile.
#define JB_MATMUL_TILE 32
// The packed copy's arrays, for other backends (common/cuda/jb_transformer.cu uploads the int8
// tiles and scales as they are, so the device multiplies the CPU's quantization):
// data: (ceil(N / 32), K, 32) in the packed dtype, columns past N zero; scales: I8 only,
// (ceil(N / 32), ceil(K / JB_MATMUL_Q8_GROUP), 32), else NULL (0 bytes). Borrowed: valid while
// p lives.
void jb_matmul_packed_arrays(const jb_matmul_packed_t *p, const void **data, size_t *data_bytes,
                             const float **scales, size_t *scale_bytes);
// Frees, sets *p_p to NULL; accepts NULL.
void jb_matmul_packed_destroy(jb_matmul_packed_t **p_p);
// Bytes of weights the packed copy holds (N rounded up to 32 columns; int8: with the scales).
size_t jb_matmul_packed_bytes(const jb_matmul_packed_t *p);
// As jb_matmul / jb_matmul_acc with the packed weights (K, N as packed).
// y: (M, N)  x: (M, K)  bias: (N) or NULL
void jb_matmul_packed(float *y, const float *x, const jb_matmul_packed_t *w, const float *bias,
                      int M);
void jb_matmul_packed_acc(float *y, const float *x, const jb_matmul_packed_t *w, int M);

// Products with M up to this many rows stream W straight from its layout; larger ones
// go through the many-row schedule of the same kernels (the plain C kernel: BLAS sgemm).
#define JB_MATMUL_SMALL_M 16

// Which streaming kernel runs: "c" (plain C), "avx2" (AVX2+FMA+F16C) or
// "avx512"; NULL picks the best the CPU has (the default; the environment
// variable JB_MATMUL_KERNEL can also set it). Returns 0, 1 or 2 for the kernel
// now in use, or -1 when this build or CPU lacks it. For tests and benches;
// not to be called while another thread multiplies.
int jb_matmul_set_kernel(const char *name);
// "c", "avx2" or "avx512": the kernel in use.
const char *jb_matmul_kernel_name(void);

#endif
