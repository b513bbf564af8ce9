// jb_stage.c: see jb_stage.h and docs/wire.md ("Job stream").
#include "jb_stage.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "jb_codes.h"
#include "jb_job.h"
#include "jb_labels.h"
#include "jb_link.h"
#include "jb_log.h"
#include "jb_prior.h"
#ifdef JB_HAVE_CUDA
#include "jb_prior_cuda.h"
#endif
#include "jb_progress.h"
#include "jb_rng.h"
#include "jb_sample.h"
#include "jb_service.h"
#include "jb_transport.h"

typedef struct job {
    struct job *next;
    jb_job_t spec;
    jb_codes_t codes;        // everything received for this job, every level
    int failed;              // refused or failed: its later messages are dropped
    int prefix_done;         // upstream END(level): the prefix of this level is closed
    int upstream_done;       // upstream END(-1), held back until this level is done
    int started, level_done;
    // this stage's level
    int total;               // codes of this level the job wants
    int64_t total_above;     // codes of the level above it will have (upsamplers)
    int32_t *zs;             // (n_samples, total)
    int have;
    jb_sample_window_t *windows;
    int n_windows, next_window;
    int32_t *y;              // (n_samples, label_len) base labels, or NULL
    int32_t *full_tokens;    // lyric tokens of the song (one list for every sample)
    int n_full;
    jb_sample_lyrics_t *lyrics;   // (n_samples) all pointing at full_tokens
    char *labels_json;       // END(level) text: what this stage used
    jb_progress_t progress;
} job_t;

typedef struct {
    const jb_stage_opts_t *o;
    jb_prior_t *prior;
    const jb_prior_info_t *info;
    const jb_prior_hparams_t *hp;
    jb_st_t *st;                      // the model file again, for its vocabularies
    jb_labels_vocab_t *artists, *genres;
    jb_prior_sampler_t *sampler;
#ifdef JB_HAVE_CUDA
    jb_prior_cuda_t *dsampler;        // --device cuda: the sampler's windows run here
#endif
    jb_endpoint_t *in, *out;
    job_t *jobs;
    int levels;                       // VQ-VAE levels (3)
    // Ids of the last jobs refused or failed here: their later messages (codes,
    // alignment) are dropped, not passed on after the ERROR record.
    char failed_ids[32][JB_WIRE_JOB_ID_MAX + 1];
    int n_failed;
    // Reliable link (NULL for streams) and the status the links' I/O threads report.
    jb_link_t *in_link, *out_link, *control;
    pthread_mutex_t status_mu;
    char *status;                     // JSON object text: stage, jobs, tokens/s, last error
    char last_error[512];
    double last_error_t;
    double rate_t[64];                // (time, tokens emitted so far) after each window
    int64_t rate_tok[64], tokens;
    int n_rate;
} stage_t;

// ---- status (read by the links' I/O threads) ---------------------------------------

static void update_status(stage_t *s) {
    json_t *o = json_object();
    if (!o) return;
    double now = jb_now();
    json_object_set_new(o, "stage", json_string(s->o->stage));
    json_object_set_new(o, "level", json_integer(s->info ? s->info->level : s->o->level));
    json_object_set_new(o, "pid", json_integer(getpid()));
    json_t *jobs = json_array();
    for (job_t *j = s->jobs; j; j = j->next)
        json_array_append_new(jobs, json_pack("{s:s,s:i,s:i,s:i,s:i,s:b}", "id", j->spec.id,
                                              "window", j->next_window, "windows", j->n_windows,
                                              "tokens", j->have, "total", j->total, "started",
                                              j->started));
    json_object_set_new(o, "jobs_in_flight", jobs);
    // Tokens per second over the last minute (windows finished in it).
    double tps = 0;
    int n = s->n_rate < 64 ? s->n_rate : 64;
    if (n > 0) {
        int last = (s->n_rate - 1) % 64, first = last;
        for (int k = 1; k < n; k++) {
            int i = (s->n_rate - 1 - k) % 64;
            if (now - s->rate_t[i] > 60) break;
            first = i;
        }
        double dt = now - s->rate_t[first];
        if (first != last && dt > 0) tps = (double)(s->rate_tok[last] - s->rate_tok[first]) / dt;
        if (now - s->rate_t[last] > 60) tps = 0;
    }
    json_object_set_new(o, "tokens_per_s", json_real(tps));
    json_object_set_new(o, "tokens_total", json_integer(s->tokens));
    if (s->last_error[0])
        json_object_set_new(o, "last_error", json_pack("{s:s,s:f}", "text", s->last_error,
                                                       "ago_s", now - s->last_error_t));
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    pthread_mutex_lock(&s->status_mu);
    free(s->status);
    s->status = text;
    pthread_mutex_unlock(&s->status_mu);
}

