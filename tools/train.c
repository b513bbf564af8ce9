// train.c: jukebox-train, training a VQ-VAE or a prior level on a directory of audio files.
//
//   jukebox-train vqvae --data DIR --out RUN [--preset NAME | --hparams FILE] [--steps N] ...
//   jukebox-train prior --level L --vqvae RUN/vqvae.safetensors --data DIR --out RUN2 ...
//
// The steps are common/train/jb_train_vqvae.c and jb_train_prior.c, the optimiser jb_adam.c,
// the data set, metrics CSV and plot jb_trainer.c. Checkpoints: the model file (loadable by
// the stages) and RUN/optim.safetensors (jb_optim.c: Adam moments, the schedule position,
// the data stream position), each written atomically; --resume continues from them
// and a resumed run equals an uninterrupted one bit for bit (every random draw is a pure
// function of the seed and the step). Lyrics top priors (both of the reference's kinds) get
// the lyric tokens of each window as the reference's labeller picks them (jb_trainer_label).
#include <cblas.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "jb_adam.h"
#include "jb_hparams.h"
#include "jb_labels.h"
#include "jb_log.h"
#include "jb_publish.h"
#include "jb_optim.h"
#include "jb_rng.h"
#include "jb_safetensors.h"
#include "jb_train_prior.h"
#include "jb_train_vqvae.h"
#include "jb_trainer.h"
#include "jb_vqvae.h"

void openblas_set_num_threads(int);


// The toy presets (docs/train.md): a three-level VQ-VAE of the reference's architecture at a
// size that trains in seconds on a laptop core, and priors over its codes.
static const char *k_toy_vqvae =
    "{\"levels\": 3, \"downs_t\": [3, 2, 2], \"strides_t\": [2, 2, 2], \"emb_width\": 16,"
    " \"l_bins\": 64, \"width\": 16, \"depth\": 2, \"m_conv\": 1.0, \"dilation_growth_rate\": 3,"
    " \"dilation_cycle\": null, \"hvqvae_multipliers\": [2, 1, 1], \"sample_length\": 4096,"
    " \"sr\": 44100, \"commit\": 0.02, \"spectral\": 0.0, \"multispectral\": 1.0,"
    " \"loss_fn\": \"l2\", \"lr\": 0.001, \"lr_warmup\": 5.0, \"bs\": 4}";
static const char *k_toy_prior =
    "{\"n_ctx\": 32, \"prior_width\": 32, \"prior_depth\": 2, \"heads\": 2, \"attn_order\": 0,"
    " \"blocks\": null, \"spread\": null, \"init_scale\": 1.0, \"m_attn\": 0.25, \"m_mlp\": 1.0,"
    " \"res_scale\": false, \"merged_decoder\": false, \"fp16_params\": false, \"t_bins\": 32,"
    " \"max_bow_genre_size\": 1, \"use_tokens\": false, \"n_tokens\": 0,"
    " \"prime_loss_fraction\": 0.0, \"single_enc_dec\": false, \"labels_v3\": false,"
    " \"cond_width\": 16, \"cond_depth\": 2, \"cond_m_conv\": 1.0,"
    " \"cond_dilation_growth_rate\": 3, \"cond_dilation_cycle\": null, \"cond_res_scale\": false,"
    " \"cond_c_res\": 0, \"lr\": 0.001, \"lr_warmup\": 5.0, \"bs\": 8,"
    " \"alignment_layer\": null, \"alignment_head\": null}";
// Toy lyrics top priors, laid over the toy prior: the 1b_lyrics kind (one transformer over the
// joint sequence of n_tokens lyric tokens then the codes, v3 labels and text) and the
// 5b_lyrics kind (a separate lyrics encoder whose output the attn_func-6 layers attend to).
// The lyric alignment the stages send comes from the last layer (toy_lyrics: dense, its
// music queries' weights on the lyrics positions; toy_lyrics_5b: the attn_func-6 layer).
static const char *k_toy_lyrics =
    "{\"use_tokens\": true, \"n_tokens\": 16, \"n_vocab\": 79, \"prime_loss_fraction\": 0.4,"
    " \"single_enc_dec\": true, \"labels_v3\": true, \"max_bow_genre_size\": 1,"
    " \"alignment_layer\": 1, \"alignment_head\": 0}";
static const char *k_toy_lyrics_5b =
    "{\"use_tokens\": true, \"n_tokens\": 16, \"n_vocab\": 80, \"prime_loss_fraction\": 0.4,"
    " \"single_enc_dec\": false, \"labels_v3\": false, \"prior_depth\": 4, \"attn_order\": 6,"
    " \"blocks\": 4, \"prime_width\": 32, \"prime_depth\": 2, \"prime_heads\": 2,"
    " \"prime_attn_order\": 0, \"prime_blocks\": null, \"prime_m_attn\": 0.25,"
    " \"prime_m_mlp\": 1.0, \"prime_init_scale\": 1.0, \"prime_res_scale\": false,"
    " \"alignment_layer\": 3, \"alignment_head\": 0}";

typedef struct {
    const char *cmd;
    const char *data, *out, *preset, *hparams, *vqvae, *init;
    int level;
    int64_t steps;
    int batch;
    int64_t sample_length;
    double lr, warmup, clip, wd;
    int lr_set, warmup_set, clip_set, wd_set;
    uint64_t seed;
    int threads;
    int resume;
    int64_t save_every;
    int64_t until;            // --until: Unix time after which the run stops (0: none)
    int64_t log_every;
    int quiet;
} opts_t;

