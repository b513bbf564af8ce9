// jb_conv.cu: the conv bodies of jb_conv.h on a GPU, one thread per index, products
// through cuBLAS. All pointers are device pointers; cublas is a cublasHandle_t whose
// stream the kernels also use. Written to the conventions of jb_cuda.h (JB_LAUNCH), so the
// same source also builds against the CPU emulation of CUDA.
#include "jb_cuda.h"

extern "C" {
#include "jb_conv.h"
}

JB_CUDA_KERNEL(k_im2col, jb_im2col_row,
               (int64_t n, float *col, const float *x, int64_t T_in, int C, int k, int s, int p,
                int d, int relu_in),
               (i, col, x, T_in, C, k, s, p, d, relu_in))
JB_CUDA_KERNEL(k_pad_rows, jb_pad_rows_row,
               (int64_t n, float *pad, const float *x, int64_t T_in, int C, int64_t margin,
                int relu_in),
               (i, pad, x, T_in, C, margin, relu_in))
JB_CUDA_KERNEL(k_bias_act, jb_bias_act_row, (int64_t n, float *y, const float *b, int C, int relu),
               (i, y, b, C, relu))
JB_CUDA_KERNEL(k_col2im_t, jb_col2im_t_row,
               (int64_t n, float *out, const float *y, const float *b, int64_t T_in, int OC, int k,
                int s, int p, int acc),
               (i, out, y, b, T_in, OC, k, s, p, acc))

JB_CUDA_KERNEL(k_wino_in, jb_wino_in_tile,
               (int64_t n, float *U, const float *x, const float *zrow, int64_t T, int C, int d,
                int relu_in, int64_t nrow),
               (i, U, x, zrow, T, C, d, relu_in, 0, nrow))
JB_CUDA_KERNEL(k_wino_out, jb_wino_out_tile,
               (int64_t n, float *y, const float *M, const float *b, int64_t T, int OC, int d,
                int acc, int relu_out, int64_t nrow),
               (i, y, M, b, T, OC, d, acc, relu_out, 0, nrow))

static int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

static cudaStream_t stream_of(void *cublas) {
    cudaStream_t st = 0;
    cublasGetStream((cublasHandle_t)cublas, &st);
    return st;
}

// Row-major C (M, N) = A (M, K) · B (K, N) (+ beta C), as column-major Cᵀ = Bᵀ · Aᵀ.
static int sgemm_rm(void *cublas, int M, int N, int K, const float *A, int lda, const float *B,
                    int ldb, float beta, float *C, int ldc) {
    const float one = 1.0f;
    cublasStatus_t st = cublasSgemm((cublasHandle_t)cublas, CUBLAS_OP_N, CUBLAS_OP_N, N, M, K,
                                    &one, B, ldb, A, lda, &beta, C, ldc);
    return st == CUBLAS_STATUS_SUCCESS ? 0 : -1;
}

extern "C" size_t jb_conv1d_cuda_ws_floats(int64_t T_in, int C, int k, int s, int p, int d,
                                           int flags) {
    int64_t T_out = jb_conv1d_out_len(T_in, k, s, p, d);
    if (T_out <= 0 || (k == 1 && s == 1 && p == 0 && !(flags & JB_CONV_RELU_IN))) return 0;
    if (flags & JB_CONV_DIRECT) return (size_t)(((T_out - 1) * s + (int64_t)(k - 1) * d + 1) * C);
    return (size_t)(T_out * k * C);
}

extern "C" size_t jb_convt1d_cuda_ws_floats(int64_t T_in, int C, int OC, int k, int s,
                                            int flags) {
    if (flags & JB_CONV_DIRECT) return (size_t)((T_in + 2 * ((k + s - 1) / s) + 1) * C);
    return (size_t)(T_in * k * OC);
}

extern "C" size_t jb_conv1d_wino_cuda_ws_floats(int64_t T, int C, int OC, int d) {
    int64_t nt = jb_wino_tiles(T, d);
    return (size_t)(C + 4 * nt * (C + OC));
}

extern "C" int jb_conv1d_wino_cuda(void *cublas, float *out, const float *x, int64_t T, int C,
                                   const float *wg, const float *b, int OC, int d, int flags,
                                   float *ws) {
    if (T <= 0) return 0;
    cudaStream_t st = stream_of(cublas);
    int64_t nt = jb_wino_tiles(T, d);   // all tiles in one block
    float *zrow = ws, *U = ws + C, *M = U + 4 * nt * C;
    if (cudaMemsetAsync(zrow, 0, sizeof(float) * C, st) != cudaSuccess) return -1;
    JB_LAUNCH(k_wino_in, jb_cuda_blocks(nt), JB_CUDA_BLOCK, st, nt, U, x, (const float *)zrow, T,
              C, d, (flags & JB_CONV_RELU_IN) != 0 ? 1 : 0, nt);
    for (int i = 0; i < 4; i++)
        if (sgemm_rm(cublas, (int)nt, OC, C, U + i * nt * C, C, wg + (int64_t)i * C * OC, OC, 0.0f,
                     M + i * nt * OC, OC) != 0)
            return -1;
    JB_LAUNCH(k_wino_out, jb_cuda_blocks(nt), JB_CUDA_BLOCK, st, nt, out, (const float *)M, b, T,
              OC, d, (flags & JB_CONV_ACC) != 0 ? 1 : 0, (flags & JB_CONV_RELU_OUT) != 0 ? 1 : 0,
              nt);
    return cudaGetLastError() == cudaSuccess ? 0 : -1;
}