static char *stage_status(void *user) {
    stage_t *s = user;
    pthread_mutex_lock(&s->status_mu);
    char *t = s->status ? strdup(s->status) : NULL;
    pthread_mutex_unlock(&s->status_mu);
    return t;
}

// --control: the stage's status plus both links'.
static char *control_status(void *user) {
    stage_t *s = user;
    char *base = stage_status(s);
    json_t *o = base ? json_loads(base, 0, NULL) : json_object();
    free(base);
    if (!o) return NULL;
    jb_link_t *links[2] = {s->in_link, s->out_link};
    const char *names[2] = {"in", "out"};
    for (int i = 0; i < 2; i++) {
        if (!links[i]) continue;
        char *t = jb_link_status_json(links[i]);
        json_t *lj = t ? json_loads(t, 0, NULL) : NULL;
        free(t);
        if (lj) {
            json_object_del(lj, "jobs_in_flight");   // the stage's own keys, already above
            json_object_del(lj, "stage");
            json_object_set_new(o, names[i], lj);
        }
    }
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return text;
}

// The output link's consumer reported a job DONE: so is it here (DONE flows upstream).
static void stage_on_done(void *user, const char *job_id) {
    stage_t *s = user;
    if (s->in_link) jb_link_done(s->in_link, job_id);
}

static void note_error(stage_t *s, const char *text) {
    snprintf(s->last_error, sizeof s->last_error, "%s", text);
    s->last_error_t = jb_now();
}

static job_t *find_job(stage_t *s, const char *id) {
    for (job_t *j = s->jobs; j; j = j->next)
        if (!strcmp(j->spec.id, id)) return j;
    return NULL;
}

static void job_free(job_t *j) {
    if (!j) return;
    jb_job_free(&j->spec);
    jb_codes_free(&j->codes);
    free(j->zs);
    free(j->windows);
    free(j->y);
    free(j->full_tokens);
    free(j->lyrics);
    free(j->labels_json);
    free(j);
}

static void drop_job(stage_t *s, job_t *j) {
    for (job_t **p = &s->jobs; *p; p = &(*p)->next)
        if (*p == j) {
            *p = j->next;
            job_free(j);
            return;
        }
}

static int send_msg(stage_t *s, const jb_msg_t *m, jb_err_t *err) {
    if (jb_endpoint_send(s->out, m, err) != 0)
        return jb_err_prefix(err, "%s: sending %s of job %s", s->o->stage,
                             jb_msg_type_name(m->type), m->job_id);
    return 0;
}

// Refuse or abandon a job: an ERROR record downstream, then forget it.
static int fail_job(stage_t *s, job_t *j, const jb_err_t *why, jb_err_t *err) {
    jb_log(JB_ERROR, "job=%s level=%d refused: %s", j->spec.id, s->info->level, why->msg);
    note_error(s, why->msg);
    jb_msg_t m;
    jb_msg_init(&m);
    m.type = JB_MSG_ERROR;
    m.level = s->info->level;
    m.code = jb_err_exit_code(why->code ? why->code : JB_EINTERNAL);
    int rc = jb_msg_set_job_id(&m, j->spec.id, err) || jb_msg_set_text(&m, why->msg, err) ||
             send_msg(s, &m, err);
    jb_msg_clear(&m);
    j->failed = 1;
    snprintf(s->failed_ids[s->n_failed++ % 32], sizeof s->failed_ids[0], "%s", j->spec.id);
    if (!rc && s->in_link && !s->out_link) jb_link_done(s->in_link, j->spec.id);
    return rc ? -1 : 0;
}

// ---- a new job: validate, labels ------------------------------------------------