static void usage(FILE *f) {
    fprintf(f,
"usage: jukebox-train vqvae --data DIR --out RUN_DIR [options]\n"
"       jukebox-train prior --level L --vqvae FILE --data DIR --out RUN_DIR [options]\n"
"\n"
"Trains a Jukebox VQ-VAE, or one prior level on the codes of a trained VQ-VAE, on a\n"
"directory of audio files, on the CPU (OpenMP and OpenBLAS threads).\n"
"\n"
"data:\n"
"  --data DIR            DIR/audio/* (or DIR/*): .wav .flac .ogg .mp3 .aiff, mixed to mono\n"
"                        and resampled to the model's rate; optional DIR/labels.jsonl, one\n"
"                        {\"file\" or \"id\", \"artist\", \"genre\", \"lyrics\"} a line\n"
"  --out RUN_DIR         run directory (created): model file, optim.safetensors,\n"
"                        metrics.csv, metrics.png (and codes.safetensors for a prior)\n"
"model:\n"
"  --preset NAME         toy (default: small sizes, docs/train.md); toy_lyrics (a top prior\n"
"                        with lyrics, 1b_lyrics kind: joint sequence) or toy_lyrics_5b\n"
"                        (5b_lyrics kind: separate lyrics encoder); or a released preset:\n"
"                        vqvae, upsampler_level_0, upsampler_level_1, prior_5b,\n"
"                        prior_5b_lyrics, prior_1b_lyrics\n"
"  --hparams FILE.json   JSON object of hyper-parameters laid over the preset\n"
"  --level L             prior: level to train (0 bottom .. levels-1 top)\n"
"  --vqvae FILE          prior: the trained VQ-VAE (RUN/vqvae.safetensors); the data set is\n"
"                        encoded once and its codes cached in RUN_DIR/codes.safetensors\n"
"  --init MODEL          start from this model file (a prior, or a VQ-VAE: weights and\n"
"                        codebooks, its hyper-parameters with --hparams laid over them)\n"
"                        instead of a fresh one\n"
"training:\n"
"  --steps N             optimiser steps in all (default 100)\n"
"  --batch B             windows a step (default: the preset's bs)\n"
"  --sample-length N     vqvae: samples a window (default: the preset's; a multiple of the\n"
"                        top hop length, > 1024)\n"
"  --lr X                peak learning rate (default: the preset's lr)\n"
"  --warmup N            linear warm-up steps (default: the preset's lr_warmup)\n"
"  --clip X              gradient norm clipping (default: the preset's clip)\n"
"  --weight-decay X      Adam weight decay (default: the preset's)\n"
"  --seed S              seed of the initialisation and the data windows (default 0)\n"
"  --threads N           compute threads (default: OpenMP's and OpenBLAS's own)\n"
"  --save-every N        checkpoint every N steps (default 100) and at the end\n"
"  --log-every N         progress line every N steps (default 10)\n"
"  --resume              continue from RUN_DIR's checkpoint (bit-exact with an\n"
"                        uninterrupted run of the same options)\n"
"  --until T             stop after the step during which the clock passes Unix time T\n"
"                        (seconds), with a checkpoint: equal to a run of that many steps\n"
"  -q, --quiet           errors only      -h, --help   this text\n"
"\n"
"exit codes: 0 done, 64 bad usage, 65 bad data or model file, 66 data or model missing,\n"
"  70 internal error (out of memory), 74 a write failed.\n");
}

static int die(const jb_err_t *e) {
    jb_log(JB_ERROR, "%s", e->msg);
    return jb_err_exit_code(e->code);
}

static int usage_err(const char *fmt, const char *arg) {
    fprintf(stderr, "jukebox-train: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see --help)\n");
    return EX_USAGE;
}

static int parse_i64(const char *s, int64_t lo, int64_t *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo) return -1;
    *out = v;
    return 0;
}

static int parse_f(const char *s, double *out) {
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !isfinite(v) || v < 0) return -1;
    *out = v;
    return 0;
}

// ---- hyper-parameters ---------------------------------------------------------------------

static json_t *load_json_file(const char *path, jb_err_t *err) {
    json_error_t je;
    FILE *f = fopen(path, "r");
    if (!f) {
        jb_err_set(err, JB_ENOENT, "%s: %s", path, strerror(errno));
        return NULL;
    }
    json_t *o = json_loadf(f, 0, &je);
    fclose(f);
    if (!json_is_object(o)) {   // unreadable: where and why; readable: what it is instead
        if (!o) jb_err_set(err, JB_EFORMAT, "%s:%d: %s", path, je.line, je.text);
        else jb_err_set(err, JB_EFORMAT, "%s: a JSON %s, not an object of hyper-parameters",
                        path, json_is_array(o) ? "array" : "value");
        json_decref(o);
        return NULL;
    }
    return o;
}

static int merge_text(json_t *into, const char *text, jb_err_t *err) {
    json_error_t je;
    json_t *o = json_loads(text, 0, &je);
    if (!o) return jb_err_set(err, JB_EINTERNAL, "toy preset: %s", je.text);
    json_object_update(into, o);
    json_decref(o);
    return 0;
}

static int is_toy_lyrics(const char *name) {
    return name && (!strcmp(name, "toy_lyrics") || !strcmp(name, "toy_lyrics_5b"));
}

// Preset (toy: the released one with the toy overrides; toy_lyrics / toy_lyrics_5b: the
// released 1b_lyrics / 5b_lyrics prior with the toy and then the lyrics overrides), then
// --hparams FILE.
static json_t *build_hparams(const opts_t *o, const char *released, const char *toy,
                             jb_err_t *err) {
    const char *name = o->preset ? o->preset : "toy";
    const char *base = !strcmp(name, "toy") ? released
                       : !strcmp(name, "toy_lyrics") ? "prior_1b_lyrics"
                       : !strcmp(name, "toy_lyrics_5b") ? "prior_5b_lyrics" : name;
    json_t *hp = jb_hparams_preset(base, err);
    if (!hp) return NULL;
    if ((!strcmp(name, "toy") || is_toy_lyrics(name)) && merge_text(hp, toy, err)) goto fail;
    if (is_toy_lyrics(name) &&
        merge_text(hp, !strcmp(name, "toy_lyrics") ? k_toy_lyrics : k_toy_lyrics_5b, err))
        goto fail;
    if (o->hparams) {
        json_t *f = load_json_file(o->hparams, err);
        if (!f) goto fail;
        json_object_update(hp, f);
        json_decref(f);
    }
    return hp;
fail:
    json_decref(hp);
    return NULL;
}

static int adam_hp(const opts_t *o, const json_t *hp, jb_adam_hp_t *a, jb_err_t *err) {
    *a = jb_adam_defaults();
    if (jb_hp_double_or(hp, "lr", a->lr, &a->lr, err) ||
        jb_hp_double_or(hp, "beta1", a->beta1, &a->beta1, err) ||
        jb_hp_double_or(hp, "beta2", a->beta2, &a->beta2, err) ||
        jb_hp_double_or(hp, "eps", a->eps, &a->eps, err) ||
        jb_hp_double_or(hp, "weight_decay", a->weight_decay, &a->weight_decay, err) ||
        jb_hp_double_or(hp, "clip", a->clip, &a->clip, err) ||
        jb_hp_double_or(hp, "ignore_grad_norm", a->ignore_grad_norm, &a->ignore_grad_norm, err) ||
        jb_hp_double_or(hp, "lr_warmup", a->lr_warmup, &a->lr_warmup, err) ||
        jb_hp_double_or(hp, "lr_decay", a->lr_decay, &a->lr_decay, err) ||
        jb_hp_double_or(hp, "lr_gamma", a->lr_gamma, &a->lr_gamma, err) ||
        jb_hp_double_or(hp, "lr_scale", a->lr_scale, &a->lr_scale, err) ||
        jb_hp_double_or(hp, "lr_start_linear_decay", a->lr_start_linear_decay,
                        &a->lr_start_linear_decay, err))
        return jb_err_prefix(err, "hparams");
    jb_hp_bool(hp, "lr_use_linear_decay", &a->lr_use_linear_decay, NULL);
    if (o->lr_set) a->lr = o->lr;
    if (o->warmup_set) a->lr_warmup = o->warmup;
    if (o->clip_set) a->clip = o->clip;
    if (o->wd_set) a->weight_decay = o->wd;
    return 0;
}

