// jb_cuda.h: the conventions every common/cuda/*.cu file follows, so that one source compiles
//   (a) with nvcc for real GPUs (sm_80, sm_90 + PTX; `make CUDA=1`), and
//   (b) as plain C++17 against the CPU emulation of the CUDA runtime and cuBLAS in
//       common/cuda_emu/ (`-DJB_CUDA_EMU -Icommon/cuda_emu`; built by plain `make` into
//       build/libjukebox-emu.a and exercised by tests/test_cuda_*.c in `make test`).
//
// Rules for a .cu file:
//   - Include this header (it includes <cuda_runtime.h> and <cublas_v2.h>); include C headers
//     of common/ inside extern "C" { }.
//   - Kernels are one thread per flat index, no shared memory, no barriers, no warp intrinsics:
//     JB_CUDA_KERNEL wraps a JB_HD body of jb_kernels.h — except block-cooperative kernels:
//     static __shared__ arrays and __syncthreads() (no warp intrinsics, no dynamic shared
//     memory, every thread of a block reaches every barrier), launched with JB_LAUNCH_COOP,
//     which the emulation runs faithfully (one coroutine per thread, a real barrier). A
//     __syncthreads reached in a JB_LAUNCH launch fails it under the emulation.
//   - Launch with JB_LAUNCH(kernel, grid, block, stream, args...), never <<< >>>: under the
//     emulation it becomes a loop over every block (OpenMP) and thread index, with the grid and
//     block checked as the driver checks them (an invalid configuration is a launch error).
//   - Every runtime call is wrapped: JB_CUDA_CHECK(call, err) / JB_CUBLAS_CHECK(call, err)
//     return -1 from the enclosing function after filling err (jb_err_t *, may be NULL) with
//     file, line, the call's text and the error string; cudaErrorMemoryAllocation becomes
//     JB_ENOMEM "out of device memory", other failures JB_EUNAVAIL. JB_CUDA_LAUNCHED(err) checks
//     the last launch (cudaGetLastError).
//   - Device memory only through cudaMalloc / cudaFree; the emulation counts the bytes and
//     refuses past its fake device size (jb_cuda_emu_set_mem), so out-of-memory paths are tested.
//
// Thread rules: the macros are reentrant. Ownership: none.
#ifndef JB_CUDA_H
#define JB_CUDA_H

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "jb_err.h"
#include "jb_kernels.h"
}

#define JB_CUDA_BLOCK 256

static inline unsigned jb_cuda_blocks(int64_t n) {
    return (unsigned)((n + JB_CUDA_BLOCK - 1) / JB_CUDA_BLOCK);
}

#ifdef JB_CUDA_EMU
#define JB_LAUNCH(kernel, grid, block, stream, ...) \
    jb_emu_launch(kernel, dim3(grid), dim3(block), (stream), __VA_ARGS__)
#define JB_LAUNCH_COOP(kernel, grid, block, stream, ...) \
    jb_emu_launch_coop(kernel, dim3(grid), dim3(block), (stream), __VA_ARGS__)
#else
#define JB_LAUNCH(kernel, grid, block, stream, ...) \
    kernel<<<(grid), (block), 0, (stream)>>>(__VA_ARGS__)
#define JB_LAUNCH_COOP(kernel, grid, block, stream, ...) \
    kernel<<<(grid), (block), 0, (stream)>>>(__VA_ARGS__)
#endif

// One thread per index i in [0, n): `__global__ void name params` running `body args` when i < n.
// params must begin with `int64_t n`.
#define JB_CUDA_KERNEL(name, body, params, args)                         \
    __global__ void name params {                                        \
        int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;      \
        if (i < n) body args;                                            \
    }

// Fill err for a failed CUDA runtime call; returns -1.
static inline int jb_cuda_fail(jb_err_t *err, const char *file, int line, const char *call,
                               cudaError_t e) {
    if (e == cudaErrorMemoryAllocation)
        return jb_err_set(err, JB_ENOMEM, "%s:%d: %s: out of device memory (%s)", file, line,
                          call, cudaGetErrorString(e));
    return jb_err_set(err, JB_EUNAVAIL, "%s:%d: %s: CUDA error %d: %s", file, line, call, (int)e,
                      cudaGetErrorString(e));
}

static inline const char *jb_cublas_status_name(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED (out of device memory)";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "cuBLAS error";
    }
}

static inline int jb_cublas_fail(jb_err_t *err, const char *file, int line, const char *call,
                                 cublasStatus_t s) {
    return jb_err_set(err, s == CUBLAS_STATUS_ALLOC_FAILED ? JB_ENOMEM : JB_EUNAVAIL,
                      "%s:%d: %s: %s (%d)", file, line, call, jb_cublas_status_name(s), (int)s);
}

#define JB_CUDA_CHECK(call, err)                                                       \
    do {                                                                               \
        cudaError_t e_ = (call);                                                       \
        if (e_ != cudaSuccess) return jb_cuda_fail((err), __FILE__, __LINE__, #call, e_); \
    } while (0)

#define JB_CUBLAS_CHECK(call, err)                                                       \
    do {                                                                                 \
        cublasStatus_t s_ = (call);                                                      \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                 \
            return jb_cublas_fail((err), __FILE__, __LINE__, #call, s_);                 \
    } while (0)

#define JB_CUDA_LAUNCHED(err) JB_CUDA_CHECK(cudaGetLastError(), err)

#endif