static int build_labels(stage_t *s, job_t *j, jb_err_t *err) {
    const jb_prior_info_t *in = s->info;
    const int level = in->level, n = j->spec.n_samples;
    json_t *used = json_object();
    if (!used) return jb_err_set(err, JB_ENOMEM, "out of memory");
    if (in->label_len > 0) {
        jb_labeller_t lb = {
            .version = s->hp->labels_v3 ? JB_TEXT_V3 : JB_TEXT_V2,
            .max_genre_words = s->hp->max_bow_genre_size,
            .n_tokens = in->n_tokens,
            .sample_length = in->sample_length,
            .artists = s->artists,
            .genres = s->genres,
        };
        int L = in->label_len;
        int64_t *y64 = malloc(sizeof(int64_t) * (size_t)L);
        j->y = malloc(sizeof(int32_t) * (size_t)n * L);
        if (!y64 || !j->y) {
            free(y64);
            json_decref(used);
            return jb_err_set(err, JB_ENOMEM, "job %s: out of memory", j->spec.id);
        }
        char what[96];
        snprintf(what, sizeof what, "job %s level %d", j->spec.id, level);
        int64_t total_length = jb_job_total_length(&j->spec, s->hp->sr);
        // Without a vocabulary in the model file names cannot be looked up: the
        // job must give ids (or gets 0, "unknown", as the reference does).
        jb_labels_vocab_t *empty = NULL;
        if (!s->artists || !s->genres) {
            empty = jb_labels_vocab_from_json("{}", "empty vocabulary", err);
            if (!empty) {
                free(y64);
                json_decref(used);
                return -1;
            }
            if (!lb.artists) lb.artists = empty;
            if (!lb.genres) lb.genres = empty;
        }
        int rc = jb_labeller_get_label(&lb, j->spec.artist, j->spec.genre,
                                       j->spec.lyrics ? j->spec.lyrics : "", total_length, 0,
                                       what, y64, &j->full_tokens, &j->n_full, err);
        jb_labels_vocab_destroy(&empty);
        if (rc) {
            free(y64);
            json_decref(used);
            return jb_err_prefix(err, "job %s level %d", j->spec.id, level);
        }
        // Explicit ids for this level win over names.
        if (j->spec.artist_id[level] >= 0) y64[3] = j->spec.artist_id[level];
        if (j->spec.n_genre_ids[level] > 0)
            for (int g = 0; g < lb.max_genre_words; g++)
                y64[4 + g] = g < j->spec.n_genre_ids[level] ? j->spec.genre_ids[level][g] : -1;
        for (int i = 0; i < L; i++) {
            if (y64[i] < INT32_MIN || y64[i] > INT32_MAX) {
                long long v = (long long)y64[i];
                free(y64);
                json_decref(used);
                return jb_err_set(err, JB_EINVAL, "job %s level %d: label %d = %lld out of range",
                                  j->spec.id, level, i, v);
            }
            for (int k = 0; k < n; k++) j->y[(int64_t)k * L + i] = (int32_t)y64[i];
        }
        json_object_set_new(used, "artist_id", json_integer(y64[3]));
        json_t *g = json_array();
        for (int k = 0; k < lb.max_genre_words; k++)
            if (y64[4 + k] >= 0) json_array_append_new(g, json_integer(y64[4 + k]));
        json_object_set_new(used, "genre_ids", g);
        free(y64);
        if (in->n_tokens > 0) {
            j->lyrics = malloc(sizeof *j->lyrics * (size_t)n);
            if (!j->lyrics) {
                json_decref(used);
                return jb_err_set(err, JB_ENOMEM, "job %s: out of memory", j->spec.id);
            }
            for (int k = 0; k < n; k++) {
                j->lyrics[k].tokens = j->full_tokens;
                j->lyrics[k].n = j->n_full;
            }
            char *clean = jb_text_textise(lb.version, j->full_tokens, j->n_full, err);
            if (!clean) {
                json_decref(used);
                return -1;
            }
            // What cleaning dropped (the reference drops it silently): characters
            // outside the vocabulary after transliteration to ASCII.
            const char *raw = j->spec.lyrics ? j->spec.lyrics : "";
            char *ascii = jb_text_unidecode(raw, strlen(raw), NULL, NULL, err);
            if (!ascii) {
                free(clean);
                json_decref(used);
                return -1;
            }
            char dropped[128] = "";
            size_t nd = 0, n_dropped = 0;
            for (const unsigned char *c = (const unsigned char *)ascii; *c; c++) {
                if (*c == '\\' || jb_text_token(lb.version, *c) != 0) continue;
                n_dropped++;
                if (!memchr(dropped, *c, nd) && nd + 1 < sizeof dropped) dropped[nd++] = (char)*c;
            }
            dropped[nd] = '\0';
            free(ascii);
            if (n_dropped) {
                jb_log(JB_WARN, "job=%s level=%d lyrics: %zu character(s) outside the model's "
                       "vocabulary dropped: \"%s\"", j->spec.id, level, n_dropped, dropped);
                json_object_set_new(used, "lyrics_dropped", json_string(dropped));
            }
            json_object_set_new(used, "lyrics", json_string(clean));
            json_object_set_new(used, "lyric_tokens", json_integer(j->n_full));
            free(clean);
        }
    }
    json_object_set_new(used, "level", json_integer(level));
    j->labels_json = json_dumps(used, JSON_COMPACT);
    json_decref(used);
    return j->labels_json ? 0 : jb_err_set(err, JB_ENOMEM, "out of memory");
}

