// jb_hparams.c: see jb_hparams.h.
#include "jb_hparams.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

// The reference's DEFAULTS: every key of hparams.py with its default value.
static const char *k_defaults =
    "{\"alignment_head\": null, \"alignment_layer\": null, \"attn_dropout\": 0.0, \"attn_order\": 0, "
    "\"audio_files_dir\": \"\", \"aug_blend\": false, \"aug_shift\": false, \"beta1\": 0.9, "
    "\"beta2\": 0.999, \"blocks\": null, \"break_test\": 10000000000.0, "
    "\"break_train\": 10000000000.0, \"bs\": 1, \"bs_sample\": 1, \"bucket\": 128, \"c_attn\": 0, "
    "\"c_mlp\": 0, \"c_res\": 0, \"channels\": 2, \"clip\": 1.0, \"codes_logdir\": \"\", \"commit\": 1.0, "
    "\"cond_c_res\": 0, \"cond_depth\": 3, \"cond_dilation_cycle\": null, "
    "\"cond_dilation_growth_rate\": 1, \"cond_levels\": null, \"cond_m_conv\": 1.0, "
    "\"cond_res_scale\": false, \"cond_width\": 128, \"cond_zero_out\": false, "
    "\"copy_input\": false, \"cpu_ema\": false, \"cpu_ema_freq\": 100, \"curr_epoch\": -1, "
    "\"date\": null, \"debug_batch\": false, \"debug_eval_files\": false, "
    "\"debug_grad_accum\": false, \"debug_inputs\": false, \"debug_iters\": 100, "
    "\"debug_mem\": false, \"debug_speed\": false, \"depth\": 3, \"dilation_cycle\": null, "
    "\"dilation_growth_rate\": 1, \"downs_t\": [1, 1], \"dump\": false, \"ema\": true, "
    "\"ema_fused\": true, \"emb_dropout\": 0.0, \"emb_width\": 64, \"english_only\": false, "
    "\"epochs\": 10000, \"eps\": 1e-08, \"exit_train\": 10000000000.0, \"finetune\": \"\", "
    "\"fp16\": false, \"fp16_loss_scale\": null, \"fp16_opt\": false, \"fp16_params\": false, "
    "\"fp16_scale_window\": 1000.0, \"func\": \"\", \"git_commit\": \"<unknown_git_commit>\", "
    "\"grad_accum_iters\": 0, \"heads\": 1, \"hop_length\": 256, \"hvqvae_multipliers\": null, "
    "\"ignore_boundaries\": false, \"ignore_grad_norm\": 0, \"init_scale\": 1.0, "
    "\"iters_before_update\": 1, \"l_bins\": 512, \"l_mu\": 0.99, \"label_line\": 0, "
    "\"labeller\": \"top_genres\", \"labels\": true, \"labels_v3\": false, \"level\": 0, \"levels\": 2, "
    "\"linf_k\": 2048, \"lmix_l1\": 0.0, \"lmix_l2\": 0.0, \"lmix_linf\": 0.0, "
    "\"local_logdir\": \"logs\", \"local_path\": \"\", \"log_steps\": 100, \"loss_fn\": \"l2\", "
    "\"lr\": 0.0003, \"lr_decay\": 10000000000.0, \"lr_gamma\": 1.0, \"lr_scale\": 1.0, "
    "\"lr_start_linear_decay\": 0, \"lr_use_cosine_decay\": false, \"lr_use_linear_decay\": false, "
    "\"lr_warmup\": 100.0, \"m_attn\": 0.25, \"m_conv\": 1.0, \"m_mlp\": 1.0, "
    "\"max_bow_genre_size\": null, \"max_duration\": null, \"max_len\": 24, \"max_log\": 32, "
    "\"max_silence_pad_length\": 0, \"merged_decoder\": false, \"min_duration\": null, \"mu\": null, "
    "\"multispec_loss_hop_length\": [240, 120, 50], \"multispec_loss_n_fft\": [2048, 1024, 512], "
    "\"multispec_loss_window_size\": [1200, 600, 240], \"multispectral\": 1.0, \"n_ctx\": 1024, "
    "\"n_fft\": 1024, \"n_hops\": 2, \"n_inps\": 1, \"n_segment\": 1, \"n_segment_each\": 1, "
    "\"n_tokens\": 0, \"n_total_segment\": 1, \"n_vocab\": 0, \"name\": \"\", \"nworkers\": 1, "
    "\"p_unk\": 0.1, \"pipe_depth\": 8, \"piped\": false, \"pos_init\": false, "
    "\"prime_attn_dropout\": 0.0, \"prime_attn_order\": 0, \"prime_blocks\": null, "
    "\"prime_c_attn\": 0, \"prime_c_mlp\": 0, \"prime_c_res\": 0, \"prime_chunks\": 4, "
    "\"prime_depth\": 3, \"prime_emb_dropout\": 0.0, \"prime_heads\": 1, \"prime_init_scale\": 1.0, "
    "\"prime_loss_fraction\": 0.1, \"prime_m_attn\": 0.25, \"prime_m_mlp\": 1.0, "
    "\"prime_pos_init\": false, \"prime_posemb_timescale\": 10000, \"prime_rel_attn\": false, "
    "\"prime_res_scale\": false, \"prime_resid_dropout\": 0.0, \"prime_spread\": null, "
    "\"prime_width\": 128, \"prime_zero_out\": false, \"primed_chunk_size\": null, \"prior\": false, "
    "\"prior_depth\": 3, \"prior_width\": 128, \"rcall_command\": \"<unknown_rcall_command>\", "
    "\"res_scale\": false, \"reset_best_loss\": false, \"reset_opt\": false, \"reset_shd\": false, "
    "\"reset_step\": false, \"resid_dropout\": 0.0, \"restore_decoder\": \"\", \"restore_prior\": \"\", "
    "\"restore_prior_ddp\": false, \"restore_vqvae\": \"\", \"revival_threshold\": 1.0, "
    "\"sample\": false, \"sample_hop_length\": 30000, \"sample_length\": 0, "
    "\"sample_length_in_seconds\": 24, \"sampler\": \"ancestral\", \"save\": true, "
    "\"save_iters\": 20000, \"seed\": 0, \"selected_artists\": \"\", \"single_enc_dec\": false, "
    "\"spectral\": 0.0, \"spread\": null, \"sr\": 44100, \"strides_t\": [2, 2, 2], \"t_bins\": 64, "
    "\"t_ranges\": null, \"temp_rest\": 0.99, \"temp_top\": 1.0, \"test\": false, "
    "\"test_shrink_factor\": 1.0, \"total_sample_length_in_seconds\": 240, \"train\": false, "
    "\"train_shrink_factor\": 1.0, \"train_test_split\": 0.9, \"use_bottleneck\": true, "
    "\"use_nonrelative_specloss\": true, \"use_tokens\": false, "
    "\"vqvae_reverse_decoder_dilation\": true, \"wav\": \"\", \"weight_decay\": 0.0, \"width\": 128, "
    "\"window_size\": 1024, \"y_bins\": 0, \"y_cond_as_bias\": false, \"zero_out\": false}"
    ;

