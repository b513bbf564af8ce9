// jb_matmul_cuda.h: the device transformer's matrix products, batch-invariant by construction.
//
// y (M, N) = x (M, K) · W (K, N) + b, with W in its stored dtype (F32, F16, BF16 widened to
// float32 in registers, as the CPU kernels of jb_matmul.h do) or int8 (I8: the tiles and scales
// of the CPU's jb_matmul_pack_q8, read as they are), x and y float32, float32 accumulation.
//
// Why not cuBLAS: cuBLAS may pick another algorithm, another split of K, another tile for
// another number of rows, so a row's result may change with the rows beside it. A stage that
// samples several jobs in one batch (jb_sample_windows) must give each job the codes it gets
// alone; the CPU kernels are batch-invariant (docs/matmul.md) and so is this one:
//
//   A block computes 32 output columns (threadIdx.x) for a group of up to 16 rows (blockIdx.y
//   picks the group), its threads splitting K into S slices (threadIdx.y; S the smallest power
//   of two >= K / 64, at most 8) of ceil(K / S) rounded up to a multiple of 64 (the int8
//   group): S and the slices depend on K only. Each thread sums its slice in k order with
//   fused multiply-adds (int8: per group of 64 rows sum = Σ x_k·q_kn from zero, then
//   acc += scale·sum, the CPU's formula), one accumulator per row; the S partial sums of an
//   element meet in shared memory (one barrier) and are added pairwise in one fixed order,
//   ((s0+s1)+(s2+s3))+((s4+s5)+(s6+s7)) (+ bias), by one thread. So every operation on output
//   element (m, n) reads only row m of x, column n of W and the bias: nothing depends on M,
//   the row group, or the other rows — row r of an M-row product is bit-identical to the same
//   row computed alone (tested).
//
// A block reads its 32 columns of W once for its whole row group (up to 16 rows): a one-token
// step of 8 sequences reads the weights once, which is the point of batching (the step is
// bound by weight bytes). Whether this kernel reaches the bandwidth bound on a GPU has not
// been measured (no GPU here): docs/cuda.md's checklist says what to time. Priming passes
// (hundreds of rows) run the same kernel, row group after row group, in float32 FMAs without
// tensor cores: slower than cuBLAS there, but a job's codes then never depend on its batch.
//
// Block-cooperative (static __shared__, one __syncthreads, JB_LAUNCH_COOP; see jb_cuda.h).
// Thread rules: reentrant. Ownership: none (device pointers borrowed for the call).
#ifndef JB_MATMUL_CUDA_H
#define JB_MATMUL_CUDA_H

#include "jb_err.h"
#include "jb_tensor.h"

#define JB_MATMUL_CUDA_COLS 32    // output columns per block (a warp reads 32 adjacent weights)
#define JB_MATMUL_CUDA_SLICES 8   // most slices of K per block
#define JB_MATMUL_CUDA_ROWS 16    // rows per block (further rows in further blocks)

// A weight matrix on the device.
typedef struct {
    const void *w;         // F32/F16/BF16: (K, N) row-major; I8: (ceil(N / 32), K, 32) int8
    const float *scales;   // I8 only: (ceil(N / 32), ceil(K / 64), 32), as jb_matmul_pack_q8
    jb_dtype_t dt;         // JB_F32, JB_F16, JB_BF16 or JB_I8
    int K, N;
} jb_matmul_cuda_w_t;

// y: (M, N) = x: (M, K) · w (+ bias: (N) or NULL); device pointers; y must not alias x;
// M <= 65535 · 16. Queued on stream (a cudaStream_t; NULL: the legacy default stream). 0, or
// -1 + err (a bad dtype or shape, or the launch failed).
int jb_matmul_cuda(float *y, const float *x, const jb_matmul_cuda_w_t *w, const float *bias,
                   int M, void *stream, jb_err_t *err);

#endif
