// jb_kernels.h: how a kernel is written once for the CPU and for CUDA.
//
// A kernel body is a `JB_HD static inline` function of one flat index `i`
// (plus its arguments). JB_HD is `__host__ __device__` under nvcc and empty
// otherwise, so the same body is compiled
//   - for the CPU: a launcher runs `#pragma omp parallel for` over i
//     (JB_CPU_LAUNCH below), and
//   - for CUDA: common/cuda/*.cu wraps it in a __global__ that runs one
//     thread per index (JB_CUDA_KERNEL in jb_cuda.h).
// The CPU tests therefore run the very bodies the GPU runs.
//
// Bodies must not allocate, log or touch globals; everything comes in through
// arguments (device pointers on the GPU).
#ifndef JB_KERNELS_H
#define JB_KERNELS_H

#include <stdint.h>

#ifdef __CUDACC__
#define JB_HD __host__ __device__
#else
#define JB_HD
#endif

// CPU launcher: JB_CPU_LAUNCH(n, body, args...) runs body(i, args...) for i in [0, n).
// Small n runs on the calling thread (an OpenMP fork costs ~microseconds).
#define JB_CPU_PAR_MIN 4096
#define JB_CPU_LAUNCH(n, body, ...)                                            \
    do {                                                                       \
        int64_t n_ = (int64_t)(n);                                             \
        _Pragma("omp parallel for schedule(static) if (n_ >= JB_CPU_PAR_MIN)") \
        for (int64_t i_ = 0; i_ < n_; i_++) body(i_, __VA_ARGS__);             \
    } while (0)

#endif
