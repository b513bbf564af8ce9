// jb_codec.c: see jb_codec.h.
#include "jb_codec.h"
#include "jb_threads.h"

#include <cblas.h>
#include <inttypes.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jb_log.h"
#include "jb_safetensors.h"
#include "jb_wire.h"

#ifdef JB_HAVE_CUDA
#include "jb_vqvae_cuda.h"
#endif

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

jb_vqvae_t *jb_codec_load_vqvae(const char *path, int64_t max_window, jb_err_t *err) {
    jb_st_t *st = jb_st_open(path, err);
    if (!st) return NULL;
    const char *kind = jb_st_meta(st, "kind");
    if (kind && strcmp(kind, "vqvae")) {
        jb_err_set(err, JB_EFORMAT, "%s: a '%s' model, not a VQ-VAE (kind \"vqvae\")", path,
                   kind);
        jb_st_close(&st);
        return NULL;
    }
    jb_vqvae_t *vq = jb_vqvae_new(st, max_window, err);
    jb_st_close(&st);   // the model keeps its own copy of the weights
    if (!vq) {
        if (!strstr(err->msg, path)) jb_err_prefix(err, "%s", path);
        return NULL;
    }
    return vq;
}

int jb_codec_attach_device(jb_vqvae_t *vq, int is_cuda, void **handle, jb_err_t *err) {
    *handle = NULL;
    if (!is_cuda) return 0;
#ifdef JB_HAVE_CUDA
    jb_vqvae_cuda_plan_t pl;
    jb_vqvae_cuda_plan(vq, &pl);
    jb_vqvae_cuda_t *d = jb_vqvae_cuda_new(vq, err);
    if (!d || jb_vqvae_cuda_attach(vq, d, err)) {
        jb_vqvae_cuda_destroy(&d);
        return -1;
    }
    jb_log(JB_INFO, "VQ-VAE on the device: %.3f GiB of weights, %.3f GiB of activations "
           "(window %lld samples)", (double)pl.weights / (1 << 30), (double)pl.acts / (1 << 30),
           (long long)jb_vqvae_max_window(vq));
    *handle = d;
    return 0;
#else
    return jb_err_set(err, JB_EUNAVAIL,
                      "this build has no CUDA support (rebuild with make CUDA=1)");
#endif
}

void jb_codec_detach_device(jb_vqvae_t *vq, void **handle) {
    if (!handle || !*handle) return;
#ifdef JB_HAVE_CUDA
    jb_vqvae_cuda_t *d = *handle;
    if (vq) jb_vqvae_cuda_attach(vq, NULL, NULL);
    jb_vqvae_cuda_destroy(&d);
#endif
    *handle = NULL;
}

int64_t jb_codec_min_window(const jb_vqvae_t *vq) {
    const jb_vqvae_hparams_t *hp = jb_vqvae_hparams(vq);
    int64_t m = 0;
    for (int L = 0; L < hp->levels; L++)
        for (int dec = 0; dec < 2; dec++)
            if (jb_vqvae_margin(vq, L, dec) > m) m = jb_vqvae_margin(vq, L, dec);
    return 2 * m + hp->hop_lengths[hp->levels - 1];
}

void jb_codec_set_threads(int n) { jb_threads_set(n); }

int64_t jb_codec_padded_len(int64_t n, int hop) {
    return (n + hop - 1) / hop * hop;
}

int jb_codec_parse_levels(const char *s, int levels, unsigned *mask, jb_err_t *err) {
    unsigned m = 0;
    const char *p = s;
    if (!*p) return jb_err_set(err, JB_EINVAL, "--levels: empty list");
    for (;;) {
        if (*p < '0' || *p > '9')
            return jb_err_set(err, JB_EINVAL, "--levels '%s': expected a level number at '%s'",
                              s, p);
        int v = 0;
        while (*p >= '0' && *p <= '9' && v < 100) v = v * 10 + (*p++ - '0');
        if (v >= levels)
            return jb_err_set(err, JB_EINVAL, "--levels '%s': level %d, the model has levels "
                              "0..%d", s, v, levels - 1);
        if (m & (1u << v))
            return jb_err_set(err, JB_EINVAL, "--levels '%s': level %d given twice", s, v);
        m |= 1u << v;
        if (!*p) break;
        if (*p != ',')
            return jb_err_set(err, JB_EINVAL, "--levels '%s': expected ',' at '%s'", s, p);
        p++;
    }
    *mask = m;
    return 0;
}

