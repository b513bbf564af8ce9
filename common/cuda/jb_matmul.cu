// jb_matmul.cu: see jb_matmul_cuda.h. Follows the conventions of jb_cuda.h.
#include <math.h>

#include "jb_cuda.h"

extern "C" {
#include "jb_matmul.h"
#include "jb_matmul_cuda.h"
#include "jb_tensor.h"
}

namespace {

const int kCols = JB_MATMUL_CUDA_COLS, kSlices = JB_MATMUL_CUDA_SLICES;
const int kRows = JB_MATMUL_CUDA_ROWS, kGroup = JB_MATMUL_Q8_GROUP;
static_assert(JB_MATMUL_CUDA_COLS == JB_MATMUL_TILE, "a block's columns are one int8 tile");

// Slices of K: the smallest power of two >= ceil(K / 64), at most 8 (a block of 32 × that
// many threads: a short K does not keep idle threads). Their length: ceil(K / slices) rounded
// up to a multiple of the int8 group, so that no group straddles two slices. Both are functions
// of K only (batch invariance).
JB_HD inline int n_slices(int K) {
    int s = 1;
    while (s < kSlices && s * kGroup < K) s *= 2;
    return s;
}
JB_HD inline int slice_len(int K, int ns) {
    int s = (K + ns - 1) / ns;
    return (s + kGroup - 1) / kGroup * kGroup;
}

// Weight (k, n) of a (K, N) row-major matrix, widened to float32.
template <int DT>
JB_HD inline float wload(const void *w, int64_t i) {
    if (DT == JB_F16) return jb_f16_to_f32(((const uint16_t *)w)[i]);
    if (DT == JB_BF16) return jb_bf16_to_f32(((const uint16_t *)w)[i]);
    return ((const float *)w)[i];
}

// acc[r] += Σ_{k0 <= k < k1} x[r, k] · w[k, n] in k order, r < rows <= R; x: (rows, K).
// R bounds the loops at compile time (registers, no wasted iterations for a short group);
// each row's operations are the same whatever R.
template <int DT, int R>
JB_HD inline void slice_dot(float *acc, const float *x, const void *w, int K, int N, int n,
                            int k0, int k1, int rows) {
    for (int k = k0; k < k1; k++) {
        float wv = wload<DT>(w, (int64_t)k * N + n);
        const float *xk = x + k;
        for (int r = 0; r < R; r++)
            if (r < rows) acc[r] = fmaf(xk[(int64_t)r * K], wv, acc[r]);
    }
}

// The same for int8 tiles: per group of kGroup rows, sum = Σ x_k·q_kn from zero, then
// acc += scale·sum (jb_matmul_pack_q8's formula). q: the tile of column n, (K, 32);
// sc: its scales, (ceil(K / kGroup), 32); c = n % 32.
template <int R>
JB_HD inline void slice_dot_q8(float *acc, const float *x, const int8_t *q, const float *sc,
                               int K, int c, int k0, int k1, int rows) {
    for (int g0 = k0; g0 < k1; g0 += kGroup) {
        int g1 = g0 + kGroup < k1 ? g0 + kGroup : k1;
        float sum[R];
        for (int r = 0; r < R; r++) sum[r] = 0.0f;
        for (int k = g0; k < g1; k++) {
            float wv = (float)q[(int64_t)k * kCols + c];
            const float *xk = x + k;
            for (int r = 0; r < R; r++)
                if (r < rows) sum[r] = fmaf(xk[(int64_t)r * K], wv, sum[r]);
        }
        float s = sc[(g0 / kGroup) * kCols + c];
        for (int r = 0; r < R; r++) acc[r] = fmaf(s, sum[r], acc[r]);
    }
}

template <int DT, int R>
JB_HD inline void slice_any(float *acc, const float *x, const void *w, const float *sc, int K,
                            int N, int n, int k0, int k1, int rows) {
    if (DT == JB_I8) {
        int64_t t = n / kCols;
        slice_dot_q8<R>(acc, x, (const int8_t *)w + t * K * kCols,
                        sc + t * ((K + kGroup - 1) / kGroup) * kCols, K, n % kCols, k0, k1, rows);
    } else {
        slice_dot<DT, R>(acc, x, w, K, N, n, k0, k1, rows);
    }
}

// A thread's slice for a group of `rows` rows, through the smallest row bound that holds them.
template <int DT>
JB_HD inline void slice_rows(float *acc, const float *x, const void *w, const float *sc, int K,
                             int N, int n, int k0, int k1, int rows) {
    if (rows == 1) slice_any<DT, 1>(acc, x, w, sc, K, N, n, k0, k1, rows);
    else if (rows <= 2) slice_any<DT, 2>(acc, x, w, sc, K, N, n, k0, k1, rows);
    else if (rows <= 4) slice_any<DT, 4>(acc, x, w, sc, K, N, n, k0, k1, rows);
    else if (rows <= 8) slice_any<DT, 8>(acc, x, w, sc, K, N, n, k0, k1, rows);
    else slice_any<DT, kRows>(acc, x, w, sc, K, N, n, k0, k1, rows);
}

// Block (blockIdx.x, blockIdx.y): columns [32·bx, +32), rows [16·by, +16); threads
// (32, n_slices(K)).
template <int DT>
__global__ void k_matmul(float *y, const float *x, const void *w, const float *sc,
                         const float *bias, int M, int K, int N) {
    __shared__ float part[kSlices][kRows][kCols];   // 16 KiB
    int c = threadIdx.x, s = threadIdx.y, ns = blockDim.y;
    int n = blockIdx.x * kCols + c, r0 = blockIdx.y * kRows;
    int rows = M - r0 < kRows ? M - r0 : kRows;
    int len = slice_len(K, ns), k0 = s * len, k1 = k0 + len < K ? k0 + len : K;
    const float *xg = x + (int64_t)r0 * K;
    float acc[kRows];
    for (int r = 0; r < kRows; r++) acc[r] = 0.0f;
    if (n < N) slice_rows<DT>(acc, xg, w, sc, K, N, n, k0, k1, rows);
    for (int r = 0; r < rows; r++) part[s][r][c] = acc[r];
    __syncthreads();
    // Thread (c, s) finishes rows s, s + ns, ... of column n: the ns partial sums added
    // pairwise in one fixed order (8: ((s0+s1)+(s2+s3))+((s4+s5)+(s6+s7))).
    for (int r = s; r < rows && n < N; r += ns) {
        float v[kSlices];
        for (int i = 0; i < ns; i++) v[i] = part[i][r][c];
        for (int h = 1; h < ns; h *= 2)
            for (int i = 0; i + h < ns; i += 2 * h) v[i] = v[i] + v[i + h];
        y[(int64_t)(r0 + r) * N + n] = bias ? v[0] + bias[n] : v[0];
    }
}

}  // namespace