// ---- progress ------------------------------------------------------------------------------

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void progress(const opts_t *o, int64_t step, int64_t first, double t0, double loss,
                     const char *extra) {
    if (o->quiet) return;
    if (step % o->log_every && step != o->steps) return;
    double el = now_s() - t0, rate = el > 0 ? (double)(step - first) / el : 0;
    double eta = rate > 0 ? (double)(o->steps - step) / rate : 0;
    fprintf(stderr, "step %lld/%lld  loss %.5f%s  %.2f steps/s  ETA %.0f s\n", (long long)step,
            (long long)o->steps, loss, extra, rate, eta);
}

// The run directory and its parents (train.md: "created").
static int make_dir(const char *d, jb_err_t *err) { return jb_publish_mkdirs(d, err); }

// ---- VQ-VAE --------------------------------------------------------------------------------

static int train_vqvae(const opts_t *o) {
    jb_err_t err = {0};
    int rc = EX_SOFTWARE;
    json_t *hp = NULL;
    jb_trainer_data_t *d = NULL;
    jb_train_vqvae_t *tv = NULL;
    jb_trainer_csv_t *csv = NULL;
    jb_st_t *st = NULL;
    jb_optim_t os = {0};
    float *x = NULL;
    char *hs = NULL;
    char mpath[4096], opath[4096], cpath[4096], ppath[4096];
    snprintf(mpath, sizeof mpath, "%s/vqvae.safetensors", o->out);
    snprintf(opath, sizeof opath, "%s/optim.safetensors", o->out);
    snprintf(cpath, sizeof cpath, "%s/metrics.csv", o->out);
    snprintf(ppath, sizeof ppath, "%s/metrics.png", o->out);

    if (o->resume) {   // the run's own hyper-parameters (bandwidth included)
        if (!(st = jb_st_open(mpath, &err))) goto fail;
        if (!(hp = jb_hparams_from_st(st, &err))) goto fail;
    } else if (o->init) {   // a given model's hyper-parameters, --hparams over them
        if (!(st = jb_st_open(o->init, &err))) goto fail;
        if (!(hp = jb_hparams_from_st(st, &err))) goto fail;
        if (o->hparams) {
            json_t *f = load_json_file(o->hparams, &err);
            if (!f) goto fail;
            json_object_update(hp, f);
            json_decref(f);
        }
    } else if (!(hp = build_hparams(o, "vqvae", k_toy_vqvae, &err))) {
        goto fail;
    }
    if (o->sample_length) json_object_set_new(hp, "sample_length", json_integer(o->sample_length));
    jb_vqvae_hparams_t vh;
    if (jb_vqvae_hparams_parse(hp, &vh, &err)) goto fail;
    int64_t T = vh.sample_length;
    int top_hop = vh.hop_lengths[vh.levels - 1];
    if (T <= 1024 || T % top_hop) {
        jb_err_set(&err, JB_EINVAL, "sample length %lld: must be > 1024 and a multiple of the "
                   "top hop length %d", (long long)T, top_hop);
        goto fail;
    }
    int B = o->batch;
    if (!B && jb_hp_int_or(hp, "bs", 1, &B, &err)) goto fail;
    if (B < 1) B = 1;
    jb_adam_hp_t ah;
    if (adam_hp(o, hp, &ah, &err)) goto fail;

    if (!(d = jb_trainer_data_load(o->data, vh.sr, &err))) goto fail;
    if (!o->quiet)
        jb_log(JB_INFO, "data: %d files, %.1f s at %d Hz, %d labelled", d->n_items,
               (double)d->total / vh.sr, vh.sr, d->labelled);
    if (!o->resume) {   // the reference computes the bandwidth from the data set
        double l1, l2, sp;
        if (jb_trainer_bandwidth(d, T, 16, o->seed, &l1, &l2, &sp, &err)) goto fail;
        json_t *bw = json_object();
        json_object_set_new(bw, "l1", json_real(l1));
        json_object_set_new(bw, "l2", json_real(l2));
        json_object_set_new(bw, "spec", json_real(sp));
        json_object_set_new(hp, "bandwidth", bw);
    }
    jb_vqvae_loss_hparams_t lh;
    if (jb_vqvae_loss_hparams_parse(hp, &lh, &err)) goto fail;
    if (!(tv = jb_train_vqvae_new(&vh, &lh, B, T, o->seed, &err))) goto fail;
    if (!(x = malloc(sizeof(float) * (size_t)B * T))) goto oom;
    if (!(hs = json_dumps(hp, JSON_COMPACT | JSON_SORT_KEYS))) goto oom;

    int np = jb_train_vqvae_n_params(tv);
    jb_optim_run_t orun = {"vqvae", o->seed, B, T};
    if (jb_optim_alloc(&os, np, &err)) goto fail;
    for (int i = 0; i < np; i++) {
        jb_tvq_param_t p = jb_train_vqvae_param(tv, i);
        os.names[i] = p.name, os.w[i] = p.w, os.g[i] = p.g, os.len[i] = p.n;
    }
    if (jb_optim_make(&os, &err)) goto fail;

    int64_t step = 0;
    if (o->resume) {
        if (jb_train_vqvae_load(tv, st, &err)) goto fail;
        if (jb_optim_load(opath, &os, &orun, &step, &err)) goto fail;
        jb_train_vqvae_set_step(tv, (uint64_t)step);
        if (!o->quiet) jb_log(JB_INFO, "resumed at step %lld", (long long)step);
    } else if (o->init) {   // weights and codebooks (EMA state) of the given model
        if (jb_train_vqvae_load(tv, st, &err)) goto fail;
        if (!o->quiet) jb_log(JB_INFO, "init: %s", o->init);
    } else {
        jb_train_vqvae_init_random(tv, o->seed);
        for (int b = 0; b < B; b++)
            jb_trainer_data_window(d, o->seed, (uint64_t)b, T, x + (int64_t)b * T, NULL, NULL);
        if (jb_train_vqvae_init_codebooks(tv, x, &err)) goto fail;
    }
    jb_st_close(&st);
    // "upsample_tied": true (our key, kept in the model file's hparams, so a resumed run ties
    // too): the decoder's transposed convolutions as nearest upsampling + 2-tap convolution
    // (jb_train_vqvae_tie_upsampling: no steady lines at multiples of sr / hop)
    const json_t *tie = json_object_get(hp, "upsample_tied");
    if (tie && !json_is_boolean(tie)) {
        jb_err_set(&err, JB_EINVAL, "hparams: \"upsample_tied\" must be true or false");
        goto fail;
    }
    if (json_is_true(tie)) {
        int n_tied = jb_train_vqvae_tie_upsampling(tv);
        if (!o->quiet) jb_log(JB_INFO, "upsample_tied: %d transposed convolutions tied", n_tied);
    }
    // "train_decoder_only": true (our key, kept like upsample_tied): encoders and codebooks
    // fixed (jb_train_vqvae_freeze_encoders), so the codes, and the priors trained on them,
    // stay valid
    const json_t *dec_only = json_object_get(hp, "train_decoder_only");
    if (dec_only && !json_is_boolean(dec_only)) {
        jb_err_set(&err, JB_EINVAL, "hparams: \"train_decoder_only\" must be true or false");
        goto fail;
    }
    if (json_is_true(dec_only)) {
        jb_train_vqvae_freeze_encoders(tv);
        if (!o->quiet) jb_log(JB_INFO, "train_decoder_only: encoders and codebooks fixed");
    }

    // metrics: loss, every metric of the step, then lr and the gradient norm
    const char *mn[64];
    double mv[64];
    jb_tvq_result_t res;
    memset(&res, 0, sizeof res);
    int nm = jb_train_vqvae_metrics(tv, &res, mn, mv, 60);
    const char *cols[64];
    cols[0] = "loss";
    for (int i = 0; i < nm; i++) cols[1 + i] = mn[i];
    cols[1 + nm] = "lr", cols[2 + nm] = "grad_norm";
    if (make_dir(o->out, &err)) goto fail;
    if (!(csv = jb_trainer_csv_open(cpath, cols, nm + 3, o->resume ? step : -1, &err))) goto fail;

    double t0 = now_s();
    int64_t first = step;
    while (step < o->steps) {
        for (int b = 0; b < B; b++)
            jb_trainer_data_window(d, o->seed, (uint64_t)(step * B + b), T, x + (int64_t)b * T,
                                   NULL, NULL);
        if (jb_train_vqvae_step(tv, x, &res, &err)) goto fail;
        double lr;
        int skipped;
        double gn = jb_optim_step(&os, &ah, step, &lr, &skipped);
        step++;
        int k = jb_train_vqvae_metrics(tv, &res, mn, mv, 60);
        double row[64];
        row[0] = res.loss;
        for (int i = 0; i < k && i < nm; i++) row[1 + i] = mv[i];
        row[1 + nm] = lr, row[2 + nm] = gn;
        if (jb_trainer_csv_row(csv, step, row, &err)) goto fail;
        char extra[96];
        snprintf(extra, sizeof extra, "  recons %.5f  commit %.5f%s", res.recons_loss,
                 res.commit_loss, skipped ? "  (skipped)" : "");
        progress(o, step, first, t0, res.loss, extra);
        int stop = o->until > 0 && (int64_t)time(NULL) >= o->until;
        if (step % o->save_every == 0 || step == o->steps || stop) {
            if (jb_train_vqvae_save(tv, mpath, hs, &err) ||
                jb_optim_save(opath, &os, step, &orun, &err))
                goto fail;
        }
        if (stop) {
            if (!o->quiet) jb_log(JB_INFO, "--until: stopped at step %lld", (long long)step);
            break;
        }
    }
    if (step == first && !o->resume) {   // --steps 0: the initial model
        if (jb_train_vqvae_save(tv, mpath, hs, &err) ||
            jb_optim_save(opath, &os, step, &orun, &err))
            goto fail;
    }
    jb_trainer_csv_close(&csv);
    static const char *plot_vq[] = {"loss", "recons_loss", "multispectral_loss", "commit_loss",
                                    "spectral_convergence", "usage", "grad_norm", "lr"};
    // --steps 0 has no metrics to plot: no metrics.png, and the log says so.
    int plotted = jb_trainer_plot(cpath, ppath, plot_vq, 8, &err) == 0;
    if (!plotted && step > 0) goto fail;
    if (!o->quiet) jb_log(JB_INFO, "wrote %s, %s%s%s", mpath, opath, plotted ? ", " : "",
                          plotted ? ppath : "");
    rc = 0;
    goto done;
oom:
    jb_err_set(&err, JB_ENOMEM, "out of memory");
fail:
    rc = die(&err);
done:
    jb_trainer_csv_close(&csv);
    jb_optim_free(&os);
    jb_train_vqvae_destroy(&tv);
    jb_trainer_data_destroy(&d);
    jb_st_close(&st);
    json_decref(hp);
    free(x);
    free(hs);
    return rc;
}