static int job_char_ok(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '_' || c == ':' || c == '-';
}

int jb_codec_job_id_ok(const char *s) {
    size_t n = strlen(s);
    if (n < 1 || n > JB_WIRE_JOB_ID_MAX) return 0;
    for (size_t i = 0; i < n; i++)
        if (!job_char_ok(s[i])) return 0;
    return 1;
}

void jb_codec_job_id_from_path(const char *path, char *out, size_t size) {
    if (!size) return;
    if (!strcmp(path, "-")) {
        snprintf(out, size, "stdin");
        return;
    }
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    const char *dot = strrchr(base, '.');
    size_t n = dot && dot != base ? (size_t)(dot - base) : strlen(base);
    if (n > JB_WIRE_JOB_ID_MAX) n = JB_WIRE_JOB_ID_MAX;
    if (n > size - 1) n = size - 1;
    for (size_t i = 0; i < n; i++) {
        out[i] = job_char_ok(base[i]) ? base[i] : '_';
    }
    out[n] = 0;
    if (!n) snprintf(out, size, "audio");
}

// ---------------------------------------------------------------- encoding

int jb_codec_encode_send(jb_vqvae_t *vq, const float *x, int64_t n, const char *job_id,
                         unsigned mask, jb_endpoint_t *out, jb_err_t *err) {
    const jb_vqvae_hparams_t *hp = jb_vqvae_hparams(vq);
    int top_hop = hp->hop_lengths[hp->levels - 1];
    if (n < 1) return jb_err_set(err, JB_EFORMAT, "job %s: no audio", job_id);
    if (!mask) mask = (1u << hp->levels) - 1;
    if (mask >> hp->levels)
        return jb_err_set(err, JB_EINVAL, "job %s: level mask 0x%x for a %d-level model", job_id,
                          mask, hp->levels);
    int64_t T = jb_codec_padded_len(n, top_hop);
    float *xp = malloc((size_t)T * sizeof(float));
    int32_t *codes = malloc((size_t)(T / hp->hop_lengths[0]) * sizeof(int32_t));
    if (!xp || !codes) {
        free(xp);
        free(codes);
        return jb_err_set(err, JB_ENOMEM, "job %s: out of memory for %" PRId64 " samples",
                          job_id, T);
    }
    memcpy(xp, x, (size_t)n * sizeof(float));
    memset(xp + n, 0, (size_t)(T - n) * sizeof(float));   // zeros at the end: see header
    jb_msg_t m;
    jb_msg_init(&m);
    int rc = -1;
    for (int L = hp->levels - 1; L >= 0; L--) {
        if (!(mask & (1u << L))) continue;
        int64_t TL = T / hp->hop_lengths[L];
        double t0 = now_s();
        if (jb_vqvae_encode(vq, xp, 1, T, L, codes, 0, err)) {
            jb_err_prefix(err, "job %s level %d", job_id, L);
            goto done;
        }
        double dt = now_s() - t0;
        jb_log(JB_INFO, "job=%s level=%d codes=%" PRId64 " audio=%.2fs encode=%.2fs (%.3f s/s)",
               job_id, L, TL, (double)n / hp->sr, dt, dt * hp->sr / (double)n);
        jb_msg_init(&m);
        m.type = JB_MSG_CODES;
        if (jb_msg_set_job_id(&m, job_id, err)) goto done;
        m.level = L;
        m.offset = 0;
        m.batch = 1;
        m.count = TL;
        m.codebook = hp->l_bins;
        m.sample_rate = hp->sr;
        m.audio_len = n;
        m.codes = codes;   // borrowed: taken back below before any clear
        int s = jb_endpoint_send(out, &m, err);
        m.codes = NULL;
        if (s) goto done;
        m.type = JB_MSG_END;
        m.offset = TL;
        m.batch = m.count = m.codebook = -1;
        if (jb_endpoint_send(out, &m, err)) goto done;
    }
    jb_msg_init(&m);
    m.type = JB_MSG_END;
    if (jb_msg_set_job_id(&m, job_id, err)) goto done;
    if (jb_endpoint_send(out, &m, err)) goto done;
    rc = 0;
done:
    jb_msg_clear(&m);
    free(xp);
    free(codes);
    return rc;
}

