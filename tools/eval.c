// eval.c: jukebox-eval, figures of a trained model on held-out data (docs/default_model.md).
//
//   jukebox-eval vqvae --vqvae VQ.safetensors --data HELDOUT_DIR [--json OUT.json]
//   jukebox-eval prior --prior P.safetensors --vqvae VQ.safetensors --train DIR --data DIR
//   jukebox-eval genre --train DIR --test DIR [--test DIR ...]
//   jukebox-eval spectrogram --in SONG.wav --out PICTURE.png
//   jukebox-eval music --test DIR [--test DIR ...]      (common/jb_music.c, aubio)
//   jukebox-eval lyrics --test RUN_DIR [--test RUN_DIR ...]
//   jukebox-eval align --prior TOP.safetensors --vqvae VQ.safetensors --data DIR
//
// Data directories are those of jukebox-train (DIR/audio/* and DIR/labels.jsonl), read by
// common/jb_trainer.c; the metrics are common/jb_eval.c; the models are loaded by the
// inference VQ-VAE (jb_vqvae) and the training prior's forward (jb_train_prior_eval).
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "jb_audio.h"
#include "jb_eval.h"
#include "jb_hparams.h"
#include "jb_labels.h"
#include "jb_log.h"
#include "jb_music.h"
#include "jb_prior.h"
#include "jb_sample.h"
#include "jb_stage.h"
#include "jb_safetensors.h"
#include "jb_train_prior.h"
#include "jb_trainer.h"
#include "jb_vqvae.h"

#define N_MELS 64
#define SC_NFFT 2048
#define SC_HOP 512
#define MAX_TESTS 8

static void usage(FILE *f) {
    fprintf(f,
"usage: jukebox-eval vqvae --vqvae VQ.safetensors --data DIR [--json OUT]\n"
"       jukebox-eval prior --prior PRIOR.safetensors --vqvae VQ.safetensors --train DIR\n"
"                          --data DIR [--train-codes RUN/codes.safetensors] [--batch B]\n"
"                          [--json OUT]\n"
"       jukebox-eval genre --train DIR --test DIR [--test DIR ...] [--sr HZ] [--json OUT]\n"
"       jukebox-eval spectrogram --in AUDIO --out PNG [--sr HZ] [--range DB] [--scale N]\n"
"       jukebox-eval music --test DIR [--test DIR ...] [--json OUT]\n"
"       jukebox-eval lyrics --test RUN_DIR [--test RUN_DIR ...] [--json OUT]\n"
"       jukebox-eval align --prior TOP.safetensors --vqvae VQ.safetensors --data DIR\n"
"                          [--hop-fraction F] [--json OUT]\n"
"\n"
"Figures of a trained model on held-out songs (DIR/audio/* and DIR/labels.jsonl, the\n"
"layout of jukebox-train and jukebox-mkdataset):\n"
"  vqvae        every level's reconstruction (encode, decode) of every song: SNR in dB\n"
"               (10 log10 sum x^2 / sum (x - x')^2 over all songs, and the mean over songs)\n"
"               and spectral convergence ||S - S'||_F / ||S||_F of STFT magnitudes\n"
"               (n_fft 2048, hop 512; over all songs, and the mean over songs)\n"
"  prior        the prior's cross-entropy in bits per token on --data's codes (windows of\n"
"               n_ctx codes from the start of each song, with the song's artist, genre and\n"
"               timing, and the level above's codes for an upsampler), against the unigram\n"
"               baseline of --train's codes (add-one smoothed histogram): its entropy and\n"
"               the cross-entropy of --data's codes under it (--train-codes: the training\n"
"               codes from jukebox-train's cache of that data set instead of encoding)\n"
"  genre        a nearest-centroid genre classifier on log-mel statistics (64 HTK mel bands,\n"
"               per-band mean and std of the dB energies, standardised), fitted on --train's\n"
"               songs; its accuracy on each --test directory (labels give the true genre)\n"
"  spectrogram  a log-mel picture (64 bands, hop 512; dark = loud, the top --range dB,\n"
"               default 80) of a song as a grayscale PNG\n"
"  music        musical figures of each --test directory's songs (aubio): the share of\n"
"               loud frames with a clear pitch (YIN confidence >= 0.8, 60-2000 Hz), the\n"
"               share of those within 25 cents of an A440 semitone, note changes a\n"
"               second (a pitch held 4 frames moving to another semitone: a tune moves,\n"
"               a drone does not), onsets a second, and the spectral line at sr/4 and\n"
"               sr/8 (peak over the local median, dB)\n"
"  lyrics       lyrics alignment monotonicity of each sample of a `jukebox sample` output\n"
"               directory (its index.html's alignment frames): Spearman's rank correlation\n"
"               of time and the most attended lyric position, and its span (the share of\n"
"               the lyrics' characters between the first and last position attended)\n"
"  align        the same figure for every layer and head of a lyrics top prior, on --data's\n"
"               real songs with their own lyrics (top-level codes from --vqvae; windows\n"
"               every n_ctx * F codes, F default 0.125 as jukebox-job's): the mean and\n"
"               lowest over the songs per head, and the best head (the model file's\n"
"               alignment_layer and alignment_head choose the head a run shows)\n"
"options: --json OUT writes the figures as a JSON object too; -q quiet; -h help\n"
"exit codes: 0 done, 64 bad usage, 65 bad data or model, 66 missing file, 70 internal,\n"
"  74 an output could not be written.\n");
}

static int die(const jb_err_t *e) {
    jb_log(JB_ERROR, "%s", e->msg);
    return jb_err_exit_code(e->code);
}

static int write_json(const char *path, json_t *o) {
    if (!path) return 0;
    if (json_dump_file(o, path, JSON_INDENT(2) | JSON_SORT_KEYS)) {
        jb_log(JB_ERROR, "%s: cannot write", path);
        return EX_IOERR;
    }
    return 0;
}

// A song padded with zeros to a multiple of hop: *T samples, malloc'd.
static float *padded(const jb_trainer_item_t *it, int hop, int64_t *T) {
    *T = (it->n + hop - 1) / hop * hop;
    float *x = calloc((size_t)*T, sizeof(float));
    if (x) memcpy(x, it->x, sizeof(float) * (size_t)it->n);
    return x;
}