// ---- prior ---------------------------------------------------------------------------------

typedef struct {
    int32_t *z[JB_MAX_LEVELS];   // per item: (n_L) codes of each level
    int64_t n[JB_MAX_LEVELS];
} item_codes_t;

// Encodes every item at levels L and L + 1 (upsamplers), or reads the cache.
static int data_codes(const opts_t *o, const jb_trainer_data_t *d, const char *vq_path,
                      int level, int levels, item_codes_t *ic, jb_err_t *err) {
    char cache[4096], key[64];
    snprintf(cache, sizeof cache, "%s/codes.safetensors", o->out);
    struct stat sb;
    if (stat(vq_path, &sb)) return jb_err_set(err, JB_ENOENT, "%s: %s", vq_path, strerror(errno));
    char stamp[128];
    snprintf(stamp, sizeof stamp, "%lld:%lld:%d", (long long)sb.st_size,
             (long long)sb.st_mtime, d->n_items);
    int hi = level + 1 < levels ? level + 1 : level;
    jb_st_t *st = jb_st_open(cache, NULL);
    if (st && jb_st_meta(st, "stamp") && !strcmp(jb_st_meta(st, "stamp"), stamp)) {
        int ok = 1;
        for (int i = 0; i < d->n_items && ok; i++)
            for (int L = level; L <= hi && ok; L++) {
                snprintf(key, sizeof key, "%d.%d", i, L);
                const jb_st_entry_t *e = jb_st_find(st, key);
                if (!e || e->ndim != 1) {
                    ok = 0;
                    break;
                }
                ic[i].n[L] = e->shape[0];
                if (!(ic[i].z[L] = jb_st_get_i32(st, key, 1, e->shape, err))) {
                    jb_st_close(&st);
                    return -1;
                }
            }
        if (ok) {
            jb_st_close(&st);
            return 0;
        }
        for (int i = 0; i < d->n_items; i++)   // a stale cache: encode anew
            for (int L = level; L <= hi; L++) free(ic[i].z[L]), ic[i].z[L] = NULL;
    }
    jb_st_close(&st);
    if (!(st = jb_st_open(vq_path, err))) return -1;
    jb_vqvae_t *vq = jb_vqvae_new(st, 0, err);
    if (!vq) {
        jb_st_close(&st);
        return -1;
    }
    const jb_vqvae_hparams_t *vh = jb_vqvae_hparams(vq);
    int top_hop = vh->hop_lengths[vh->levels - 1], rc = -1;
    jb_st_writer_t *w = jb_st_writer_new(err);
    if (!w) goto done;
    if (jb_st_writer_meta(w, "stamp", stamp, err)) goto done;
    for (int i = 0; i < d->n_items; i++) {
        const jb_trainer_item_t *it = &d->items[i];
        int64_t T = (it->n + top_hop - 1) / top_hop * top_hop;
        float *x = calloc((size_t)T, sizeof(float));
        if (!x) goto oom;
        memcpy(x, it->x, sizeof(float) * (size_t)it->n);
        for (int L = level; L <= hi; L++) {
            ic[i].n[L] = T / vh->hop_lengths[L];
            ic[i].z[L] = malloc(sizeof(int32_t) * (size_t)ic[i].n[L]);
            if (!ic[i].z[L] || jb_vqvae_encode(vq, x, 1, T, L, ic[i].z[L], 0, err)) {
                free(x);
                if (!ic[i].z[L]) goto oom;
                goto done;
            }
            snprintf(key, sizeof key, "%d.%d", i, L);
            if (jb_st_writer_add(w, key, JB_I32, 1, &ic[i].n[L], ic[i].z[L], err)) {
                free(x);
                goto done;
            }
        }
        free(x);
    }
    rc = jb_st_writer_write(w, cache, NULL, NULL, err);
    goto done;
oom:
    jb_err_set(err, JB_ENOMEM, "out of memory");
done:
    jb_st_writer_destroy(&w);
    jb_vqvae_destroy(&vq);
    jb_st_close(&st);
    return rc;
}