static int on_job(stage_t *s, jb_msg_t *m, jb_err_t *err) {
    if (find_job(s, m->job_id)) {
        jb_log(JB_WARN, "job=%s: a second JOB message for a job in progress; dropped", m->job_id);
        return 0;
    }
    if (send_msg(s, m, err)) return -1;
    job_t *j = calloc(1, sizeof *j);
    if (!j) return jb_err_set(err, JB_ENOMEM, "out of memory");
    jb_job_defaults(&j->spec);
    snprintf(j->spec.id, sizeof j->spec.id, "%s", m->job_id);
    j->next = s->jobs;
    s->jobs = j;
    jb_err_t why = {0};
    json_error_t jerr;
    json_t *spec = m->spec ? json_loads(m->spec, 0, &jerr) : NULL;
    int ok = spec && jb_job_from_json(spec, &j->spec, &why) == 0;
    json_decref(spec);
    if (spec && ok && strcmp(j->spec.id, m->job_id) != 0) {
        jb_err_set(&why, JB_EFORMAT, "spec id '%s' differs from the message's", j->spec.id);
        snprintf(j->spec.id, sizeof j->spec.id, "%s", m->job_id);
        ok = 0;
    }
    if (!m->spec) jb_err_set(&why, JB_EFORMAT, "job message without a spec");
    else if (!spec) jb_err_set(&why, JB_EFORMAT, "spec: %s", jerr.text);
    ok = ok && jb_job_validate(&j->spec, &why) == 0 &&
         jb_job_validate_for_prior(&j->spec, s->hp, &why) == 0;
    ok = ok && jb_codes_init(&j->codes, j->spec.id, s->levels, j->spec.n_samples,
                             s->info->bins, &why) == 0;
    ok = ok && build_labels(s, j, &why) == 0;
    if (!ok) return fail_job(s, j, &why, err);
    jb_log(JB_INFO, "job=%s level=%d accepted: mode=%s samples=%d seconds=%g", j->spec.id,
           s->info->level, jb_job_mode_name(j->spec.mode), j->spec.n_samples,
           j->spec.sample_seconds);
    return 0;
}

// ---- this stage's level ----------------------------------------------------------

// Sends codes [from, from + count) of this stage's level, every sample, as one CODES message.
static int send_codes(stage_t *s, job_t *j, int from, int64_t count, jb_err_t *err) {
    const int n = j->spec.n_samples;
    int32_t *rows = malloc(sizeof(int32_t) * (size_t)(count * n));
    if (!rows) return jb_err_set(err, JB_ENOMEM, "job %s: out of memory", j->spec.id);
    for (int k = 0; k < n; k++)
        memcpy(rows + (int64_t)k * count, j->zs + (int64_t)k * j->total + from,
               sizeof(int32_t) * (size_t)count);
    jb_msg_t m;
    jb_msg_init(&m);
    m.type = JB_MSG_CODES;
    m.level = s->info->level;
    m.offset = from;
    m.codebook = s->info->bins;
    m.codes = rows;   // owned by m from here
    m.batch = n;
    m.count = count;
    int rc = jb_msg_set_job_id(&m, j->spec.id, err) || send_msg(s, &m, err);
    jb_msg_clear(&m);
    return rc ? -1 : 0;
}

static int start_level(stage_t *s, job_t *j, jb_err_t *err) {
    const jb_prior_info_t *in = s->info;
    const int level = in->level, n = j->spec.n_samples;
    const jb_vqvae_hparams_t *vq = &s->hp->vqvae;
    int64_t sample_length = jb_job_sample_length(&j->spec, s->hp->sr,
                                                 vq->hop_lengths[vq->levels - 1]);
    j->total = (int)(sample_length / vq->hop_lengths[level]);
    if (level + 1 < vq->levels) j->total_above = sample_length / vq->hop_lengths[level + 1];
    j->have = (int)jb_codes_len(&j->codes, level);
    if (j->have > j->total)
        return jb_err_set(err, JB_EINVAL,
                          "job %s level %d: %d codes given to continue from, the job wants %d "
                          "(is the sample length shorter than the codes?)",
                          j->spec.id, level, j->have, j->total);
    j->zs = malloc(sizeof(int32_t) * (size_t)n * (size_t)(j->total > 0 ? j->total : 1));
    if (!j->zs) return jb_err_set(err, JB_ENOMEM, "job %s: out of memory", j->spec.id);
    for (int k = 0; k < n && j->have > 0; k++)
        memcpy(j->zs + (int64_t)k * j->total, jb_codes_row(&j->codes, level, k),
               sizeof(int32_t) * (size_t)j->have);
    if (j->have > 0 && send_codes(s, j, 0, j->have, err)) {   // the prefix goes on first
        err->code = JB_EIO;   // the output is gone: not the job's fault
        return -1;
    }
    int hop = (int)(j->spec.hop_fraction[level] * in->n_ctx);
    if (j->have < j->total &&
        jb_sample_plan(in, j->total, j->have, hop, &j->windows, &j->n_windows, err))
        return jb_err_prefix(err, "job %s", j->spec.id);
    j->started = 1;
    char what[128];
    snprintf(what, sizeof what, "job=%s level=%d", j->spec.id, level);
    jb_progress_start(&j->progress, what, j->total, "tokens");
    j->progress.done = j->have;
    return 0;
}