// Preset overrides (hparams.py). The top priors' durations are the first
// t_range divided by sr: (2646000, 26460000) -> 60 s..600 s for 5b, 23.8 s for
// 5b_lyrics, 17.84 s for 1b_lyrics.
static const char *k_vqvae =
    "{\"levels\": 3, \"downs_t\": [3, 2, 2], \"strides_t\": [2, 2, 2], \"emb_width\": 64,"
    " \"l_bins\": 2048, \"l_mu\": 0.99, \"commit\": 0.02, \"spectral\": 0.0,"
    " \"multispectral\": 1.0, \"hvqvae_multipliers\": [2, 1, 1], \"loss_fn\": \"lmix\","
    " \"lmix_l2\": 1.0, \"lmix_linf\": 0.02, \"width\": 32, \"depth\": 4, \"m_conv\": 1.0,"
    " \"dilation_growth_rate\": 3,"
    " \"restore_vqvae\": \"https://openaipublic.azureedge.net/jukebox/models/5b/vqvae.pth.tar\"}";

static const char *k_labels =
    "{\"y_bins\": [120, 4111], \"t_bins\": 128, \"max_bow_genre_size\": 5, \"n_vocab\": 80}";

static const char *k_labels_v3 =
    "{\"y_bins\": [604, 7898], \"t_bins\": 64, \"max_bow_genre_size\": 1, \"n_vocab\": 79}";

