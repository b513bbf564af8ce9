// jb_prior.cu: see jb_prior_cuda.h. Follows the conventions of jb_cuda.h.
#include <stdlib.h>
#include <string.h>

#include "jb_cuda.h"

extern "C" {
#include "jb_conv.h"
#include "jb_gpu.h"
#include "jb_matmul_cuda.h"
#include "jb_nn.h"
#include "jb_prior_cuda.h"
#include "jb_tensor.h"
#include "jb_transformer_cuda.h"
}

namespace {

// Transformer input of position t0 + r of sequence n, element k: i over (N, c, W).
// (e + pe) + xc in this order, e the start conditioning at t == 0 else the embedding of the
// previous joint id; xc the per-position conditioning of music positions (t >= off), else 0.
JB_HD inline void embed_at(int64_t i, float *x, const int32_t *seq, const float *cond_y,
                           const float *cond_x, const float *x_emb, const float *pos_emb, int W,
                           int S, int n_ctx, int off, int t0, int c) {
    int64_t k = i % W, nr = i / W;
    int r = (int)(nr % c), n = (int)(nr / c), t = t0 + r;
    float e = t == 0 ? cond_y[(int64_t)n * W + k]
                     : x_emb[(int64_t)seq[(int64_t)n * S + t - 1] * W + k];
    float pe = pos_emb[(int64_t)t * W + k];
    float xc = t < off ? 0.0f : cond_x[((int64_t)n * n_ctx + (t - off)) * W + k];
    x[i] = (e + pe) + xc;
}

// Not merged decoder: x += the position's conditioning after the transformer (music positions).
JB_HD inline void add_cond_at(int64_t i, float *x, const float *cond_x, int W, int n_ctx,
                              int off, int t0, int c) {
    int64_t k = i % W, nr = i / W;
    int r = (int)(nr % c), n = (int)(nr / c), t = t0 + r;
    if (t >= off) x[i] += cond_x[((int64_t)n * n_ctx + (t - off)) * W + k];
}

// seq[n, t] = pick[n]: i over N.
JB_HD inline void put_pick_at(int64_t i, int32_t *seq, const int32_t *pick, int S, int t) {
    seq[i * S + t] = pick[i];
}

JB_CUDA_KERNEL(k_embed_in, embed_at,
               (int64_t n, float *x, const int32_t *seq, const float *cond_y, const float *cond_x,
                const float *x_emb, const float *pos_emb, int W, int S, int n_ctx, int off, int t0,
                int c),
               (i, x, seq, cond_y, cond_x, x_emb, pos_emb, W, S, n_ctx, off, t0, c))
JB_CUDA_KERNEL(k_add_cond, add_cond_at,
               (int64_t n, float *x, const float *cond_x, int W, int n_ctx, int off, int t0,
                int c),
               (i, x, cond_x, W, n_ctx, off, t0, c))
JB_CUDA_KERNEL(k_put_pick, put_pick_at,
               (int64_t n, int32_t *seq, const int32_t *pick, int S, int t), (i, seq, pick, S, t))

// y[i] += a · x[i] (the Conditioner's scaled residual)
JB_HD inline void axpy_at(int64_t i, float *y, float a, const float *x) { y[i] += a * x[i]; }

JB_CUDA_KERNEL(k_axpy, axpy_at, (int64_t n, float *y, float a, const float *x), (i, y, a, x))
JB_CUDA_KERNEL(k_embed, jb_nn_embed_at,
               (int64_t n, float *out, const float *table, const int32_t *ids, int C, int V),
               (i, out, table, ids, C, V))
JB_CUDA_KERNEL(k_layernorm, jb_nn_layernorm_at,
               (int64_t n, float *out, const float *x, const float *g, const float *b, int C,
                float eps),
               (i, out, x, g, b, C, eps))
JB_CUDA_KERNEL(k_col2im_t, jb_col2im_t_row,
               (int64_t n, float *out, const float *y, const float *b, int64_t T_in, int OC, int k,
                int s, int p, int acc),
               (i, out, y, b, T_in, OC, k, s, p, acc))

// The Conditioner on the device: weights (one allocation) and working memory.
struct cond_dev {
    jb_prior_cond_view_t v;
    void *wmem, *amem;
    const float *x_emb, *w0, *b0, *ln_g, *ln_b;
    const float **w1, **b1, **w3, **b3;   // [stage * depth + j]
    int *dil;
    const float **wt, **bt;               // [stage]
    int *co;
    float *a, *b, *c, *ws, *y;            // (n_ctx, maxc) x3, conv scratch, up-conv columns
    int32_t *z;                           // (B, L0)
};

}  // namespace

