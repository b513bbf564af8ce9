// jb_prior_cuda.h: sampling a window of a prior (jb_prior_sample) with the transformer on a CUDA
// device.
//
// The transformer weights, the input/positional embeddings and the output projection are
// uploaded once (jb_prior_cuda_new); the key/value cache and activations live on the device.
// Per window, the upsamplers' Conditioner (embedding of the level-above codes, conv stack with
// resnets and transposed convs, LayerNorm: jb_prior_cond_view) runs on the device, its weights
// uploaded once, only the codes going up; the other conditioning (label embedding, timing
// signal, lyrics encoder) is computed by the CPU functions of jb_prior.h once and uploaded. Per token, on the
// device: the input embedding (code embedding + position + conditioning), the one-token
// transformer step (one CUDA graph), the output projection to logits; the logits (N × seq_bins
// floats) come to the host for `choose` (top-k/top-p and the random draw stay on the CPU, as the
// sampling RNG contract lives there), and the N chosen codes go back. The contract of
// jb_prior_cuda_sample is jb_prior_sample's, batch invariance included: the N rows may be
// several jobs' (jb_sample_windows, a stage's --max-batch), and every product is
// jb_matmul_cuda's, so a row's codes do not depend on the other rows.
//
// Built from common/cuda/jb_prior.cu (nvcc, or the CPU emulation of CUDA; see jb_cuda.h).
// Thread rules: a sampler belongs to one thread at a time. Ownership: borrows the prior, which
// must outlive the sampler.
#ifndef JB_PRIOR_CUDA_H
#define JB_PRIOR_CUDA_H

#include "jb_err.h"
#include "jb_prior.h"

typedef struct jb_prior_cuda jb_prior_cuda_t;

// Device state for up to max_batch sequences (fit != 0: fewer when memory is short, see
// jb_prior_cuda_max_batch) and priming passes of up to max_chunk tokens. NULL + err
// (JB_ENOMEM "needs X GiB, Y GiB free" when it does not fit).
jb_prior_cuda_t *jb_prior_cuda_new(const jb_prior_t *p, int max_batch, int max_chunk, int fit,
                                   jb_err_t *err);
void jb_prior_cuda_destroy(jb_prior_cuda_t **s_p);
int jb_prior_cuda_max_batch(const jb_prior_cuda_t *s);
// The Conditioner on the device (what a window uses): z_cond: host (N, n_ctx /
// cond_downsample) codes of the level above; out: host (N, n_ctx, width), as jb_prior_cond_x.
// -1 + err for a prior without one, a code out of range or a device error.
int jb_prior_cuda_cond_x(jb_prior_cuda_t *s, const int32_t *z_cond, int N, float *out,
                         jb_err_t *err);
// Make the CPU sampler s hand its windows to d (jb_prior_sampler_set_backend), so that code
// written against jb_prior_sample (jb_sample.h, the stages) samples on the GPU. d must serve
// s's prior and at least s's max_batch; it must outlive s's use. 0, or -1 + err.
int jb_prior_cuda_attach(jb_prior_sampler_t *s, jb_prior_cuda_t *d, jb_err_t *err);

// As jb_prior_sample (same arguments and results), the transformer on the device.
int jb_prior_cuda_sample(jb_prior_cuda_t *s, int N, const int32_t *y, const int32_t *z_cond,
                         const int32_t *prime, int P, int n_fill, int chunk_size,
                         jb_prior_choose_fn choose, void *user, int32_t *out, int *n_clamped,
                         jb_err_t *err);

#endif