int jb_codec_encode_file(jb_vqvae_t *vq, const char *path, const char *job_id, unsigned mask,
                         jb_endpoint_t *out, jb_err_t *err) {
    char id[JB_WIRE_JOB_ID_MAX + 1];
    if (!job_id) {
        jb_codec_job_id_from_path(path, id, sizeof id);
        job_id = id;
    }
    const jb_vqvae_hparams_t *hp = jb_vqvae_hparams(vq);
    float *x = NULL;
    int64_t n = 0;
    jb_audio_info_t info;
    double t0 = now_s();
    if (jb_audio_read(path, hp->sr, &x, &n, &info, err)) return -1;
    jb_log(JB_INFO, "job=%s read %s: %s, %d ch, %d Hz, %" PRId64 " frames -> %" PRId64
           " mono samples at %d Hz (%.2fs)", job_id, path, info.format, info.channels,
           info.sample_rate, info.frames, n, hp->sr, now_s() - t0);
    int rc = jb_codec_encode_send(vq, x, n, job_id, mask, out, err);
    free(x);
    return rc;
}

// ---------------------------------------------------------------- decoding

int jb_codec_output_path(const char *tmpl, const char *job, int sample, int batch, int level,
                         char *out, size_t size, jb_err_t *err) {
    if (!strcmp(tmpl, "-")) {
        if (batch > 1)
            return jb_err_set(err, JB_EINVAL, "job %s: %d samples cannot all go to stdout; give "
                              "-o a file name", job, batch);
        snprintf(out, size, "-");
        return 0;
    }
    char t[4096];
    const char *src = tmpl;
    if (batch > 1 && !strstr(tmpl, "{sample}")) {
        // "_{sample}" before the extension of the last path component
        const char *slash = strrchr(tmpl, '/');
        const char *base = slash ? slash + 1 : tmpl;
        const char *dot = strrchr(base, '.');
        size_t cut = dot && dot != base ? (size_t)(dot - tmpl) : strlen(tmpl);
        int k = snprintf(t, sizeof t, "%.*s_{sample}%s", (int)cut, tmpl, tmpl + cut);
        if (k < 0 || (size_t)k >= sizeof t)
            return jb_err_set(err, JB_EINVAL, "output name too long: %s", tmpl);
        src = t;
    }
    size_t o = 0;
    for (const char *p = src; *p;) {
        char num[32];
        const char *rep = NULL;
        size_t skip = 1;
        if (!strncmp(p, "{job}", 5)) rep = job, skip = 5;
        else if (!strncmp(p, "{sample}", 8)) snprintf(num, sizeof num, "%d", sample), rep = num,
                                             skip = 8;
        else if (!strncmp(p, "{level}", 7)) snprintf(num, sizeof num, "%d", level), rep = num,
                                            skip = 7;
        size_t len = rep ? strlen(rep) : 1;
        if (o + len + 1 > size)
            return jb_err_set(err, JB_EINVAL, "output name too long: %s", tmpl);
        memcpy(out + o, rep ? rep : p, len);
        o += len;
        p += skip;
    }
    out[o] = 0;
    return 0;
}

