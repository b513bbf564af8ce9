// jb_gpu.h: a small C interface to device memory and cuBLAS for C code (stages, tests), so that
// only common/cuda/*.cu include CUDA headers. Implemented in common/cuda/jb_gpu.cu, which builds
// with nvcc (`make CUDA=1`, into libjukebox.a) or against the CPU emulation of CUDA (plain
// `make`, into build/libjukebox-emu.a; see common/jb_cuda.h). A CPU-only program links neither
// and must not call these.
//
// Every function checks its CUDA/cuBLAS calls and fills err (may be NULL) with file, line, call
// and the error string; out of device memory is JB_ENOMEM "out of device memory".
// Thread rules: the device functions may be called from any thread; a blas handle belongs to
// one thread at a time. Copies are synchronous (they return when the data has arrived).
// Ownership: jb_gpu_alloc'd memory is freed with jb_gpu_free; handles with jb_gpu_blas_destroy.
#ifndef JB_GPU_H
#define JB_GPU_H

#include <stddef.h>

#include "jb_err.h"
#include "jb_tensor.h"

// Device memory of `bytes` bytes (uninitialised); NULL + err.
void *jb_gpu_alloc(size_t bytes, jb_err_t *err);
void jb_gpu_free(void *p);
int jb_gpu_upload(void *dst_dev, const void *src_host, size_t bytes, jb_err_t *err);
int jb_gpu_download(void *dst_host, const void *src_dev, size_t bytes, jb_err_t *err);
int jb_gpu_memset(void *dst_dev, int value, size_t bytes, jb_err_t *err);
// Wait for all queued device work; reports an error of an earlier asynchronous launch.
int jb_gpu_sync(jb_err_t *err);
// Free and total bytes of the current device.
int jb_gpu_mem_info(size_t *free_b, size_t *total_b, jb_err_t *err);

// A cuBLAS handle (a cublasHandle_t), on the default stream. NULL + err.
void *jb_gpu_blas_new(jb_err_t *err);
void jb_gpu_blas_destroy(void *blas);

// cuBLAS's column-major C = alpha·op(A)·op(B) + beta·C (cublasGemmEx):
// op(A) (m, k), op(B) (k, n), C (m, n) float32; ta/tb 0: as is, 1: transposed; A and B
// float32, or both float16 or both bfloat16 (then f32 accumulation, CUBLAS_COMPUTE_32F).
// All pointers device pointers.
int jb_gpu_gemm(void *blas, int ta, int tb, int m, int n, int k, float alpha, const void *A,
                jb_dtype_t at, int lda, const void *B, jb_dtype_t bt, int ldb, float beta,
                float *C, int ldc, jb_err_t *err);

#endif