static const char *k_upsamplers =
    "{\"n_ctx\": 8192, \"prior_width\": 1920, \"prior_depth\": 72, \"heads\": 1,"
    " \"attn_order\": 2, \"blocks\": 128, \"init_scale\": 0.4, \"c_res\": 1,"
    " \"cond_width\": 1024, \"cond_depth\": 16, \"cond_dilation_growth_rate\": 3,"
    " \"cond_dilation_cycle\": 8, \"cond_c_res\": 1, \"use_tokens\": false,"
    " \"prime_loss_fraction\": 0.0, \"fp16_params\": false}";

static const char *k_upsampler_level_0 =
    "{\"level\": 0,"
    " \"restore_prior\": \"https://openaipublic.azureedge.net/jukebox/models/5b/prior_level_0.pth.tar\"}";

static const char *k_upsampler_level_1 =
    "{\"level\": 1, \"cond_res_scale\": true,"
    " \"restore_prior\": \"https://openaipublic.azureedge.net/jukebox/models/5b/prior_level_1.pth.tar\"}";

static const char *k_prior_5b =
    "{\"level\": 2, \"n_ctx\": 8192, \"prior_width\": 4800, \"prior_depth\": 72, \"heads\": 8,"
    " \"attn_order\": 2, \"blocks\": 128, \"init_scale\": 0.1, \"c_res\": 1, \"beta2\": 0.925,"
    " \"t_ranges\": [[2646000.0, 26460000.0], [0.0, 26460000.0], [0.0, 1.0]],"
    " \"min_duration\": 60.0, \"max_duration\": 600.0,"
    " \"use_tokens\": false, \"n_tokens\": 0, \"prime_loss_fraction\": 0.0,"
    " \"merged_decoder\": true, \"fp16_params\": true,"
    " \"restore_prior\": \"https://openaipublic.azureedge.net/jukebox/models/5b/prior_level_2.pth.tar\"}";

static const char *k_prior_5b_lyrics =
    "{\"level\": 2, \"n_ctx\": 8192, \"prior_width\": 4800, \"prior_depth\": 79, \"heads\": 8,"
    " \"attn_order\": 10, \"blocks\": 128, \"init_scale\": 0.1, \"c_res\": 1,"
    " \"prime_width\": 1280, \"prime_depth\": 18, \"prime_heads\": 4, \"prime_attn_order\": 2,"
    " \"prime_blocks\": 32, \"prime_init_scale\": 0.7, \"prime_c_res\": 1,"
    " \"t_ranges\": [[1049580.0, 26460000.0], [0.0, 26460000.0], [0.0, 1.0]],"
    " \"min_duration\": 23.8, \"max_duration\": 600.0,"
    " \"use_tokens\": true, \"n_tokens\": 512, \"prime_loss_fraction\": 0.4,"
    " \"merged_decoder\": true, \"fp16_params\": true, \"alignment_layer\": 68,"
    " \"alignment_head\": 2,"
    " \"restore_prior\": \"https://openaipublic.azureedge.net/jukebox/models/5b_lyrics/prior_level_2.pth.tar\"}";

static const char *k_prior_1b_lyrics =
    "{\"level\": 2, \"n_ctx\": 6144, \"prior_width\": 2048, \"prior_depth\": 72, \"heads\": 2,"
    " \"attn_order\": 12, \"blocks\": 64, \"init_scale\": 0.2, \"labels_v3\": true,"
    " \"t_ranges\": [[786744.0, 26460000.0], [0.0, 26460000.0], [0.0, 1.0]],"
    " \"min_duration\": 17.84, \"max_duration\": 600.0,"
    " \"use_tokens\": true, \"n_tokens\": 384, \"prime_loss_fraction\": 0.4,"
    " \"single_enc_dec\": true, \"fp16_params\": false, \"alignment_layer\": 63,"
    " \"alignment_head\": 0,"
    " \"restore_prior\": \"https://openaipublic.azureedge.net/jukebox/models/1b_lyrics/prior_level_2.pth.tar\"}";

