// jb_nn.cu: the kernel bodies of jb_nn.h compiled as CUDA kernels, one thread
// per index, with small launchers that check the launch.
#include <cuda_runtime.h>

extern "C" {
#include "jb_nn.h"
}

namespace {

const int kThreads = 256;

inline unsigned blocks_for(int64_t n) { return (unsigned)((n + kThreads - 1) / kThreads); }

inline int launched() { return cudaGetLastError() == cudaSuccess ? 0 : -1; }

__global__ void k_layernorm(int64_t n, float *out, const float *x, const float *g,
                            const float *b, int C, float eps) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) jb_nn_layernorm_at(i, out, x, g, b, C, eps);
}
__global__ void k_quick_gelu(int64_t n, float *x) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) jb_nn_quick_gelu_at(i, x);
}
__global__ void k_add(int64_t n, float *y, const float *a, const float *b) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) jb_nn_add_at(i, y, a, b);
}
__global__ void k_add_bcast(int64_t n, float *y, const float *a, int64_t period) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) jb_nn_add_bcast_at(i, y, a, period);
}
__global__ void k_embed(int64_t n, float *out, const float *table, const int32_t *ids, int C,
                        int V) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) jb_nn_embed_at(i, out, table, ids, C, V);
}
__global__ void k_softmax(int64_t n, float *x, int cols) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) jb_nn_softmax_at(i, x, cols);
}
__global__ void k_attn(int64_t n, float *out, float *w, const float *q, int q_stride,
                       const float *kc, const float *vc, jb_nn_attn_kind_t kind, int rows, int H,
                       int hd, int cap, int t0, int w_cap, float scale) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) jb_nn_attn_at(i, out, w, q, q_stride, kc, vc, kind, rows, H, hd, cap, t0, w_cap,
                             scale);
}

}  // namespace

extern "C" {

int jb_nn_cuda_layernorm(float *out, const float *x, const float *g, const float *b,
                         int64_t rows, int C, float eps) {
    if (rows <= 0) return 0;
    k_layernorm<<<blocks_for(rows), kThreads>>>(rows, out, x, g, b, C, eps);
    return launched();
}
int jb_nn_cuda_quick_gelu(float *x, int64_t n) {
    if (n <= 0) return 0;
    k_quick_gelu<<<blocks_for(n), kThreads>>>(n, x);
    return launched();
}
int jb_nn_cuda_add(float *y, const float *a, const float *b, int64_t n) {
    if (n <= 0) return 0;
    k_add<<<blocks_for(n), kThreads>>>(n, y, a, b);
    return launched();
}
int jb_nn_cuda_add_bcast(float *y, const float *a, int64_t n, int64_t period) {
    if (n <= 0) return 0;
    k_add_bcast<<<blocks_for(n), kThreads>>>(n, y, a, period);
    return launched();
}
int jb_nn_cuda_embed(float *out, const float *table, const int32_t *ids, int64_t rows, int C,
                     int V) {
    int64_t n = rows * C;
    if (n <= 0) return 0;
    k_embed<<<blocks_for(n), kThreads>>>(n, out, table, ids, C, V);
    return launched();
}
int jb_nn_cuda_softmax(float *x, int64_t rows, int n) {
    if (rows <= 0) return 0;
    k_softmax<<<blocks_for(rows), kThreads>>>(rows, x, n);
    return launched();
}
int jb_nn_cuda_attn(float *out, float *w, const float *q, int q_stride, const float *kc,
                    const float *vc, jb_nn_attn_kind_t kind, int N, int rows, int H, int hd,
                    int cap, int t0, int w_cap, float scale) {
    int64_t n = (int64_t)N * rows * H;
    if (n <= 0) return 0;
    k_attn<<<blocks_for(n), kThreads>>>(n, out, w, q, q_stride, kc, vc, kind, rows, H, hd, cap,
                                        t0, w_cap, scale);
    return launched();
}

}  // extern "C"