typedef struct {
    int32_t *codes;      // (batch, cap) row-major
    int64_t batch;       // -1 until the first CODES message
    int64_t len, cap;    // tokens received per row, room per row
    int complete;        // END of this level received
    int64_t rate;        // -1 unknown
    int64_t audio_len;   // -1 unknown
} level_buf_t;

typedef struct {
    char id[JB_WIRE_JOB_ID_MAX + 1];
    level_buf_t lv[JB_WIRE_MAX_LEVEL + 1];
    int failed;          // a message of this job was refused: skip the rest
    jb_err_t err;        // why
} job_t;

typedef struct {
    job_t **jobs;
    int n, cap;
    char **written;      // output paths written in this run (no silent overwrite)
    int n_written, cap_written;
} decoder_t;

static void job_free(job_t *j) {
    if (!j) return;
    for (int L = 0; L <= JB_WIRE_MAX_LEVEL; L++) free(j->lv[L].codes);
    free(j);
}

static job_t *job_find(decoder_t *d, const char *id, int create, jb_err_t *err) {
    for (int i = 0; i < d->n; i++)
        if (!strcmp(d->jobs[i]->id, id)) return d->jobs[i];
    if (!create) return NULL;
    if (d->n >= JB_CODEC_MAX_OPEN_JOBS) {
        jb_err_set(err, JB_EFORMAT, "job %s: already %d unfinished jobs in the stream", id,
                   d->n);
        return NULL;
    }
    if (d->n == d->cap) {
        int nc = d->cap ? d->cap * 2 : 8;
        job_t **nj = realloc(d->jobs, (size_t)nc * sizeof *nj);
        if (!nj) {
            jb_err_set(err, JB_ENOMEM, "job %s: out of memory", id);
            return NULL;
        }
        d->jobs = nj;
        d->cap = nc;
    }
    job_t *j = calloc(1, sizeof *j);
    if (!j) {
        jb_err_set(err, JB_ENOMEM, "job %s: out of memory", id);
        return NULL;
    }
    snprintf(j->id, sizeof j->id, "%s", id);
    for (int L = 0; L <= JB_WIRE_MAX_LEVEL; L++) {
        j->lv[L].batch = -1;
        j->lv[L].rate = j->lv[L].audio_len = -1;
    }
    d->jobs[d->n++] = j;
    return j;
}

static void job_remove(decoder_t *d, job_t *j) {
    for (int i = 0; i < d->n; i++)
        if (d->jobs[i] == j) {
            d->jobs[i] = d->jobs[--d->n];
            break;
        }
    job_free(j);
}

// Records a job's failure for the stats and the log.
static void report_fail(jb_codec_decode_stats_t *st, const jb_err_t *e) {
    jb_log(JB_ERROR, "%s", e->msg);
    if (!st->jobs_failed) {
        st->first_fail_code = e->code ? e->code : JB_EFORMAT;
        snprintf(st->first_fail, sizeof st->first_fail, "%s", e->msg);
    }
    st->jobs_failed++;
}