struct jb_prior_cuda {
    const jb_prior_t *p;
    int max_batch, max_chunk;
    jb_transformer_cuda_t *dt;
    jb_tcache_cuda_t *cache;
    cublasHandle_t blas;
    cudaStream_t st;            // the cache's
    void *dmem;                 // tables + per-window buffers
    float *x_emb, *pos_emb, *x_out_t;   // device (seq_bins, W), (seq_len, W), (W, seq_bins)
    float *cond_y, *cond_x, *logits;  // device (B, W), (B, n_ctx, W), (B, seq_bins)
    int32_t *seq, *pick;              // device (B, seq_len), (B)
    cond_dev *cond;             // the upsamplers' Conditioner, or NULL
    // host
    float *h_cond_y, *h_cond_x, *h_logits, *h_enc;
    int32_t *h_seq, *h_pick, *h_tok;
};

namespace {

// dst (device, (cols, rows)) = src (host, (rows, cols)) transposed: the output projection as
// the (K, N) matrix jb_matmul_cuda reads.
int upload_transposed(float *dst, const float *src, int rows, int cols, jb_err_t *err) {
    float *t = (float *)malloc(sizeof(float) * (size_t)rows * (size_t)cols);
    if (!t) return jb_err_set(err, JB_ENOMEM, "out of memory (%d x %d transpose)", rows, cols);
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) t[(size_t)c * rows + r] = src[(size_t)r * cols + c];
    int rc = jb_gpu_upload(dst, t, sizeof(float) * (size_t)rows * (size_t)cols, err);
    free(t);
    return rc;
}

