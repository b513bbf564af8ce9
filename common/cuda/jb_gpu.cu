// jb_gpu.cu: see jb_gpu.h.
#include "jb_cuda.h"

extern "C" {
#include "jb_gpu.h"
}

namespace {
bool dtype_of(jb_dtype_t t, cudaDataType_t *out) {
    switch (t) {
    case JB_F32: *out = CUDA_R_32F; return true;
    case JB_F16: *out = CUDA_R_16F; return true;
    case JB_BF16: *out = CUDA_R_16BF; return true;
    default: return false;
    }
}
}  // namespace

extern "C" {

void *jb_gpu_alloc(size_t bytes, jb_err_t *err) {
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        if (e == cudaErrorMemoryAllocation)
            jb_err_set(err, JB_ENOMEM, "out of device memory: cudaMalloc of %.3f GiB failed",
                       (double)bytes / (1 << 30));
        else
            jb_cuda_fail(err, __FILE__, __LINE__, "cudaMalloc", e);
        cudaGetLastError();
        return NULL;
    }
    return p;
}

void jb_gpu_free(void *p) {
    if (p) cudaFree(p);
}

int jb_gpu_upload(void *dst_dev, const void *src_host, size_t bytes, jb_err_t *err) {
    JB_CUDA_CHECK(cudaMemcpy(dst_dev, src_host, bytes, cudaMemcpyHostToDevice), err);
    return 0;
}

int jb_gpu_download(void *dst_host, const void *src_dev, size_t bytes, jb_err_t *err) {
    JB_CUDA_CHECK(cudaMemcpy(dst_host, src_dev, bytes, cudaMemcpyDeviceToHost), err);
    return 0;
}

int jb_gpu_memset(void *dst_dev, int value, size_t bytes, jb_err_t *err) {
    JB_CUDA_CHECK(cudaMemset(dst_dev, value, bytes), err);
    return 0;
}

int jb_gpu_sync(jb_err_t *err) {
    JB_CUDA_CHECK(cudaDeviceSynchronize(), err);
    JB_CUDA_LAUNCHED(err);
    return 0;
}

int jb_gpu_mem_info(size_t *free_b, size_t *total_b, jb_err_t *err) {
    JB_CUDA_CHECK(cudaMemGetInfo(free_b, total_b), err);
    return 0;
}

void *jb_gpu_blas_new(jb_err_t *err) {
    cublasHandle_t h = NULL;
    cublasStatus_t s = cublasCreate(&h);
    if (s != CUBLAS_STATUS_SUCCESS) {
        jb_cublas_fail(err, __FILE__, __LINE__, "cublasCreate", s);
        return NULL;
    }
    return h;
}

void jb_gpu_blas_destroy(void *blas) {
    if (blas) cublasDestroy((cublasHandle_t)blas);
}

int jb_gpu_gemm(void *blas, int ta, int tb, int m, int n, int k, float alpha, const void *A,
                jb_dtype_t at, int lda, const void *B, jb_dtype_t bt, int ldb, float beta,
                float *C, int ldc, jb_err_t *err) {
    cudaDataType_t ca, cb;
    if (!dtype_of(at, &ca) || !dtype_of(bt, &cb) || (at != bt && (at != JB_F32 || bt != JB_F32)))
        return jb_err_set(err, JB_EUNSUP, "gemm: input dtypes %s x %s (expected equal F32, F16 "
                          "or BF16)", jb_dtype_name(at), jb_dtype_name(bt));
    JB_CUBLAS_CHECK(cublasGemmEx((cublasHandle_t)blas, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                                 tb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k, &alpha, A, ca, lda, B,
                                 cb, ldb, &beta, C, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F,
                                 CUBLAS_GEMM_DEFAULT),
                    err);
    return 0;
}

}  // extern "C"