// A CODES message into its job's level buffer. 0 / -1 + err (the job's problem).
static int add_codes(job_t *j, const jb_msg_t *m, jb_err_t *err) {
    level_buf_t *b = &j->lv[m->level];
    if (b->complete)
        return jb_err_set(err, JB_EFORMAT, "job %s level %d offset %" PRId64 ": codes after the "
                          "level's end", j->id, m->level, m->offset);
    if (b->batch < 0) b->batch = m->batch;
    if (m->batch != b->batch)
        return jb_err_set(err, JB_EFORMAT, "job %s level %d offset %" PRId64 ": batch %" PRId64
                          ", earlier codes of this level had %" PRId64, j->id, m->level,
                          m->offset, m->batch, b->batch);
    if (m->offset > b->len)
        return jb_err_set(err, JB_EFORMAT, "job %s level %d: codes at offset %" PRId64 ", "
                          "expected %" PRId64 " (out of order or missing)", j->id, m->level,
                          m->offset, b->len);
    // A window resent after a retry may restate tokens already here: they must be equal.
    int64_t again = b->len - m->offset < m->count ? b->len - m->offset : m->count;
    for (int64_t r = 0; r < b->batch; r++)
        for (int64_t t = 0; t < again; t++)
            if (b->codes[r * b->cap + m->offset + t] != m->codes[r * m->count + t])
                return jb_err_set(err, JB_EFORMAT, "job %s level %d: token %" PRId64 " of row %"
                                  PRId64 " resent with another value", j->id, m->level,
                                  m->offset + t, r);
    if (again == m->count) return 0;
    int64_t need = m->offset + m->count;
    if (need > b->cap) {
        int64_t nc = b->cap ? b->cap : 1024;
        while (nc < need) nc *= 2;
        // the same cap as one message's payload: 2^28 codes (1 GiB) per level of a job
        if ((uint64_t)need * (uint64_t)b->batch > JB_WIRE_MAX_RAW / 4)
            return jb_err_set(err, JB_EFORMAT, "job %s level %d: over %u codes", j->id,
                              m->level, JB_WIRE_MAX_RAW / 4);
        if ((uint64_t)nc * (uint64_t)b->batch > JB_WIRE_MAX_RAW / 4)
            nc = (int64_t)(JB_WIRE_MAX_RAW / 4 / (uint64_t)b->batch);
        int32_t *nb = malloc((size_t)(nc * b->batch) * sizeof(int32_t));
        if (!nb)
            return jb_err_set(err, JB_ENOMEM, "job %s level %d: out of memory for %" PRId64
                              " tokens", j->id, m->level, nc);
        for (int64_t r = 0; r < b->batch && b->len; r++)
            memcpy(nb + r * nc, b->codes + r * b->cap, (size_t)b->len * sizeof(int32_t));
        free(b->codes);
        b->codes = nb;
        b->cap = nc;
    }
    for (int64_t r = 0; r < b->batch; r++)
        memcpy(b->codes + r * b->cap + b->len, m->codes + r * m->count + again,
               (size_t)(m->count - again) * sizeof(int32_t));
    b->len = need;
    if (m->sample_rate >= 0) b->rate = m->sample_rate;
    if (m->audio_len >= 0) b->audio_len = m->audio_len;
    return 0;
}

static int end_level(job_t *j, const jb_msg_t *m, jb_err_t *err) {
    level_buf_t *b = &j->lv[m->level];
    if (m->offset >= 0 && m->offset != b->len)
        return jb_err_set(err, JB_EFORMAT, "job %s level %d: end says %" PRId64 " tokens, %" PRId64
                          " received", j->id, m->level, m->offset, b->len);
    if (b->len == 0)
        return jb_err_set(err, JB_EFORMAT, "job %s level %d: end of a level without codes",
                          j->id, m->level);
    b->complete = 1;
    if (m->sample_rate >= 0) b->rate = m->sample_rate;
    if (m->audio_len >= 0) b->audio_len = m->audio_len;
    return 0;
}

