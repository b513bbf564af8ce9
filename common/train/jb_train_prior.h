// jb_train_prior.h: training one prior level (the reference's SimplePrior.z_forward in
// training mode, then loss.backward()): loss in bits, teacher-forced logits and the gradient
// of every parameter, with hand-written backward passes (jb_grad.h).
//
//   jb_train_prior_t *tp = jb_train_prior_new("prior_level_2.safetensors", max_batch, &err);
//   jb_train_prior_loss_t L;
//   jb_train_prior_step(tp, z, z_cond, y, N, &L, NULL, &err);      // grads of this batch
//   int64_t n; float *w = jb_train_prior_weights(tp, &n), *g = jb_train_prior_grads(tp, &n);
//   ... optimiser (jb_adam.h) updates w from g ...
//
// What the forward reproduces (golden README E2): input embedding roll(x_emb(z), 1) with
// position 0 overwritten by the start conditioning (artist + bag-of-words genres, −1 slots
// masked; or prior.start_token without labels); + pos_emb + the per-position conditioning
// (timing signal at the top level: no gradient into y; the Conditioner on z_cond for
// upsamplers: Conv1d, Resnet1D stacks, ConvTranspose1d, LayerNorm); the transformer with
// training-mode attention scaling; + the conditioning again unless merged_decoder; logits by
// x_out (tied to x_emb unless merged_decoder: one parameter, gradients summed). Lyrics: the
// separate encoder (5b_lyrics: prime_prior → prime_state_proj → prime_state_ln = encoder_kv
// for the kind-6 layers, and prime_x_out(encoder_kv) against the tokens as prime loss) or the
// joint sequence (1b_lyrics: lyric ids then codes + n_vocab, prime loss over the first
// n_tokens positions). loss = prime_loss_fraction·prime·P/(P+G) + gen·G/(P+G), P = n_tokens
// (0 without lyrics), G = n_ctx; cross-entropies are means over tokens, in bits.
// Dropouts are taken as 0 (the fixtures' setting); fp16 and gradient checkpointing are not
// modelled (same math).
//
// Parameters: every trainable tensor of the model file under its reference name
// (named_parameters()), widened to float32, in one allocation; gradients in a second one of
// the same layout, so an optimiser sees two flat arrays. A tied prior.x_out.weight is not a
// separate parameter (prior.x_emb.weight carries both gradients).
//
// Thread rules: one thread at a time per object (steps use the OpenMP pool inside).
// Ownership: the object owns its parameters, gradients and activations (allocated in _new for
// max_batch sequences; a step never allocates); pointers it hands out live until _destroy.
#ifndef JB_TRAIN_PRIOR_H
#define JB_TRAIN_PRIOR_H

#include <stdint.h>

#include "jb_err.h"
#include "jb_prior.h"

typedef struct jb_train_prior jb_train_prior_t;

typedef struct {
    char name[160];       // reference name, e.g. "prior.transformer._attn_mods.0.ln_0.weight"
    int ndim;
    int64_t shape[4];
    int64_t numel;
    int64_t offset;       // into the flat weight / gradient arrays
    float *w;             // (shape) weights
    float *g;             // (shape) gradient of the last step
} jb_train_param_t;

typedef struct {
    double loss;          // weighted total (bits per token)
    double gen_loss;      // = bpd
    double prime_loss;    // 0 without lyrics
} jb_train_prior_loss_t;

// Loads the model file (kind "prior"; F32/F16/BF16 tensors, widened). NULL + err.
jb_train_prior_t *jb_train_prior_new(const char *path, int max_batch, jb_err_t *err);
void jb_train_prior_destroy(jb_train_prior_t **tp_p);

const jb_prior_info_t *jb_train_prior_info(const jb_train_prior_t *tp);
int jb_train_prior_n_params(const jb_train_prior_t *tp);
const jb_train_param_t *jb_train_prior_param(const jb_train_prior_t *tp, int i);
// NULL when the model has no parameter of that name.
const jb_train_param_t *jb_train_prior_find(const jb_train_prior_t *tp, const char *name);
// Flat arrays of all parameters / gradients: (*n) floats each.
float *jb_train_prior_weights(jb_train_prior_t *tp, int64_t *n);
float *jb_train_prior_grads(jb_train_prior_t *tp, int64_t *n);

// Forward and backward of one batch; the gradients are overwritten (not accumulated).
// z: (N, n_ctx) codes; z_cond: (N, n_ctx / cond_downsample) or NULL (top level);
// y: (N, label_len) or NULL without labels; N <= max_batch.
// logits (may be NULL): (N, seq_len, seq_bins) teacher-forced logits of this forward.
int jb_train_prior_step(jb_train_prior_t *tp, const int32_t *z, const int32_t *z_cond,
                        const int32_t *y, int N, jb_train_prior_loss_t *loss, float *logits,
                        jb_err_t *err);

// Writes the current weights as a model file of the same format (kind, hparams and every
// tensor of the source file in its order; parameters as float32, a tied prior.x_out.weight as
// a copy of prior.x_emb.weight, other tensors copied as stored), atomically (tmp + rename):
// jb_prior_new and jb_train_prior_new load it. 0 or -1 + err.
int jb_train_prior_save(const jb_train_prior_t *tp, const char *path, jb_err_t *err);

// Forward only (loss and logits, no gradients), e.g. for held-out data.
int jb_train_prior_eval(jb_train_prior_t *tp, const int32_t *z, const int32_t *z_cond,
                        const int32_t *y, int N, jb_train_prior_loss_t *loss, float *logits,
                        jb_err_t *err);

#endif