// Conditioner weights into one device allocation, working memory for max_batch windows.
int cond_setup(jb_prior_cuda_t *s, jb_err_t *err) {
    cond_dev *cd = (cond_dev *)calloc(1, sizeof *cd);
    if (!cd) return jb_err_set(err, JB_ENOMEM, "out of memory");
    s->cond = cd;
    jb_prior_cond_view_t &v = cd->v;
    jb_prior_cond_view(s->p, &v);
    int n_ctx = jb_prior_info(s->p)->n_ctx, SD = v.stages * v.depth, k = 2 * v.stride;
    cd->w1 = (const float **)calloc((size_t)(4 * SD + 2 * v.stages) + 1, sizeof(float *));
    cd->dil = (int *)calloc((size_t)SD + 1, sizeof(int));
    cd->co = (int *)calloc((size_t)v.stages + 1, sizeof(int));
    if (!cd->w1 || !cd->dil || !cd->co) return jb_err_set(err, JB_ENOMEM, "out of memory");
    cd->b1 = cd->w1 + SD, cd->w3 = cd->b1 + SD, cd->b3 = cd->w3 + SD, cd->wt = cd->b3 + SD;
    cd->bt = cd->wt + v.stages;
    // host pointers and sizes (floats) of every tensor, in upload order
    const int nt = 5 + 4 * SD + 2 * v.stages;
    const float **src = (const float **)malloc(sizeof(float *) * nt);
    const float ***dst = (const float ***)malloc(sizeof(float **) * nt);
    size_t *cnt = (size_t *)malloc(sizeof(size_t) * nt);
    if (!src || !dst || !cnt) {
        free(src), free(dst), free(cnt);
        return jb_err_set(err, JB_ENOMEM, "out of memory");
    }
    int q = 0;
    auto add = [&](const float *h, const float **d, size_t n) {
        src[q] = h, dst[q] = d, cnt[q] = n, q++;
    };
    size_t W = (size_t)v.W, cw = (size_t)v.cw, cm = (size_t)v.cm;
    add(v.x_emb, &cd->x_emb, (size_t)v.bins * W);
    add(v.w0, &cd->w0, 3 * W * cw);
    add(v.b0, &cd->b0, cw);
    add(v.ln_g, &cd->ln_g, W);
    add(v.ln_b, &cd->ln_b, W);
    int L = v.L0;
    size_t maxc = W > cw ? W : cw, ws = (size_t)v.L0 * 3 * W, ycols = 0;
    if (cm > maxc) maxc = cm;
    for (int i = 0; i < v.stages; i++) {
        for (int j = 0; j < v.depth; j++) {
            int r = i * v.depth + j;
            const float *w1, *b1, *w3, *b3;
            jb_prior_cond_res(s->p, i, j, &w1, &b1, &w3, &b3, &cd->dil[r]);
            add(w1, &cd->w1[r], 3 * cw * cm), add(b1, &cd->b1[r], cm);
            add(w3, &cd->w3[r], cm * cw), add(b3, &cd->b3[r], cw);
        }
        if ((size_t)L * 3 * cw > ws) ws = (size_t)L * 3 * cw;
        const float *wt, *bt;
        jb_prior_cond_up(s->p, i, &wt, &bt, &cd->co[i]);
        add(wt, &cd->wt[i], (size_t)k * cw * cd->co[i]), add(bt, &cd->bt[i], (size_t)cd->co[i]);
        if ((size_t)L * k * cd->co[i] > ycols) ycols = (size_t)L * k * cd->co[i];
        L = (L - 1) * v.stride - 2 * (v.stride / 2) + k;
    }
    size_t wbytes = 0;
    for (int i = 0; i < q; i++) wbytes += (cnt[i] * 4 + 255) / 256 * 256;
    size_t act[5] = {(size_t)n_ctx * maxc, (size_t)n_ctx * maxc, (size_t)n_ctx * maxc, ws, ycols};
    size_t abytes = (size_t)s->max_batch * v.L0 * 4 + 256;
    for (int i = 0; i < 5; i++) abytes += (act[i] * 4 + 255) / 256 * 256;
    size_t fr = 0, tot = 0;
    int rc = jb_gpu_mem_info(&fr, &tot, err);
    if (!rc && wbytes + abytes > fr)
        rc = jb_err_set(err, JB_ENOMEM, "conditioner on the device: needs %.3f GiB, %.3f GiB free",
                        (double)(wbytes + abytes) / (1 << 30), (double)fr / (1 << 30));
    if (!rc && !(cd->wmem = jb_gpu_alloc(wbytes, err))) rc = -1;
    if (!rc && !(cd->amem = jb_gpu_alloc(abytes, err))) rc = -1;
    char *p = (char *)cd->wmem;
    for (int i = 0; i < q && !rc; i++) {
        rc = jb_gpu_upload(p, src[i], cnt[i] * 4, err);
        *dst[i] = (const float *)p;
        p += (cnt[i] * 4 + 255) / 256 * 256;
    }
    free(src), free(dst), free(cnt);
    if (rc) return -1;
    p = (char *)cd->amem;
    float **bufs[5] = {&cd->a, &cd->b, &cd->c, &cd->ws, &cd->y};
    for (int i = 0; i < 5; i++) *bufs[i] = (float *)p, p += (act[i] * 4 + 255) / 256 * 256;
    cd->z = (int32_t *)p;
    return 0;
}

