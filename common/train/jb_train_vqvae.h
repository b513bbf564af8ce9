// jb_train_vqvae.h: one training step of the reference VQ-VAE (vqvae/vqvae.py VQVAE.forward
// in training mode, then loss.backward()): every level's encoder, the bottleneck (codes with
// the codebook before the update, commitment loss, straight-through estimator, EMA codebook
// update with dead-code revival), every level's decoder, the reconstruction losses
// (l1/l2/linf/lmix, STFT spectral and multi-resolution spectral losses), the metrics, and
// the gradient of the total loss for every encoder/decoder parameter.
//
//   jb_vqvae_loss_hparams_t lh;  jb_vqvae_loss_hparams_parse(hparams_json, &lh, &err);
//   jb_train_vqvae_t *tv = jb_train_vqvae_new(&hp, &lh, N, T, seed, &err);
//   jb_train_vqvae_load(tv, st, &err);               // weights + codebooks (model file)
//   jb_train_vqvae_set_ema(tv, L, k_sum, k_elem, &err);  // or the restore_k defaults
//   jb_train_vqvae_step(tv, x, &res, &err);           // loss, metrics, codes, grads
//   for i < jb_train_vqvae_n_params(tv): jb_train_vqvae_param(tv, i) -> name, shape, w, g
//   jb_train_vqvae_destroy(&tv);
//
// Parameters are kept in the PyTorch layouts and named as the reference's state_dict
// (encoders.L.level_blocks.l.model..., decoders.L...). Gradients are overwritten by each
// step (zeroed first). The optimiser is not part of this module: it updates the parameter
// values in place through jb_train_vqvae_param(...).w between steps.
//
// Activations for (N, T) are allocated once at jb_train_vqvae_new; a step takes exactly
// that batch shape (the reference trains on fixed-length windows).
//
// Thread rules: one thread at a time per object; products use OpenBLAS with the caller's
// thread settings. Ownership: the object owns parameters, gradients, codebooks and the
// result arrays it hands out (valid until the next step or destroy).
#ifndef JB_TRAIN_VQVAE_H
#define JB_TRAIN_VQVAE_H

#include <jansson.h>
#include <stdint.h>

#include "jb_err.h"
#include "jb_hparams.h"
#include "jb_safetensors.h"

#define JB_TVQ_MAX_MULTISPEC 8

enum { JB_TVQ_LOSS_L1, JB_TVQ_LOSS_L2, JB_TVQ_LOSS_LINF, JB_TVQ_LOSS_LMIX };

// The loss hyper-parameters of hparams.py (defaults as the reference's).
typedef struct {
    double l_mu;                 // EMA decay mu (0.99)
    double commit, spectral, multispectral;   // loss weights (0.02, 0.0, 1.0)
    int loss_fn;                 // JB_TVQ_LOSS_* ("l2")
    int linf_k;                  // (2048)
    double lmix_l1, lmix_l2, lmix_linf;   // (0, 0, 0)
    double revival_threshold;    // (1.0)
    int use_nonrelative_specloss;         // (true)
    int n_multispec;             // multispec_loss_{n_fft,hop_length,window_size}
    int ms_n_fft[JB_TVQ_MAX_MULTISPEC], ms_hop[JB_TVQ_MAX_MULTISPEC], ms_win[JB_TVQ_MAX_MULTISPEC];
    double bw_l1, bw_l2, bw_spec;         // bandwidth {l1, l2, spec}: required
} jb_vqvae_loss_hparams_t;

// From a JSON hparams object: missing keys take the defaults above; "bandwidth" is required.
int jb_vqvae_loss_hparams_parse(const json_t *hp, jb_vqvae_loss_hparams_t *out, jb_err_t *err);

typedef struct jb_train_vqvae jb_train_vqvae_t;   // opaque

typedef struct {
    const char *name;      // state_dict name
    int ndim;
    int64_t shape[3];
    int64_t n;             // elements
    float *w;              // value (PyTorch layout), writable
    float *g;              // gradient of the last step
} jb_tvq_param_t;

// Result of one step. Arrays are owned by the object.
typedef struct {
    double loss;
    // per level L (metric suffix l{L+1})
    double recons[JB_MAX_LEVELS], spectral[JB_MAX_LEVELS], multispectral[JB_MAX_LEVELS];
    double commit[JB_MAX_LEVELS];
    double recons_loss, spectral_loss, multispectral_loss, commit_loss;
    double spectral_convergence, l2_loss, l1_loss, linf_loss;   // level 0, no grad
    double fit, pn, entropy, used_curr, usage, dk;               // mean over levels
    int revived[JB_MAX_LEVELS];   // codes replaced by random rows this step
    const int32_t *zs[JB_MAX_LEVELS];   // (N, T_L) codes
    const float *x_out;                 // (N, T) level-0 decoder output
    const float *x_outs[JB_MAX_LEVELS]; // (N, T) every level's decoder output
} jb_tvq_result_t;

// Model of these hparams for batches (N, T); T a multiple of the top hop length. seed feeds
// the dead-code revival draws (jb_rng.h). Parameters start at zero: load or set them.
jb_train_vqvae_t *jb_train_vqvae_new(const jb_vqvae_hparams_t *hp,
                                     const jb_vqvae_loss_hparams_t *lh, int N, int64_t T,
                                     uint64_t seed, jb_err_t *err);
