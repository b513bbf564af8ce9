// jb_trainer.c: data set, bandwidth, vocabularies, fresh prior files, metrics CSV and plot
// for jukebox-train (see jb_trainer.h).
#include "jb_trainer.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "jb_audio.h"
#include "jb_hparams.h"
#include "jb_html.h"
#include "jb_rng.h"
#include "jb_safetensors.h"
#include "jb_stft.h"
#include "jb_text.h"
#include "jb_transformer.h"

// ---- data set ------------------------------------------------------------------------------

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int is_dir(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static char *stem_of(const char *path) {
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    char *s = strdup(b);
    if (!s) return NULL;
    char *dot = strrchr(s, '.');
    if (dot && dot != s) *dot = 0;
    return s;
}

static int audio_ext(const char *name) {
    static const char *ext[] = {".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff", ".au", NULL};
    const char *dot = strrchr(name, '.');
    if (!dot || name[0] == '.') return 0;
    for (int i = 0; ext[i]; i++)
        if (!strcasecmp(dot, ext[i])) return 1;
    return 0;
}

static char *json_str_dup(const json_t *o, const char *key) {
    const json_t *v = json_object_get(o, key);
    return json_is_string(v) ? strdup(json_string_value(v)) : NULL;
}

static int read_labels(jb_trainer_data_t *d, const char *dir, jb_err_t *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/labels.jsonl", dir);
    FILE *f = fopen(path, "r");
    if (!f) return 0;   // optional
    char *line = NULL;
    size_t cap = 0;
    int lineno = 0, rc = 0;
    while (getline(&line, &cap, f) >= 0) {
        lineno++;
        char *p = line;
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
        if (!*p) continue;
        json_error_t je;
        json_t *o = json_loads(p, 0, &je);
        if (!json_is_object(o)) {
            json_decref(o);
            rc = jb_err_set(err, JB_EFORMAT, "%s:%d: not a JSON object (%s)", path, lineno,
                            je.text);
            break;
        }
        char *file = json_str_dup(o, "file"), *id = json_str_dup(o, "id");
        char *key = file ? stem_of(file) : id ? strdup(id) : NULL;
        free(file), free(id);
        if (!key) {
            json_decref(o);
            rc = jb_err_set(err, JB_EFORMAT, "%s:%d: neither \"file\" nor \"id\"", path, lineno);
            break;
        }
        jb_trainer_item_t *it = NULL;
        for (int i = 0; i < d->n_items; i++)
            if (!strcmp(d->items[i].id, key)) it = &d->items[i];
        if (!it) {
            rc = jb_err_set(err, JB_EFORMAT, "%s:%d: no audio file for '%s'", path, lineno, key);
            free(key), json_decref(o);
            break;
        }
        free(key);
        free(it->artist), free(it->genre), free(it->lyrics);
        it->artist = json_str_dup(o, "artist");
        it->genre = json_str_dup(o, "genre");
        it->lyrics = json_str_dup(o, "lyrics");
        if (!it->artist) it->artist = strdup("");
        if (!it->genre) it->genre = strdup("");
        if (!it->lyrics) it->lyrics = strdup("");
        json_decref(o);
        if (!it->artist || !it->genre || !it->lyrics) {
            rc = jb_err_set(err, JB_ENOMEM, "out of memory");
            break;
        }
    }
    free(line);
    fclose(f);
    if (rc) return rc;
    for (int i = 0; i < d->n_items; i++) d->labelled += d->items[i].artist != NULL;
    return 0;
}

jb_trainer_data_t *jb_trainer_data_load(const char *dir, int sr, jb_err_t *err) {
    if (!is_dir(dir)) {
        jb_err_set(err, JB_ENOENT, "%s: no such directory", dir);
        return NULL;
    }
    char adir[4096];
    snprintf(adir, sizeof adir, "%s/audio", dir);
    if (!is_dir(adir)) snprintf(adir, sizeof adir, "%s", dir);
    DIR *dh = opendir(adir);
    if (!dh) {
        jb_err_set(err, JB_ENOENT, "%s: %s", adir, strerror(errno));
        return NULL;
    }
    char **names = NULL;
    int n = 0, capn = 0;
    struct dirent *de;
    while ((de = readdir(dh))) {
        if (!audio_ext(de->d_name)) continue;
        if (n == capn) {
            capn = capn ? 2 * capn : 64;
            char **nn = realloc(names, sizeof *nn * (size_t)capn);
            if (!nn) break;
            names = nn;
        }
        names[n] = malloc(strlen(adir) + strlen(de->d_name) + 2);
        if (!names[n]) break;
        sprintf(names[n], "%s/%s", adir, de->d_name);
        n++;
    }
    closedir(dh);
    jb_trainer_data_t *d = calloc(1, sizeof *d);
    if (!d) goto oom;
    d->sr = sr;
    if (n == 0) {
        jb_err_set(err, JB_ENOENT, "%s: no audio files (.wav, .flac, .ogg, .mp3, .aiff)", adir);
        goto fail;
    }
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    d->items = calloc((size_t)n, sizeof *d->items);
    if (!d->items) goto oom;
    for (int i = 0; i < n; i++) {
        jb_trainer_item_t *it = &d->items[d->n_items++];
        it->path = names[i], names[i] = NULL;
        if (!(it->id = stem_of(it->path))) goto oom;
        if (jb_audio_read(it->path, sr, &it->x, &it->n, NULL, err)) goto fail;
        d->total += it->n;
    }
    if (d->total <= 0) {
        jb_err_set(err, JB_EFORMAT, "%s: the audio files hold no samples", adir);
        goto fail;
    }
    if (read_labels(d, dir, err)) goto fail;
    free(names);
    return d;
oom:
    jb_err_set(err, JB_ENOMEM, "out of memory");
fail:
    for (int i = 0; i < n; i++) free(names ? names[i] : NULL);
    free(names);
    jb_trainer_data_destroy(&d);
    return NULL;
}

void jb_trainer_data_destroy(jb_trainer_data_t **d_p) {
    if (!d_p || !*d_p) return;
    jb_trainer_data_t *d = *d_p;
    for (int i = 0; i < d->n_items; i++) {
        jb_trainer_item_t *it = &d->items[i];
        free(it->path), free(it->id), free(it->artist), free(it->genre), free(it->lyrics);
        free(it->x);
    }
    free(d->items);
    free(d);
    *d_p = NULL;
}

// "jukebox-train data": the job hash of the window stream.
#define DATA_JOB 0x6a62747261696e31ull

void jb_trainer_data_window(const jb_trainer_data_t *d, uint64_t seed, uint64_t draw, int64_t T,
                            float *x, int *item, int64_t *offset) {
    jb_rng_stream_t s = jb_rng_stream(seed, DATA_JOB, 0, 0);
    // item: proportional to length (a uniform sample position picks the item holding it)
    double u = jb_rng_uniform_f64(s, draw, 0);
    int64_t pos = (int64_t)(u * (double)d->total);
    if (pos >= d->total) pos = d->total - 1;
    int i = 0;
    while (i + 1 < d->n_items && pos >= d->items[i].n) pos -= d->items[i++].n;
    const jb_trainer_item_t *it = &d->items[i];
    int64_t off = 0;
    if (it->n > T) {
        double v = jb_rng_uniform_f64(s, draw, 1);
        off = (int64_t)(v * (double)(it->n - T + 1));
        if (off > it->n - T) off = it->n - T;
    }
    int64_t k = it->n - off < T ? it->n - off : T;
    memcpy(x, it->x + off, sizeof(float) * (size_t)k);
    for (int64_t t = k; t < T; t++) x[t] = 0.0f;
    if (item) *item = i;
    if (offset) *offset = off;
}

int jb_trainer_bandwidth(const jb_trainer_data_t *d, int64_t T, int n_windows, uint64_t seed,
                         double *l1, double *l2, double *spec, jb_err_t *err) {
    jb_stft_t *st = jb_stft_new(1024, 256, 1024, T, err);
    if (!st) return jb_err_prefix(err, "bandwidth");
    int F = jb_stft_frames(st), B = jb_stft_bins(st);
    float *x = malloc(sizeof(float) * (size_t)T);
    double *S = malloc(sizeof(double) * (size_t)F * B * 2), *M = malloc(sizeof(double) * (size_t)F * B);
    if (!x || !S || !M) {
        free(x), free(S), free(M);
        jb_stft_destroy(&st);
        return jb_err_set(err, JB_ENOMEM, "bandwidth: out of memory");
    }
    double a1 = 0, s1 = 0, s2 = 0, sn = 0, n = 0;
    for (int w = 0; w < n_windows; w++) {
        jb_trainer_data_window(d, seed ^ 0x62616e64ull, (uint64_t)w, T, x, NULL, NULL);
        for (int64_t t = 0; t < T; t++) {
            double v = x[t];
            a1 += fabs(v), s1 += v, s2 += v * v;
        }
        n += (double)T;
        jb_stft_forward(st, S, x);
        jb_stft_magnitude(st, M, S);
        double fro = 0;
        for (int64_t i = 0; i < (int64_t)F * B; i++) fro += M[i] * M[i];
        sn += sqrt(fro);
    }
    double mean = s1 / n;
    *l1 = a1 / n, *l2 = s2 / n - mean * mean, *spec = sn / n_windows;
    free(x), free(S), free(M);
    jb_stft_destroy(&st);
    if (!(*l1 > 0) || !(*l2 > 0) || !(*spec > 0))
        return jb_err_set(err, JB_EFORMAT, "bandwidth: the data set is silent");
    return 0;
}

// ---- vocabularies --------------------------------------------------------------------------

static int add_name(char ***v, int *n, int *cap, const char *s) {
    for (int i = 0; i < *n; i++)
        if (!strcmp((*v)[i], s)) return 0;
    if (*n == *cap) {
        *cap = *cap ? 2 * *cap : 16;
        char **nv = realloc(*v, sizeof **v * (size_t)*cap);
        if (!nv) return -1;
        *v = nv;
    }
    if (!((*v)[*n] = strdup(s))) return -1;
    (*n)++;
    return 0;
}

static char *names_json(char **v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_str);
    json_t *o = json_object();
    for (int i = 0; i < n; i++) json_object_set_new(o, v[i], json_integer(i + 1));
    char *s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    return s;
}