static void free_labels(int n, int32_t *art, int32_t *gen, int *ngen, int32_t **toks,
                        int *ntok) {
    for (int i = 0; toks && i < n; i++) free(toks[i]);
    free(art), free(gen), free(ngen), free(toks), free(ntok);
}

// "jukebox-train prior": the job hash of the prior's window stream.
#define PRIOR_JOB 0x6a627072696f7231ull

static int train_prior(const opts_t *o) {
    jb_err_t err = {0};
    int rc = EX_SOFTWARE;
    json_t *hp = NULL, *vqhp = NULL;
    jb_trainer_data_t *d = NULL;
    jb_train_prior_t *tp = NULL;
    jb_trainer_csv_t *csv = NULL;
    jb_st_t *vst = NULL, *pst = NULL;
    jb_labels_vocab_t *av = NULL, *gv = NULL;
    item_codes_t *ic = NULL;
    jb_optim_t os = {0};
    int32_t *z = NULL, *zc = NULL, *y = NULL;
    int *elig = NULL;
    char *aj = NULL, *gj = NULL;
    char mpath[4096], opath[4096], cpath[4096], ppath[4096];
    snprintf(mpath, sizeof mpath, "%s/prior_level_%d.safetensors", o->out, o->level);
    snprintf(opath, sizeof opath, "%s/optim.safetensors", o->out);
    snprintf(cpath, sizeof cpath, "%s/metrics.csv", o->out);
    snprintf(ppath, sizeof ppath, "%s/metrics.png", o->out);

    if (!(vst = jb_st_open(o->vqvae, &err))) goto fail;
    if (!(vqhp = jb_hparams_from_st(vst, &err))) goto fail;
    jb_vqvae_hparams_t vh;
    if (jb_vqvae_hparams_parse(vqhp, &vh, &err)) goto fail;
    if (o->level >= vh.levels) {
        jb_err_set(&err, JB_EINVAL, "--level %d: the VQ-VAE has levels 0..%d", o->level,
                   vh.levels - 1);
        goto fail;
    }
    if (!(d = jb_trainer_data_load(o->data, vh.sr, &err))) goto fail;
    if (make_dir(o->out, &err)) goto fail;
    int top = o->level == vh.levels - 1;
    if (!o->resume && !o->init && is_toy_lyrics(o->preset) && !top) {
        jb_err_set(&err, JB_EINVAL, "--preset %s: lyrics priors are top priors (--level %d)",
                   o->preset, vh.levels - 1);
        goto fail;
    }

    if (!o->resume) {
        if (o->init) {   // a given model: its own hyper-parameters and vocabularies
            if (!(tp = jb_train_prior_new(o->init, 1, &err))) goto fail;
            const jb_prior_info_t *ii = jb_train_prior_info(tp);
            if (ii->level != o->level) {
                jb_err_set(&err, JB_EINVAL, "%s: a prior of level %d, --level %d", o->init,
                           ii->level, o->level);
                goto fail;
            }
            if (jb_train_prior_save(tp, mpath, &err)) goto fail;
            jb_train_prior_destroy(&tp);
        } else {
            if (!(hp = build_hparams(o, top ? "prior_5b" : o->level == 0 ? "upsampler_level_0"
                                               : "upsampler_level_1",
                                     k_toy_prior, &err)))
                goto fail;
            // the trained VQ-VAE's architecture, at the top level and under "vqvae"
            static const char *vkeys[] = {"levels", "downs_t", "strides_t", "emb_width",
                                          "l_bins", "width", "depth", "m_conv",
                                          "dilation_growth_rate", "dilation_cycle",
                                          "hvqvae_multipliers", "vqvae_reverse_decoder_dilation",
                                          "sr", NULL};
            for (int i = 0; vkeys[i]; i++) {
                json_t *v = json_object_get(vqhp, vkeys[i]);
                if (v) json_object_set(hp, vkeys[i], v);
            }
            json_t *vq = json_deep_copy(vqhp);
            int n_ctx;
            if (jb_hp_int(hp, "n_ctx", &n_ctx, &err)) goto fail;
            json_int_t sl = (json_int_t)n_ctx * vh.hop_lengths[o->level];
            json_object_set_new(vq, "sample_length", json_integer(sl));
            json_object_set_new(hp, "sample_length", json_integer(sl));
            json_object_set_new(hp, "vqvae", vq);
            json_object_set_new(hp, "level", json_integer(o->level));
            json_object_set_new(hp, "prior", json_true());
            // labels from the labels file: vocabularies and the timing ranges of the data; a
            // lyrics prior always has labels (its lyric tokens are part of y)
            int na = 1, ng = 1, use_tokens = 0, v3 = 0;
            jb_hp_bool(hp, "use_tokens", &use_tokens, NULL);
            jb_hp_bool(hp, "labels_v3", &v3, NULL);
            jb_text_vocab_t tv = v3 ? JB_TEXT_V3 : JB_TEXT_V2;
            int labels = d->labelled > 0 || use_tokens;
            if (labels && jb_trainer_vocabs(d, tv, &aj, &gj, &na, &ng, &err)) goto fail;
            json_object_set_new(hp, "labels", json_boolean(labels));
            json_t *yb = json_array();
            json_array_append_new(yb, json_integer(ng));
            json_array_append_new(yb, json_integer(na));
            json_object_set_new(hp, "y_bins", yb);
            int64_t longest = 0;
            for (int i = 0; i < d->n_items; i++)
                longest = d->items[i].n > longest ? d->items[i].n : longest;
            double maxd = ceil((double)longest / vh.sr) + 1.0;
            json_object_set_new(hp, "min_duration", json_real(0.0));
            json_object_set_new(hp, "max_duration", json_real(maxd));
            json_t *tr = json_pack("[[f,f],[f,f],[f,f]]", 0.0, maxd * vh.sr, 0.0, maxd * vh.sr,
                                   0.0, 1.0);
            json_object_set_new(hp, "t_ranges", tr);
            if (labels && !v3) {   // v2: a genre is a bag of words; v3: one id
                int maxw = 1;
                for (int i = 0; i < d->n_items; i++) {
                    char *gn = d->items[i].genre ? jb_labels_norm(d->items[i].genre, &err) : NULL;
                    int w = gn && *gn ? 1 : 0;
                    for (char *p = gn; p && *p; p++) w += *p == '_';
                    maxw = w > maxw ? w : maxw;
                    free(gn);
                }
                int cur = 0;
                jb_hp_int_or(hp, "max_bow_genre_size", 1, &cur, NULL);
                if (maxw > cur) json_object_set_new(hp, "max_bow_genre_size", json_integer(maxw));
            }
            const char *mk[2] = {"artists", "genres"};
            const char *mv[2] = {aj, gj};
            if (jb_trainer_prior_init(hp, o->seed, mpath, mk, mv, labels ? 2 : 0, &err))
                goto fail;
        }
    }
    json_decref(hp);
    hp = NULL;
    // the run's model file: hyper-parameters, vocabularies
    if (!(pst = jb_st_open(mpath, &err))) goto fail;
    if (!(hp = jb_hparams_from_st(pst, &err))) goto fail;
    int B = o->batch;
    if (!B && jb_hp_int_or(hp, "bs", 1, &B, &err)) goto fail;
    if (B < 1) B = 1;
    jb_adam_hp_t ah;
    if (adam_hp(o, hp, &ah, &err)) goto fail;
    if (!(tp = jb_train_prior_new(mpath, B, &err))) goto fail;
    const jb_prior_info_t *in = jb_train_prior_info(tp);
    // the labeller's version: artist/genre keys and the lyrics' text processor (labels_v3)
    int lv3 = 0;
    jb_hp_bool(hp, "labels_v3", &lv3, NULL);
    jb_text_vocab_t version = lv3 ? JB_TEXT_V3 : JB_TEXT_V2;
    if (in->lyrics != JB_PRIOR_NO_LYRICS) {
        if (!in->labels) {
            jb_err_set(&err, JB_EFORMAT, "%s: a lyrics prior without labels", mpath);
            goto fail;
        }
        if (in->n_vocab < jb_text_n_vocab(version)) {
            jb_err_set(&err, JB_EFORMAT, "%s: n_vocab %d is smaller than the v%d lyrics "
                       "vocabulary (%d)", mpath, in->n_vocab, (int)version,
                       jb_text_n_vocab(version));
            goto fail;
        }
    }
    if (in->level != o->level) {
        jb_err_set(&err, JB_EINVAL, "%s: a prior of level %d, --level %d", mpath, in->level,
                   o->level);
        goto fail;
    }
    if (in->labels) {
        if (!(av = jb_labels_vocab_from_model(pst, "artists", &err)) ||
            !(gv = jb_labels_vocab_from_model(pst, "genres", &err)))
            goto fail;
    }
    jb_st_close(&pst);

    // codes of the data set
    if (!(ic = calloc((size_t)d->n_items, sizeof *ic))) goto oom;
    if (data_codes(o, d, o->vqvae, o->level, vh.levels, ic, &err)) goto fail;
    int cd = in->cond_downsample > 0 ? in->cond_downsample : 1;
    int64_t n_ctx = in->n_ctx, total_starts = 0;
    if (!(elig = calloc((size_t)d->n_items, sizeof *elig))) goto oom;
    for (int i = 0; i < d->n_items; i++)
        if (ic[i].n[o->level] >= n_ctx) {
            elig[i] = 1;
            total_starts += (ic[i].n[o->level] - n_ctx) / cd + 1;
        }
    if (total_starts == 0) {
        jb_err_set(&err, JB_EFORMAT, "%s: no file is long enough for one window of %lld codes "
                   "(%.2f s)", o->data, (long long)n_ctx,
                   (double)n_ctx * vh.hop_lengths[o->level] / vh.sr);
        goto fail;
    }
    // per-item label ids and lyric tokens (the reference's TextProcessor of that version)
    int ngw = in->label_len > 4 ? in->label_len - 4 - in->n_tokens : 0;
    int32_t *art = calloc((size_t)d->n_items, sizeof *art);
    int32_t *gen = calloc((size_t)d->n_items * (ngw > 0 ? ngw : 1), sizeof *gen);
    int *ngen = calloc((size_t)d->n_items, sizeof *ngen);
    int32_t **toks = calloc((size_t)d->n_items, sizeof *toks);
    int *ntok = calloc((size_t)d->n_items, sizeof *ntok);
    if (!art || !gen || !ngen || !toks || !ntok) {
        free(art), free(gen), free(ngen), free(toks), free(ntok);
        goto oom;
    }
    int64_t n_lyric_chars = 0;
    for (int i = 0; i < d->n_items && in->labels; i++) {
        const jb_trainer_item_t *it = &d->items[i];
        if (jb_labels_artist_id(av, version, it->artist ? it->artist : "", it->id, &art[i],
                                &err) ||
            (it->genre && *it->genre &&
             jb_labels_genre_ids(gv, version, it->genre, it->id, gen + (int64_t)i * ngw, ngw,
                                 &ngen[i], &err)))
            goto fail_lab;
        if (in->n_tokens > 0) {
            const char *ly = it->lyrics ? it->lyrics : "";
            size_t n_inv = 0;
            if (!(toks[i] = jb_text_tokens(version, ly, strlen(ly), &ntok[i], &n_inv, &err)))
                goto fail_lab;
            if (n_inv)
                jb_log(JB_WARN, "%s: %zu invalid UTF-8 byte(s) in the lyrics skipped", it->id,
                       n_inv);
            n_lyric_chars += ntok[i];
        }
    }
    if (in->n_tokens > 0 && !o->quiet)
        jb_log(JB_INFO, "lyrics: %lld tokens (v%d text), windows of %d tokens",
               (long long)n_lyric_chars, (int)version, in->n_tokens);
    if (in->n_tokens > 0 && n_lyric_chars == 0)
        jb_log(JB_WARN, "%s: no lyrics in the data set (labels.jsonl \"lyrics\"): the lyrics "
               "prior learns windows of padding only", o->data);
    int64_t nw;
    float *W = jb_train_prior_weights(tp, &nw);
    (void)W;
    int np = jb_train_prior_n_params(tp);
    jb_optim_run_t orun = {"prior", o->seed, B, n_ctx};
    if (jb_optim_alloc(&os, np, &err)) goto fail_lab;
    for (int i = 0; i < np; i++) {
        const jb_train_param_t *p = jb_train_prior_param(tp, i);
        os.names[i] = p->name, os.w[i] = p->w, os.g[i] = p->g, os.len[i] = p->numel;
    }
    if (jb_optim_make(&os, &err)) goto fail_lab;
    int64_t step = 0;
    if (o->resume && jb_optim_load(opath, &os, &orun, &step, &err))
        goto fail_lab;
    if (o->resume && !o->quiet) jb_log(JB_INFO, "resumed at step %lld", (long long)step);

    const char *cols[5] = {"loss", "gen_loss", "prime_loss", "lr", "grad_norm"};
    if (!(csv = jb_trainer_csv_open(cpath, cols, 5, o->resume ? step : -1, &err))) goto fail_lab;
    z = malloc(sizeof(int32_t) * (size_t)B * n_ctx);
    zc = malloc(sizeof(int32_t) * (size_t)B * (n_ctx / cd + 1));
    y = malloc(sizeof(int32_t) * (size_t)B * (in->label_len + 1));
    if (!z || !zc || !y) {
        jb_err_set(&err, JB_ENOMEM, "out of memory");
        goto fail_lab;
    }
    double t0 = now_s();
    int64_t first = step;
    int hop = vh.hop_lengths[o->level];
    while (step < o->steps) {
        for (int b = 0; b < B; b++) {   // window: a pure function of (seed, step * B + b)
            jb_rng_stream_t rs = jb_rng_stream(o->seed, PRIOR_JOB, 0, (uint32_t)o->level);
            uint64_t draw = (uint64_t)(step * B + b);
            int64_t k = (int64_t)(jb_rng_uniform_f64(rs, draw, 0) * (double)total_starts);
            if (k >= total_starts) k = total_starts - 1;
            int i = 0;
            for (;; i++) {
                if (!elig[i]) continue;
                int64_t ns = (ic[i].n[o->level] - n_ctx) / cd + 1;
                if (k < ns) break;
                k -= ns;
            }
            int64_t off = k * cd;
            memcpy(z + (int64_t)b * n_ctx, ic[i].z[o->level] + off, sizeof(int32_t) * n_ctx);
            if (in->x_cond)
                memcpy(zc + (int64_t)b * (n_ctx / cd), ic[i].z[o->level + 1] + off / cd,
                       sizeof(int32_t) * (size_t)(n_ctx / cd));
            if (in->labels &&   // the label of this window, lyric window included
                jb_trainer_label(d->items[i].n, off * hop, n_ctx * hop, art[i],
                                 gen + (int64_t)i * ngw, ngen[i], ngw, toks[i], ntok[i],
                                 in->n_tokens, y + (int64_t)b * in->label_len, &err)) {
                jb_err_prefix(&err, "%s", d->items[i].id);
                goto fail_lab;
            }
        }
        jb_train_prior_loss_t L;
        if (jb_train_prior_step(tp, z, in->x_cond ? zc : NULL, in->labels ? y : NULL, B, &L, NULL,
                                &err))
            goto fail_lab;
        double lr;
        int skipped;
        double gn = jb_optim_step(&os, &ah, step, &lr, &skipped);
        step++;
        double row[5] = {L.loss, L.gen_loss, L.prime_loss, lr, gn};
        if (jb_trainer_csv_row(csv, step, row, &err)) goto fail_lab;
        char extra[96];
        if (in->lyrics != JB_PRIOR_NO_LYRICS)
            snprintf(extra, sizeof extra, "  bits/token (music %.5f, lyrics %.5f)%s", L.gen_loss,
                     L.prime_loss, skipped ? "  (skipped)" : "");
        else
            snprintf(extra, sizeof extra, "  bits/token%s", skipped ? "  (skipped)" : "");
        progress(o, step, first, t0, L.loss, extra);
        int stop = o->until > 0 && (int64_t)time(NULL) >= o->until;
        if (step % o->save_every == 0 || step == o->steps || stop) {
            if (jb_train_prior_save(tp, mpath, &err) ||
                jb_optim_save(opath, &os, step, &orun, &err))
                goto fail_lab;
        }
        if (stop) {
            if (!o->quiet) jb_log(JB_INFO, "--until: stopped at step %lld", (long long)step);
            break;
        }
    }
    if (step == first && !o->resume && jb_optim_save(opath, &os, step, &orun, &err))
        goto fail_lab;
    free_labels(d->n_items, art, gen, ngen, toks, ntok);
    jb_trainer_csv_close(&csv);
    static const char *plot_pr[] = {"loss", "grad_norm", "lr"};
    static const char *plot_ly[] = {"loss", "gen_loss", "prime_loss", "grad_norm", "lr"};
    int lyr = in->lyrics != JB_PRIOR_NO_LYRICS;
    int plotted = jb_trainer_plot(cpath, ppath, lyr ? plot_ly : plot_pr, lyr ? 5 : 3, &err) == 0;
    if (!plotted && step > 0) goto fail;
    if (!o->quiet) jb_log(JB_INFO, "wrote %s, %s%s%s", mpath, opath, plotted ? ", " : "",
                          plotted ? ppath : "");
    rc = 0;
    goto done;
fail_lab:
    free_labels(d->n_items, art, gen, ngen, toks, ntok);
    goto fail;
oom:
    jb_err_set(&err, JB_ENOMEM, "out of memory");
fail:
    rc = die(&err);
done:
    jb_trainer_csv_close(&csv);
    jb_optim_free(&os);
    jb_train_prior_destroy(&tp);
    for (int i = 0; ic && i < d->n_items; i++)
        for (int L = 0; L < JB_MAX_LEVELS; L++) free(ic[i].z[L]);
    free(ic);
    free(elig);
    jb_trainer_data_destroy(&d);
    jb_labels_vocab_destroy(&av);
    jb_labels_vocab_destroy(&gv);
    jb_st_close(&vst);
    jb_st_close(&pst);
    json_decref(hp);
    json_decref(vqhp);
    free(z), free(zc), free(y);
    free(aj), free(gj);
    return rc;
}

