// jb_nn.cu: the kernel bodies of jb_nn.h compiled as CUDA kernels, one thread per index
// (jb_cuda.h conventions: the same source also builds against the CPU emulation), with small
// launchers that check the launch. All on the default stream.
#include "jb_cuda.h"

extern "C" {
#include "jb_nn.h"
}

namespace {

inline int launched() { return cudaGetLastError() == cudaSuccess ? 0 : -1; }

JB_CUDA_KERNEL(k_layernorm, jb_nn_layernorm_at,
               (int64_t n, float *out, const float *x, const float *g, const float *b, int C,
                float eps),
               (i, out, x, g, b, C, eps))
JB_CUDA_KERNEL(k_quick_gelu, jb_nn_quick_gelu_at, (int64_t n, float *x), (i, x))
JB_CUDA_KERNEL(k_add, jb_nn_add_at, (int64_t n, float *y, const float *a, const float *b),
               (i, y, a, b))
JB_CUDA_KERNEL(k_add_bcast, jb_nn_add_bcast_at,
               (int64_t n, float *y, const float *a, int64_t period), (i, y, a, period))
JB_CUDA_KERNEL(k_embed, jb_nn_embed_at,
               (int64_t n, float *out, const float *table, const int32_t *ids, int C, int V),
               (i, out, table, ids, C, V))
JB_CUDA_KERNEL(k_softmax, jb_nn_softmax_at, (int64_t n, float *x, int cols), (i, x, cols))
JB_CUDA_KERNEL(k_attn, jb_nn_attn_at,
               (int64_t n, float *out, float *w, const float *q, int q_stride, const float *kc,
                const float *vc, jb_nn_attn_kind_t kind, int rows, int H, int hd, int cap,
                int t0, int w_cap, float scale),
               (i, out, w, q, q_stride, kc, vc, kind, rows, H, hd, cap, t0, w_cap, scale))

// ---- block-cooperative row kernels: one block of JB_NN_ROW_THREADS threads per row ----------
// Each thread takes the row's elements c = t, t + blockDim, ...; partial results are combined by
// a tree reduction in shared memory, a barrier between steps. The sums are double (LayerNorm)
// as jb_nn_layernorm_at's, in another order; launched with JB_LAUNCH_COOP.

// red: (JB_NN_ROW_THREADS) partial values, one per thread; leaves the total in red[0].
template <typename T, typename Op>
__device__ void block_reduce(T *red, Op op) {
    unsigned t = threadIdx.x;
    for (unsigned k = blockDim.x / 2; k > 0; k >>= 1) {
        if (t < k) red[t] = op(red[t], red[t + k]);
        __syncthreads();
    }
}

struct AddD {
    __device__ double operator()(double a, double b) const { return a + b; }
};
struct AddF {
    __device__ float operator()(float a, float b) const { return a + b; }
};
struct MaxF {
    __device__ float operator()(float a, float b) const { return b > a ? b : a; }
};

// LayerNorm of row blockIdx.x: out, x: (rows, C) (out may alias x); g, b: (C).
__global__ void k_layernorm_block(float *out, const float *x, const float *g, const float *b,
                                  int C, float eps) {
    __shared__ double red[JB_NN_ROW_THREADS];
    __shared__ float stat[2];
    unsigned t = threadIdx.x;
    const float *xr = x + (int64_t)blockIdx.x * C;
    float *yr = out + (int64_t)blockIdx.x * C;
    double s = 0;
    for (int c = (int)t; c < C; c += (int)blockDim.x) s += xr[c];
    red[t] = s;
    __syncthreads();
    block_reduce(red, AddD());
    if (t == 0) stat[0] = (float)(red[0] / C);
    __syncthreads();
    float mean = stat[0];
    double v = 0;
    for (int c = (int)t; c < C; c += (int)blockDim.x) {
        double d = (double)(xr[c] - mean);
        v += d * d;
    }
    red[t] = v;
    __syncthreads();
    block_reduce(red, AddD());
    if (t == 0) stat[1] = (float)(1.0 / sqrt(red[0] / C + (double)eps));
    __syncthreads();
    float rstd = stat[1];
    for (int c = (int)t; c < C; c += (int)blockDim.x) yr[c] = (xr[c] - mean) * rstd * g[c] + b[c];
}

// Softmax of row blockIdx.x of x: (rows, n) in place (max-subtracted).
__global__ void k_softmax_block(float *x, int n) {
    __shared__ float red[JB_NN_ROW_THREADS];
    unsigned t = threadIdx.x;
    float *r = x + (int64_t)blockIdx.x * n;
    float m = -INFINITY;
    for (int j = (int)t; j < n; j += (int)blockDim.x) m = r[j] > m ? r[j] : m;
    red[t] = m;
    __syncthreads();
    block_reduce(red, MaxF());
    m = red[0];
    __syncthreads();   // every thread has read the maximum before red is reused
    float s = 0;
    for (int j = (int)t; j < n; j += (int)blockDim.x) {
        r[j] = expf(r[j] - m);
        s += r[j];
    }
    red[t] = s;
    __syncthreads();
    block_reduce(red, AddF());
    s = red[0];
    for (int j = (int)t; j < n; j += (int)blockDim.x) r[j] = r[j] / s;
}

}  // namespace