extern "C" {

int jb_matmul_cuda(float *y, const float *x, const jb_matmul_cuda_w_t *w, const float *bias,
                   int M, void *stream, jb_err_t *err) {
    if (M < 0 || w->K < 0 || w->N < 0 || (w->dt == JB_I8 && !w->scales))
        return jb_err_set(err, JB_EINVAL, "jb_matmul_cuda: (%d, %d) x (%d, %d) %s%s", M, w->K,
                          w->K, w->N, jb_dtype_name(w->dt),
                          w->dt == JB_I8 && !w->scales ? " without scales" : "");
    if (M == 0 || w->N == 0) return 0;
    if ((M + kRows - 1) / kRows > 65535)   // gridDim.y's limit
        return jb_err_set(err, JB_EINVAL, "jb_matmul_cuda: %d rows (at most %d)", M,
                          65535 * kRows);
    dim3 grid((unsigned)((w->N + kCols - 1) / kCols), (unsigned)((M + kRows - 1) / kRows));
    dim3 block(kCols, (unsigned)n_slices(w->K));
    cudaStream_t st = (cudaStream_t)stream;
    switch (w->dt) {
    case JB_F32:
        JB_LAUNCH_COOP(k_matmul<JB_F32>, grid, block, st, y, x, w->w, w->scales, bias, M, w->K,
                       w->N);
        break;
    case JB_F16:
        JB_LAUNCH_COOP(k_matmul<JB_F16>, grid, block, st, y, x, w->w, w->scales, bias, M, w->K,
                       w->N);
        break;
    case JB_BF16:
        JB_LAUNCH_COOP(k_matmul<JB_BF16>, grid, block, st, y, x, w->w, w->scales, bias, M, w->K,
                       w->N);
        break;
    case JB_I8:
        JB_LAUNCH_COOP(k_matmul<JB_I8>, grid, block, st, y, x, w->w, w->scales, bias, M, w->K,
                       w->N);
        break;
    default:
        return jb_err_set(err, JB_EINVAL, "jb_matmul_cuda: weights in %s (F32, F16, BF16 or I8)",
                          jb_dtype_name(w->dt));
    }
    JB_CUDA_LAUNCHED(err);
    return 0;
}

}  // extern "C"