const char *const jb_hparams_preset_names[] = {
    "vqvae", "upsampler_level_0", "upsampler_level_1", "prior_5b", "prior_5b_lyrics",
    "prior_1b_lyrics", NULL};

static int merge(json_t *into, const char *text, jb_err_t *err) {
    json_error_t jerr;
    json_t *o = json_loads(text, 0, &jerr);
    if (!o) return jb_err_set(err, JB_EINTERNAL, "preset JSON: %s", jerr.text);
    json_object_update(into, o);
    json_decref(o);
    return 0;
}

static json_t *defaults(jb_err_t *err) {
    json_error_t jerr;
    json_t *d = json_loads(k_defaults, 0, &jerr);
    if (!d) jb_err_set(err, JB_EINTERNAL, "defaults JSON: %s", jerr.text);
    return d;
}

static json_t *vqvae_preset(jb_err_t *err) {
    json_t *d = defaults(err);
    if (d && merge(d, k_vqvae, err) != 0) json_decref(d), d = NULL;
    return d;
}

json_t *jb_hparams_preset(const char *name, jb_err_t *err) {
    if (!name) {
        jb_err_set(err, JB_EINVAL, "preset: no name");
        return NULL;
    }
    if (!strcmp(name, "vqvae")) return vqvae_preset(err);
    // A prior: defaults, then the groups hparams.py applies, in its order.
    const char *parts[4] = {0};
    if (!strcmp(name, "upsampler_level_0") || !strcmp(name, "upsampler_level_1")) {
        parts[0] = !strcmp(name, "upsampler_level_0") ? k_upsampler_level_0 : k_upsampler_level_1;
        parts[1] = k_upsamplers;
        parts[2] = k_vqvae;
        parts[3] = k_labels;
    } else if (!strcmp(name, "prior_5b")) {
        parts[0] = k_prior_5b, parts[1] = k_vqvae, parts[2] = k_labels;
    } else if (!strcmp(name, "prior_5b_lyrics")) {
        parts[0] = k_prior_5b_lyrics, parts[1] = k_vqvae, parts[2] = k_labels;
    } else if (!strcmp(name, "prior_1b_lyrics")) {
        parts[0] = k_prior_1b_lyrics, parts[1] = k_vqvae, parts[2] = k_labels_v3;
    } else {
        jb_err_set(err, JB_EINVAL,
                   "unknown preset '%s' (vqvae, upsampler_level_0, upsampler_level_1, prior_5b, "
                   "prior_5b_lyrics, prior_1b_lyrics)",
                   name);
        return NULL;
    }
    json_t *hp = defaults(err);
    if (!hp) return NULL;
    for (int i = 0; i < 4 && parts[i]; i++)
        if (merge(hp, parts[i], err) != 0) {
            json_decref(hp);
            return NULL;
        }
    // The prior's VQ-VAE, as stored in model files; its sample_length is the
    // audio one window of this level covers.
    json_t *vq = vqvae_preset(err);
    if (!vq) {
        json_decref(hp);
        return NULL;
    }
    int level = (int)json_integer_value(json_object_get(hp, "level"));
    int n_ctx = (int)json_integer_value(json_object_get(hp, "n_ctx"));
    static const int hops[3] = {8, 32, 128};   // downs (3,2,2), strides 2: 2^3, 2^5, 2^7
    json_object_set_new(vq, "sample_length", json_integer((json_int_t)n_ctx * hops[level]));
    json_object_set_new(hp, "sample_length", json_integer((json_int_t)n_ctx * hops[level]));
    json_object_set_new(hp, "vqvae", vq);
    return hp;
}

json_t *jb_hparams_from_st(const jb_st_t *st, jb_err_t *err) {
    const char *text = jb_st_meta(st, "hparams");
    if (!text) {
        jb_err_set(err, JB_EFORMAT, "%s: no 'hparams' in __metadata__ (not a jukebox model file?)",
                   jb_st_path(st));
        return NULL;
    }
    json_error_t jerr;
    json_t *hp = json_loads(text, 0, &jerr);
    if (!hp || !json_is_object(hp)) {
        jb_err_set(err, JB_EFORMAT, "%s: __metadata__ hparams: %s", jb_st_path(st),
                   hp ? "not an object" : jerr.text);
        json_decref(hp);
        return NULL;
    }
    return hp;
}