int jb_trainer_vocabs(const jb_trainer_data_t *d, jb_text_vocab_t version, char **artists_json,
                      char **genres_json, int *n_artists, int *n_genres, jb_err_t *err) {
    char **a = NULL, **g = NULL;
    int na = 0, ca = 0, ng = 0, cg = 0, rc = -1;
    *artists_json = *genres_json = NULL;
    if (version != JB_TEXT_V2 && version != JB_TEXT_V3)
        return jb_err_set(err, JB_EINVAL, "vocabularies: unknown label version %d", (int)version);
    for (int i = 0; i < d->n_items; i++) {
        const jb_trainer_item_t *it = &d->items[i];
        if (!it->artist) continue;
        char *an, *gn;
        if (version == JB_TEXT_V2) {
            an = jb_labels_norm(it->artist, err), gn = jb_labels_norm(it->genre, err);
        } else {
            an = jb_text_lower(it->artist, strlen(it->artist), NULL, NULL, err);
            gn = jb_text_lower(it->genre, strlen(it->genre), NULL, NULL, err);
        }
        if (!an || !gn) {
            free(an), free(gn);
            goto done;
        }
        int bad = *an && add_name(&a, &na, &ca, an);
        if (version == JB_TEXT_V3)
            bad = bad || (*gn && add_name(&g, &ng, &cg, gn));
        else
            for (char *w = strtok(gn, "_"); w && !bad; w = strtok(NULL, "_"))
                bad = add_name(&g, &ng, &cg, w);
        free(an), free(gn);
        if (bad) {
            jb_err_set(err, JB_ENOMEM, "out of memory");
            goto done;
        }
    }
    *artists_json = names_json(a, na);
    *genres_json = names_json(g, ng);
    if (!*artists_json || !*genres_json) {
        free(*artists_json), free(*genres_json);
        *artists_json = *genres_json = NULL;
        jb_err_set(err, JB_ENOMEM, "out of memory");
        goto done;
    }
    *n_artists = na + 1, *n_genres = ng + 1;
    rc = 0;
done:
    for (int i = 0; i < na; i++) free(a[i]);
    for (int i = 0; i < ng; i++) free(g[i]);
    free(a), free(g);
    return rc;
}

