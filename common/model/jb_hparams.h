// jb_hparams.h: hyper-parameters of the reference, as presets and as stored in model files.
//
// Hyper-parameters travel as a JSON object holding the reference's complete
// dictionary (every default of hparams.py plus the preset's overrides); for a
// prior the VQ-VAE's dictionary sits under the key "vqvae", because the
// prior's shapes depend on it. Model files store that object as the string
// __metadata__["hparams"]. The typed structs below are read from it and hold
// only what the C code uses.
//
// Presets: "vqvae", "upsampler_level_0", "upsampler_level_1", "prior_5b",
// "prior_5b_lyrics", "prior_1b_lyrics" (numbers as in the reference's hparams.py).
// The released top priors' min_duration/max_duration are set from their
// t_ranges (the reference's LabelConditioner builds t_ranges from them).
//
// Thread rules: all functions are reentrant; json_t objects are not shared.
#ifndef JB_HPARAMS_H
#define JB_HPARAMS_H

#include <jansson.h>

#include "jb_err.h"
#include "jb_safetensors.h"

#define JB_MAX_LEVELS 4

// Names of the presets, NULL-terminated.
extern const char *const jb_hparams_preset_names[];

// New reference to the full dictionary of a preset. NULL + JB_EINVAL for an unknown name.
json_t *jb_hparams_preset(const char *name, jb_err_t *err);
// The "hparams" metadata of a model file, parsed. New reference; NULL + err.
json_t *jb_hparams_from_st(const jb_st_t *st, jb_err_t *err);

// Typed getters. A missing key or a wrong type is an error naming the key;
// JSON null reads as `dflt` for the *_or functions.
int jb_hp_int(const json_t *hp, const char *key, int *out, jb_err_t *err);
int jb_hp_int_or(const json_t *hp, const char *key, int dflt, int *out, jb_err_t *err);
int jb_hp_double(const json_t *hp, const char *key, double *out, jb_err_t *err);
int jb_hp_double_or(const json_t *hp, const char *key, double dflt, double *out, jb_err_t *err);
int jb_hp_bool(const json_t *hp, const char *key, int *out, jb_err_t *err);
// Integer list; returns its length via *n (at most max). null -> *n = 0.
int jb_hp_int_list(const json_t *hp, const char *key, int *out, int max, int *n, jb_err_t *err);

// The VQ-VAE (vqvae.py, VQVAE / Encoder / Decoder / Resnet1D).
typedef struct {
    int levels;
    int downs_t[JB_MAX_LEVELS];
    int strides_t[JB_MAX_LEVELS];
    int emb_width;
    int l_bins;
    int width;
    int depth;
    double m_conv;
    int dilation_growth_rate;
    int dilation_cycle;                      // 0: none
    int multipliers[JB_MAX_LEVELS];          // hvqvae_multipliers (1 when null)
    int reverse_decoder_dilation;            // vqvae_reverse_decoder_dilation
    int sample_length;                       // 0 when unset
    int sr;
    // derived
    int downsamples[JB_MAX_LEVELS];          // stride^down per level
    int hop_lengths[JB_MAX_LEVELS];          // cumulative product (raw samples per code)
} jb_vqvae_hparams_t;

int jb_vqvae_hparams_parse(const json_t *hp, jb_vqvae_hparams_t *out, jb_err_t *err);

// One prior level (prior.py SimplePrior, transformer.py, conditioners.py).
typedef struct {
    int level;
    int n_ctx;
    int width;            // prior_width
    int depth;            // prior_depth
    int heads;
    int attn_order;
    int blocks;           // 0: none
    int spread;           // 0: none
    double m_attn, m_mlp;
    int res_scale;        // residual scaled by 1/depth
    int labels, labels_v3;
    int y_bins[2];        // (genres, artists) as in the reference: y_bins = (n_genres, n_artists)
    int t_bins;
    int max_bow_genre_size;
    double min_duration, max_duration;
    int sr;
    int use_tokens, n_tokens, n_vocab;
    int merged_decoder, single_enc_dec, copy_input;
    double prime_loss_fraction;
    // separate lyrics encoder (prime_*), used when use_tokens && !single_enc_dec
    int prime_width, prime_depth, prime_heads, prime_attn_order, prime_blocks;
    double prime_m_attn, prime_m_mlp;
    int prime_res_scale;
    // conditioner on the level above (upsamplers)
    int cond_width, cond_depth;
    double cond_m_conv;
    int cond_dilation_growth_rate, cond_dilation_cycle;   // cycle 0: none
    int cond_res_scale;
    int alignment_layer, alignment_head;                  // -1: none
    int fp16_params;
    jb_vqvae_hparams_t vqvae;                             // from hparams["vqvae"]
} jb_prior_hparams_t;

int jb_prior_hparams_parse(const json_t *hp, jb_prior_hparams_t *out, jb_err_t *err);

#endif