extern "C" int jb_bias_act_cuda(float *y, const float *b, int64_t n, int C, int relu) {
    if (n <= 0 || (!b && !relu)) return 0;
    JB_LAUNCH(k_bias_act, jb_cuda_blocks(n / C), JB_CUDA_BLOCK, 0, n / C, y, b, C, relu);
    return cudaGetLastError() == cudaSuccess ? 0 : -1;
}

extern "C" int jb_conv1d_cuda(void *cublas, float *out, const float *x, int64_t T_in, int C,
                              const float *wp, const float *b, int OC, int k, int s, int p, int d,
                              int flags, float *ws) {
    int64_t T_out = jb_conv1d_out_len(T_in, k, s, p, d);
    if (T_out <= 0) return 0;
    cudaStream_t st = stream_of(cublas);
    int relu_in = (flags & JB_CONV_RELU_IN) != 0;
    float beta = (flags & JB_CONV_ACC) ? 1.0f : 0.0f;
    int rc = 0;
    if (k == 1 && s == 1 && p == 0 && !relu_in) {
        rc = sgemm_rm(cublas, (int)T_out, OC, C, x, C, wp, OC, beta, out, OC);
    } else if (flags & JB_CONV_DIRECT) {
        int64_t rows = (T_out - 1) * s + (int64_t)(k - 1) * d + 1;
        JB_LAUNCH(k_pad_rows, jb_cuda_blocks(rows), JB_CUDA_BLOCK, st, rows, ws, x, T_in, C,
                  (int64_t)p, relu_in);
        for (int j = 0; j < k && rc == 0; j++)
            rc = sgemm_rm(cublas, (int)T_out, OC, C, ws + (int64_t)j * d * C, s * C,
                          wp + (int64_t)j * C * OC, OC, j == 0 ? beta : 1.0f, out, OC);
    } else {
        JB_LAUNCH(k_im2col, jb_cuda_blocks(T_out), JB_CUDA_BLOCK, st, T_out, ws, x, T_in, C, k, s,
                  p, d, relu_in);
        rc = sgemm_rm(cublas, (int)T_out, OC, k * C, ws, k * C, wp, OC, beta, out, OC);
    }
    if (rc != 0 || cudaGetLastError() != cudaSuccess) return -1;
    int relu = (flags & JB_CONV_RELU_OUT) != 0;
    if (b || relu)
        JB_LAUNCH(k_bias_act, jb_cuda_blocks(T_out), JB_CUDA_BLOCK, st, T_out, out, b, OC, relu);
    return cudaGetLastError() == cudaSuccess ? 0 : -1;
}

extern "C" int jb_convt1d_cuda(void *cublas, float *out, const float *x, int64_t T_in, int C,
                               const float *wp, const float *b, int OC, int k, int s, int p,
                               int flags, float *ws) {
    int64_t T_out = jb_convt1d_out_len(T_in, k, s, p);
    if (T_out <= 0) return 0;
    cudaStream_t st = stream_of(cublas);
    int acc = (flags & JB_CONV_ACC) != 0;
    if (flags & JB_CONV_DIRECT) {   // per output phase, as the CPU version (jb_conv.c)
        int64_t ml = (k + s - 1) / s, rows = T_in + 2 * ml + 1;
        JB_LAUNCH(k_pad_rows, jb_cuda_blocks(rows), JB_CUDA_BLOCK, st, rows, ws, x, T_in, C, ml, 0);
        for (int r = 0; r < s; r++) {
            int64_t q_lo = -floor_div(r - p, s), q_hi = floor_div(T_out - 1 + p - r, s);
            if (q_hi < q_lo) continue;
            int64_t nq = q_hi - q_lo + 1;
            float *o = out + (q_lo * s + r - p) * OC;
            if (r >= k) {
                if (!acc && cudaMemset2DAsync(o, sizeof(float) * s * OC, 0, sizeof(float) * OC,
                                              (size_t)nq, st) != cudaSuccess)
                    return -1;
                continue;
            }
            for (int64_t m = 0; r + m * s < k; m++)
                if (sgemm_rm(cublas, (int)nq, OC, C, ws + (ml + q_lo - m) * C, C,
                             wp + (r + m * s) * (int64_t)OC, k * OC,
                             (m == 0 && !acc) ? 0.0f : 1.0f, o, s * OC) != 0)
                    return -1;
        }
        int relu = (flags & JB_CONV_RELU_OUT) != 0;
        if (b || relu)
            JB_LAUNCH(k_bias_act, jb_cuda_blocks(T_out), JB_CUDA_BLOCK, st, T_out, out, b, OC,
                      relu);
        return cudaGetLastError() == cudaSuccess ? 0 : -1;
    }
    if (sgemm_rm(cublas, (int)T_in, k * OC, C, x, C, wp, k * OC, 0.0f, ws, k * OC) != 0) return -1;
    JB_LAUNCH(k_col2im_t, jb_cuda_blocks(T_out), JB_CUDA_BLOCK, st, T_out, out, ws, b, T_in, OC,
              k, s, p, acc);
    if (flags & JB_CONV_RELU_OUT)
        JB_LAUNCH(k_bias_act, jb_cuda_blocks(T_out), JB_CUDA_BLOCK, st, T_out, out,
                  (const float *)0, OC, 1);
    return cudaGetLastError() == cudaSuccess ? 0 : -1;
}