// ---- typed getters ------------------------------------------------------------

static json_t *need(const json_t *hp, const char *key, jb_err_t *err) {
    json_t *v = json_object_get(hp, key);
    if (!v) jb_err_set(err, JB_EFORMAT, "hparams: '%s' missing", key);
    return v;
}

int jb_hp_int(const json_t *hp, const char *key, int *out, jb_err_t *err) {
    json_t *v = need(hp, key, err);
    if (!v) return -1;
    if (json_is_integer(v) && json_integer_value(v) >= -2147483647 - 1 &&
        json_integer_value(v) <= 2147483647) {
        *out = (int)json_integer_value(v);
        return 0;
    }
    // 1e10-style floats that hold integers are accepted when they fit.
    if (json_is_real(v) && floor(json_real_value(v)) == json_real_value(v) &&
        fabs(json_real_value(v)) < 2147483647.0) {
        *out = (int)json_real_value(v);
        return 0;
    }
    if (json_is_boolean(v)) {
        *out = json_is_true(v);
        return 0;
    }
    return jb_err_set(err, JB_EFORMAT, "hparams: '%s' is not an integer", key);
}

int jb_hp_int_or(const json_t *hp, const char *key, int dflt, int *out, jb_err_t *err) {
    json_t *v = json_object_get(hp, key);
    if (!v || json_is_null(v)) {
        *out = dflt;
        return 0;
    }
    return jb_hp_int(hp, key, out, err);
}

int jb_hp_double(const json_t *hp, const char *key, double *out, jb_err_t *err) {
    json_t *v = need(hp, key, err);
    if (!v) return -1;
    if (!json_is_number(v)) return jb_err_set(err, JB_EFORMAT, "hparams: '%s' is not a number", key);
    *out = json_number_value(v);
    return 0;
}

int jb_hp_double_or(const json_t *hp, const char *key, double dflt, double *out, jb_err_t *err) {
    json_t *v = json_object_get(hp, key);
    if (!v || json_is_null(v)) {
        *out = dflt;
        return 0;
    }
    return jb_hp_double(hp, key, out, err);
}

int jb_hp_bool(const json_t *hp, const char *key, int *out, jb_err_t *err) {
    json_t *v = json_object_get(hp, key);
    if (!v || json_is_null(v)) {
        *out = 0;
        return 0;
    }
    if (json_is_boolean(v)) {
        *out = json_is_true(v);
        return 0;
    }
    if (json_is_integer(v)) {
        *out = json_integer_value(v) != 0;
        return 0;
    }
    return jb_err_set(err, JB_EFORMAT, "hparams: '%s' is not a boolean", key);
}

int jb_hp_int_list(const json_t *hp, const char *key, int *out, int max, int *n, jb_err_t *err) {
    json_t *v = json_object_get(hp, key);
    *n = 0;
    if (!v || json_is_null(v)) return 0;
    if (json_is_integer(v)) {   // a scalar where the reference allows one (e.g. y_bins = 0)
        if (max < 1) return jb_err_set(err, JB_EFORMAT, "hparams: '%s': too many values", key);
        out[0] = (int)json_integer_value(v);
        *n = 1;
        return 0;
    }
    if (!json_is_array(v)) return jb_err_set(err, JB_EFORMAT, "hparams: '%s' is not a list", key);
    if ((int)json_array_size(v) > max)
        return jb_err_set(err, JB_EFORMAT, "hparams: '%s' has %zu values, at most %d supported",
                          key, json_array_size(v), max);
    for (size_t i = 0; i < json_array_size(v); i++) {
        json_t *e = json_array_get(v, i);
        if (!json_is_integer(e))
            return jb_err_set(err, JB_EFORMAT, "hparams: '%s'[%zu] is not an integer", key, i);
        out[i] = (int)json_integer_value(e);
    }
    *n = (int)json_array_size(v);
    return 0;
}