extern "C" {

int jb_nn_cuda_layernorm_block(float *out, const float *x, const float *g, const float *b,
                               int64_t rows, int C, float eps, void *stream) {
    if (rows <= 0) return 0;
    JB_LAUNCH_COOP(k_layernorm_block, (unsigned)rows, JB_NN_ROW_THREADS, (cudaStream_t)stream,
                   out, x, g, b, C, eps);
    return launched();
}
int jb_nn_cuda_softmax_block(float *x, int64_t rows, int n, void *stream) {
    if (rows <= 0) return 0;
    JB_LAUNCH_COOP(k_softmax_block, (unsigned)rows, JB_NN_ROW_THREADS, (cudaStream_t)stream, x,
                   n);
    return launched();
}

int jb_nn_cuda_layernorm(float *out, const float *x, const float *g, const float *b,
                         int64_t rows, int C, float eps) {
    if (rows <= 0) return 0;
    JB_LAUNCH(k_layernorm, jb_cuda_blocks(rows), JB_CUDA_BLOCK, 0, rows, out, x, g, b, C, eps);
    return launched();
}
int jb_nn_cuda_quick_gelu(float *x, int64_t n) {
    if (n <= 0) return 0;
    JB_LAUNCH(k_quick_gelu, jb_cuda_blocks(n), JB_CUDA_BLOCK, 0, n, x);
    return launched();
}
int jb_nn_cuda_add(float *y, const float *a, const float *b, int64_t n) {
    if (n <= 0) return 0;
    JB_LAUNCH(k_add, jb_cuda_blocks(n), JB_CUDA_BLOCK, 0, n, y, a, b);
    return launched();
}
int jb_nn_cuda_add_bcast(float *y, const float *a, int64_t n, int64_t period) {
    if (n <= 0) return 0;
    JB_LAUNCH(k_add_bcast, jb_cuda_blocks(n), JB_CUDA_BLOCK, 0, n, y, a, period);
    return launched();
}
int jb_nn_cuda_embed(float *out, const float *table, const int32_t *ids, int64_t rows, int C,
                     int V) {
    int64_t n = rows * C;
    if (n <= 0) return 0;
    JB_LAUNCH(k_embed, jb_cuda_blocks(n), JB_CUDA_BLOCK, 0, n, out, table, ids, C, V);
    return launched();
}
int jb_nn_cuda_softmax(float *x, int64_t rows, int n) {
    if (rows <= 0) return 0;
    JB_LAUNCH(k_softmax, jb_cuda_blocks(rows), JB_CUDA_BLOCK, 0, rows, x, n);
    return launched();
}
int jb_nn_cuda_attn(float *out, float *w, const float *q, int q_stride, const float *kc,
                    const float *vc, jb_nn_attn_kind_t kind, int N, int rows, int H, int hd,
                    int cap, int t0, int w_cap, float scale) {
    int64_t n = (int64_t)N * rows * H;
    if (n <= 0) return 0;
    JB_LAUNCH(k_attn, jb_cuda_blocks(n), JB_CUDA_BLOCK, 0, n, out, w, q, q_stride, kc, vc, kind,
              rows, H, hd, cap, t0, w_cap, scale);
    return launched();
}

}  // extern "C"