static jb_vqvae_t *open_vqvae(const char *path, jb_err_t *err) {
    jb_st_t *st = jb_st_open(path, err);
    if (!st) return NULL;
    jb_vqvae_t *vq = jb_vqvae_new(st, 0, err);
    jb_st_close(&st);
    return vq;
}

// ---- vqvae ---------------------------------------------------------------------------------

static int cmd_vqvae(const char *vq_path, const char *data, const char *json_out) {
    jb_err_t err = {0};
    int rc = EX_SOFTWARE;
    jb_trainer_data_t *d = NULL;
    float *x = NULL, *xh = NULL;
    int32_t *z = NULL;
    json_t *out = json_object(), *lv = json_array();
    jb_vqvae_t *vq = open_vqvae(vq_path, &err);
    if (!vq) goto fail;
    const jb_vqvae_hparams_t *h = jb_vqvae_hparams(vq);
    if (!(d = jb_trainer_data_load(data, h->sr, &err))) goto fail;
    int top_hop = h->hop_lengths[h->levels - 1];
    printf("VQ-VAE %s on %s: %d songs, %.1f s\n", vq_path, data, d->n_items,
           (double)d->total / h->sr);
    printf("level  hop  SNR dB (all)  SNR dB (mean)  spec. conv. (all)  spec. conv. (mean)\n");
    for (int L = 0; L < h->levels; L++) {
        double sig = 0, noise = 0, snr_mean = 0, num2 = 0, den2 = 0, sc_mean = 0;
        for (int i = 0; i < d->n_items; i++) {
            const jb_trainer_item_t *it = &d->items[i];
            int64_t T;
            if (!(x = padded(it, top_hop, &T))) goto oom;
            int64_t TL = T / h->hop_lengths[L];
            if (!(xh = malloc(sizeof(float) * (size_t)T)) ||
                !(z = malloc(sizeof(int32_t) * (size_t)TL)))
                goto oom;
            if (jb_vqvae_encode(vq, x, 1, T, L, z, 0, &err) ||
                jb_vqvae_decode(vq, z, 1, TL, L, xh, 0, &err))
                goto fail;
            double s, e, num, den;
            jb_eval_sq_sums(it->x, xh, it->n, &s, &e);
            sig += s, noise += e;
            snr_mean += jb_eval_snr_from_sums(s, e) / d->n_items;
            if (jb_eval_spec_conv(it->x, xh, it->n, SC_NFFT, SC_HOP, &num, &den, &err)) goto fail;
            num2 += num * num, den2 += den * den;
            sc_mean += (den > 0 ? num / den : 0) / d->n_items;
            free(x), free(xh), free(z);
            x = xh = NULL, z = NULL;
        }
        double snr = jb_eval_snr_from_sums(sig, noise), sc = sqrt(num2) / sqrt(den2);
        printf("%5d %4d  %12.2f  %13.2f  %17.4f  %18.4f\n", L, h->hop_lengths[L], snr, snr_mean,
               sc, sc_mean);
        json_array_append_new(lv, json_pack("{s:i,s:i,s:f,s:f,s:f,s:f}", "level", L, "hop",
                                            h->hop_lengths[L], "snr_db", snr, "snr_db_mean",
                                            snr_mean, "spectral_convergence", sc,
                                            "spectral_convergence_mean", sc_mean));
    }
    json_object_set_new(out, "levels", lv);
    lv = NULL;
    json_object_set_new(out, "songs", json_integer(d->n_items));
    json_object_set_new(out, "seconds", json_real((double)d->total / h->sr));
    rc = write_json(json_out, out);
    goto done;
oom:
    jb_err_set(&err, JB_ENOMEM, "out of memory");
fail:
    rc = die(&err);
done:
    free(x), free(xh), free(z);
    json_decref(lv);
    json_decref(out);
    jb_trainer_data_destroy(&d);
    jb_vqvae_destroy(&vq);
    return rc;
}

// ---- prior ---------------------------------------------------------------------------------

// Codes of every song of d at level L: z[i] (n[i] codes), malloc'd.
static int encode_all(jb_vqvae_t *vq, const jb_trainer_data_t *d, int L, int32_t **z,
                      int64_t *n, jb_err_t *err) {
    const jb_vqvae_hparams_t *h = jb_vqvae_hparams(vq);
    int top_hop = h->hop_lengths[h->levels - 1];
    for (int i = 0; i < d->n_items; i++) {
        int64_t T;
        float *x = padded(&d->items[i], top_hop, &T);
        n[i] = T / h->hop_lengths[L];
        z[i] = malloc(sizeof(int32_t) * (size_t)(n[i] > 0 ? n[i] : 1));
        if (!x || !z[i]) {
            free(x);
            return jb_err_set(err, JB_ENOMEM, "out of memory");
        }
        int r = jb_vqvae_encode(vq, x, 1, T, L, z[i], 0, err);
        free(x);
        if (r) return -1;
    }
    return 0;
}

static void free_codes(int32_t **z, int n) {
    for (int i = 0; z && i < n; i++) free(z[i]);
    free(z);
}

// The prior's mean cross-entropy on the *nb windows gathered; adds to the sums, empties.
static int run_batch(jb_train_prior_t *tp, const int32_t *z, const int32_t *zc, const int32_t *y,
                     int *nb, double *bits_sum, int64_t *windows, jb_err_t *err) {
    const jb_prior_info_t *in = jb_train_prior_info(tp);
    jb_train_prior_loss_t lo;
    if (jb_train_prior_eval(tp, z, in->x_cond ? zc : NULL, in->labels ? y : NULL, *nb, &lo,
                            NULL, err))
        return -1;
    *bits_sum += lo.gen_loss * *nb;
    *windows += *nb;
    *nb = 0;
    return 0;
}