int jb_trainer_label(int64_t total_length, int64_t offset, int64_t sample_length, int32_t artist,
                     const int32_t *genres, int n_genres, int max_genre_words,
                     const int32_t *full, int n_full, int n_tokens, int32_t *y, jb_err_t *err) {
    if (total_length < 0 || total_length > INT32_MAX || offset < 0 || offset > INT32_MAX ||
        sample_length < 0 || sample_length > INT32_MAX)
        return jb_err_set(err, JB_EINVAL, "label: total_length %lld, offset %lld, sample_length "
                          "%lld outside int32", (long long)total_length, (long long)offset,
                          (long long)sample_length);
    if (n_genres < 0 || n_genres > max_genre_words)
        return jb_err_set(err, JB_EINVAL, "label: %d genre words, at most %d", n_genres,
                          max_genre_words);
    y[0] = (int32_t)total_length, y[1] = (int32_t)offset, y[2] = (int32_t)sample_length;
    y[3] = artist;
    for (int g = 0; g < max_genre_words; g++) y[4 + g] = g < n_genres ? genres[g] : -1;
    if (n_tokens <= 0) return 0;
    static const int32_t none[1] = {0};
    return jb_labels_lyric_window(n_full > 0 ? full : none, n_full, n_tokens, total_length,
                                  offset, sample_length, y + 4 + max_genre_words, NULL, err);
}