void jb_train_vqvae_destroy(jb_train_vqvae_t **tv_p);

// Every parameter and codebook k from a model file (names and shapes checked). The EMA
// state is read from bottleneck.level_blocks.L.k_sum / .k_elem when the file has them
// (jb_train_vqvae_save writes them), else set as the reference's
// restore_k(num_tokens = T / hop_L, threshold): k_elem = num_tokens / l_bins, k_sum = k * k_elem.
int jb_train_vqvae_load(jb_train_vqvae_t *tv, const jb_st_t *st, jb_err_t *err);

// A fresh model: every parameter uniform in +-1/sqrt(fan_in) as PyTorch's default Conv1d /
// ConvTranspose1d initialisation (fan_in = weight.size(1) * k), from a counter-based stream
// of seed. Codebooks are not touched: see jb_train_vqvae_init_codebooks.
void jb_train_vqvae_init_random(jb_train_vqvae_t *tv, uint64_t seed);
// The reference's init_k on the first batch x: (N, T): runs the encoders and sets every
// codebook to l_bins random rows of its encoder output (tiled with noise of std
// 0.01/sqrt(emb) when there are fewer rows than codes, randomly permuted), k_sum = k,
// k_elem = 1.
int jb_train_vqvae_init_codebooks(jb_train_vqvae_t *tv, const float *x, jb_err_t *err);
// Write a model file (same names and layout as the reference's state_dict, metadata "kind"
// "vqvae" and "hparams"), loadable by jb_vqvae_new and jb_train_vqvae_load. hparams_json:
// the complete hyper-parameter dictionary to store, or NULL to write the VQ-VAE keys of hp
// (plus the loss ones). The EMA state is stored too, as bottleneck.level_blocks.L.k_sum and
// .k_elem (jb_train_vqvae_load restores it when present).
int jb_train_vqvae_save(const jb_train_vqvae_t *tv, const char *path, const char *hparams_json,
                        jb_err_t *err);

// Steps taken (the dead-code revival draws are keyed by it): read it into a checkpoint and
// set it on resume so that a resumed run draws as an uninterrupted one.
uint64_t jb_train_vqvae_get_step(const jb_train_vqvae_t *tv);
void jb_train_vqvae_set_step(jb_train_vqvae_t *tv, uint64_t step);

int jb_train_vqvae_n_params(const jb_train_vqvae_t *tv);
jb_tvq_param_t jb_train_vqvae_param(const jb_train_vqvae_t *tv, int i);
// Index of a parameter by name, -1 when absent.
int jb_train_vqvae_find(const jb_train_vqvae_t *tv, const char *name);

// Codebook state of level L: k (l_bins, emb), k_sum (l_bins, emb), k_elem (l_bins).
// get: pointers owned by the object; set: copies (k is set too when k is not NULL).
void jb_train_vqvae_codebook(const jb_train_vqvae_t *tv, int L, const float **k,
                             const float **k_sum, const float **k_elem);
int jb_train_vqvae_set_ema(jb_train_vqvae_t *tv, int L, const float *k, const float *k_sum,
                           const float *k_elem, jb_err_t *err);

// One step on x: (N, T) mono audio: forward, EMA codebook update, loss, metrics, backward.
// Ties the taps of every decoder ConvTranspose1d (stride s, kernel 2s, padding s/2) in
// blocks of s: the weights are replaced by their block means now, and every later
// jb_train_vqvae_step averages their gradients the same way, so (with Adam, whose update of
// an element depends only on its own gradient history and value) they stay tied. A tied
// layer is nearest-neighbour upsampling followed by a 2-tap convolution of dilation s: every
// output phase gets the same weights, so a constant input gives a constant output: no
// steady pattern of period hop (the "checkerboard" of strided transposed convolutions: an
// untied decoder put a line at sr/4, 11 kHz, through every song). It does not remove every
// image of the upsampling on music (docs/train.md). The model file keeps the reference's
// layout. Returns the number of layers tied.
int jb_train_vqvae_tie_upsampling(jb_train_vqvae_t *tv);

// Trains the decoders only: every later jb_train_vqvae_step leaves the codebooks and their
// EMA state as they are (no update, no revival; the usage statistics are still reported) and
// zeroes the encoders' gradients (with weight decay 0, Adam then leaves them unchanged). The
// codes of any audio stay what they were, so priors trained on them keep working with the
// retrained decoders (e.g. to tie a trained model's upsampling).
void jb_train_vqvae_freeze_encoders(jb_train_vqvae_t *tv);

int jb_train_vqvae_step(jb_train_vqvae_t *tv, const float *x, jb_tvq_result_t *res,
                        jb_err_t *err);

// The metrics under the reference's names ("recons_loss_l1", ..., "dk"): fills up to max
// (name, value) pairs, returns how many there are.
int jb_train_vqvae_metrics(const jb_train_vqvae_t *tv, const jb_tvq_result_t *res,
                           const char **names, double *values, int max);

#endif
