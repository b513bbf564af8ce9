// jb_codec.c: see jb_codec.h.
#include "jb_codec.h"
#include "jb_reader.h"

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

void jb_codec_set_threads(int n) {
    if (n < 1) return;
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

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

int jb_codec_job_id_ok(const char *s) { return jb_wire_job_id_ok(s); }

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
        out[i] = job_char_ok(base[i]) && (i || base[i] != '.') ? base[i] : '_';
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
        m.batch = 1;
        m.codebook = hp->l_bins;
        m.sample_rate = hp->sr;
        m.audio_len = n;
        // At most JB_WIRE_MAX_RAW bytes of codes a message (a song of over ~12 minutes
        // takes several at the bottom level).
        const int64_t per_msg = JB_WIRE_MAX_RAW / 4;
        for (int64_t off = 0; off < TL; off += per_msg) {
            m.offset = off;
            m.count = TL - off < per_msg ? TL - off : per_msg;
            m.codes = codes + off;   // borrowed: taken back below before any clear
            int s = jb_endpoint_send(out, &m, err);
            m.codes = NULL;
            if (s) goto done;
        }
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
    char **written;      // output paths written in this run (no silent overwrite)
    int n_written, cap_written;
} decoder_t;

// The level -o decodes: the one asked for, or the lowest complete level holding codes.
static int pick_level(const jb_codes_t *c, int want, jb_err_t *err) {
    if (want >= 0) {
        if (want >= c->levels || !c->complete[want] || jb_codes_len(c, want) < 1) {
            char have[64] = "";
            for (int k = 0, n = 0; k < c->levels; k++)
                if (c->complete[k] && jb_codes_len(c, k) > 0)
                    n += snprintf(have + n, sizeof have - n, "%s%d", n ? "," : "", k);
            return jb_err_set(err, JB_EFORMAT, "job %s: level %d %s (complete levels: %s)",
                              c->job_id, want, want < c->levels && jb_codes_len(c, want) > 0
                              ? "is incomplete" : "is not in the stream", have[0] ? have : "none");
        }
        return want;
    }
    for (int k = 0; k < c->levels; k++)
        if (c->complete[k] && jb_codes_len(c, k) > 0) return k;
    return jb_err_set(err, JB_EFORMAT, "job %s: no complete level of codes", c->job_id);
}

// Decodes the chosen level of a job and writes its samples. 0 / -1 + err.
static int job_decode(decoder_t *d, jb_vqvae_t *vq, const jb_codes_t *c,
                      const jb_codec_decode_opts_t *o, jb_codec_decode_stats_t *st,
                      jb_err_t *err) {
    const jb_vqvae_hparams_t *hp = jb_vqvae_hparams(vq);
    int L = pick_level(c, o->level, err);
    if (L < 0) return -1;
    if (L >= hp->levels)
        return jb_err_set(err, JB_EFORMAT, "job %s: level %d, the model has levels 0..%d",
                          c->job_id, L, hp->levels - 1);
    if (c->sample_rate > 0 && c->sample_rate != hp->sr)
        return jb_err_set(err, JB_EFORMAT, "job %s level %d: codes of %" PRId64 " Hz audio, the "
                          "model is %d Hz", c->job_id, L, c->sample_rate, hp->sr);
    const int64_t hop = hp->hop_lengths[L];
    const int n = c->n_samples;
    int64_t most = 0;
    for (int s = 0; s < n; s++)
        if (jb_codes_sample_len(c, L, s) > most) most = jb_codes_sample_len(c, L, s);
    float *audio = malloc((size_t)(most * hop) * sizeof(float));
    int32_t *codes = malloc((size_t)most * sizeof(int32_t));
    if (!audio || !codes) {
        free(audio);
        free(codes);
        return jb_err_set(err, JB_ENOMEM, "job %s: out of memory for %" PRId64 " samples",
                          c->job_id, most * hop);
    }
    int rc = 0;
    for (int s = 0; s < n && !rc; s++) {
        int64_t len = jb_codes_sample_len(c, L, s), T = len * hop;
        int64_t keep = c->audio_len > 0 && c->audio_len < T ? c->audio_len : T;
        memcpy(codes, jb_codes_row(c, L, s), (size_t)len * sizeof(int32_t));
        double t0 = now_s();
        if (jb_vqvae_decode(vq, codes, 1, len, L, audio, 0, err)) {
            rc = jb_err_prefix(err, "job %s level %d sample %d", c->job_id, L, s);
            break;
        }
        double dt = now_s() - t0;
        jb_log(JB_INFO, "job=%s level=%d sample=%d tokens=%" PRId64 " audio=%.2fs "
               "decode=%.2fs (%.3f s/s)", c->job_id, L, s, len, (double)keep / hp->sr, dt,
               dt * hp->sr / (double)(T > 0 ? T : 1));
        char path[4096];
        if (jb_codec_output_path(o->out, c->job_id, s, n, L, path, sizeof path, err)) {
            rc = -1;
            break;
        }
        for (int w = 0; w < d->n_written && !rc; w++)
            if (!strcmp(d->written[w], path))
                rc = jb_err_set(err, JB_EINVAL, "job %s: output %s was already written in "
                                "this run; put {job} (and {sample}) in -o", c->job_id, path);
        if (rc) break;
        if (jb_audio_write(path, audio, keep, hp->sr, o->format, err)) {
            rc = jb_err_prefix(err, "job %s", c->job_id);
            break;
        }
        if (d->n_written == d->cap_written) {
            int nc = d->cap_written ? d->cap_written * 2 : 8;
            char **nw = realloc(d->written, (size_t)nc * sizeof *nw);
            if (!nw) {
                rc = jb_err_set(err, JB_ENOMEM, "out of memory");
                break;
            }
            d->written = nw;
            d->cap_written = nc;
        }
        if (!(d->written[d->n_written] = strdup(path))) {
            rc = jb_err_set(err, JB_ENOMEM, "out of memory");
            break;
        }
        d->n_written++;
        st->files_written++;
        jb_log(JB_INFO, "job=%s level=%d wrote %s (%" PRId64 " samples, %.2fs)", c->job_id, L,
               strcmp(path, "-") ? path : "(stdout)", keep, (double)keep / hp->sr);
    }
    free(audio);
    free(codes);
    return rc;
}