// ---- fresh prior ---------------------------------------------------------------------------

typedef struct {
    jb_st_writer_t *w;
    float **bufs;
    int n, cap;
    uint64_t seed;
    jb_err_t *err;
} pinit_t;

enum { INIT_NORMAL, INIT_ONES, INIT_ZEROS, INIT_UNIFORM };

// One tensor: NORMAL std a; UNIFORM +-a; ONES; ZEROS. Draws keyed by the tensor's name.
static int put(pinit_t *pi, const char *name, int kind, double a, int ndim, int64_t d0,
               int64_t d1, int64_t d2) {
    int64_t shape[3] = {d0, d1, d2}, n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    if (pi->n == pi->cap) {
        pi->cap = pi->cap ? 2 * pi->cap : 128;
        float **nb = realloc(pi->bufs, sizeof *nb * (size_t)pi->cap);
        if (!nb) return jb_err_set(pi->err, JB_ENOMEM, "out of memory");
        pi->bufs = nb;
    }
    float *b = malloc(sizeof(float) * (size_t)(n ? n : 1));
    if (!b) return jb_err_set(pi->err, JB_ENOMEM, "out of memory");
    pi->bufs[pi->n++] = b;
    jb_rng_stream_t s = jb_rng_stream(pi->seed, jb_rng_hash_job(name), 0, 0);
    for (int64_t i = 0; i < n; i++) {
        if (kind == INIT_ONES) b[i] = 1.0f;
        else if (kind == INIT_ZEROS) b[i] = 0.0f;
        else if (kind == INIT_UNIFORM) b[i] = (float)(a * (2.0 * jb_rng_uniform_f64(s, i, 0) - 1.0));
        else {   // Box-Muller
            double u1 = jb_rng_uniform_f64(s, i, 0), u2 = jb_rng_uniform_f64(s, i, 1);
            if (u1 < 1e-300) u1 = 1e-300;
            b[i] = (float)(a * sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
        }
    }
    return jb_st_writer_add(pi->w, name, JB_F32, ndim, shape, b, pi->err);
}

// A transformer's blocks (transformer.py Transformer of ResAttnBlocks): width W, depth D,
// attention width m_attn·W and MLP width m_mlp·W, the attention kind of each layer from
// attn_order (kind 6, attending to the lyrics encoder, has queries c_attn (W, S) and keys and
// values c_enc_kv (W, 2S)); Conv1D weights N(0, std), biases 0, LayerNorm 1/0.
static int put_transformer(pinit_t *pi, const char *prefix, int W, int D, double m_attn,
                           double m_mlp, int attn_order, double std) {
    int S = (int)(m_attn * W), M = (int)(m_mlp * W);
    char nm[256];
    for (int d = 0; d < D; d++) {
        int enc = jb_transformer_attn_func(attn_order, d) == 6;
#define T2(sfx, kind, a, r, c)                                                       \
    snprintf(nm, sizeof nm, "%s_attn_mods.%d.%s", prefix, d, sfx);                  \
    if (put(pi, nm, kind, a, 2, r, c, 0)) return -1;
#define T1(sfx, kind, r)                                                             \
    snprintf(nm, sizeof nm, "%s_attn_mods.%d.%s", prefix, d, sfx);                  \
    if (put(pi, nm, kind, 0, 1, r, 0, 0)) return -1;
        T2("attn.c_attn.w", INIT_NORMAL, std, W, enc ? S : 3 * S)
        T1("attn.c_attn.b", INIT_ZEROS, enc ? S : 3 * S)
        if (enc) {
            T2("attn.c_enc_kv.w", INIT_NORMAL, std, W, 2 * S)
            T1("attn.c_enc_kv.b", INIT_ZEROS, 2 * S)
        }
        T2("attn.c_proj.w", INIT_NORMAL, std, S, W)
        T1("attn.c_proj.b", INIT_ZEROS, W)
        T1("ln_0.weight", INIT_ONES, W)
        T1("ln_0.bias", INIT_ZEROS, W)
        T2("mlp.c_fc.w", INIT_NORMAL, std, W, M)
        T1("mlp.c_fc.b", INIT_ZEROS, M)
        T2("mlp.c_proj.w", INIT_NORMAL, std, M, W)
        T1("mlp.c_proj.b", INIT_ZEROS, W)
        T1("ln_1.weight", INIT_ONES, W)
        T1("ln_1.bias", INIT_ZEROS, W)
#undef T1
#undef T2
    }
    return 0;
}

int jb_trainer_prior_init(const json_t *hpj, uint64_t seed, const char *path,
                          const char *const *meta_keys, const char *const *meta_values,
                          int n_meta, jb_err_t *err) {
    jb_prior_hparams_t hp;
    if (jb_prior_hparams_parse(hpj, &hp, err)) return jb_err_prefix(err, "prior hparams");
    // lyrics: the joint sequence (single_enc_dec, 1b_lyrics) or the separate encoder
    // (5b_lyrics), as SimplePrior decides; the lyric tokens are part of y (labels).
    int joint = hp.single_enc_dec, enc = !joint && hp.use_tokens && hp.n_tokens > 0;
    if ((joint || enc) && (hp.n_tokens <= 0 || hp.n_tokens % 2 || hp.n_vocab <= 0 || !hp.labels))
        return jb_err_set(err, JB_EINVAL, "lyrics prior: n_tokens %d (even, > 0), n_vocab %d "
                          "(> 0) and labels (%d) needed", hp.n_tokens, hp.n_vocab, hp.labels);
    if (hp.level < 0 || hp.level >= hp.vqvae.levels)
        return jb_err_set(err, JB_EINVAL, "prior level %d: the VQ-VAE has %d levels", hp.level,
                          hp.vqvae.levels);
    for (int d = 0; d < hp.depth; d++) {
        int k = jb_transformer_attn_func(hp.attn_order, d);
        if ((k == 6 && !enc) || (k == 7 && !joint))
            return jb_err_set(err, JB_EUNSUP, "attn_order %d layer %d: attn_func %d needs %s",
                              hp.attn_order, d, k, k == 6 ? "the lyrics encoder (use_tokens, "
                              "not single_enc_dec)" : "the joint lyrics sequence (single_enc_dec)");
    }
    double init_scale = 1.0, prime_init_scale = 1.0;
    jb_hp_double_or(hpj, "init_scale", 1.0, &init_scale, NULL);
    jb_hp_double_or(hpj, "prime_init_scale", 1.0, &prime_init_scale, NULL);
    int W = hp.width, top = hp.level == hp.vqvae.levels - 1;
    int B = hp.vqvae.l_bins + (joint ? hp.n_vocab : 0);           // x_emb rows (joint vocabulary)
    int S = hp.n_ctx + (joint ? hp.n_tokens : 0);                 // positions
    pinit_t pi = {0};
    pi.seed = seed, pi.err = err;
    int rc = -1;
    char *hs = json_dumps(hpj, JSON_COMPACT | JSON_SORT_KEYS);
    if (!(pi.w = jb_st_writer_new(err))) goto done;
    if (!hs) {
        jb_err_set(err, JB_ENOMEM, "out of memory");
        goto done;
    }
    if (jb_st_writer_meta(pi.w, "kind", "prior", err) ||
        jb_st_writer_meta(pi.w, "hparams", hs, err))
        goto done;
    for (int i = 0; i < n_meta; i++)
        if (jb_st_writer_meta(pi.w, meta_keys[i], meta_values[i], err)) goto done;
    if (!top) {   // Conditioner on the level above (conditioners.py)
        int cw = hp.cond_width, cm = (int)(hp.cond_m_conv * cw), L1 = hp.level + 1;
        int down = hp.vqvae.downs_t[L1], s = hp.vqvae.strides_t[L1];
        const char *pre = "conditioner_blocks.0.";
        char nm[256];
        snprintf(nm, sizeof nm, "%sx_emb.weight", pre);
        if (put(&pi, nm, INIT_NORMAL, 0.02 * init_scale, 2, hp.vqvae.l_bins, W, 0)) goto done;
        snprintf(nm, sizeof nm, "%scond.model.0.weight", pre);
        if (put(&pi, nm, INIT_UNIFORM, 1.0 / sqrt(W * 3.0), 3, cw, W, 3)) goto done;
        snprintf(nm, sizeof nm, "%scond.model.0.bias", pre);
        if (put(&pi, nm, INIT_UNIFORM, 1.0 / sqrt(W * 3.0), 1, cw, 0, 0)) goto done;
        for (int i = 0; i < down; i++) {
            for (int j = 0; j < hp.cond_depth; j++) {
                snprintf(nm, sizeof nm, "%scond.model.%d.0.model.%d.model.1.weight", pre, 1 + i, j);
                if (put(&pi, nm, INIT_UNIFORM, 1.0 / sqrt(cw * 3.0), 3, cm, cw, 3)) goto done;
                snprintf(nm, sizeof nm, "%scond.model.%d.0.model.%d.model.1.bias", pre, 1 + i, j);
                if (put(&pi, nm, INIT_UNIFORM, 1.0 / sqrt(cw * 3.0), 1, cm, 0, 0)) goto done;
                snprintf(nm, sizeof nm, "%scond.model.%d.0.model.%d.model.3.weight", pre, 1 + i, j);
                if (put(&pi, nm, INIT_UNIFORM, 1.0 / sqrt((double)cm), 3, cw, cm, 1)) goto done;
                snprintf(nm, sizeof nm, "%scond.model.%d.0.model.%d.model.3.bias", pre, 1 + i, j);
                if (put(&pi, nm, INIT_UNIFORM, 1.0 / sqrt((double)cm), 1, cw, 0, 0)) goto done;
            }
            int co = i == down - 1 ? W : cw;
            // ConvTranspose1d: PyTorch's fan_in is weight.size(1) * k = co * 2s
            snprintf(nm, sizeof nm, "%scond.model.%d.1.weight", pre, 1 + i);
            if (put(&pi, nm, INIT_UNIFORM, 1.0 / sqrt(co * 2.0 * s), 3, cw, co, 2 * s)) goto done;
            snprintf(nm, sizeof nm, "%scond.model.%d.1.bias", pre, 1 + i);
            if (put(&pi, nm, INIT_UNIFORM, 1.0 / sqrt(co * 2.0 * s), 1, co, 0, 0)) goto done;
        }
        snprintf(nm, sizeof nm, "%sln.weight", pre);
        if (put(&pi, nm, INIT_ONES, 0, 1, W, 0, 0)) goto done;
        snprintf(nm, sizeof nm, "%sln.bias", pre);
        if (put(&pi, nm, INIT_ZEROS, 0, 1, W, 0, 0)) goto done;
    }
    if (hp.labels) {
        if (put(&pi, "y_emb.bow_genre_emb.emb.weight", INIT_NORMAL, 0.02, 2, hp.y_bins[0], W, 0) ||
            put(&pi, "y_emb.artist_emb.emb.weight", INIT_NORMAL, 0.02, 2, hp.y_bins[1], W, 0))
            goto done;
        if (top) {   // include_time_signal = not x_cond
            if (put(&pi, "y_emb.total_length_emb.emb.weight", INIT_NORMAL, 0.01, 2, hp.t_bins, W, 0) ||
                put(&pi, "y_emb.absolute_pos_emb.emb.weight", INIT_NORMAL, 0.01, 2, hp.t_bins, W, 0) ||
                put(&pi, "y_emb.relative_pos_emb.emb.weight", INIT_NORMAL, 0.01, 2, hp.t_bins, W, 0))
                goto done;
        }
    }
    if (enc) {   // the lyrics encoder: prime_prior (only_encode), its projection and LayerNorm
        int pw = hp.prime_width, P = hp.n_tokens, V = hp.n_vocab;
        double ps = 0.02 * prime_init_scale;
        if (put(&pi, "prime_prior.start_token", INIT_NORMAL, ps, 2, 1, pw, 0) ||
            put(&pi, "prime_prior.x_emb.weight", INIT_NORMAL, ps, 2, V, pw, 0) ||
            put(&pi, "prime_prior.pos_emb.pos_emb", INIT_NORMAL, 0.01 * prime_init_scale, 2, P,
                pw, 0) ||
            put_transformer(&pi, "prime_prior.transformer.", pw, hp.prime_depth,
                            hp.prime_m_attn, hp.prime_m_mlp, hp.prime_attn_order, ps) ||
            put(&pi, "prime_state_proj.w", INIT_NORMAL, ps, 2, pw, W, 0) ||
            put(&pi, "prime_state_proj.b", INIT_ZEROS, 0, 1, W, 0, 0) ||
            put(&pi, "prime_state_ln.weight", INIT_ONES, 0, 1, W, 0, 0) ||
            put(&pi, "prime_state_ln.bias", INIT_ZEROS, 0, 1, W, 0, 0) ||
            put(&pi, "prime_x_out.weight", INIT_NORMAL, 0.02 * init_scale, 2, V, W, 0))
            goto done;
    }
    int xe_idx = pi.n;
    if (put(&pi, "prior.x_emb.weight", INIT_NORMAL, 0.02 * init_scale, 2, B, W, 0)) goto done;
    if (!hp.labels && put(&pi, "prior.start_token", INIT_NORMAL, 0.02 * init_scale, 2, 1, W, 0))
        goto done;
    if (put(&pi, "prior.pos_emb.pos_emb", INIT_NORMAL, 0.01 * init_scale, 2, S, W, 0))
        goto done;
    if (put_transformer(&pi, "prior.transformer.", W, hp.depth, hp.m_attn, hp.m_mlp,
                        hp.attn_order, 0.02 * init_scale))
        goto done;
    if (hp.merged_decoder) {
        if (put(&pi, "prior.x_out.weight", INIT_NORMAL, 0.02 * init_scale, 2, B, W, 0)) goto done;
    } else {   // tied: the file keeps a copy of x_emb under the x_out name, as released files
        int64_t shp[2] = {B, W};
        float *xe = pi.bufs[xe_idx];
        if (jb_st_writer_add(pi.w, "prior.x_out.weight", JB_F32, 2, shp, xe, err)) goto done;
    }
    rc = jb_st_writer_write(pi.w, path, NULL, NULL, err);
done:
    jb_st_writer_destroy(&pi.w);
    for (int i = 0; i < pi.n; i++) free(pi.bufs[i]);
    free(pi.bufs);
    free(hs);
    return rc;
}

// ---- metrics CSV ---------------------------------------------------------------------------

struct jb_trainer_csv {
    FILE *f;
    int n;
    char *path;
};

jb_trainer_csv_t *jb_trainer_csv_open(const char *path, const char *const *names, int n,
                                      int64_t resume_step, jb_err_t *err) {
    char *keep = NULL;
    size_t keep_n = 0;
    if (resume_step >= 0) {   // the rows up to resume_step of the earlier run
        FILE *f = fopen(path, "r");
        if (f) {
            FILE *m = open_memstream(&keep, &keep_n);
            char *line = NULL;
            size_t cap = 0;
            int first = 1;
            while (m && getline(&line, &cap, f) >= 0) {
                if (first) {
                    first = 0;
                    continue;   // header: written anew below
                }
                if (strtoll(line, NULL, 10) <= resume_step) fputs(line, m);
            }
            free(line);
            fclose(f);
            if (m) fclose(m);
        }
    }
    jb_trainer_csv_t *c = calloc(1, sizeof *c);
    FILE *f = c ? fopen(path, "w") : NULL;
    if (!f) {
        jb_err_set(err, c ? JB_EIO : JB_ENOMEM, "%s: %s", path, c ? strerror(errno) : "no memory");
        free(c), free(keep);
        return NULL;
    }
    c->f = f, c->n = n, c->path = strdup(path);
    fputs("step", f);
    for (int i = 0; i < n; i++) fprintf(f, ",%s", names[i]);
    fputc('\n', f);
    if (keep) fwrite(keep, 1, keep_n, f);
    free(keep);
    if (fflush(f)) {
        jb_err_set(err, JB_EIO, "%s: %s", path, strerror(errno));
        jb_trainer_csv_close(&c);
        return NULL;
    }
    return c;
}

int jb_trainer_csv_row(jb_trainer_csv_t *c, int64_t step, const double *values, jb_err_t *err) {
    fprintf(c->f, "%lld", (long long)step);
    for (int i = 0; i < c->n; i++) fprintf(c->f, ",%.9g", values[i]);
    fputc('\n', c->f);
    if (fflush(c->f) || ferror(c->f))
        return jb_err_set(err, JB_EIO, "%s: write failed: %s", c->path ? c->path : "metrics",
                          strerror(errno));
    return 0;
}

void jb_trainer_csv_close(jb_trainer_csv_t **c_p) {
    if (!c_p || !*c_p) return;
    if ((*c_p)->f) fclose((*c_p)->f);
    free((*c_p)->path);
    free(*c_p);
    *c_p = NULL;
}

// ---- plot ----------------------------------------------------------------------------------

#define PLOT_W 640
#define PANEL_H 120
#define PAD 8

static void px(uint8_t *img, int w, int h, int x, int y, uint8_t v) {
    if (x >= 0 && x < w && y >= 0 && y < h) img[(size_t)y * w + x] = v;
}

static void line(uint8_t *img, int w, int h, int x0, int y0, int x1, int y1) {
    int dx = abs(x1 - x0), sx = x0 < x1 ? 1 : -1, dy = -abs(y1 - y0), sy = y0 < y1 ? 1 : -1;
    int e = dx + dy;
    for (;;) {
        px(img, w, h, x0, y0, 0);
        if (x0 == x1 && y0 == y1) break;
        int e2 = 2 * e;
        if (e2 >= dy) e += dy, x0 += sx;
        if (e2 <= dx) e += dx, y0 += sy;
    }
}

int jb_trainer_plot(const char *csv_path, const char *png_path, const char *const *which,
                    int n_which, jb_err_t *err) {
    FILE *f = fopen(csv_path, "r");
    if (!f) return jb_err_set(err, JB_ENOENT, "%s: %s", csv_path, strerror(errno));
    char *ln = NULL;
    size_t cap = 0;
    int cols = 0, rows = 0, caprows = 0, rc = -1;
    double *v = NULL;   // (rows, cols) with column 0 the step
    uint8_t *img = NULL;
    if (getline(&ln, &cap, f) < 0) {
        rc = jb_err_set(err, JB_EFORMAT, "%s: empty", csv_path);
        goto done;
    }
    cols = 1;
    for (char *p = ln; *p; p++) cols += *p == ',';
    int pick[8], panels = 0;   // CSV columns to draw
    if (which) {
        for (int k = 0; k < n_which && panels < 8; k++) {
            size_t L = strlen(which[k]);
            int c = 0;
            for (char *p = ln; *p; c++) {
                size_t w = strcspn(p, ",\r\n");
                if (c > 0 && w == L && !strncmp(p, which[k], L)) pick[panels++] = c;
                p += w;
                if (*p != ',') break;
                p++;
            }
        }
    } else {
        for (int c = 1; c < cols && panels < 8; c++) pick[panels++] = c;
    }
    while (getline(&ln, &cap, f) >= 0) {
        if (rows == caprows) {
            caprows = caprows ? 2 * caprows : 256;
            double *nv = realloc(v, sizeof *v * (size_t)caprows * cols);
            if (!nv) {
                rc = jb_err_set(err, JB_ENOMEM, "out of memory");
                goto done;
            }
            v = nv;
        }
        char *p = ln;
        for (int c = 0; c < cols; c++) {
            v[(size_t)rows * cols + c] = strtod(p, &p);
            if (*p == ',') p++;
        }
        rows++;
    }
    if (panels < 1 || rows < 1) {
        rc = jb_err_set(err, JB_EFORMAT, "%s: no data rows", csv_path);
        goto done;
    }
    int w = PLOT_W, h = panels * PANEL_H;
    img = malloc((size_t)w * h);
    if (!img) {
        rc = jb_err_set(err, JB_ENOMEM, "out of memory");
        goto done;
    }
    memset(img, 255, (size_t)w * h);
    double s0 = v[0], s1 = v[(size_t)(rows - 1) * cols];
    if (s1 <= s0) s1 = s0 + 1;
    for (int p = 0; p < panels; p++) {
        int c = pick[p], top = p * PANEL_H + PAD, bot = (p + 1) * PANEL_H - PAD;
        int left = PAD, right = w - PAD;
        double lo = INFINITY, hi = -INFINITY;
        for (int r = 0; r < rows; r++) {
            double y = v[(size_t)r * cols + c];
            if (isfinite(y)) lo = y < lo ? y : lo, hi = y > hi ? y : hi;
        }
        if (!isfinite(lo)) lo = 0, hi = 1;
        if (hi <= lo) hi = lo + 1e-12 + fabs(lo) * 1e-6;
        for (int x = left; x <= right; x++) px(img, w, h, x, top, 96), px(img, w, h, x, bot, 96);
        for (int y = top; y <= bot; y++) px(img, w, h, left, y, 96), px(img, w, h, right, y, 96);
        for (int q = 1; q < 4; q++) {
            int yq = top + (bot - top) * q / 4, xq = left + (right - left) * q / 4;
            for (int x = left; x <= right; x += 4) px(img, w, h, x, yq, 176);
            for (int y = top; y <= bot; y += 4) px(img, w, h, xq, y, 176);
        }
        int px0 = -1, py0 = -1;
        for (int r = 0; r < rows; r++) {
            double y = v[(size_t)r * cols + c], s = v[(size_t)r * cols];
            if (!isfinite(y)) continue;
            int X = left + (int)lround((s - s0) / (s1 - s0) * (right - left));
            int Y = bot - (int)lround((y - lo) / (hi - lo) * (bot - top));
            if (px0 >= 0) line(img, w, h, px0, py0, X, Y);
            else px(img, w, h, X, Y, 0);
            px0 = X, py0 = Y;
        }
    }
    rc = jb_png_write_gray(png_path, img, w, h, err);
done:
    free(ln);
    free(v);
    free(img);
    fclose(f);
    return rc;
}
