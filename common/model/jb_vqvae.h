// jb_vqvae.h: the VQ-VAE of the reference (jukebox/vqvae): encoders, bottleneck, decoders.
//
//   jb_st_t *st = jb_st_open("vqvae.safetensors", &err);
//   jb_vqvae_t *vq = jb_vqvae_new(st, 0, &err);             // default window
//   jb_vqvae_encode(vq, audio, N, T, level, codes, 0, &err); // codes: (N, T / hop[level])
//   jb_vqvae_decode(vq, codes, N, T_L, level, audio, 0, &err);
//   jb_vqvae_destroy(&vq); jb_st_close(&st);
//
// Encoding level L runs encoders.L (its level blocks 0..L, all on the raw audio) and picks
// for every position the nearest row of codebook L (distance ‖x‖² − 2x·k + ‖k‖², float32,
// as the reference). Decoding level L looks the codes up in codebook L and runs only
// decoders.L (level blocks L..0, then `out`), which up-samples all the way to audio.
//
// Long inputs: work is done on windows of at most `max_window` raw samples (fixed at
// jb_vqvae_new; activations are allocated there, once, for that size). A signal that fits
// is processed in one pass. A longer one is cut into chunks of `chunk` samples (a multiple
// of the level's hop length) and each chunk is processed with a margin of context on both
// sides at least as wide as the receptive field; only the chunk's own outputs are kept,
// so the result equals the one-pass result (up to float rounding of the products).
// Memory is therefore bounded by max_window whatever the song length.
//
// Layout: audio (N, T) float32 mono in [-1, 1] (the reference's (N, T, 1)); codes (N, T_L)
// int32. T must be a multiple of hop_length[level] (the reference asserts the same).
//
// Thread rules: a jb_vqvae_t holds its activations: one thread at a time per object.
// Work is spread over the caller's OpenMP threads (omp_set_num_threads); OpenBLAS is set
// to one thread during each call (its sgemms run inside the OpenMP loops) and restored.
// Ownership: the model copies (and repacks) the weights it needs; the jb_st_t may be
// closed after jb_vqvae_new.
#ifndef JB_VQVAE_H
#define JB_VQVAE_H

#include <stdint.h>

#include "jb_err.h"
#include "jb_hparams.h"
#include "jb_kernels.h"
#include "jb_safetensors.h"

#define JB_VQVAE_DEFAULT_WINDOW (1 << 19)   // raw samples per pass (~12 s at 44.1 kHz)

typedef struct jb_vqvae jb_vqvae_t;   // opaque

// Load from an opened model file: hyper-parameters from __metadata__["hparams"], every
// tensor of the reference's state_dict checked for presence and shape.
// max_window: largest pass in raw samples (0: JB_VQVAE_DEFAULT_WINDOW). NULL + err.
jb_vqvae_t *jb_vqvae_new(const jb_st_t *st, int64_t max_window, jb_err_t *err);
// Same architecture with random weights (uniform, scaled by 1/sqrt(fan_in)) and a random
// codebook, from a seed: for benchmarks and tests.
jb_vqvae_t *jb_vqvae_new_random(const jb_vqvae_hparams_t *hp, uint64_t seed, int64_t max_window,
                                jb_err_t *err);
// Frees everything; sets *vq_p to NULL; accepts NULL.
void jb_vqvae_destroy(jb_vqvae_t **vq_p);

const jb_vqvae_hparams_t *jb_vqvae_hparams(const jb_vqvae_t *vq);
int64_t jb_vqvae_max_window(const jb_vqvae_t *vq);
// Context (raw samples) added on each side of a chunk when encoding / decoding level L.
int64_t jb_vqvae_margin(const jb_vqvae_t *vq, int level, int decode);
// Bytes of weights and of activations held.
size_t jb_vqvae_weight_bytes(const jb_vqvae_t *vq);
size_t jb_vqvae_act_bytes(const jb_vqvae_t *vq);
// Convolution methods (jb_conv.h): im2col + one sgemm per row block; direct: one sgemm per
// tap; Winograd: the resnets' dilated k=3 convs as Winograd F(2,3) (4 products per 2
// outputs instead of 6), the other convs by im2col. Default: JB_VQVAE_DEFAULT_METHOD, the
// fastest on the real configuration (docs/vqvae.md). Re-sizes the scratch; -1 + err when
// out of memory or unknown.
enum { JB_VQVAE_IM2COL = 0, JB_VQVAE_DIRECT = 1, JB_VQVAE_WINOGRAD = 2 };
#define JB_VQVAE_DEFAULT_METHOD JB_VQVAE_WINOGRAD
int jb_vqvae_set_method(jb_vqvae_t *vq, int method, jb_err_t *err);

// audio: (N, T); codes: (N, T / hop_length[level]) written.
// chunk: samples per chunk (a multiple of hop_length[level]); 0 = the largest chunk that
// fits max_window with its margins (one pass when T fits). Errors: bad level, T not a
// multiple of the hop, chunk not a multiple of the hop, chunk + margins > max_window.
int jb_vqvae_encode(jb_vqvae_t *vq, const float *audio, int N, int64_t T, int level,
                    int32_t *codes, int64_t chunk, jb_err_t *err);