// Decodes the chosen level of a job and writes its samples. 0 / -1 + err.
static int job_decode(decoder_t *d, jb_vqvae_t *vq, job_t *j, const jb_codec_decode_opts_t *o,
                      jb_codec_decode_stats_t *st, jb_err_t *err) {
    const jb_vqvae_hparams_t *hp = jb_vqvae_hparams(vq);
    int L = o->level;
    if (L < 0) {
        for (int k = 0; k <= JB_WIRE_MAX_LEVEL && L < 0; k++)
            if (j->lv[k].complete) L = k;
        if (L < 0) return jb_err_set(err, JB_EFORMAT, "job %s: no complete level of codes", j->id);
    }
    level_buf_t *b = &j->lv[L];
    if (!b->complete) {
        char have[64] = "";
        for (int k = 0, n = 0; k <= JB_WIRE_MAX_LEVEL; k++)
            if (j->lv[k].complete) n += snprintf(have + n, sizeof have - n, "%s%d", n ? "," : "", k);
        return jb_err_set(err, JB_EFORMAT, "job %s: level %d %s (complete levels: %s)", j->id, L,
                          b->len ? "is incomplete" : "is not in the stream", have[0] ? have : "none");
    }
    if (L >= hp->levels)
        return jb_err_set(err, JB_EFORMAT, "job %s: level %d, the model has levels 0..%d", j->id,
                          L, hp->levels - 1);
    if (b->rate >= 0 && b->rate != hp->sr)
        return jb_err_set(err, JB_EFORMAT, "job %s level %d: codes of %" PRId64 " Hz audio, the "
                          "model is %d Hz", j->id, L, b->rate, hp->sr);
    int64_t hop = hp->hop_lengths[L];
    int64_t T = b->len * hop;
    int64_t keep = b->audio_len > 0 && b->audio_len < T ? b->audio_len : T;
    // contiguous (batch, len) for the decoder
    int32_t *codes = b->codes;
    if (b->cap != b->len) {
        codes = malloc((size_t)(b->batch * b->len) * sizeof(int32_t));
        if (!codes) return jb_err_set(err, JB_ENOMEM, "job %s: out of memory", j->id);
        for (int64_t r = 0; r < b->batch; r++)
            memcpy(codes + r * b->len, b->codes + r * b->cap, (size_t)b->len * sizeof(int32_t));
    }
    float *audio = malloc((size_t)(b->batch * T) * sizeof(float));
    if (!audio) {
        if (codes != b->codes) free(codes);
        return jb_err_set(err, JB_ENOMEM, "job %s: out of memory for %" PRId64 " samples",
                          j->id, b->batch * T);
    }
    double t0 = now_s();
    int rc = jb_vqvae_decode(vq, codes, (int)b->batch, b->len, L, audio, 0, err);
    if (codes != b->codes) free(codes);
    if (rc) {
        free(audio);
        return jb_err_prefix(err, "job %s level %d", j->id, L);
    }
    double dt = now_s() - t0;
    jb_log(JB_INFO, "job=%s level=%d samples=%" PRId64 " tokens=%" PRId64 " audio=%.2fs "
           "decode=%.2fs (%.3f s/s)", j->id, L, b->batch, b->len, (double)keep / hp->sr, dt,
           dt * hp->sr / (double)(b->batch * T));
    for (int64_t s = 0; s < b->batch; s++) {
        char path[4096];
        if (jb_codec_output_path(o->out, j->id, (int)s, (int)b->batch, L, path, sizeof path,
                                 err)) {
            free(audio);
            return -1;
        }
        for (int w = 0; w < d->n_written; w++)
            if (!strcmp(d->written[w], path)) {
                free(audio);
                return jb_err_set(err, JB_EINVAL, "job %s: output %s was already written in "
                                  "this run; put {job} (and {sample}) in -o", j->id, path);
            }
        if (jb_audio_write(path, audio + s * T, keep, hp->sr, o->format, err)) {
            free(audio);
            return jb_err_prefix(err, "job %s", j->id);
        }
        if (d->n_written == d->cap_written) {
            int nc = d->cap_written ? d->cap_written * 2 : 8;
            char **nw = realloc(d->written, (size_t)nc * sizeof *nw);
            if (!nw) {
                free(audio);
                return jb_err_set(err, JB_ENOMEM, "out of memory");
            }
            d->written = nw;
            d->cap_written = nc;
        }
        if (!(d->written[d->n_written] = strdup(path))) {
            free(audio);
            return jb_err_set(err, JB_ENOMEM, "out of memory");
        }
        d->n_written++;
        st->files_written++;
        jb_log(JB_INFO, "job=%s level=%d wrote %s (%" PRId64 " samples, %.2fs)", j->id, L,
               strcmp(path, "-") ? path : "(stdout)", keep, (double)keep / hp->sr);
    }
    free(audio);
    return 0;
}