// Codes of level L of every song of d from a jukebox-train cache (RUN/codes.safetensors:
// tensor "i.L" for the i-th file in name order), instead of encoding them again.
static int cached_codes(const char *path, const jb_trainer_data_t *d, int L, int32_t **z,
                        int64_t *n, jb_err_t *err) {
    jb_st_t *st = jb_st_open(path, err);
    if (!st) return -1;
    for (int i = 0; i < d->n_items; i++) {
        char key[64];
        snprintf(key, sizeof key, "%d.%d", i, L);
        const jb_st_entry_t *e = jb_st_find(st, key);
        if (!e || e->ndim != 1) {
            jb_st_close(&st);
            return jb_err_set(err, JB_EFORMAT, "%s: no codes '%s' (file %d, level %d)", path,
                              key, i, L);
        }
        n[i] = e->shape[0];
        if (!(z[i] = jb_st_get_i32(st, key, 1, e->shape, err))) {
            jb_st_close(&st);
            return -1;
        }
    }
    jb_st_close(&st);
    return 0;
}

static int cmd_prior(const char *prior_path, const char *vq_path, const char *train,
                     const char *train_codes, const char *data, int batch,
                     const char *json_out) {
    jb_err_t err = {0};
    int rc = EX_SOFTWARE;
    jb_trainer_data_t *dt = NULL, *dh = NULL;
    jb_train_prior_t *tp = NULL;
    jb_st_t *pst = NULL;
    jb_labels_vocab_t *av = NULL, *gv = NULL;
    int32_t **zt = NULL, **zh = NULL, **zc = NULL, *wz = NULL, *wc = NULL, *wy = NULL;
    int64_t *nt = NULL, *nh = NULL, *nc = NULL, *counts = NULL;
    json_t *out = NULL;
    jb_vqvae_t *vq = open_vqvae(vq_path, &err);
    if (!vq) goto fail;
    const jb_vqvae_hparams_t *h = jb_vqvae_hparams(vq);
    if (!(tp = jb_train_prior_new(prior_path, batch, &err))) goto fail;
    const jb_prior_info_t *in = jb_train_prior_info(tp);
    if (in->lyrics != JB_PRIOR_NO_LYRICS) {
        jb_err_set(&err, JB_EUNSUP, "%s: lyrics priors are not evaluated", prior_path);
        goto fail;
    }
    int L = in->level, K = in->bins;
    if (L >= h->levels || h->l_bins != K) {
        jb_err_set(&err, JB_EINVAL, "%s: level %d with %d codes; %s has %d levels of %d codes",
                   prior_path, L, K, vq_path, h->levels, h->l_bins);
        goto fail;
    }
    if (in->labels) {
        if (!(pst = jb_st_open(prior_path, &err)) ||
            !(av = jb_labels_vocab_from_model(pst, "artists", &err)) ||
            !(gv = jb_labels_vocab_from_model(pst, "genres", &err)))
            goto fail;
    }
    if (!(dt = jb_trainer_data_load(train, h->sr, &err)) ||
        !(dh = jb_trainer_data_load(data, h->sr, &err)))
        goto fail;
    zt = calloc((size_t)dt->n_items, sizeof *zt);
    zh = calloc((size_t)dh->n_items, sizeof *zh);
    zc = calloc((size_t)dh->n_items, sizeof *zc);
    nt = calloc((size_t)dt->n_items, sizeof *nt);
    nh = calloc((size_t)dh->n_items, sizeof *nh);
    nc = calloc((size_t)dh->n_items, sizeof *nc);
    counts = calloc((size_t)K, sizeof *counts);
    if (!zt || !zh || !zc || !nt || !nh || !nc || !counts) goto oom;
    if ((train_codes ? cached_codes(train_codes, dt, L, zt, nt, &err)
                     : encode_all(vq, dt, L, zt, nt, &err)) ||
        encode_all(vq, dh, L, zh, nh, &err))
        goto fail;
    if (in->x_cond && encode_all(vq, dh, L + 1, zc, nc, &err)) goto fail;

    // unigram baseline
    int64_t n_train = 0, n_held = 0;
    for (int i = 0; i < dt->n_items; i++)
        for (int64_t t = 0; t < nt[i]; t++) counts[zt[i][t]]++, n_train++;
    double h_uni = jb_eval_unigram_entropy(counts, K), x_uni_sum = 0;
    int used = 0;
    for (int k = 0; k < K; k++) used += counts[k] > 0;

    // the prior on windows of n_ctx codes from the start of each held-out song
    int n_ctx = in->n_ctx, cd = in->cond_downsample > 0 ? in->cond_downsample : 1;
    int ngw = in->label_len > 4 ? in->label_len - 4 - in->n_tokens : 0;
    int hop = h->hop_lengths[L];
    wz = malloc(sizeof(int32_t) * (size_t)batch * n_ctx);
    wc = malloc(sizeof(int32_t) * (size_t)batch * (n_ctx / cd + 1));
    wy = malloc(sizeof(int32_t) * (size_t)batch * (in->label_len + 1));
    if (!wz || !wc || !wy) goto oom;
    double bits_sum = 0, uni_win_sum = 0;
    int64_t windows = 0;
    int nb = 0;
    for (int i = 0; i < dh->n_items; i++) {
        const jb_trainer_item_t *it = &dh->items[i];
        double xb;
        if (jb_eval_unigram_xent(counts, K, zh[i], nh[i], &xb, &err)) goto fail;
        x_uni_sum += xb * nh[i];
        n_held += nh[i];
        int32_t art = 0, gen[16];
        int ng = 0;
        for (int g = 0; g < 16; g++) gen[g] = -1;
        if (in->labels &&
            (jb_labels_artist_id(av, JB_TEXT_V2, it->artist ? it->artist : "", it->id, &art,
                                 &err) ||
             (it->genre && *it->genre &&
              jb_labels_genre_ids(gv, JB_TEXT_V2, it->genre, it->id, gen, ngw < 16 ? ngw : 16,
                                  &ng, &err))))
            goto fail;
        for (int64_t off = 0; off + n_ctx <= nh[i]; off += n_ctx) {
            memcpy(wz + (int64_t)nb * n_ctx, zh[i] + off, sizeof(int32_t) * n_ctx);
            if (in->x_cond)
                memcpy(wc + (int64_t)nb * (n_ctx / cd), zc[i] + off / cd,
                       sizeof(int32_t) * (size_t)(n_ctx / cd));
            if (in->labels) {
                int32_t *y = wy + (int64_t)nb * in->label_len;
                y[0] = (int32_t)it->n;
                y[1] = (int32_t)(off * hop);
                y[2] = (int32_t)(n_ctx * hop);
                y[3] = art;
                for (int g = 0; g < ngw; g++) y[4 + g] = g < 16 ? gen[g] : -1;
            }
            double ub;
            if (jb_eval_unigram_xent(counts, K, zh[i] + off, n_ctx, &ub, &err)) goto fail;
            uni_win_sum += ub;
            if (++nb == batch && run_batch(tp, wz, wc, wy, &nb, &bits_sum, &windows, &err))
                goto fail;
        }
    }
    if (nb && run_batch(tp, wz, wc, wy, &nb, &bits_sum, &windows, &err)) goto fail;
    if (windows == 0) {
        jb_err_set(&err, JB_EFORMAT, "%s: no song has %d codes at level %d", data, n_ctx, L);
        goto fail;
    }
    double bits = bits_sum / windows, uni_win = uni_win_sum / windows;
    double x_uni = x_uni_sum / n_held;
    printf("prior %s (level %d, %d codes, n_ctx %d) on %s: %d songs, %lld windows\n", prior_path,
           L, K, n_ctx, data, dh->n_items, (long long)windows);
    printf("  prior cross-entropy            %.4f bits/token\n", bits);
    printf("  unigram on the same windows    %.4f bits/token\n", uni_win);
    printf("  unigram on all held-out codes  %.4f bits/token\n", x_uni);
    printf("  unigram entropy (train)        %.4f bits (%lld codes, %d of %d used; uniform "
           "%.4f)\n", h_uni, (long long)n_train, used, K, log2((double)K));
    out = json_pack("{s:i,s:i,s:i,s:I,s:f,s:f,s:f,s:f,s:I,s:i,s:f}", "level", L, "bins", K,
                    "n_ctx", n_ctx, "windows", (json_int_t)windows, "bits_per_token", bits,
                    "unigram_xent_windows", uni_win, "unigram_xent_heldout", x_uni,
                    "unigram_entropy_train", h_uni, "train_codes", (json_int_t)n_train,
                    "codes_used", used, "uniform_bits", log2((double)K));
    rc = write_json(json_out, out);
    goto done;
oom:
    jb_err_set(&err, JB_ENOMEM, "out of memory");
fail:
    rc = die(&err);
done:
    json_decref(out);
    if (dt) free_codes(zt, dt->n_items);
    if (dh) free_codes(zh, dh->n_items), free_codes(zc, dh->n_items);
    free(nt), free(nh), free(nc), free(counts), free(wz), free(wc), free(wy);
    jb_labels_vocab_destroy(&av);
    jb_labels_vocab_destroy(&gv);
    jb_st_close(&pst);
    jb_train_prior_destroy(&tp);
    jb_trainer_data_destroy(&dt);
    jb_trainer_data_destroy(&dh);
    jb_vqvae_destroy(&vq);
    return rc;
}