// Ready when the next window's conditioning has arrived.
static int window_ready(stage_t *s, job_t *j) {
    if (j->failed || j->level_done || !j->prefix_done || j->next_window >= j->n_windows)
        return 0;
    int64_t need = jb_sample_window_needs(s->info, j->windows[j->next_window]);
    if (need > j->total_above) need = j->total_above;
    int lvl = s->info->level + 1;
    return need <= 0 || jb_codes_len(&j->codes, lvl) >= need || j->codes.complete[lvl];
}

// The lyric alignment of the song (align.py), sent as ALIGN before END(level).
static int send_alignment(stage_t *s, job_t *j, jb_err_t *err) {
    const jb_prior_info_t *in = s->info;
    const int n = j->spec.n_samples, cols = j->n_full, G = JB_STAGE_ALIGN_TOKENS;
    if (!j->lyrics || cols < 1 || j->total < in->n_ctx) return 0;   // nothing to align
    const int64_t rows = (j->total + G - 1) / G;
    float **full = calloc((size_t)n, sizeof *full);
    int32_t *q = malloc(sizeof(int32_t) * (size_t)(n * rows * cols));
    char *lyrics = NULL;
    int rc = -1;
    if (!full || !q) {
        jb_err_set(err, JB_ENOMEM, "job %s: out of memory for the alignment", j->spec.id);
        goto done;
    }
    for (int k = 0; k < n; k++)
        if (!(full[k] = calloc((size_t)j->total * cols, sizeof(float)))) {
            jb_err_set(err, JB_ENOMEM, "job %s: out of memory for the alignment", j->spec.id);
            goto done;
        }
    int hop = (int)(j->spec.hop_fraction[in->level] * in->n_ctx);
    if (jb_sample_alignment(s->prior, n, j->total, j->zs, j->total, j->y, j->lyrics, hop, full,
                            err)) {
        jb_err_prefix(err, "job %s: alignment", j->spec.id);
        goto done;
    }
    for (int k = 0; k < n; k++)
        for (int64_t r = 0; r < rows; r++) {
            int64_t t0 = r * G, t1 = t0 + G < j->total ? t0 + G : j->total;
            for (int c = 0; c < cols; c++) {
                double acc = 0;
                for (int64_t t = t0; t < t1; t++) acc += full[k][t * cols + c];
                double w = acc / (double)(t1 - t0);
                w = w < 0 ? 0 : w > 1 ? 1 : w;
                q[((int64_t)k * rows + r) * cols + c] = (int32_t)(w * JB_WIRE_ALIGN_ONE + 0.5);
            }
        }
    lyrics = jb_text_textise(s->hp->labels_v3 ? JB_TEXT_V3 : JB_TEXT_V2, j->full_tokens,
                             j->n_full, err);
    if (!lyrics) goto done;
    jb_msg_t m;
    jb_msg_init(&m);
    m.type = JB_MSG_ALIGN;
    m.level = in->level;
    rc = jb_msg_set_job_id(&m, j->spec.id, err) || jb_msg_set_align(&m, q, n, rows, cols, err) ||
         jb_msg_set_text(&m, lyrics, err) || send_msg(s, &m, err);
    jb_msg_clear(&m);
    rc = rc ? -1 : 0;
done:
    for (int k = 0; full && k < n; k++) free(full[k]);
    free(full);
    free(q);
    free(lyrics);
    return rc;
}

static int finish_level(stage_t *s, job_t *j, jb_err_t *err) {
    jb_msg_t m;
    jb_msg_init(&m);
    if (s->info->lyrics != JB_PRIOR_NO_LYRICS && s->hp->alignment_layer >= 0 &&
        send_alignment(s, j, err))
        return -1;
    m.type = JB_MSG_END;
    m.level = s->info->level;
    m.offset = j->total;
    int rc = jb_msg_set_job_id(&m, j->spec.id, err) ||
             (j->labels_json && jb_msg_set_text(&m, j->labels_json, err)) || send_msg(s, &m, err);
    jb_msg_clear(&m);
    if (rc) return -1;
    j->level_done = 1;
    jb_progress_finish(&j->progress);
    return 0;
}

// After every sampled position: the progress line and the service watchdog (a
// window of the real upsamplers takes minutes on a CPU).
static void on_step(void *user, int64_t pos) {
    job_t *j = user;
    jb_progress_update(&j->progress, pos + 1);
    jb_service_watchdog();
}