// As jb_vqvae_encode, but the encoder's output before the bottleneck:
// latents: (N, T / hop_length[level], emb_width) written.
int jb_vqvae_encode_latents(jb_vqvae_t *vq, const float *audio, int N, int64_t T, int level,
                            float *latents, int64_t chunk, jb_err_t *err);
// codes: (N, T_L) in [0, l_bins); audio: (N, T_L * hop_length[level]) written.
// chunk as for encode, in raw samples. A code out of range is an error naming item and position.
int jb_vqvae_decode(jb_vqvae_t *vq, const int32_t *codes, int N, int64_t T_L, int level,
                    float *audio, int64_t chunk, jb_err_t *err);

// ---- other backends (common/cuda/jb_vqvae.cu: the GPU) ---------------------------
// A read-only view of the model for a backend that runs the same passes elsewhere.

// One convolution of a pass, in order: buffer dst = conv(buffer src), as jb_conv1d /
// jb_convt1d (jb_conv.h) with the weights packed as there.
typedef struct {
    int src, dst;     // activation buffers 0..2 (each (T, channels)); src -1: the pass's input
    int flags;        // JB_CONV_RELU_IN / _RELU_OUT / _ACC (the method's flags not included)
    int C, OC, k, s, p, d, transposed;
    const float *w;   // conv (k, C, OC), transposed (C, k, OC); inside jb_vqvae_weights
    const float *b;   // (OC)
    const float *wg;  // (4, C, OC) Winograd weights (the resnets' k=3 convs), else NULL
} jb_vqvae_op_t;

// The ops of encoders.L (decode 0: input audio (T, 1), output the latents (T / hop, emb) in
// buffer *out_buf) or decoders.L (decode 1: input the codebook rows of the codes, (T_L, emb),
// in buffer 0; output the audio (T, 1) in buffer 2, *out_buf = 2). Writes at most max ops;
// returns how many there are (call with ops NULL to count), -1 + err for a bad level.
int jb_vqvae_ops(const jb_vqvae_t *vq, int level, int decode, jb_vqvae_op_t *ops, int max,
                 int *out_buf, jb_err_t *err);
// Every weight (float32, one allocation of *n floats) — the ops' w/b/wg and the codebooks
// point inside it.
const float *jb_vqvae_weights(const jb_vqvae_t *vq, size_t *n);
// Codebook of level L: (l_bins, emb); its squared row norms k_norm: (l_bins).
void jb_vqvae_codebook(const jb_vqvae_t *vq, int level, const float **codebook,
                       const float **k_norm);
int jb_vqvae_method(const jb_vqvae_t *vq);

// A backend's window functions. The CPU drivers (jb_vqvae_encode/_decode) keep the checks,
// the chunking and the loop over items, and hand every window to these:
//   encode: audio: host (T) one item's window; writes rows [skip, skip + n) of the level's
//           output: codes (n), or latents (n, emb) when codes is NULL;
//   decode: codes: host (T_L) one item's window (checked in range); writes samples
//           [skip, skip + n) of the window's audio into audio (n).
// 0, or -1 + err.
typedef struct {
    int (*encode)(void *impl, int level, const float *audio, int64_t T, int64_t skip, int64_t n,
                  int32_t *codes, float *latents, jb_err_t *err);
    int (*decode)(void *impl, int level, const int32_t *codes, int64_t T_L, int64_t skip,
                  int64_t n, float *audio, jb_err_t *err);
} jb_vqvae_backend_t;
// Hand the windows of vq to be (both borrowed; NULL: back to the CPU).
void jb_vqvae_set_backend(jb_vqvae_t *vq, const jb_vqvae_backend_t *be, void *impl);

// ---- kernel bodies ------------------------------------------------------------

// xx[i] = ‖x_i‖² for x: (T, C)
JB_HD static inline void jb_vq_sumsq_row(int64_t i, float *xx, const float *x, int C) {
    float acc = 0.0f;
    for (int c = 0; c < C; c++) acc += x[i * C + c] * x[i * C + c];
    xx[i] = acc;
}

// Row t of out: (T, C) = row codes[t] of codebook: (K, C)
JB_HD static inline void jb_vq_lookup_row(int64_t t, float *out, const float *codebook,
                                          const int32_t *codes, int C) {
    const float *src = codebook + (int64_t)codes[t] * C;
    float *dst = out + t * C;
    for (int c = 0; c < C; c++) dst[c] = src[c];
}

// Row i: codes[i] = argmin_j (xx[i] − 2 dots[i, j]) + kk[j], first index on ties
// (dots: (T, K) = x · codebookᵀ; xx: (T) = ‖x_i‖²; kk: (K) = ‖k_j‖²).
JB_HD static inline void jb_vq_argmin_at(int64_t i, int32_t *codes, const float *dots,
                                         const float *xx, const float *kk, int K) {
    const float *d = dots + i * K;
    float best = 0.0f;
    int32_t arg = 0;
    for (int j = 0; j < K; j++) {
        float v = (xx[i] - 2.0f * d[j]) + kk[j];
        if (j == 0 || v < best) best = v, arg = j;
    }
    codes[i] = arg;
}

#endif
