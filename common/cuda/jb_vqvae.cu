// jb_vqvae.cu: see jb_vqvae_cuda.h. Follows the conventions of jb_cuda.h.
#include <stdlib.h>
#include <string.h>

#include "jb_cuda.h"

extern "C" {
#include "jb_conv.h"
#include "jb_hparams.h"
#include "jb_vqvae.h"
#include "jb_vqvae_cuda.h"
}

#define VQ_BLOCK_ROWS 4096   // bottleneck rows per product: dots (4096, l_bins) floats

namespace {

JB_CUDA_KERNEL(k_lookup, jb_vq_lookup_row,
               (int64_t n, float *out, const float *codebook, const int32_t *codes, int C),
               (i, out, codebook, codes, C))
JB_CUDA_KERNEL(k_sumsq, jb_vq_sumsq_row, (int64_t n, float *xx, const float *x, int C),
               (i, xx, x, C))
JB_CUDA_KERNEL(k_argmin, jb_vq_argmin_at,
               (int64_t n, int32_t *codes, const float *dots, const float *xx, const float *kk,
                int K),
               (i, codes, dots, xx, kk, K))

struct pass_ops {
    jb_vqvae_op_t *ops;   // host; w/b/wg translated to device pointers
    int n, out_buf;
};

size_t align256(size_t b) { return (b + 255) / 256 * 256; }

}  // namespace

struct jb_vqvae_cuda {
    const jb_vqvae_t *vq;
    jb_vqvae_hparams_t hp;
    int64_t max_window;
    pass_ops enc[JB_MAX_LEVELS], dec[JB_MAX_LEVELS];
    cudaStream_t st;
    cublasHandle_t blas;
    float *weights;          // device copy of jb_vqvae_weights
    const float *h_weights;  // the host array it mirrors
    void *mem;               // activations: one allocation
    float *buf[3], *ws, *in, *dots, *xx;
    int32_t *codes;
    size_t cap[3], cap_ws;
    int64_t cap_codes;
};