// ---- main ----------------------------------------------------------------------------------

int main(int argc, char **argv) {
    jb_log_set_stage("train");
    if (argc < 2) {
        usage(stderr);
        return EX_USAGE;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(stdout);
        return 0;
    }
    opts_t o = {0};
    o.cmd = argv[1];
    o.level = -1;
    o.steps = 100;
    o.save_every = 100;
    o.log_every = 10;
    if (strcmp(o.cmd, "vqvae") && strcmp(o.cmd, "prior"))
        return usage_err("unknown command '%s': vqvae or prior", o.cmd);
    enum { O_DATA = 256, O_OUT, O_PRESET, O_HP, O_STEPS, O_BATCH, O_SL, O_LR, O_WARM, O_CLIP,
           O_WD, O_SEED, O_THREADS, O_RESUME, O_SAVE, O_LOG, O_LEVEL, O_VQ, O_INIT, O_UNTIL };
    static const struct option lo[] = {
        {"data", 1, 0, O_DATA}, {"out", 1, 0, O_OUT}, {"preset", 1, 0, O_PRESET},
        {"hparams", 1, 0, O_HP}, {"steps", 1, 0, O_STEPS}, {"batch", 1, 0, O_BATCH},
        {"sample-length", 1, 0, O_SL}, {"lr", 1, 0, O_LR}, {"warmup", 1, 0, O_WARM},
        {"clip", 1, 0, O_CLIP}, {"weight-decay", 1, 0, O_WD}, {"seed", 1, 0, O_SEED},
        {"threads", 1, 0, O_THREADS}, {"resume", 0, 0, O_RESUME}, {"save-every", 1, 0, O_SAVE},
        {"log-every", 1, 0, O_LOG}, {"level", 1, 0, O_LEVEL}, {"vqvae", 1, 0, O_VQ},
        {"init", 1, 0, O_INIT}, {"until", 1, 0, O_UNTIL}, {"quiet", 0, 0, 'q'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    int c;
    int64_t v;
    optind = 2;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":qh", lo, NULL)) != -1) {
        switch (c) {
        case O_DATA: o.data = optarg; break;
        case O_OUT: o.out = optarg; break;
        case O_PRESET: o.preset = optarg; break;
        case O_HP: o.hparams = optarg; break;
        case O_VQ: o.vqvae = optarg; break;
        case O_INIT: o.init = optarg; break;
        case O_STEPS:
            if (parse_i64(optarg, 0, &o.steps)) return usage_err("--steps '%s': an integer >= 0", optarg);
            break;
        case O_BATCH:
            if (parse_i64(optarg, 1, &v) || v > 4096) return usage_err("--batch '%s': 1..4096", optarg);
            o.batch = (int)v;
            break;
        case O_SL:
            if (parse_i64(optarg, 1, &o.sample_length)) return usage_err("--sample-length '%s'", optarg);
            break;
        case O_LR:
            if (parse_f(optarg, &o.lr)) return usage_err("--lr '%s': a number >= 0", optarg);
            o.lr_set = 1;
            break;
        case O_WARM:
            if (parse_f(optarg, &o.warmup)) return usage_err("--warmup '%s': a number >= 0", optarg);
            o.warmup_set = 1;
            break;
        case O_CLIP:
            if (parse_f(optarg, &o.clip) || o.clip == 0) return usage_err("--clip '%s': > 0", optarg);
            o.clip_set = 1;
            break;
        case O_WD:
            if (parse_f(optarg, &o.wd)) return usage_err("--weight-decay '%s': >= 0", optarg);
            o.wd_set = 1;
            break;
        case O_SEED:
            if (parse_i64(optarg, 0, &v)) return usage_err("--seed '%s': an integer >= 0", optarg);
            o.seed = (uint64_t)v;
            break;
        case O_THREADS:
            if (parse_i64(optarg, 1, &v) || v > 1024) return usage_err("--threads '%s': 1..1024", optarg);
            o.threads = (int)v;
            break;
        case O_RESUME: o.resume = 1; break;
        case O_UNTIL:
            if (parse_i64(optarg, 1, &o.until))
                return usage_err("--until '%s': a Unix time in seconds", optarg);
            break;
        case O_SAVE:
            if (parse_i64(optarg, 1, &o.save_every)) return usage_err("--save-every '%s': >= 1", optarg);
            break;
        case O_LOG:
            if (parse_i64(optarg, 1, &o.log_every)) return usage_err("--log-every '%s': >= 1", optarg);
            break;
        case O_LEVEL:
            // The VQ-VAE's own levels are checked once it is read (0..levels-1).
            if (parse_i64(optarg, 0, &v) || v >= JB_MAX_LEVELS)
                return usage_err("--level '%s': a level from 0 (bottom) up", optarg);
            o.level = (int)v;
            break;
        case 'q': o.quiet = 1; break;
        case 'h': usage(stdout); return 0;
        case ':': return usage_err("option %s needs a value", argv[optind - 1]);
        default: return usage_err("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return usage_err("unexpected argument '%s'", argv[optind]);
    if (!o.data) return usage_err("%s: --data DIR is required", o.cmd);
    if (!o.out) return usage_err("%s: --out RUN_DIR is required", o.cmd);
    if ((o.preset || o.hparams) && o.resume)
        return usage_err("%s: --resume takes the run's own hyper-parameters; leave out --preset "
                         "and --hparams", o.cmd);
    if (o.preset && strcmp(o.preset, "toy")) {
        int known = is_toy_lyrics(o.preset);
        for (int i = 0; jb_hparams_preset_names[i]; i++)
            known |= !strcmp(o.preset, jb_hparams_preset_names[i]);
        if (!known) return usage_err("unknown preset '%s' (toy, toy_lyrics, toy_lyrics_5b, vqvae, "
                                     "upsampler_level_0, upsampler_level_1, prior_5b, "
                                     "prior_5b_lyrics, prior_1b_lyrics)", o.preset);
        if (is_toy_lyrics(o.preset) && strcmp(o.cmd, "prior"))
            return usage_err("--preset %s is a prior preset", o.preset);
    }
    if (!strcmp(o.cmd, "prior")) {
        if (o.level < 0) return usage_err("%s: --level L is required", o.cmd);
        if (!o.vqvae) return usage_err("%s: --vqvae FILE is required", o.cmd);
        if (o.init && o.resume) return usage_err("%s: --init and --resume exclude each other", o.cmd);
    } else if (o.level >= 0 || o.vqvae) {
        return usage_err("%s: --level and --vqvae are for 'prior'", o.cmd);
    } else if (o.init && (o.resume || o.preset)) {
        return usage_err("%s: --init excludes --resume and --preset", o.cmd);
    }
    if (o.quiet) jb_log_set_level(JB_ERROR);
    if (o.threads) {
        omp_set_num_threads(o.threads);
        openblas_set_num_threads(o.threads);
    }
    return !strcmp(o.cmd, "vqvae") ? train_vqvae(&o) : train_prior(&o);
}
