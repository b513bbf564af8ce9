// jb_vqvae_cuda.h: the VQ-VAE of jb_vqvae.h (encode: conv stacks, resnets, nearest-code search;
// decode: codebook lookup, conv stacks, resnets) on a CUDA device.
//
//   jb_vqvae_t *vq = jb_vqvae_new(st, window, &err);
//   jb_vqvae_cuda_t *d = jb_vqvae_cuda_new(vq, &err);   // weights uploaded once
//   jb_vqvae_cuda_attach(vq, d, &err);                   // jb_vqvae_encode/_decode now run here
//
// Design: the device object is made from the CPU model's read-only view (jb_vqvae_ops: every
// pass as a list of convolutions over three activation buffers; jb_vqvae_weights: all packed
// weights and codebooks in one float32 array, uploaded as one allocation). Attached, the CPU
// drivers keep the argument checks, the chunking and the loop over items and hand each window
// here: only the window's audio (encode) or codes (decode) go to the device and only its codes,
// latents or audio come back. Convolutions are the launchers of jb_conv.cu (im2col / direct /
// Winograd F(2,3) products through cuBLAS, f32, no TF32), chosen as the CPU chooses them
// (jb_vqvae_set_method); the bottleneck is a cuBLAS product of the latents with the codebook
// (blocks of rows), a row-norm kernel and a per-row argmin kernel (the bodies of jb_vqvae.h).
// Results equal the CPU's up to the summation order of the products (and so, for codes,
// except at near-ties of two distances).
//
// Memory planning: jb_vqvae_cuda_plan gives the bytes of the weights and of the activations
// for the model's max_window; _new compares them with the free device memory first and refuses
// with "needs X GiB, Y GiB free" (a smaller window needs less).
//
// Built from common/cuda/jb_vqvae.cu (nvcc, or the CPU emulation of CUDA; see jb_cuda.h).
// Thread rules: as jb_vqvae.h — one thread at a time per pair (vq, d); one device per process
// (the current one). Ownership: d borrows vq, which must outlive it; attach stores d in vq.
#ifndef JB_VQVAE_CUDA_H
#define JB_VQVAE_CUDA_H

#include <stddef.h>

#include "jb_err.h"
#include "jb_vqvae.h"

typedef struct jb_vqvae_cuda jb_vqvae_cuda_t;

typedef struct {
    size_t weights;   // bytes of every weight and codebook
    size_t acts;      // bytes of activations, scratch and window input/output for max_window
} jb_vqvae_cuda_plan_t;

void jb_vqvae_cuda_plan(const jb_vqvae_t *vq, jb_vqvae_cuda_plan_t *plan);
// Upload vq's weights and allocate the activations. NULL + err: JB_ENOMEM "... needs X GiB,
// Y GiB free" when they do not fit, or a CUDA/cuBLAS error.
jb_vqvae_cuda_t *jb_vqvae_cuda_new(const jb_vqvae_t *vq, jb_err_t *err);
// Detach first (jb_vqvae_cuda_attach(vq, NULL, ...)) if vq lives on. Accepts NULL.
void jb_vqvae_cuda_destroy(jb_vqvae_cuda_t **d_p);
// Make jb_vqvae_encode / _encode_latents / _decode of vq run their windows on d (d made from
// vq); d NULL: back to the CPU. 0, or -1 + err.
int jb_vqvae_cuda_attach(jb_vqvae_t *vq, jb_vqvae_cuda_t *d, jb_err_t *err);

// One window on the device (what attach routes to; the arguments of jb_vqvae_backend_t).
int jb_vqvae_cuda_encode(jb_vqvae_cuda_t *d, int level, const float *audio, int64_t T,
                         int64_t skip, int64_t n, int32_t *codes, float *latents, jb_err_t *err);
int jb_vqvae_cuda_decode(jb_vqvae_cuda_t *d, int level, const int32_t *codes, int64_t T_L,
                         int64_t skip, int64_t n, float *audio, jb_err_t *err);

#endif