static int run_window(stage_t *s, job_t *j, jb_err_t *err) {
    const jb_prior_info_t *in = s->info;
    const int level = in->level, n = j->spec.n_samples;
    jb_sample_opts_t o = {0};
    o.sampling = jb_sampling_default_params();
    o.sampling.temp = (float)j->spec.temp[level];
    o.sampling.top_k = j->spec.top_k[level];
    o.sampling.top_p = (float)j->spec.top_p[level];
    o.sampling.greedy = j->spec.top_k[level] == 1;
    o.chunk_size = j->spec.chunk_size[level];
    o.max_batch_size = j->spec.max_batch_size[level] < s->o->max_batch ? j->spec.max_batch_size[level]
                                                                         : s->o->max_batch;
    o.hop_length = (int)(j->spec.hop_fraction[level] * in->n_ctx);
    o.seed = j->spec.seed;
    o.job_hash = jb_rng_hash_job(j->spec.id);
    o.on_step = on_step;
    o.on_step_user = j;
    int before = j->have;
    const int32_t *above = NULL;
    int above_stride = 0;
    if (in->x_cond) {
        above = jb_codes_row(&j->codes, level + 1, 0);
        above_stride = (int)jb_codes_stride(&j->codes, level + 1);
    }
    if (jb_sample_window(s->sampler, &o, n, j->windows[j->next_window], j->zs, j->total, &j->have,
                         above, above_stride, j->y, j->lyrics, err))
        return jb_err_prefix(err, "job %s", j->spec.id);
    j->next_window++;
    if (j->have > before && send_codes(s, j, before, j->have - before, err))   // the new codes
        return -1;
    s->tokens += (int64_t)(j->have - before) * n;
    s->rate_t[s->n_rate % 64] = jb_now();
    s->rate_tok[s->n_rate % 64] = s->tokens;
    s->n_rate++;
    jb_progress_update(&j->progress, j->have);
    return 0;
}

// Moves a job on as far as it can without input: start, one window, finish.
// Returns 1 when it did work, 0 when it waits, -1 on a fatal error.
static int advance(stage_t *s, job_t *j, jb_err_t *err) {
    if (j->failed) return 0;
    jb_err_t why = {0};
    if (j->prefix_done && !j->started) {
        if (start_level(s, j, &why)) return fail_job(s, j, &why, err) ? -1 : 1;
    }
    if (!j->started) return 0;
    if (!j->level_done && j->next_window >= j->n_windows) {
        if (finish_level(s, j, err)) return -1;
    } else if (window_ready(s, j)) {
        if (run_window(s, j, &why)) {
            if (why.code == JB_ECANCEL) {
                *err = why;
                return -1;
            }
            return fail_job(s, j, &why, err) ? -1 : 1;
        }
        return 1;
    }
    if (j->level_done && j->upstream_done) {
        jb_msg_t m;
        jb_msg_init(&m);
        m.type = JB_MSG_END;
        int rc = jb_msg_set_job_id(&m, j->spec.id, err) || send_msg(s, &m, err);
        jb_msg_clear(&m);
        if (rc) return -1;
        jb_log(JB_INFO, "job=%s level=%d done", j->spec.id, s->info->level);
        // A stream output holds the job now: done here. (A link output reports DONE
        // when its consumer does: stage_on_done.)
        if (s->in_link && !s->out_link) jb_link_done(s->in_link, j->spec.id);
        drop_job(s, j);
        return 1;
    }
    return 0;
}

// ---- messages ------------------------------------------------------------------------

static int failed_before(const stage_t *s, const char *id) {
    int n = s->n_failed < 32 ? s->n_failed : 32;
    for (int i = 0; i < n; i++)
        if (!strcmp(s->failed_ids[i], id)) return 1;
    return 0;
}