int jb_vqvae_hparams_parse(const json_t *hp, jb_vqvae_hparams_t *v, jb_err_t *err) {
    memset(v, 0, sizeof *v);
    int n;
    if (jb_hp_int(hp, "levels", &v->levels, err)) return -1;
    if (v->levels < 1 || v->levels > JB_MAX_LEVELS)
        return jb_err_set(err, JB_EFORMAT, "hparams: levels = %d, expected 1..%d", v->levels,
                          JB_MAX_LEVELS);
    if (jb_hp_int_list(hp, "downs_t", v->downs_t, JB_MAX_LEVELS, &n, err)) return -1;
    if (n != v->levels)
        return jb_err_set(err, JB_EFORMAT, "hparams: downs_t has %d values for %d levels", n,
                          v->levels);
    if (jb_hp_int_list(hp, "strides_t", v->strides_t, JB_MAX_LEVELS, &n, err)) return -1;
    if (n != v->levels)
        return jb_err_set(err, JB_EFORMAT, "hparams: strides_t has %d values for %d levels", n,
                          v->levels);
    if (jb_hp_int(hp, "emb_width", &v->emb_width, err) || jb_hp_int(hp, "l_bins", &v->l_bins, err) ||
        jb_hp_int(hp, "width", &v->width, err) || jb_hp_int(hp, "depth", &v->depth, err) ||
        jb_hp_double(hp, "m_conv", &v->m_conv, err) ||
        jb_hp_int(hp, "dilation_growth_rate", &v->dilation_growth_rate, err) ||
        jb_hp_int_or(hp, "dilation_cycle", 0, &v->dilation_cycle, err) ||
        jb_hp_bool(hp, "vqvae_reverse_decoder_dilation", &v->reverse_decoder_dilation, err) ||
        jb_hp_int_or(hp, "sample_length", 0, &v->sample_length, err) ||
        jb_hp_int_or(hp, "sr", 44100, &v->sr, err))
        return -1;
    if (jb_hp_int_list(hp, "hvqvae_multipliers", v->multipliers, JB_MAX_LEVELS, &n, err)) return -1;
    if (n == 0)
        for (int l = 0; l < v->levels; l++) v->multipliers[l] = 1;
    else if (n != v->levels)
        return jb_err_set(err, JB_EFORMAT, "hparams: hvqvae_multipliers has %d values for %d levels",
                          n, v->levels);
    if (v->emb_width <= 0 || v->l_bins <= 0 || v->width <= 0 || v->depth <= 0 || v->sr <= 0)
        return jb_err_set(err, JB_EFORMAT, "hparams: non-positive VQ-VAE size");
    int64_t hop = 1;
    for (int l = 0; l < v->levels; l++) {
        if (v->downs_t[l] < 0 || v->downs_t[l] > 16 || v->strides_t[l] < 1 || v->strides_t[l] > 16)
            return jb_err_set(err, JB_EFORMAT, "hparams: level %d: bad downs_t/strides_t", l);
        int64_t d = 1;
        for (int i = 0; i < v->downs_t[l]; i++) d *= v->strides_t[l];
        hop *= d;
        if (hop > (1 << 20)) return jb_err_set(err, JB_EFORMAT, "hparams: hop length too large");
        v->downsamples[l] = (int)d;
        v->hop_lengths[l] = (int)hop;
    }
    return 0;
}