// cond_x (device, (N, n_ctx, W)) = the Conditioner on z_cond: host (N, L0), range-checked here.
int cond_run(jb_prior_cuda_t *s, const int32_t *z_cond, int N, jb_err_t *err) {
    cond_dev *cd = s->cond;
    const jb_prior_cond_view_t &v = cd->v;
    int n_ctx = jb_prior_info(s->p)->n_ctx, k = 2 * v.stride;
    for (int n = 0; n < N; n++)
        for (int t = 0; t < v.L0; t++) {
            int32_t z = z_cond[(int64_t)n * v.L0 + t];
            if (z < 0 || z >= v.bins)
                return jb_err_set(err, JB_EINVAL, "sample %d: conditioning code %d at %d outside "
                                  "[0, %d)", n, z, t, v.bins);
        }
    JB_CUDA_CHECK(cudaMemcpyAsync(cd->z, z_cond, sizeof(int32_t) * (size_t)N * v.L0,
                                  cudaMemcpyHostToDevice, s->st), err);
    const char *what = "conditioner on the device: a launch or cuBLAS call failed";
    for (int n = 0; n < N; n++) {
        float *a = cd->a, *b = cd->b, *c = cd->c;
        int64_t L = v.L0;
        JB_LAUNCH(k_embed, jb_cuda_blocks(L * v.W), JB_CUDA_BLOCK, s->st, L * v.W, c, cd->x_emb,
                  (const int32_t *)(cd->z + (int64_t)n * v.L0), v.W, v.bins);
        if (jb_conv1d_cuda(s->blas, a, c, L, v.W, cd->w0, cd->b0, v.cw, 3, 1, 1, 1, 0, cd->ws))
            return jb_err_set(err, JB_EUNAVAIL, "%s (%s)", what,
                              cudaGetErrorString(cudaGetLastError()));
        for (int i = 0; i < v.stages; i++) {
            for (int j = 0; j < v.depth; j++) {
                int r = i * v.depth + j, d = cd->dil[r];
                if (jb_conv1d_cuda(s->blas, b, a, L, v.cw, cd->w1[r], cd->b1[r], v.cm, 3, 1, d, d,
                                   JB_CONV_RELU_IN | JB_CONV_RELU_OUT, cd->ws) ||
                    jb_conv1d_cuda(s->blas, c, b, L, v.cm, cd->w3[r], cd->b3[r], v.cw, 1, 1, 0, 1,
                                   0, cd->ws))
                    return jb_err_set(err, JB_EUNAVAIL, "%s (%s)", what,
                                      cudaGetErrorString(cudaGetLastError()));
                JB_LAUNCH(k_axpy, jb_cuda_blocks(L * v.cw), JB_CUDA_BLOCK, s->st, L * v.cw, a,
                          v.res_scale, (const float *)c);
            }
            // transposed conv: columns y (L, k, co) = a · wt_j per tap, then the gather
            int co = cd->co[i];
            const float one = 1.0f, zero = 0.0f;
            for (int j = 0; j < k; j++)
                JB_CUBLAS_CHECK(cublasSgemm(s->blas, CUBLAS_OP_N, CUBLAS_OP_N, co, (int)L, v.cw,
                                            &one, cd->wt[i] + (int64_t)j * v.cw * co, co, a, v.cw,
                                            &zero, cd->y + (int64_t)j * co, k * co),
                                err);
            int64_t Lo = (L - 1) * v.stride - 2 * (v.stride / 2) + k;
            JB_LAUNCH(k_col2im_t, jb_cuda_blocks(Lo), JB_CUDA_BLOCK, s->st, Lo, b,
                      (const float *)cd->y, cd->bt[i], L, co, k, v.stride, v.stride / 2, 0);
            L = Lo;
            float *tmp = a;
            a = b, b = tmp;
        }
        if (L != n_ctx)
            return jb_err_set(err, JB_EINTERNAL, "conditioner: %lld positions, expected %d",
                              (long long)L, n_ctx);
        JB_LAUNCH(k_layernorm, jb_cuda_blocks(L), JB_CUDA_BLOCK, s->st, L,
                  s->cond_x + (int64_t)n * n_ctx * v.W, (const float *)a, cd->ln_g, cd->ln_b, v.W,
                  1e-5f);
        JB_CUDA_LAUNCHED(err);
    }
    return 0;
}

}  // namespace