static int on_message(stage_t *s, jb_msg_t *m, jb_err_t *err) {
    const int level = s->info->level;
    if (m->type == JB_MSG_CANCEL) {   // the link: this job went elsewhere
        job_t *c = find_job(s, m->job_id);
        jb_log(JB_INFO, "job=%s level=%d cancelled by its producer%s", m->job_id, level,
               c ? "; dropped" : "");
        if (c) drop_job(s, c);
        if (s->out_link) jb_link_cancel(s->out_link, m->job_id);
        return 0;
    }
    if (m->type == JB_MSG_JOB) return on_job(s, m, err);
    job_t *j = m->job_id[0] ? find_job(s, m->job_id) : NULL;
    if (!j && m->job_id[0] && m->type != JB_MSG_ERROR && failed_before(s, m->job_id))
        return 0;   // the job ended here with an ERROR record; drop what follows
    switch (m->type) {
    case JB_MSG_CODES:
    case JB_MSG_END: {
        if (!j) {
            jb_log(JB_WARN, "job=%s: %s for a job this stage does not know; dropped", m->job_id,
                   jb_msg_type_name(m->type));
            return 0;
        }
        if (j->failed) return 0;
        jb_err_t why = {0};
        if (m->type == JB_MSG_END && m->level == level) {   // the prefix of our level is closed
            j->prefix_done = 1;
            return 0;
        }
        if (m->type == JB_MSG_END && m->level < 0) {
            j->upstream_done = 1;
            return 0;
        }
        if (m->type == JB_MSG_CODES && m->level == level && j->prefix_done) {
            jb_err_set(&why, JB_EFORMAT, "codes of level %d after its prefix was closed", level);
            return fail_job(s, j, &why, err);
        }
        if (jb_codes_apply(&j->codes, m, &why)) return fail_job(s, j, &why, err);
        // Forwarded, our own level's prefix too: our windows emit only the tokens
        // they add (offset = first new token), so downstream needs the prefix.
        return send_msg(s, m, err);
    }
    case JB_MSG_ERROR:
        if (j) {
            jb_log(JB_WARN, "job=%s failed upstream: %s", m->job_id, m->text ? m->text : "");
            drop_job(s, j);
        }
        if (send_msg(s, m, err)) return -1;
        if (s->in_link && !s->out_link) jb_link_done(s->in_link, m->job_id);
        return 0;
    default:
        return send_msg(s, m, err);
    }
}

// SIGTERM over a link: take no new work, hand back every job not finished here
// (its producer gives it to another instance at once) and cancel what was sent of it
// downstream; give the messages of finished jobs up to 2 s to be acked.
static void hand_back(stage_t *s) {
    if (!s->in_link && !s->out_link) return;
    if (s->in_link) jb_link_pause(s->in_link);
    int n = 0;
    for (job_t *j = s->jobs; j; j = j->next) {
        if (s->in_link) jb_link_release(s->in_link, j->spec.id);
        if (s->out_link) jb_link_cancel(s->out_link, j->spec.id);
        n++;
    }
    if (n) jb_log(JB_INFO, "handed back %d unfinished job(s)", n);
    jb_err_t e = {0};
    if (s->out_link && jb_link_flush(s->out_link, 2000, 0, &e))
        jb_log(JB_WARN, "%s", e.msg);
}