// ---- genre ---------------------------------------------------------------------------------

// Genre names: the sorted distinct genres of the training set.
typedef struct {
    char **names;
    int n;
} genres_t;

static int genre_index(const genres_t *g, const char *name) {
    for (int i = 0; name && i < g->n; i++)
        if (!strcmp(g->names[i], name)) return i;
    return -1;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int features(const jb_trainer_data_t *d, double *f, jb_err_t *err) {
    for (int i = 0; i < d->n_items; i++)
        if (jb_eval_logmel_stats(d->items[i].x, d->items[i].n, d->sr, N_MELS,
                                 f + (size_t)i * 2 * N_MELS, err))
            return jb_err_set(err, err->code, "%s: %s", d->items[i].path, err->msg);
    return 0;
}

static int cmd_genre(const char *train, const char **tests, int n_tests, int sr,
                     const char *json_out) {
    jb_err_t err = {0};
    int rc = EX_SOFTWARE, D = 2 * N_MELS;
    jb_trainer_data_t *dt = NULL, *de = NULL;
    jb_eval_centroids_t *cl = NULL;
    genres_t g = {0};
    double *ft = NULL, *fe = NULL;
    int *lab = NULL, *conf = NULL;
    json_t *out = json_object(), *arr = json_array();
    if (!(dt = jb_trainer_data_load(train, sr, &err))) goto fail;
    if (!(g.names = calloc((size_t)dt->n_items, sizeof(char *)))) goto oom;
    for (int i = 0; i < dt->n_items; i++) {
        const char *gn = dt->items[i].genre;
        if (!gn) {
            jb_err_set(&err, JB_EFORMAT, "%s: no genre label", dt->items[i].path);
            goto fail;
        }
        if (genre_index(&g, gn) < 0) g.names[g.n++] = (char *)gn;
    }
    qsort(g.names, (size_t)g.n, sizeof(char *), cmp_str);
    ft = malloc(sizeof(double) * (size_t)dt->n_items * D);
    lab = malloc(sizeof(int) * (size_t)dt->n_items);
    if (!ft || !lab) goto oom;
    if (features(dt, ft, &err)) goto fail;
    for (int i = 0; i < dt->n_items; i++) lab[i] = genre_index(&g, dt->items[i].genre);
    if (!(cl = jb_eval_centroids_fit(ft, lab, dt->n_items, D, g.n, &err))) goto fail;
    printf("genre classifier: nearest centroid on log-mel statistics (%d features), %d genres, "
           "fitted on %d songs of %s\n", D, g.n, dt->n_items, train);
    {   // accuracy on the training set itself (resubstitution)
        int ok = 0;
        for (int i = 0; i < dt->n_items; i++)
            ok += jb_eval_centroids_predict(cl, ft + (size_t)i * D) == lab[i];
        printf("  %-40s %3d / %3d = %.3f (training songs)\n", train, ok, dt->n_items,
               (double)ok / dt->n_items);
        json_object_set_new(out, "train_accuracy", json_real((double)ok / dt->n_items));
    }
    if (!(conf = calloc((size_t)g.n * g.n, sizeof(int)))) goto oom;
    for (int t = 0; t < n_tests; t++) {
        if (!(de = jb_trainer_data_load(tests[t], sr, &err))) goto fail;
        if (!(fe = malloc(sizeof(double) * (size_t)de->n_items * D))) goto oom;
        if (features(de, fe, &err)) goto fail;
        memset(conf, 0, sizeof(int) * (size_t)g.n * g.n);
        int ok = 0, n = 0;
        for (int i = 0; i < de->n_items; i++) {
            int want = genre_index(&g, de->items[i].genre);
            if (want < 0) {
                jb_err_set(&err, JB_EFORMAT, "%s: genre '%s' is not one of the training set's",
                           de->items[i].path, de->items[i].genre ? de->items[i].genre : "");
                goto fail;
            }
            int got = jb_eval_centroids_predict(cl, fe + (size_t)i * D);
            conf[want * g.n + got]++;
            ok += got == want;
            n++;
        }
        printf("  %-40s %3d / %3d = %.3f\n", tests[t], ok, n, n ? (double)ok / n : 0.0);
        json_t *cm = json_object();
        for (int a = 0; a < g.n; a++) {
            json_t *row = json_object();
            int any = 0;
            for (int b = 0; b < g.n; b++)
                if (conf[a * g.n + b]) {
                    json_object_set_new(row, g.names[b], json_integer(conf[a * g.n + b]));
                    any = 1;
                }
            if (any) {
                printf("      %-12s ->", g.names[a]);
                for (int b = 0; b < g.n; b++)
                    if (conf[a * g.n + b]) printf(" %s %d", g.names[b], conf[a * g.n + b]);
                printf("\n");
                json_object_set_new(cm, g.names[a], row);
            } else {
                json_decref(row);
            }
        }
        json_array_append_new(arr, json_pack("{s:s,s:i,s:i,s:f,s:o}", "dir", tests[t], "songs", n,
                                             "correct", ok, "accuracy",
                                             n ? (double)ok / n : 0.0, "confusion", cm));
        free(fe);
        fe = NULL;
        jb_trainer_data_destroy(&de);
    }
    json_object_set_new(out, "tests", arr);
    arr = NULL;
    json_object_set_new(out, "genres", json_integer(g.n));
    rc = write_json(json_out, out);
    goto done;
oom:
    jb_err_set(&err, JB_ENOMEM, "out of memory");
fail:
    rc = die(&err);
done:
    json_decref(arr);
    json_decref(out);
    free(ft), free(fe), free(lab), free(conf), free(g.names);
    jb_eval_centroids_destroy(&cl);
    jb_trainer_data_destroy(&dt);
    jb_trainer_data_destroy(&de);
    return rc;
}

// ---- spectrogram ---------------------------------------------------------------------------

static int cmd_spectrogram(const char *in, const char *out, int sr, double range, int scale) {
    jb_err_t err = {0};
    float *x = NULL, *lm = NULL;
    int64_t n;
    int F, rc = 0;
    if (jb_audio_read(in, sr, &x, &n, NULL, &err) ||
        jb_eval_logmel(x, n, sr, N_MELS, &lm, &F, &err) ||
        jb_eval_spectrogram_png(out, lm, F, N_MELS, scale, range, &err))
        rc = die(&err);
    free(x);
    free(lm);
    return rc;
}

// ---- music ---------------------------------------------------------------------------------

static int cmd_music(const char **tests, int n_tests, int sr, const char *json_out) {
    jb_err_t err = {0};
    int rc = EX_SOFTWARE;
    jb_trainer_data_t *d = NULL;
    json_t *out = json_object(), *arr = json_array();
    printf("%-40s %5s %8s %8s %8s %8s %8s %9s %9s\n", "songs of", "songs", "loud", "pitched",
           "in tune", "notes/s", "onsets/s", "line sr/4", "line sr/8");
    for (int t = 0; t < n_tests; t++) {
        if (!(d = jb_trainer_data_load(tests[t], sr, &err))) goto fail;
        jb_music_stats_t st = {0};
        double l4 = 0, l8 = 0, l4max = -1e30;
        for (int i = 0; i < d->n_items; i++) {
            const jb_trainer_item_t *it = &d->items[i];
            if (jb_music_analyse(it->x, it->n, sr, &st, &err)) {
                jb_err_prefix(&err, "%s", it->path);
                goto fail;
            }
            double a = jb_music_line_db(it->x, it->n, sr, sr / 4.0);
            double b = jb_music_line_db(it->x, it->n, sr, sr / 8.0);
            if (isnan(a) || isnan(b)) {
                jb_err_set(&err, JB_EFORMAT, "%s: too short for the line figure", it->path);
                goto fail;
            }
            l4 += a, l8 += b;
            l4max = fmax(l4max, a);
        }
        int n = d->n_items;
        double pitched = st.loud ? (double)st.pitched / st.loud : 0.0;
        double tuned = st.pitched ? (double)st.in_tune / st.pitched : 0.0;
        double rate = st.seconds > 0 ? st.onsets / st.seconds : 0.0;
        double moves = st.seconds > 0 ? st.note_changes / st.seconds : 0.0;
        l4 /= n, l8 /= n;
        printf("%-40s %5d %7.1f%% %7.1f%% %7.1f%% %8.2f %8.2f %6.1f dB %6.1f dB\n", tests[t], n,
               100.0 * st.loud / (double)(st.frames ? st.frames : 1), 100.0 * pitched,
               100.0 * tuned, moves, rate, l4, l8);
        json_t *o = json_object();
        json_object_set_new(o, "dir", json_string(tests[t]));
        json_object_set_new(o, "songs", json_integer(n));
        json_object_set_new(o, "frames", json_integer(st.frames));
        json_object_set_new(o, "loud_frames", json_integer(st.loud));
        json_object_set_new(o, "pitched_frames", json_integer(st.pitched));
        json_object_set_new(o, "in_tune_frames", json_integer(st.in_tune));
        json_object_set_new(o, "pitched", json_real(pitched));
        json_object_set_new(o, "in_tune", json_real(tuned));
        json_object_set_new(o, "note_changes", json_integer(st.note_changes));
        json_object_set_new(o, "note_changes_per_s", json_real(moves));
        json_object_set_new(o, "onsets_per_s", json_real(rate));
        json_object_set_new(o, "line_sr4_db", json_real(l4));
        json_object_set_new(o, "line_sr4_db_max", json_real(l4max));
        json_object_set_new(o, "line_sr8_db", json_real(l8));
        json_array_append_new(arr, o);
        jb_trainer_data_destroy(&d);
    }
    printf("(loud: share of frames within 30 dB of the song's loudest; pitched: share of loud "
           "frames; in tune: share of pitched frames, chance 50%%; notes/s: a held pitch "
           "moving to another semitone, a second (a drone: 0); line: peak over local "
           "median, mean over songs)\n");
    json_object_set_new(out, "tests", arr);
    arr = NULL;
    rc = write_json(json_out, out);
    goto done;
fail:
    rc = die(&err);
done:
    json_decref(arr);
    json_decref(out);
    jb_trainer_data_destroy(&d);
    return rc;
}

// ---- lyrics --------------------------------------------------------------------------------

static char *read_text(const char *path, jb_err_t *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        jb_err_set(err, JB_ENOENT, "%s: cannot open", path);
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    for (size_t k; b && (k = fread(b + n, 1, cap - n - 1, f)) > 0;) {
        n += k;
        if (n + 1 == cap) {
            char *nb = realloc(b, cap *= 2);
            if (!nb) free(b);
            b = nb;
        }
    }
    fclose(f);
    if (!b) jb_err_set(err, JB_ENOMEM, "%s: out of memory", path);
    else b[n] = 0;
    return b;
}

// The alignment frames of every sample in RUN/index.html (jb_html: a JSON array of frames,
// each an array of a value 0..255 per lyric character, in <script id="align-K">).
static int cmd_lyrics(const char **tests, int n_tests, const char *json_out) {
    jb_err_t err = {0};
    int rc = EX_SOFTWARE;
    char *html = NULL;
    double *att = NULL;
    json_t *out = json_object(), *arr = json_array(), *fr = NULL;
    double sum = 0, lo = 1e30, span_sum = 0;
    int n_all = 0, n_span = 0, n_flat = 0;   // samples with a correlation, with frames, without
    for (int t = 0; t < n_tests; t++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/index.html", tests[t]);
        if (!(html = read_text(path, &err))) goto fail;
        const char *p = html;
        for (;;) {
            const char *tag = strstr(p, "id=\"align-");
            if (!tag) break;
            int k = atoi(tag + 10);
            const char *a = strchr(tag, '>'), *e = a ? strstr(a, "</script>") : NULL;
            if (!a || !e) {
                jb_err_set(&err, JB_EFORMAT, "%s: alignment %d is not closed", path, k);
                goto fail;
            }
            json_error_t je;
            fr = json_loadb(a + 1, (size_t)(e - a - 1), 0, &je);
            if (!json_is_array(fr)) {
                jb_err_set(&err, JB_EFORMAT, "%s: alignment %d: %s", path, k, je.text);
                goto fail;
            }
            int F = (int)json_array_size(fr);
            int C = F ? (int)json_array_size(json_array_get(fr, 0)) : 0;
            p = e;
            if (F == 0 || C == 0) {
                printf("%s sample %d: no alignment (not a lyrics model, or no lyrics)\n", tests[t], k);
                json_decref(fr);
                fr = NULL;
                continue;
            }
            free(att);
            if (!(att = calloc((size_t)F * C, sizeof(double)))) {
                jb_err_set(&err, JB_ENOMEM, "out of memory");
                goto fail;
            }
            for (int f = 0; f < F; f++) {
                json_t *row = json_array_get(fr, (size_t)f);
                if ((int)json_array_size(row) != C) {
                    jb_err_set(&err, JB_EFORMAT, "%s: alignment %d: frame %d has %d values, not %d",
                               path, k, f, (int)json_array_size(row), C);
                    goto fail;
                }
                for (int c = 0; c < C; c++)
                    att[(size_t)f * C + c] = json_number_value(json_array_get(row, (size_t)c));
            }
            json_decref(fr);
            fr = NULL;
            double rho = jb_music_alignment_rank(att, F, C);
            int c0, c1;
            double span = jb_music_alignment_span(att, F, C, &c0, &c1);
            printf("%s sample %d: %d frames x %d characters, rank correlation %.3f, attended "
                   "characters %d..%d (span %.2f)\n", tests[t], k, F, C, rho, c0, c1, span);
            json_array_append_new(arr, json_pack("{s:s,s:i,s:i,s:i,s:f,s:f,s:i,s:i}", "dir",
                                                 tests[t], "sample", k, "frames", F, "chars", C,
                                                 "rho", isnan(rho) ? 0.0 : rho, "span", span,
                                                 "first_char", c0, "last_char", c1));
            span_sum += span, n_span++;
            if (!isnan(rho)) sum += rho, lo = fmin(lo, rho), n_all++;
            else n_flat++;
        }
        free(html);
        html = NULL;
    }
    if (n_all)
        printf("mean rank correlation %.3f over %d samples (lowest %.3f), mean span %.2f\n",
               sum / n_all, n_all, lo, span_sum / n_span);
    if (n_flat)   // no correlation to average: say so rather than leave them out silently
        printf("%d sample(s) attend one position throughout (or never): no rank correlation\n",
               n_flat);
    if (!n_all && !n_flat) printf("no sample has a lyrics alignment\n");
    json_object_set_new(out, "samples", arr);
    arr = NULL;
    json_object_set_new(out, "mean_rho", json_real(n_all ? sum / n_all : 0.0));
    json_object_set_new(out, "min_rho", json_real(n_all ? lo : 0.0));
    json_object_set_new(out, "n", json_integer(n_all));
    json_object_set_new(out, "mean_span", json_real(n_span ? span_sum / n_span : 0.0));
    json_object_set_new(out, "n_flat", json_integer(n_flat));
    rc = write_json(json_out, out);
    goto done;
fail:
    rc = die(&err);
done:
    json_decref(fr);
    json_decref(arr);
    json_decref(out);
    free(html);
    free(att);
    return rc;
}

// ---- align ---------------------------------------------------------------------------------

// The table of align: mean and lowest rho over the songs per lyrics layer and head (rho:
// (depth, heads, ns), `used` songs each; NAN: no alignment, counted as 0), the best head;
// the same into out ("heads", "songs", "best").
static void align_report(jb_prior_t *p, const double *rho, int ns, int used, json_t *out) {
    const jb_prior_hparams_t *hp = jb_prior_hparams(p);
    int D = hp->depth, H = hp->heads, bl = -1, bh = -1;
    json_t *arr = json_array();
    double best = -2;
    printf("layer head  mean rho   min rho\n");
    for (int l = 0; l < D; l++)
        for (int k = 0; k < H; k++) {
            if (jb_prior_set_alignment(p, l, k, NULL)) continue;   // not a lyrics layer
            double sum = 0, lo = 1e30;
            for (int i = 0; i < used; i++) {
                double r = rho[((int64_t)l * H + k) * ns + i];
                if (isnan(r)) r = 0;   // no attended position varies: no alignment
                sum += r, lo = fmin(lo, r);
            }
            double mean = sum / used;
            printf("%5d %4d  %8.3f  %8.3f\n", l, k, mean, lo);
            json_array_append_new(arr, json_pack("{s:i,s:i,s:f,s:f}", "layer", l, "head", k,
                                                 "mean_rho", mean, "min_rho", lo));
            if (mean > best) best = mean, bl = l, bh = k;
        }
    printf("best: layer %d head %d (mean rho %.3f)\n", bl, bh, best);
    json_object_set_new(out, "heads", arr);
    json_object_set_new(out, "songs", json_integer(used));
    json_object_set_new(out, "best", json_pack("{s:i,s:i,s:f}", "layer", bl, "head", bh,
                                               "mean_rho", best));
}

// The lyric alignment of every layer and head of a lyrics top prior on real songs: each song
// of `data` encoded to top-level codes, its own lyrics, jb_sample_alignment as a stage runs it
// (windows every n_ctx·hop_fraction codes), the rank correlation of time and attended lyric
// position (jukebox-eval lyrics' figure) per song; the mean over the songs per layer and head.
// The reference picks its alignment head by hand after training; this is the measurement.
static int cmd_align(const char *prior_path, const char *vq_path, const char *data,
                     double hop_fraction, const char *json_out) {
    jb_err_t err = {0};
    int rc = EX_SOFTWARE;
    jb_trainer_data_t *d = NULL;
    jb_prior_t *p = NULL;
    jb_st_t *pst = NULL;
    jb_labels_vocab_t *av = NULL, *gv = NULL;
    int32_t **z = NULL;
    int64_t *nz = NULL;
    float *full = NULL;
    double *att = NULL, *rho = NULL;
    json_t *out = json_object();
    jb_vqvae_t *vq = open_vqvae(vq_path, &err);
    if (!vq || !(p = jb_prior_new(prior_path, &err))) goto fail;
    const jb_prior_info_t *in = jb_prior_info(p);
    const jb_prior_hparams_t *hp = jb_prior_hparams(p);
    const jb_vqvae_hparams_t *h = jb_vqvae_hparams(vq);
    int L = in->level, D = hp->depth, H = hp->heads;
    const int stored_l = hp->alignment_layer, stored_h = hp->alignment_head;
    if (in->lyrics == JB_PRIOR_NO_LYRICS || L != h->levels - 1) {
        jb_err_set(&err, JB_EINVAL, "%s: not a lyrics top prior for %s", prior_path, vq_path);
        goto fail;
    }
    // without vocabularies (test models) names give 0, "unknown", as in a stage
    if (!(pst = jb_st_open(prior_path, &err)) ||
        (jb_st_meta(pst, "artists") && !(av = jb_labels_vocab_from_model(pst, "artists", &err))) ||
        (jb_st_meta(pst, "genres") && !(gv = jb_labels_vocab_from_model(pst, "genres", &err))) ||
        !(d = jb_trainer_data_load(data, h->sr, &err)))
        goto fail;
    int ns = d->n_items, hop = (int)(hop_fraction * in->n_ctx);
    if (hop < 1) {
        jb_err_set(&err, JB_EINVAL, "--hop-fraction %g: a hop of %d codes", hop_fraction, hop);
        goto fail;
    }
    z = calloc((size_t)ns, sizeof *z);
    nz = calloc((size_t)ns, sizeof *nz);
    rho = malloc(sizeof(double) * (size_t)D * H * ns);
    if (!z || !nz || !rho) goto oom;
    if (encode_all(vq, d, L, z, nz, &err)) goto fail;
    jb_labeller_t lb = {.version = hp->labels_v3 ? JB_TEXT_V3 : JB_TEXT_V2,
                        .max_genre_words = hp->max_bow_genre_size, .n_tokens = in->n_tokens,
                        .sample_length = in->sample_length, .artists = av, .genres = gv};
    int used = 0;
    for (int i = 0; i < ns; i++) {
        const jb_trainer_item_t *it = &d->items[i];
        if (!it->lyrics || !*it->lyrics || nz[i] < in->n_ctx) continue;   // nothing to align
        jb_labels_job_t q = {.id = it->id, .level = L, .artist = it->artist ? it->artist : "",
                             .genre = it->genre ? it->genre : "", .lyrics = it->lyrics,
                             .artist_id = -1, .total_length = it->n, .n_samples = 1};
        jb_labels_built_t b;
        if (jb_labeller_build(&lb, in->label_len, &q, &b, &err)) goto fail;
        jb_sample_lyrics_t ly = {b.full_tokens, b.n_full};
        int64_t rows = 0;
        free(full), free(att);
        full = malloc(sizeof(float) * (size_t)(nz[i] * (b.n_full > 0 ? b.n_full : 1)));
        att = malloc(sizeof(double) * (size_t)(nz[i] * (b.n_full > 0 ? b.n_full : 1)));
        int ok = full && att;
        for (int l = 0; ok && l < D; l++)
            for (int k = 0; ok && k < H; k++) {
                double r = NAN;
                if (jb_prior_set_alignment(p, l, k, NULL) == 0) {   // else not a lyrics layer
                    if (jb_sample_alignment(p, 1, (int)nz[i], z[i], (int)nz[i], b.y, &ly, hop,
                                            &full, &err)) {
                        jb_labels_built_free(&b);
                        jb_err_prefix(&err, "%s", it->id);
                        goto fail;
                    }
                    jb_sample_alignment_rows(full, nz[i], b.n_full, JB_STAGE_ALIGN_TOKENS, att,
                                             &rows);
                    r = jb_music_alignment_rank(att, (int)rows, b.n_full);
                }
                rho[((int64_t)l * H + k) * ns + used] = r;
            }
        jb_labels_built_free(&b);
        if (!ok) goto oom;
        used++;
    }
    if (!used) {
        jb_err_set(&err, JB_EINVAL, "%s: no song with lyrics and at least %d top-level codes",
                   data, in->n_ctx);
        goto fail;
    }
    printf("lyric alignment of %s on %d songs of %s (rank correlation of time and attended "
           "lyric position, mean over the songs; stored head: layer %d head %d)\n",
           prior_path, used, data, stored_l, stored_h);
    align_report(p, rho, ns, used, out);
    if (stored_l >= 0) jb_prior_set_alignment(p, stored_l, stored_h, NULL);
    rc = write_json(json_out, out);
    goto done;
oom:
    jb_err_set(&err, JB_ENOMEM, "out of memory");
fail:
    rc = die(&err);
done:
    free(full), free(att), free(rho), free(nz);
    free_codes(z, d ? d->n_items : 0);
    json_decref(out);
    jb_labels_vocab_destroy(&av);
    jb_labels_vocab_destroy(&gv);
    jb_st_close(&pst);
    jb_prior_destroy(&p);
    jb_trainer_data_destroy(&d);
    jb_vqvae_destroy(&vq);
    return rc;
}

// A number option: the whole value, within [lo, hi] (and whole when integral). 0, or -1
// with a message naming the option.
static int num_opt(const char *name, const char *v, double lo, double hi, int integral,
                   double *out) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (end == v || *end || errno || !(x >= lo && x <= hi) || (integral && x != (long)x)) {
        fprintf(stderr, "jukebox-eval: --%s %s: expected %s from %g to %g\n", name, v,
                integral ? "a whole number" : "a number", lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return EX_USAGE;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(stdout);
        return 0;
    }
    jb_log_set_stage("eval");
    const char *cmd = argv[1];
    const char *vq = NULL, *prior = NULL, *train = NULL, *data = NULL, *json = NULL;
    const char *in = NULL, *out = NULL, *codes = NULL, *tests[MAX_TESTS];
    int n_tests = 0;
    double sr = 44100, batch = 8, scale = 3, range = 80, hop_fraction = 0.125;
    enum { O_HOPF = 300, O_VQ = 256, O_PRIOR, O_TRAIN, O_DATA, O_TEST, O_JSON, O_SR, O_BATCH, O_IN, O_RANGE,
           O_SCALE, O_CODES };
    static const struct option lo[] = {
        {"vqvae", 1, 0, O_VQ}, {"prior", 1, 0, O_PRIOR}, {"train", 1, 0, O_TRAIN},
        {"data", 1, 0, O_DATA}, {"test", 1, 0, O_TEST}, {"json", 1, 0, O_JSON},
        {"sr", 1, 0, O_SR}, {"batch", 1, 0, O_BATCH}, {"in", 1, 0, O_IN}, {"out", 1, 0, 'o'},
        {"range", 1, 0, O_RANGE}, {"scale", 1, 0, O_SCALE}, {"train-codes", 1, 0, O_CODES},
        {"hop-fraction", 1, 0, O_HOPF}, {"quiet", 0, 0, 'q'},
        {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    optind = 2;
    int c, bad = 0;
    while ((c = getopt_long(argc, argv, "o:qh", lo, NULL)) != -1) {
        switch (c) {
        case O_VQ: vq = optarg; break;
        case O_PRIOR: prior = optarg; break;
        case O_TRAIN: train = optarg; break;
        case O_DATA: data = optarg; break;
        case O_TEST:
            if (n_tests == MAX_TESTS) {
                fprintf(stderr, "jukebox-eval: at most %d --test directories\n", MAX_TESTS);
                return EX_USAGE;
            }
            tests[n_tests++] = optarg;
            break;
        case O_JSON: json = optarg; break;
        case O_SR: bad |= num_opt("sr", optarg, 1000, 384000, 1, &sr); break;
        case O_BATCH: bad |= num_opt("batch", optarg, 1, 4096, 1, &batch); break;
        case O_IN: in = optarg; break;
        case 'o': out = optarg; break;
        case O_RANGE: bad |= num_opt("range", optarg, 1, 200, 0, &range); break;
        case O_SCALE: bad |= num_opt("scale", optarg, 1, 64, 1, &scale); break;
        case O_CODES: codes = optarg; break;
        case O_HOPF: bad |= num_opt("hop-fraction", optarg, 1e-6, 1, 0, &hop_fraction); break;
        case 'q': jb_log_set_level(JB_WARN); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return EX_USAGE;
        }
    }
    if (bad) return EX_USAGE;
    if (optind < argc) {
        fprintf(stderr, "jukebox-eval: unexpected argument '%s' (see --help)\n", argv[optind]);
        return EX_USAGE;
    }
    // Each command and the options it needs (--help).
    static const struct {
        const char *cmd, *needs;
    } need[] = {{"vqvae", "--vqvae and --data"},
                {"prior", "--prior, --vqvae, --train and --data"},
                {"genre", "--train and --test"},
                {"spectrogram", "--in and -o"},
                {"music", "--test"},
                {"lyrics", "--test"},
                {"align", "--prior, --vqvae and --data"}};
    if (!strcmp(cmd, "vqvae") && vq && data) return cmd_vqvae(vq, data, json);
    if (!strcmp(cmd, "prior") && prior && vq && train && data)
        return cmd_prior(prior, vq, train, codes, data, (int)batch, json);
    if (!strcmp(cmd, "genre") && train && n_tests > 0)
        return cmd_genre(train, tests, n_tests, (int)sr, json);
    if (!strcmp(cmd, "spectrogram") && in && out)
        return cmd_spectrogram(in, out, (int)sr, range, (int)scale);
    if (!strcmp(cmd, "music") && n_tests > 0) return cmd_music(tests, n_tests, (int)sr, json);
    if (!strcmp(cmd, "lyrics") && n_tests > 0) return cmd_lyrics(tests, n_tests, json);
    if (!strcmp(cmd, "align") && prior && vq && data)
        return cmd_align(prior, vq, data, hop_fraction, json);
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++)
        if (!strcmp(cmd, need[i].cmd)) {
            fprintf(stderr, "jukebox-eval %s: needs %s (see --help)\n", cmd, need[i].needs);
            return EX_USAGE;
        }
    fprintf(stderr, "jukebox-eval: '%s': unknown command (vqvae, prior, genre, spectrogram, "
            "music, lyrics, align; see --help)\n", cmd);
    return EX_USAGE;
}