extern "C" {

void jb_prior_cuda_destroy(jb_prior_cuda_t **s_p) {
    if (!s_p || !*s_p) return;
    jb_prior_cuda_t *s = *s_p;
    jb_tcache_cuda_destroy(&s->cache);
    jb_transformer_cuda_destroy(&s->dt);
    jb_gpu_blas_destroy(s->blas);
    jb_gpu_free(s->dmem);
    if (s->cond) {
        jb_gpu_free(s->cond->wmem), jb_gpu_free(s->cond->amem);
        free(s->cond->w1), free(s->cond->dil), free(s->cond->co);   // w1 holds every pointer array
        free(s->cond);
    }
    free(s->h_cond_y), free(s->h_cond_x), free(s->h_logits), free(s->h_enc);
    free(s->h_seq), free(s->h_pick), free(s->h_tok);
    free(s);
    *s_p = NULL;
}

jb_prior_cuda_t *jb_prior_cuda_new(const jb_prior_t *p, int max_batch, int max_chunk, int fit,
                                   jb_err_t *err) {
    const jb_prior_info_t *in = jb_prior_info(p);
    if (max_batch < 1) {
        jb_err_set(err, JB_EINVAL, "device sampler: batch %d", max_batch);
        return NULL;
    }
    if (max_chunk < 1 || max_chunk > in->seq_len) max_chunk = in->seq_len;
    jb_prior_cuda_t *s = (jb_prior_cuda_t *)calloc(1, sizeof *s);
    if (!s) {
        jb_err_set(err, JB_ENOMEM, "out of memory");
        return NULL;
    }
    s->p = p, s->max_chunk = max_chunk;
    size_t W = (size_t)in->width, SB = (size_t)in->seq_bins, SL = (size_t)in->seq_len;
    size_t NC = (size_t)in->n_ctx;
    const float *x_emb, *pos_emb, *x_out;
    jb_prior_tables(p, &x_emb, &pos_emb, &x_out);
    // Weights first, then the per-window buffers for max_batch, then the cache (fit) with the rest.
    if (!(s->dt = jb_transformer_cuda_new(jb_prior_transformer(p), err))) goto fail;
    {
        size_t B = (size_t)max_batch;
        size_t sz[8] = {SB * W * 4, SL * W * 4, SB * W * 4, B * W * 4, B * NC * W * 4,
                        B * SB * 4, B * SL * 4, B * 4};
        size_t total = 0;
        for (int i = 0; i < 8; i++) total += (sz[i] + 255) / 256 * 256;
        size_t fr = 0, tot = 0;
        if (jb_gpu_mem_info(&fr, &tot, err)) goto fail;
        if (total > fr) {
            jb_err_set(err, JB_ENOMEM, "prior tables and window buffers on the device: needs %.3f "
                       "GiB, %.3f GiB free", (double)total / (1 << 30), (double)fr / (1 << 30));
            goto fail;
        }
        if (!(s->dmem = jb_gpu_alloc(total, err))) goto fail;
        char *q = (char *)s->dmem;
        void *ptr[8];
        for (int i = 0; i < 8; i++) ptr[i] = q, q += (sz[i] + 255) / 256 * 256;
        s->x_emb = (float *)ptr[0], s->pos_emb = (float *)ptr[1], s->x_out_t = (float *)ptr[2];
        s->cond_y = (float *)ptr[3], s->cond_x = (float *)ptr[4], s->logits = (float *)ptr[5];
        s->seq = (int32_t *)ptr[6], s->pick = (int32_t *)ptr[7];
        if (jb_gpu_upload(s->x_emb, x_emb, sz[0], err) ||
            jb_gpu_upload(s->pos_emb, pos_emb, sz[1], err) ||
            upload_transposed(s->x_out_t, x_out, (int)SB, (int)W, err))
            goto fail;
    }
    if (!(s->cache = jb_tcache_cuda_new(s->dt, max_batch, max_chunk, fit, err))) goto fail;
    s->max_batch = jb_tcache_cuda_batch(s->cache);
    s->st = (cudaStream_t)jb_tcache_cuda_stream(s->cache);
    if (!(s->blas = (cublasHandle_t)jb_gpu_blas_new(err))) goto fail;
    if (cublasSetStream(s->blas, s->st) != CUBLAS_STATUS_SUCCESS) {
        jb_err_set(err, JB_EUNAVAIL, "cublasSetStream failed");
        goto fail;
    }
    if (in->x_cond && cond_setup(s, err)) goto fail;
    {
        size_t B = (size_t)s->max_batch;
        s->h_cond_y = (float *)malloc(sizeof(float) * B * W);
        s->h_cond_x = (float *)calloc(B * NC * W, sizeof(float));
        s->h_logits = (float *)malloc(sizeof(float) * B * SB);
        s->h_seq = (int32_t *)calloc(B * SL, sizeof(int32_t));
        s->h_pick = (int32_t *)malloc(sizeof(int32_t) * B);
        if (in->lyrics == JB_PRIOR_LYRICS_ENCODER) {
            s->h_enc = (float *)malloc(sizeof(float) * B * (size_t)in->n_tokens * W);
            s->h_tok = (int32_t *)malloc(sizeof(int32_t) * B * (size_t)in->n_tokens);
        }
        if (!s->h_cond_y || !s->h_cond_x || !s->h_logits || !s->h_seq || !s->h_pick ||
            (in->lyrics == JB_PRIOR_LYRICS_ENCODER && (!s->h_enc || !s->h_tok))) {
            jb_err_set(err, JB_ENOMEM, "device sampler: out of memory (batch %d)", s->max_batch);
            goto fail;
        }
    }
    return s;
fail:
    jb_prior_cuda_destroy(&s);
    return NULL;
}

int jb_prior_cuda_max_batch(const jb_prior_cuda_t *s) { return s->max_batch; }

int jb_prior_cuda_cond_x(jb_prior_cuda_t *s, const int32_t *z_cond, int N, float *out,
                         jb_err_t *err) {
    const jb_prior_info_t *in = jb_prior_info(s->p);
    if (!s->cond) return jb_err_set(err, JB_EINVAL, "this prior has no conditioner");
    if (N < 1 || N > s->max_batch)
        return jb_err_set(err, JB_EINVAL, "batch %d outside [1, %d]", N, s->max_batch);
    if (cond_run(s, z_cond, N, err)) return -1;
    JB_CUDA_CHECK(cudaMemcpyAsync(out, s->cond_x, sizeof(float) * (size_t)N * in->n_ctx *
                                  in->width, cudaMemcpyDeviceToHost, s->st), err);
    JB_CUDA_CHECK(cudaStreamSynchronize(s->st), err);
    return 0;
}

static int backend(void *impl, int N, const int32_t *y, const int32_t *z_cond,
                   const int32_t *prime, int P, int n_fill, int chunk_size,
                   jb_prior_choose_fn choose, void *user, int32_t *out, int *n_clamped,
                   jb_err_t *err) {
    return jb_prior_cuda_sample((jb_prior_cuda_t *)impl, N, y, z_cond, prime, P, n_fill,
                                chunk_size, choose, user, out, n_clamped, err);
}

int jb_prior_cuda_attach(jb_prior_sampler_t *s, jb_prior_cuda_t *d, jb_err_t *err) {
    if (jb_prior_sampler_prior(s) != d->p)
        return jb_err_set(err, JB_EINVAL, "device sampler serves another prior");
    if (jb_prior_sampler_max_batch(s) > d->max_batch)
        return jb_err_set(err, JB_ENOMEM, "device sampler holds batch %d, the sampler %d",
                          d->max_batch, jb_prior_sampler_max_batch(s));
    jb_prior_sampler_set_backend(s, backend, d);
    return 0;
}

}  // extern "C"