// The error class for the sysexits value an ERROR message carries.
static int code_of_exit(int ex) {
    switch (ex) {
    case 64: return JB_EINVAL;
    case 66: return JB_ENOENT;
    case 69: return JB_EUNAVAIL;
    case 70: return JB_EINTERNAL;
    case 74: return JB_EIO;
    default: return JB_EFORMAT;
    }
}

int jb_codec_decode_stream(jb_vqvae_t *vq, jb_endpoint_t *in, const jb_codec_decode_opts_t *o,
                           jb_codec_decode_stats_t *st, jb_err_t *err) {
    memset(st, 0, sizeof *st);
    decoder_t d = {0};
    jb_msg_t m;
    jb_msg_init(&m);
    int rc = -1;
    for (;;) {
        jb_err_t e = {0};
        if (o->stop && *o->stop) {
            st->stopped = 1;
            break;
        }
        jb_recv_t r = jb_endpoint_recv(in, &m, o->stop ? 500 : -1, &e);
        if (r == JB_RECV_EOF) break;
        if (r == JB_RECV_TIMEOUT) continue;
        if (r == JB_RECV_ERROR) {
            *err = e;
            goto done;
        }
        if (r == JB_RECV_BAD) {
            // The stream is still in step: drop the message, fail its job if we know it.
            report_fail(st, &e);
            continue;
        }
        if (m.type == JB_MSG_JOB || m.type == JB_MSG_ACK || m.type == JB_MSG_HEARTBEAT ||
            m.type == JB_MSG_STATUS) {
            jb_msg_clear(&m);
            continue;
        }
        jb_err_t je = {0};
        job_t *j = job_find(&d, m.job_id, 1, &je);
        if (!j) {
            if (je.code == JB_ENOMEM) {
                *err = je;
                goto done;
            }
            report_fail(st, &je);   // over the cap: this message's job is refused
            jb_msg_clear(&m);
            continue;
        }
        if (m.type == JB_MSG_ERROR) {
            if (!j->failed) {
                j->failed = 1;
                jb_err_set(&j->err, code_of_exit((int)m.code),
                           "job %s failed upstream: %s", j->id, m.text ? m.text : "");
            }
        } else if (!j->failed && m.type == JB_MSG_CODES) {
            if (add_codes(j, &m, &j->err)) j->failed = 1;
        } else if (!j->failed && m.type == JB_MSG_END && m.level >= 0) {
            if (end_level(j, &m, &j->err)) j->failed = 1;
        }
        if (m.type == JB_MSG_END && m.level < 0) {
            if (j->failed) {
                report_fail(st, &j->err);
            } else {
                jb_err_clear(&je);
                if (job_decode(&d, vq, j, o, st, &je)) {
                    if (je.code == JB_ENOMEM) {
                        *err = je;
                        goto done;
                    }
                    report_fail(st, &je);
                } else {
                    st->jobs_done++;
                }
            }
            job_remove(&d, j);
        }
        jb_msg_clear(&m);
    }
    if (st->stopped) {
        if (d.n) jb_log(JB_WARN, "stopped: %d unfinished job(s) dropped, nothing written for "
                        "them", d.n);
        st->jobs_dropped = d.n;
        while (d.n) job_remove(&d, d.jobs[0]);
    }
    // Stream over: jobs without their END are decoded if the chosen level is complete.
    while (d.n) {
        job_t *j = d.jobs[0];
        jb_err_t je = {0};
        if (j->failed) {
            report_fail(st, &j->err);
        } else if (job_decode(&d, vq, j, o, st, &je)) {
            jb_err_prefix(&je, "stream ended before the job's end");
            report_fail(st, &je);
        } else {
            st->jobs_done++;
        }
        job_remove(&d, j);
    }
    rc = 0;
done:
    jb_msg_clear(&m);
    while (d.n) job_remove(&d, d.jobs[0]);
    free(d.jobs);
    for (int i = 0; i < d.n_written; i++) free(d.written[i]);
    free(d.written);
    return rc;
}