namespace {

// Buffer and scratch floats of every pass at max_window (scratch: the largest of the three
// conv methods, so jb_vqvae_set_method needs no reallocation).
void plan_sizes(const jb_vqvae_t *vq, size_t cap[3], size_t *cap_ws, int64_t *cap_codes,
                size_t *dots) {
    const jb_vqvae_hparams_t *hp = jb_vqvae_hparams(vq);
    int64_t W = jb_vqvae_max_window(vq);
    cap[0] = cap[1] = cap[2] = 0, *cap_ws = 0;
    *cap_codes = W / hp->hop_lengths[0];
    for (int L = 0; L < hp->levels; L++)
        for (int dec = 0; dec < 2; dec++) {
            int n = jb_vqvae_ops(vq, L, dec, NULL, 0, NULL, NULL);
            jb_vqvae_op_t *ops = (jb_vqvae_op_t *)malloc(sizeof *ops * (size_t)(n > 0 ? n : 1));
            if (!ops) continue;   // _new fails on the same allocation
            jb_vqvae_ops(vq, L, dec, ops, n, NULL, NULL);
            int64_t T = dec ? W / hp->hop_lengths[L] : W;
            if (dec && (size_t)(T * hp->emb_width) > cap[0]) cap[0] = (size_t)(T * hp->emb_width);
            for (int i = 0; i < n; i++) {
                const jb_vqvae_op_t *o = &ops[i];
                int64_t To;
                size_t ws;
                if (o->transposed) {
                    To = jb_convt1d_out_len(T, o->k, o->s, o->p);
                    size_t a = jb_convt1d_cuda_ws_floats(T, o->C, o->OC, o->k, o->s, 0);
                    size_t b = jb_convt1d_cuda_ws_floats(T, o->C, o->OC, o->k, o->s,
                                                         JB_CONV_DIRECT);
                    ws = a > b ? a : b;
                } else {
                    To = jb_conv1d_out_len(T, o->k, o->s, o->p, o->d);
                    size_t a = jb_conv1d_cuda_ws_floats(T, o->C, o->k, o->s, o->p, o->d, o->flags);
                    size_t b = jb_conv1d_cuda_ws_floats(T, o->C, o->k, o->s, o->p, o->d,
                                                        o->flags | JB_CONV_DIRECT);
                    ws = a > b ? a : b;
                    if (o->wg) {
                        size_t c = jb_conv1d_wino_cuda_ws_floats(T, o->C, o->OC, o->d);
                        if (c > ws) ws = c;
                    }
                }
                if (ws > *cap_ws) *cap_ws = ws;
                if ((size_t)(To * o->OC) > cap[o->dst]) cap[o->dst] = (size_t)(To * o->OC);
                T = To;
            }
            free(ops);
        }
    *dots = (size_t)VQ_BLOCK_ROWS * hp->l_bins;
}

size_t act_bytes(const jb_vqvae_t *vq, size_t cap[3], size_t *cap_ws, int64_t *cap_codes,
                 size_t *dots) {
    plan_sizes(vq, cap, cap_ws, cap_codes, dots);
    return align256(4 * cap[0]) + align256(4 * cap[1]) + align256(4 * cap[2]) +
           align256(4 * *cap_ws) + align256(4 * (size_t)jb_vqvae_max_window(vq)) +
           align256(4 * *dots) + align256(4 * VQ_BLOCK_ROWS) + align256(4 * (size_t)*cap_codes);
}

int backend_encode(void *impl, int level, const float *audio, int64_t T, int64_t skip, int64_t n,
                   int32_t *codes, float *latents, jb_err_t *err) {
    return jb_vqvae_cuda_encode((jb_vqvae_cuda_t *)impl, level, audio, T, skip, n, codes, latents,
                                err);
}

int backend_decode(void *impl, int level, const int32_t *codes, int64_t T_L, int64_t skip,
                   int64_t n, float *audio, jb_err_t *err) {
    return jb_vqvae_cuda_decode((jb_vqvae_cuda_t *)impl, level, codes, T_L, skip, n, audio, err);
}

const jb_vqvae_backend_t the_backend = {backend_encode, backend_decode};

const float *dev_of(const jb_vqvae_cuda_t *d, const float *host) {
    return host ? d->weights + (host - d->h_weights) : NULL;
}

// The ops of a pass on T input rows; leaves the output in buf[p->out_buf]; returns its rows.
int64_t run_ops(jb_vqvae_cuda_t *d, const pass_ops *p, int64_t T, const char *what, int level,
                jb_err_t *err) {
    int method = jb_vqvae_method(d->vq);
    for (int i = 0; i < p->n; i++) {
        const jb_vqvae_op_t *o = &p->ops[i];
        const float *src = o->src < 0 ? d->in : d->buf[o->src];
        float *dst = d->buf[o->dst];
        int rc;
        int64_t To;
        if (o->transposed) {
            To = jb_convt1d_out_len(T, o->k, o->s, o->p);
            rc = jb_convt1d_cuda(d->blas, dst, src, T, o->C, o->w, o->b, o->OC, o->k, o->s, o->p,
                                 o->flags | (method != JB_VQVAE_IM2COL ? JB_CONV_DIRECT : 0),
                                 d->ws);
        } else if (method == JB_VQVAE_WINOGRAD && o->wg) {
            To = T;
            rc = jb_conv1d_wino_cuda(d->blas, dst, src, T, o->C, o->wg, o->b, o->OC, o->d,
                                     o->flags, d->ws);
        } else {
            To = jb_conv1d_out_len(T, o->k, o->s, o->p, o->d);
            rc = jb_conv1d_cuda(d->blas, dst, src, T, o->C, o->w, o->b, o->OC, o->k, o->s, o->p,
                                o->d, o->flags | (method == JB_VQVAE_DIRECT ? JB_CONV_DIRECT : 0),
                                d->ws);
        }
        if (rc) {
            cudaError_t e = cudaGetLastError();
            jb_err_set(err, JB_EUNAVAIL,
                       "vqvae %s level %d on the device: conv %d of %d (%d -> %d channels, "
                       "kernel %d, %lld rows): a launch or cuBLAS call failed (%s)",
                       what, level, i, p->n, o->C, o->OC, o->k, (long long)T,
                       cudaGetErrorString(e));
            return -1;
        }
        T = To;
    }
    return T;
}

}  // namespace