namespace {

// Inputs of positions [t0, t0 + c) into the cache's x, then the pass.
int pass(jb_prior_cuda_t *s, int N, int t0, int c, jb_err_t *err) {
    const jb_prior_info_t *in = jb_prior_info(s->p);
    int W = in->width, off = in->seq_len - in->n_ctx;
    int64_t n = (int64_t)N * c * W;
    JB_LAUNCH(k_embed_in, jb_cuda_blocks(n), JB_CUDA_BLOCK, s->st, n,
              jb_tcache_cuda_x(s->cache), (const int32_t *)s->seq, (const float *)s->cond_y,
              (const float *)s->cond_x, (const float *)s->x_emb, (const float *)s->pos_emb, W,
              in->seq_len, in->n_ctx, off, t0, c);
    JB_CUDA_LAUNCHED(err);
    return jb_transformer_cuda_forward(s->dt, s->cache, c, err);
}

}  // namespace

extern "C" {

int jb_prior_cuda_sample(jb_prior_cuda_t *s, int N, const int32_t *y, const int32_t *z_cond,
                         const int32_t *prime, int P, int n_fill, int chunk_size,
                         jb_prior_choose_fn choose, void *user, int32_t *out, int *n_clamped,
                         jb_err_t *err) {
    const jb_prior_t *p = s->p;
    const jb_prior_info_t *in = jb_prior_info(p);
    int level = jb_prior_hparams(p)->level;
    if (N < 1 || N > s->max_batch)
        return jb_err_set(err, JB_EINVAL, "batch %d outside [1, %d]", N, s->max_batch);
    if (n_fill <= 0) n_fill = in->n_ctx;
    if (P < 0 || P > n_fill || n_fill > in->n_ctx || (P > 0 && !prime))
        return jb_err_set(err, JB_EINVAL, "prime of %d codes, %d to fill (window %d)", P, n_fill,
                          in->n_ctx);
    if ((in->labels || in->lyrics) && !y)
        return jb_err_set(err, JB_EINVAL, "level %d: labels (y) required", level);
    if (in->x_cond && !z_cond)
        return jb_err_set(err, JB_EINVAL, "level %d: codes of level %d required", level,
                          level + 1);
    if (chunk_size <= 0 || chunk_size > s->max_chunk) chunk_size = s->max_chunk;
    int S = in->seq_len, B = in->seq_bins, W = in->width, off = S - in->n_ctx;
    // The known part of the sequence: lyrics (joint model), then the prime.
    if (jb_prior_fill_seq(in, s->h_seq, y, prime, P, N, err)) return -1;
    if (jb_prior_cond_y(p, y, N, s->h_cond_y, err)) return -1;
    if (s->cond ? cond_run(s, z_cond, N, err) : jb_prior_cond_x(p, y, z_cond, N, s->h_cond_x, err))
        return -1;
    size_t nW = (size_t)N * W;
    JB_CUDA_CHECK(cudaMemcpyAsync(s->seq, s->h_seq, sizeof(int32_t) * (size_t)N * S,
                                  cudaMemcpyHostToDevice, s->st), err);
    JB_CUDA_CHECK(cudaMemcpyAsync(s->cond_y, s->h_cond_y, sizeof(float) * nW,
                                  cudaMemcpyHostToDevice, s->st), err);
    if (!s->cond)
        JB_CUDA_CHECK(cudaMemcpyAsync(s->cond_x, s->h_cond_x, sizeof(float) * nW * in->n_ctx,
                                      cudaMemcpyHostToDevice, s->st), err);
    if (jb_tcache_cuda_set_batch(s->cache, N, err) || jb_tcache_cuda_reset(s->cache, err))
        return -1;
    if (in->lyrics == JB_PRIOR_LYRICS_ENCODER) {
        for (int n = 0; n < N; n++)
            memcpy(s->h_tok + n * in->n_tokens,
                   y + (int64_t)n * in->label_len + in->label_len - in->n_tokens,
                   sizeof(int32_t) * in->n_tokens);
        if (jb_prior_encoder_kv(p, s->h_tok, N, s->h_enc, err) ||
            jb_tcache_cuda_set_encoder(s->cache, s->h_enc, err))
            return -1;
    }
    int known = off + P;
    for (int t0 = 0; t0 < known; t0 += chunk_size) {
        int c = known - t0 < chunk_size ? known - t0 : chunk_size;
        if (pass(s, N, t0, c, err)) return -1;
    }
    int clamped = 0;
    float *x = jb_tcache_cuda_x(s->cache);
    for (int t = known; t < off + n_fill; t++) {
        if (pass(s, N, t, 1, err)) return -1;
        if (!in->merged_decoder) {
            JB_LAUNCH(k_add_cond, jb_cuda_blocks((int64_t)nW), JB_CUDA_BLOCK, s->st, (int64_t)nW,
                      x, (const float *)s->cond_x, W, in->n_ctx, off, t, 1);
            JB_CUDA_LAUNCHED(err);
        }
        // logits (N, B) = x (N, W) · x_outᵀ, batch-invariant like the transformer's products
        jb_matmul_cuda_w_t xo = {s->x_out_t, NULL, JB_F32, W, B};
        if (jb_matmul_cuda(s->logits, x, &xo, NULL, N, s->st, err))
            return jb_err_prefix(err, "level %d position %d: output projection", level, t - off);
        JB_CUDA_CHECK(cudaMemcpyAsync(s->h_logits, s->logits, sizeof(float) * (size_t)N * B,
                                      cudaMemcpyDeviceToHost, s->st), err);
        JB_CUDA_CHECK(cudaStreamSynchronize(s->st), err);
        if (choose(user, s->h_logits, N, B, t - off, s->h_pick, err))
            return jb_err_prefix(err, "level %d position %d", level, t - off);
        for (int n = 0; n < N; n++) {
            int32_t k = s->h_pick[n];
            if (k < 0 || k >= B)
                return jb_err_set(err, JB_EINTERNAL, "level %d position %d: token %d outside "
                                  "[0, %d)", level, t - off, k, B);
            s->h_seq[(int64_t)n * S + t] = k;
            if (off && k < in->n_vocab) clamped++;
        }
        JB_CUDA_CHECK(cudaMemcpyAsync(s->pick, s->h_pick, sizeof(int32_t) * (size_t)N,
                                      cudaMemcpyHostToDevice, s->st), err);
        JB_LAUNCH(k_put_pick, jb_cuda_blocks(N), JB_CUDA_BLOCK, s->st, (int64_t)N, s->seq,
                  (const int32_t *)s->pick, S, t);
        JB_CUDA_LAUNCHED(err);
    }
    for (int n = 0; n < N; n++)
        for (int i = 0; i < n_fill; i++) {
            int32_t k = s->h_seq[(int64_t)n * S + off + i];
            if (off) k = k - in->n_vocab < 0 ? 0 : k - in->n_vocab;   // clamp(id - n_vocab, 0)
            out[(int64_t)n * n_fill + i] = k;
        }
    if (n_clamped) *n_clamped = clamped;
    JB_CUDA_CHECK(cudaStreamSynchronize(s->st), err);
    return 0;
}

}  // extern "C"
