// golden_device.h: run a golden case's models on the CUDA device.
//
// With JB_GOLDEN_DEVICE=cuda, in a runner compiled with JB_HAVE_CUDA (golden-runner-cuda,
// linked with the CPU emulation of CUDA by plain make; golden-runner of a make CUDA=1 build, on
// the GPU), the checkers attach the device backends to the models they build: the VQ-VAE
// (jb_vqvae_cuda) and every prior sampler (jb_prior_cuda: transformer, embeddings, output
// projection, upsampler Conditioner). Everything else of the checker is unchanged, so the
// device results meet the same reference values and tolerances. Otherwise these are no-ops.
// Thread rules: the runner's thread. Ownership: a handle is freed by the matching _release.
#ifndef GOLDEN_DEVICE_H
#define GOLDEN_DEVICE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jb_err.h"
#include "jb_prior.h"
#include "jb_vqvae.h"

#ifdef JB_HAVE_CUDA
#include "jb_prior_cuda.h"
#include "jb_vqvae_cuda.h"
#endif

static inline int golden_on_device(void) {
#ifdef JB_HAVE_CUDA
    const char *d = getenv("JB_GOLDEN_DEVICE");
    return d && !strcmp(d, "cuda");
#else
    return 0;
#endif
}

static inline const char *golden_device_name(void) {
#ifdef JB_CUDA_EMU
    return "the CUDA device (CPU emulation)";
#else
    return "the CUDA device";
#endif
}

// vq's windows on the device; *h the device model (NULL on the CPU). 0, or -1 + err.
static inline int golden_vqvae_device(jb_vqvae_t *vq, void **h, jb_err_t *err) {
    *h = NULL;
#ifdef JB_HAVE_CUDA
    if (!golden_on_device()) return 0;
    jb_vqvae_cuda_t *d = jb_vqvae_cuda_new(vq, err);
    if (!d || jb_vqvae_cuda_attach(vq, d, err)) {
        jb_vqvae_cuda_destroy(&d);
        return -1;
    }
    printf("    VQ-VAE on %s\n", golden_device_name());
    *h = d;
#endif
    return 0;
}

static inline void golden_vqvae_release(jb_vqvae_t *vq, void **h) {
#ifdef JB_HAVE_CUDA
    jb_vqvae_cuda_t *d = (jb_vqvae_cuda_t *)*h;
    if (d && vq) jb_vqvae_cuda_attach(vq, NULL, NULL);
    jb_vqvae_cuda_destroy(&d);
#endif
    *h = NULL;
}

// s's windows on the device; *h the device sampler (NULL on the CPU). 0, or -1 + err.
static inline int golden_prior_device(jb_prior_sampler_t *s, void **h, jb_err_t *err) {
    *h = NULL;
#ifdef JB_HAVE_CUDA
    if (!golden_on_device()) return 0;
    jb_prior_cuda_t *d = jb_prior_cuda_new(jb_prior_sampler_prior(s),
                                           jb_prior_sampler_max_batch(s), 0, 0, err);
    if (!d || jb_prior_cuda_attach(s, d, err)) {
        jb_prior_cuda_destroy(&d);
        return -1;
    }
    printf("    prior level %d sampled on %s\n",
           jb_prior_hparams(jb_prior_sampler_prior(s))->level, golden_device_name());
    *h = d;
#endif
    return 0;
}

static inline void golden_prior_release(jb_prior_sampler_t *s, void **h) {
#ifdef JB_HAVE_CUDA
    jb_prior_cuda_t *d = (jb_prior_cuda_t *)*h;
    if (d && s) jb_prior_sampler_set_backend(s, NULL, NULL);
    jb_prior_cuda_destroy(&d);
#endif
    *h = NULL;
}

#endif