// Records a job's failure for the stats and the log.
static void report_fail(jb_codec_decode_stats_t *st, int code, const char *msg) {
    jb_log(JB_ERROR, "%s", msg);
    if (!st->jobs_failed) {
        st->first_fail_code = code ? code : JB_EFORMAT;
        snprintf(st->first_fail, sizeof st->first_fail, "%.500s", msg);
    }
    st->jobs_failed++;
}

int jb_codec_decode_stream(jb_vqvae_t *vq, jb_endpoint_t *in, const jb_codec_decode_opts_t *o,
                           jb_codec_decode_stats_t *st, jb_err_t *err) {
    memset(st, 0, sizeof *st);
    decoder_t d = {0};
    const jb_vqvae_hparams_t *hp = jb_vqvae_hparams(vq);
    jb_reader_opts_t ro = {.levels = hp->levels, .codebook = hp->l_bins,
                           .max_jobs = JB_CODEC_MAX_OPEN_JOBS};
    jb_reader_t *rd = jb_reader_new(&ro, err);
    if (!rd) return -1;
    jb_msg_t m;
    jb_msg_init(&m);
    int rc = -1, broken = 0;
    jb_err_t berr = {0};
    for (;;) {
        jb_err_t e = {0};
        if (o->stop && *o->stop) {
            st->stopped = 1;
            break;
        }
        jb_recv_t r = jb_endpoint_recv(in, &m, o->stop ? 500 : -1, &e);
        if (r == JB_RECV_EOF) break;
        if (r == JB_RECV_TIMEOUT) continue;
        if (r == JB_RECV_ERROR) {   // the stream cannot go on: open jobs fail below
            berr = e;
            broken = 1;
            break;
        }
        jb_reader_ev_t ev;
        if (r == JB_RECV_BAD) {
            jb_reader_refused(rd, &m, &e, &ev);
            if (ev.kind == JB_READ_NONE) {   // no job named: skipped, counted
                jb_log(JB_WARN, "skipped a message: %s", e.msg);
                st->msgs_skipped++;
            }
        } else if (jb_reader_feed(rd, &m, &ev, err)) {
            goto done;
        }
        jb_msg_clear(&m);
        if (ev.kind == JB_READ_FAILED) {   // bad data, or an error record from upstream
            char w[700];
            snprintf(w, sizeof w, "job %s: %s", ev.id, ev.why);
            report_fail(st, JB_EFORMAT, w);
        } else if (ev.kind == JB_READ_DROPPED) {
            jb_log(JB_DEBUG, "job=%s: a message after the job's end or error, dropped", ev.id);
        } else if (ev.kind == JB_READ_DONE) {
            jb_err_t je = {0};
            if (job_decode(&d, vq, &ev.job->codes, o, st, &je)) {
                if (je.code == JB_ENOMEM) {
                    *err = je;
                    jb_reader_job_free(&ev.job);
                    goto done;
                }
                report_fail(st, je.code, je.msg);
            } else {
                st->jobs_done++;
            }
            jb_reader_job_free(&ev.job);
        }
    }
    // Jobs still open. Stopped: dropped. Otherwise the input ended (or broke) in the
    // middle of them: each fails, except where the level asked for with --level is
    // complete (the user wanted that level, not the job's end).
    jb_reader_job_t *open = jb_reader_take_open(rd);
    if (st->stopped && open) {
        for (jb_reader_job_t *j = open; j; j = j->next) st->jobs_dropped++;
        jb_log(JB_WARN, "stopped: %d unfinished job(s) dropped, nothing written for them",
               st->jobs_dropped);
    }
    while (open) {
        jb_reader_job_t *j = open;
        open = j->next;
        if (!st->stopped) {
            jb_err_t je = {0};
            if (o->level >= 0 && j->inited && o->level < j->codes.levels &&
                j->codes.complete[o->level]) {
                if (job_decode(&d, vq, &j->codes, o, st, &je)) report_fail(st, je.code, je.msg);
                else st->jobs_done++;
            } else {
                char have[64] = "";
                for (int k = 0, n = 0; j->inited && k < j->codes.levels; k++)
                    if (j->codes.complete[k])
                        n += snprintf(have + n, sizeof have - n, "%s%d", n ? "," : "", k);
                char w[700];
                snprintf(w, sizeof w, "job %s: the input %s before the job's end (complete "
                         "levels: %s)", j->id, broken ? "broke" : "ended",
                         have[0] ? have : "none");
                report_fail(st, broken ? JB_EFORMAT : JB_EUNAVAIL, w);
            }
        }
        jb_reader_job_free(&j);
    }
    if (broken) {
        *err = berr;
        goto done;
    }
    rc = 0;
done:
    jb_msg_clear(&m);
    jb_reader_destroy(&rd);
    for (int i = 0; i < d.n_written; i++) free(d.written[i]);
    free(d.written);
    return rc;
}