int jb_prior_hparams_parse(const json_t *hp, jb_prior_hparams_t *p, jb_err_t *err) {
    memset(p, 0, sizeof *p);
    int n;
    json_t *vq = json_object_get(hp, "vqvae");
    if (!json_is_object(vq))
        return jb_err_set(err, JB_EFORMAT, "hparams: prior without a nested 'vqvae' dictionary");
    if (jb_vqvae_hparams_parse(vq, &p->vqvae, err)) return jb_err_prefix(err, "vqvae");
    if (jb_hp_int(hp, "level", &p->level, err) || jb_hp_int(hp, "n_ctx", &p->n_ctx, err) ||
        jb_hp_int(hp, "prior_width", &p->width, err) || jb_hp_int(hp, "prior_depth", &p->depth, err) ||
        jb_hp_int(hp, "heads", &p->heads, err) || jb_hp_int(hp, "attn_order", &p->attn_order, err) ||
        jb_hp_int_or(hp, "blocks", 0, &p->blocks, err) ||
        jb_hp_int_or(hp, "spread", 0, &p->spread, err) ||
        jb_hp_double(hp, "m_attn", &p->m_attn, err) || jb_hp_double(hp, "m_mlp", &p->m_mlp, err) ||
        jb_hp_bool(hp, "res_scale", &p->res_scale, err) || jb_hp_bool(hp, "labels", &p->labels, err) ||
        jb_hp_bool(hp, "labels_v3", &p->labels_v3, err) ||
        jb_hp_int_or(hp, "t_bins", 0, &p->t_bins, err) ||
        jb_hp_int_or(hp, "max_bow_genre_size", 0, &p->max_bow_genre_size, err) ||
        jb_hp_double_or(hp, "min_duration", 0, &p->min_duration, err) ||
        jb_hp_double_or(hp, "max_duration", 0, &p->max_duration, err) ||
        jb_hp_int_or(hp, "sr", 44100, &p->sr, err) ||
        jb_hp_bool(hp, "use_tokens", &p->use_tokens, err) ||
        jb_hp_int_or(hp, "n_tokens", 0, &p->n_tokens, err) ||
        jb_hp_int_or(hp, "n_vocab", 0, &p->n_vocab, err) ||
        jb_hp_bool(hp, "merged_decoder", &p->merged_decoder, err) ||
        jb_hp_bool(hp, "single_enc_dec", &p->single_enc_dec, err) ||
        jb_hp_bool(hp, "copy_input", &p->copy_input, err) ||
        jb_hp_double_or(hp, "prime_loss_fraction", 0, &p->prime_loss_fraction, err) ||
        jb_hp_int_or(hp, "prime_width", 0, &p->prime_width, err) ||
        jb_hp_int_or(hp, "prime_depth", 0, &p->prime_depth, err) ||
        jb_hp_int_or(hp, "prime_heads", 1, &p->prime_heads, err) ||
        jb_hp_int_or(hp, "prime_attn_order", 0, &p->prime_attn_order, err) ||
        jb_hp_int_or(hp, "prime_blocks", 0, &p->prime_blocks, err) ||
        jb_hp_double_or(hp, "prime_m_attn", 0.25, &p->prime_m_attn, err) ||
        jb_hp_double_or(hp, "prime_m_mlp", 1.0, &p->prime_m_mlp, err) ||
        jb_hp_bool(hp, "prime_res_scale", &p->prime_res_scale, err) ||
        jb_hp_int_or(hp, "cond_width", 0, &p->cond_width, err) ||
        jb_hp_int_or(hp, "cond_depth", 0, &p->cond_depth, err) ||
        jb_hp_double_or(hp, "cond_m_conv", 1.0, &p->cond_m_conv, err) ||
        jb_hp_int_or(hp, "cond_dilation_growth_rate", 1, &p->cond_dilation_growth_rate, err) ||
        jb_hp_int_or(hp, "cond_dilation_cycle", 0, &p->cond_dilation_cycle, err) ||
        jb_hp_bool(hp, "cond_res_scale", &p->cond_res_scale, err) ||
        jb_hp_int_or(hp, "alignment_layer", -1, &p->alignment_layer, err) ||
        jb_hp_int_or(hp, "alignment_head", -1, &p->alignment_head, err) ||
        jb_hp_bool(hp, "fp16_params", &p->fp16_params, err))
        return -1;
    int yb[2] = {0, 0};
    if (jb_hp_int_list(hp, "y_bins", yb, 2, &n, err)) return -1;
    if (n == 2) p->y_bins[0] = yb[0], p->y_bins[1] = yb[1];
    if (p->level < 0 || p->level >= p->vqvae.levels)
        return jb_err_set(err, JB_EFORMAT, "hparams: level %d outside the VQ-VAE's %d levels",
                          p->level, p->vqvae.levels);
    if (p->n_ctx <= 0 || p->width <= 0 || p->depth <= 0 || p->heads <= 0)
        return jb_err_set(err, JB_EFORMAT, "hparams: non-positive prior size");
    if (p->blocks && p->n_ctx % p->blocks)
        return jb_err_set(err, JB_EFORMAT, "hparams: n_ctx %d not a multiple of blocks %d",
                          p->n_ctx, p->blocks);
    return 0;
}
