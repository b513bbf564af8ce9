// jb_matmul.c: see jb_matmul.h. Reference implementation on BLAS; f16/bf16
// weights are widened a row block at a time into a scratch buffer.
#include "jb_matmul.h"

#include <cblas.h>
#include <stdlib.h>

static void widen_rows(float *dst, const void *w, jb_dtype_t wdt, int64_t k0, int64_t rows,
                       int64_t N) {
    const uint16_t *h = (const uint16_t *)w + k0 * N;
    int64_t n = rows * N;
    if (wdt == JB_F16)
        for (int64_t i = 0; i < n; i++) dst[i] = jb_f16_to_f32(h[i]);
    else
        for (int64_t i = 0; i < n; i++) dst[i] = jb_bf16_to_f32(h[i]);
}

static void matmul_impl(float *y, const float *x, const void *w, jb_dtype_t wdt, int M, int K,
                        int N, float beta) {
    if (wdt == JB_F32) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, x, K,
                    (const float *)w, N, beta, y, N);
        return;
    }
    const int64_t KB = 256;
    float *tmp = malloc(sizeof(float) * (size_t)KB * (size_t)N);
    for (int64_t k0 = 0; k0 < K; k0 += KB) {
        int64_t kb = K - k0 < KB ? K - k0 : KB;
        widen_rows(tmp, w, wdt, k0, kb, N);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, (int)kb, 1.0f, x + k0, K,
                    tmp, N, k0 == 0 ? beta : 1.0f, y, N);
    }
    free(tmp);
}

void jb_matmul(float *y, const float *x, const void *w, jb_dtype_t wdt, const float *bias,
               int M, int K, int N) {
    if (bias) {
        for (int m = 0; m < M; m++)
            for (int n = 0; n < N; n++) y[(int64_t)m * N + n] = bias[n];
        matmul_impl(y, x, w, wdt, M, K, N, 1.0f);
    } else {
        matmul_impl(y, x, w, wdt, M, K, N, 0.0f);
    }
}

void jb_matmul_acc(float *y, const float *x, const void *w, jb_dtype_t wdt, int M, int K, int N) {
    matmul_impl(y, x, w, wdt, M, K, N, 1.0f);
}

void jb_matmul_wt(float *y, const float *x, const float *w, int M, int K, int N) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x, K, w, K, 0.0f, y, N);
}