int jb_stage_prior_run(const jb_stage_opts_t *o, jb_err_t *err) {
    stage_t s = {.o = o, .status_mu = PTHREAD_MUTEX_INITIALIZER};
    jb_msg_t m;
    jb_msg_init(&m);
    int rc = -1, input_open = 1;
    // On the GPU the weights are uploaded as stored: no packed CPU copy is needed.
    jb_weights_opts_t wo = {o->weights, o->cuda ? 0 : o->packed};
    s.prior = jb_prior_new_opts(o->model_path, &wo, err);
    if (!s.prior) goto done;
    s.info = jb_prior_info(s.prior);
    s.hp = jb_prior_hparams(s.prior);
    s.levels = s.hp->vqvae.levels;
    if (o->level >= 0 && s.info->level != o->level) {
        jb_err_set(err, JB_EINVAL, "%s: model is a level-%d prior; this stage runs level %d",
                   o->model_path, s.info->level, o->level);
        goto done;
    }
    if (s.info->labels) {
        s.st = jb_st_open(o->model_path, err);
        if (!s.st) goto done;
        // Models converted from the releases carry their vocabularies; test
        // models may not, and then take ids only.
        if (jb_st_meta(s.st, "artists") &&
            !(s.artists = jb_labels_vocab_from_model(s.st, "artists", err)))
            goto done;
        if (jb_st_meta(s.st, "genres") &&
            !(s.genres = jb_labels_vocab_from_model(s.st, "genres", err)))
            goto done;
    }
    s.sampler = jb_prior_sampler_new(s.prior, o->max_batch > 0 ? o->max_batch : 16,
                                     o->max_chunk > 0 ? o->max_chunk : 64, err);
    if (!s.sampler) goto done;
    if (o->cuda) {
#ifdef JB_HAVE_CUDA
        s.dsampler = jb_prior_cuda_new(s.prior, jb_prior_sampler_max_batch(s.sampler),
                                       o->max_chunk > 0 ? o->max_chunk : 64, 0, err);
        if (!s.dsampler || jb_prior_cuda_attach(s.sampler, s.dsampler, err)) goto done;
        jb_log(JB_INFO, "sampling on the GPU (batch up to %d)",
               jb_prior_cuda_max_batch(s.dsampler));
#else
        jb_err_set(err, JB_EUNAVAIL, "this build has no CUDA support (rebuild with make CUDA=1)");
        goto done;
#endif
    }
    jb_link_opts_t lo;
    jb_link_default_opts(&lo);
    lo.name = o->name;
    lo.stage = o->stage;
    if (o->heartbeat_ms > 0) lo.heartbeat_ms = o->heartbeat_ms;
    if (o->peer_timeout_ms > 0) lo.peer_timeout_ms = o->peer_timeout_ms;
    lo.stop = o->stop;
    lo.status = stage_status;
    lo.status_user = &s;
    update_status(&s);
    jb_endpoint_opts_t eo;
    jb_endpoint_default_opts(&eo);
    eo.link = &lo;
    if (!(s.in = jb_endpoint_open_in(o->in, &eo, err))) goto done;
    s.in_link = jb_endpoint_link(s.in);
    lo.on_done = stage_on_done;
    lo.done_user = &s;
    if (!(s.out = jb_endpoint_open_out(o->out, &eo, err))) goto done;
    s.out_link = jb_endpoint_link(s.out);
    if (o->control) {
        jb_link_opts_t co = lo;
        co.role = JB_LINK_CONTROL;
        co.on_done = NULL;
        co.status = control_status;
        if (!(s.control = jb_link_open(o->control, &co, err))) goto done;
    }
    jb_log(JB_INFO, "level=%d model=%s ready: in=%s out=%s", s.info->level, o->model_path,
           jb_endpoint_address(s.in), jb_endpoint_address(s.out));
    jb_service_ready("weights loaded; waiting for jobs");
    for (;;) {
        jb_service_watchdog();
        if (o->stop && *o->stop) {
            hand_back(&s);
            jb_err_set(err, JB_ECANCEL, "%s: stopped by a signal", o->stage);
            goto done;
        }
        int busy = 0;
        for (job_t *j = s.jobs; j && !busy; j = j->next)
            busy = window_ready(&s, j) || (j->prefix_done && !j->started) ||
                   (j->started && !j->level_done && j->next_window >= j->n_windows) ||
                   (j->level_done && j->upstream_done);
        if (input_open) {
            jb_err_t rerr = {0};
            jb_recv_t r = jb_endpoint_recv(s.in, &m, busy ? 0 : 200, &rerr);
            if (r == JB_RECV_MSG) {
                int mrc = on_message(&s, &m, err);
                jb_msg_clear(&m);
                if (mrc) goto done;
                update_status(&s);
                continue;   // drain input first: forwarding stays prompt
            } else if (r == JB_RECV_EOF) {
                input_open = 0;
            } else if (r == JB_RECV_BAD) {
                jb_log(JB_WARN, "rejected a message: %s", rerr.msg);
            } else if (r == JB_RECV_ERROR) {
                *err = rerr;
                jb_err_prefix(err, "%s: input", o->stage);
                goto done;
            }
        }
        // One step of the oldest job that can move.
        int worked = 0;
        job_t *order[256];
        int n_jobs = 0;
        for (job_t *j = s.jobs; j && n_jobs < 256; j = j->next) order[n_jobs++] = j;
        for (int i = n_jobs - 1; i >= 0 && !worked; i--) {   // list is newest first
            int a = advance(&s, order[i], err);
            if (a < 0) goto done;
            worked = a;
        }
        if (worked) update_status(&s);
        // Failed jobs are forgotten once their ERROR is out.
        for (job_t *j = s.jobs, *next; j; j = next) {
            next = j->next;
            if (j->failed) drop_job(&s, j);
        }
        if (!input_open && !worked) {
            if (s.jobs) {   // upstream ended in the middle of these jobs
                for (job_t *j = s.jobs, *next; j; j = next) {
                    next = j->next;
                    jb_err_t why;
                    jb_err_set(&why, JB_EUNAVAIL, "input ended before the job was complete");
                    if (fail_job(&s, j, &why, err)) goto done;
                    drop_job(&s, j);
                }
                jb_err_set(err, JB_EUNAVAIL, "%s: input ended in the middle of a job", o->stage);
                goto done;
            }
            break;
        }
    }
    rc = 0;
done:
    jb_service_stopping();
    jb_msg_clear(&m);
    if (rc && err->code != JB_ECANCEL && err->msg[0]) note_error(&s, err->msg);
    jb_link_close(&s.control, 0);
    while (s.jobs) drop_job(&s, s.jobs);
    if (rc == 0 && s.out) {
        if (jb_endpoint_close(&s.out, err)) rc = -1;
    }
    jb_endpoint_destroy(&s.out);
    jb_endpoint_destroy(&s.in);
    jb_prior_sampler_destroy(&s.sampler);
#ifdef JB_HAVE_CUDA
    jb_prior_cuda_destroy(&s.dsampler);
#endif
    jb_labels_vocab_destroy(&s.artists);
    jb_labels_vocab_destroy(&s.genres);
    jb_st_close(&s.st);
    jb_prior_destroy(&s.prior);
    free(s.status);
    pthread_mutex_destroy(&s.status_mu);
    return rc;
}