extern "C" {

void jb_vqvae_cuda_plan(const jb_vqvae_t *vq, jb_vqvae_cuda_plan_t *plan) {
    size_t cap[3], cap_ws, dots, nw;
    int64_t cap_codes;
    jb_vqvae_weights(vq, &nw);
    plan->weights = align256(4 * nw);
    plan->acts = act_bytes(vq, cap, &cap_ws, &cap_codes, &dots);
}

void jb_vqvae_cuda_destroy(jb_vqvae_cuda_t **d_p) {
    if (!d_p || !*d_p) return;
    jb_vqvae_cuda_t *d = *d_p;
    for (int L = 0; L < JB_MAX_LEVELS; L++) free(d->enc[L].ops), free(d->dec[L].ops);
    if (d->blas) cublasDestroy(d->blas);
    if (d->st) cudaStreamDestroy(d->st);
    if (d->weights) cudaFree(d->weights);
    if (d->mem) cudaFree(d->mem);
    free(d);
    *d_p = NULL;
}

static int setup(jb_vqvae_cuda_t *d, jb_err_t *err) {
    const jb_vqvae_t *vq = d->vq;
    size_t nw, dots;
    d->h_weights = jb_vqvae_weights(vq, &nw);
    size_t need_w = align256(4 * nw);
    size_t need_a = act_bytes(vq, d->cap, &d->cap_ws, &d->cap_codes, &dots);
    size_t fr = 0, tot = 0;
    JB_CUDA_CHECK(cudaMemGetInfo(&fr, &tot), err);
    if (need_w + need_a > fr)
        return jb_err_set(err, JB_ENOMEM,
                          "VQ-VAE on the device (%lld-sample window): needs %.3f GiB (weights "
                          "%.3f, activations %.3f), %.3f GiB free; a smaller window needs less",
                          (long long)d->max_window, (double)(need_w + need_a) / (1 << 30),
                          (double)need_w / (1 << 30), (double)need_a / (1 << 30),
                          (double)fr / (1 << 30));
    for (int L = 0; L < d->hp.levels; L++)
        for (int dec = 0; dec < 2; dec++) {
            pass_ops *p = dec ? &d->dec[L] : &d->enc[L];
            p->n = jb_vqvae_ops(vq, L, dec, NULL, 0, NULL, err);
            if (p->n < 0) return -1;
            p->ops = (jb_vqvae_op_t *)malloc(sizeof *p->ops * (size_t)(p->n > 0 ? p->n : 1));
            if (!p->ops) return jb_err_set(err, JB_ENOMEM, "vqvae on the device: out of memory");
            jb_vqvae_ops(vq, L, dec, p->ops, p->n, &p->out_buf, err);
        }
    JB_CUDA_CHECK(cudaStreamCreate(&d->st), err);
    JB_CUBLAS_CHECK(cublasCreate(&d->blas), err);
    JB_CUBLAS_CHECK(cublasSetStream(d->blas, d->st), err);
    JB_CUDA_CHECK(cudaMalloc(&d->weights, need_w), err);
    JB_CUDA_CHECK(cudaMemcpy(d->weights, d->h_weights, 4 * nw, cudaMemcpyHostToDevice), err);
    JB_CUDA_CHECK(cudaMalloc(&d->mem, need_a), err);
    char *q = (char *)d->mem;
    for (int i = 0; i < 3; i++) d->buf[i] = (float *)q, q += align256(4 * d->cap[i]);
    d->ws = (float *)q, q += align256(4 * d->cap_ws);
    d->in = (float *)q, q += align256(4 * (size_t)d->max_window);
    d->dots = (float *)q, q += align256(4 * dots);
    d->xx = (float *)q, q += align256(4 * VQ_BLOCK_ROWS);
    d->codes = (int32_t *)q;
    for (int L = 0; L < d->hp.levels; L++)
        for (int dec = 0; dec < 2; dec++) {
            pass_ops *p = dec ? &d->dec[L] : &d->enc[L];
            for (int i = 0; i < p->n; i++) {
                jb_vqvae_op_t *o = &p->ops[i];
                o->w = dev_of(d, o->w), o->b = dev_of(d, o->b), o->wg = dev_of(d, o->wg);
            }
        }
    return 0;
}

jb_vqvae_cuda_t *jb_vqvae_cuda_new(const jb_vqvae_t *vq, jb_err_t *err) {
    jb_vqvae_cuda_t *d = (jb_vqvae_cuda_t *)calloc(1, sizeof *d);
    if (!d) {
        jb_err_set(err, JB_ENOMEM, "vqvae on the device: out of memory");
        return NULL;
    }
    d->vq = vq, d->hp = *jb_vqvae_hparams(vq), d->max_window = jb_vqvae_max_window(vq);
    if (setup(d, err)) jb_vqvae_cuda_destroy(&d);
    return d;
}

int jb_vqvae_cuda_attach(jb_vqvae_t *vq, jb_vqvae_cuda_t *d, jb_err_t *err) {
    if (d && d->vq != vq)
        return jb_err_set(err, JB_EINVAL, "vqvae on the device: made from another model");
    jb_vqvae_set_backend(vq, d ? &the_backend : NULL, d);
    return 0;
}

int jb_vqvae_cuda_encode(jb_vqvae_cuda_t *d, int level, const float *audio, int64_t T,
                         int64_t skip, int64_t n, int32_t *codes, float *latents, jb_err_t *err) {
    const jb_vqvae_hparams_t *hp = &d->hp;
    if (level < 0 || level >= hp->levels || T <= 0 || T > d->max_window ||
        T % hp->hop_lengths[level] || skip < 0 || n < 0 ||
        skip + n > T / hp->hop_lengths[level])
        return jb_err_set(err, JB_EINVAL,
                          "vqvae encode on the device: level %d, window %lld (max %lld), rows "
                          "[%lld, %lld)",
                          level, (long long)T, (long long)d->max_window, (long long)skip,
                          (long long)(skip + n));
    const pass_ops *p = &d->enc[level];
    JB_CUDA_CHECK(cudaMemcpyAsync(d->in, audio, sizeof(float) * (size_t)T,
                                  cudaMemcpyHostToDevice, d->st), err);
    if (run_ops(d, p, T, "encode", level, err) < 0) return -1;
    int C = hp->emb_width, K = hp->l_bins;
    const float *rows = d->buf[p->out_buf] + skip * C;
    if (!codes) {
        JB_CUDA_CHECK(cudaMemcpyAsync(latents, rows, sizeof(float) * (size_t)(n * C),
                                      cudaMemcpyDeviceToHost, d->st), err);
        JB_CUDA_CHECK(cudaStreamSynchronize(d->st), err);
        return 0;
    }
    const float *hcb, *hkk;
    jb_vqvae_codebook(d->vq, level, &hcb, &hkk);
    const float *cb = dev_of(d, hcb), *kk = dev_of(d, hkk);
    const float one = 1.0f, zero = 0.0f;
    for (int64_t r0 = 0; r0 < n; r0 += VQ_BLOCK_ROWS) {
        int nb = (int)(n - r0 < VQ_BLOCK_ROWS ? n - r0 : VQ_BLOCK_ROWS);
        const float *x = rows + r0 * C;
        // row-major dots (nb, K) = x (nb, C) · codebookᵀ, as column-major (K, nb)
        JB_CUBLAS_CHECK(cublasSgemm(d->blas, CUBLAS_OP_T, CUBLAS_OP_N, K, nb, C, &one, cb, C, x,
                                    C, &zero, d->dots, K), err);
        JB_LAUNCH(k_sumsq, jb_cuda_blocks(nb), JB_CUDA_BLOCK, d->st, (int64_t)nb, d->xx, x, C);
        JB_LAUNCH(k_argmin, jb_cuda_blocks(nb), JB_CUDA_BLOCK, d->st, (int64_t)nb,
                  d->codes + r0, (const float *)d->dots, (const float *)d->xx, kk, K);
        JB_CUDA_LAUNCHED(err);
    }
    JB_CUDA_CHECK(cudaMemcpyAsync(codes, d->codes, sizeof(int32_t) * (size_t)n,
                                  cudaMemcpyDeviceToHost, d->st), err);
    JB_CUDA_CHECK(cudaStreamSynchronize(d->st), err);
    return 0;
}

int jb_vqvae_cuda_decode(jb_vqvae_cuda_t *d, int level, const int32_t *codes, int64_t T_L,
                         int64_t skip, int64_t n, float *audio, jb_err_t *err) {
    const jb_vqvae_hparams_t *hp = &d->hp;
    if (level < 0 || level >= hp->levels || T_L <= 0 ||
        T_L * hp->hop_lengths[level] > d->max_window || skip < 0 || n < 0 ||
        skip + n > T_L * hp->hop_lengths[level])
        return jb_err_set(err, JB_EINVAL,
                          "vqvae decode on the device: level %d, %lld codes (max window %lld), "
                          "samples [%lld, %lld)",
                          level, (long long)T_L, (long long)d->max_window, (long long)skip,
                          (long long)(skip + n));
    const pass_ops *p = &d->dec[level];
    const float *hcb, *hkk;
    jb_vqvae_codebook(d->vq, level, &hcb, &hkk);
    JB_CUDA_CHECK(cudaMemcpyAsync(d->codes, codes, sizeof(int32_t) * (size_t)T_L,
                                  cudaMemcpyHostToDevice, d->st), err);
    JB_LAUNCH(k_lookup, jb_cuda_blocks(T_L), JB_CUDA_BLOCK, d->st, T_L, d->buf[0], dev_of(d, hcb),
              (const int32_t *)d->codes, hp->emb_width);
    JB_CUDA_LAUNCHED(err);
    int64_t To = run_ops(d, p, T_L, "decode", level, err);
    if (To < 0) return -1;
    if (To != T_L * hp->hop_lengths[level])
        return jb_err_set(err, JB_EINTERNAL, "vqvae decode on the device: %lld samples for %lld "
                          "codes", (long long)To, (long long)T_L);
    JB_CUDA_CHECK(cudaMemcpyAsync(audio, d->buf[p->out_buf] + skip, sizeof(float) * (size_t)n,
                                  cudaMemcpyDeviceToHost, d->st), err);
    JB_CUDA_CHECK(cudaStreamSynchronize(d->st), err);
    return 0;
}

}  // extern "C"
