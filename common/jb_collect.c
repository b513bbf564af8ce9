// jb_collect.c: see jb_collect.h.
#include "jb_collect.h"

#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "jb_codes.h"
#include "jb_link.h"
#include "jb_log.h"
#include "jb_outdir.h"
#include "jb_progress.h"
#include "jb_service.h"

typedef struct cjob {
    struct cjob *next;
    char id[JB_WIRE_JOB_ID_MAX + 1];
    jb_codes_t codes;
    int inited;
    char *labels[JB_CODES_MAX_LEVELS];
    float *align;          // (batch, tokens, cols)
    // The bottom level decoded as its codes arrive: audio0 (n_samples, cap0) holds
    // the audio of codes [0, dec_upto), final (a margin of context was available).
    float *audio0;
    int64_t cap0, dec_upto;
    int64_t align_tokens;
    int align_cols;
    char *align_lyrics;
    // Seconds from the job's first message here until each level's END: when that
    // level's codes were complete (the page shows them as the levels' compute times).
    double t_start, t_end[JB_CODES_MAX_LEVELS];
} cjob_t;

static void cjob_free(cjob_t *j) {
    if (!j) return;
    if (j->inited) jb_codes_free(&j->codes);
    else free(j->codes.spec);   // taken from the JOB message before any codes came
    for (int l = 0; l < JB_CODES_MAX_LEVELS; l++) free(j->labels[l]);
    free(j->align);
    free(j->align_lyrics);
    free(j->audio0);
    free(j);
}

// Decodes bottom-level codes [dec_upto, upto) of every sample with `margin` codes of
// context on each side where they exist, keeping only the middle: equal to decoding
// the whole level at once (the VQ-VAE's chunked decode works the same way).
static int decode_more(jb_vqvae_t *vq, cjob_t *j, int64_t upto, jb_err_t *err) {
    const jb_vqvae_hparams_t *hp = jb_vqvae_hparams(vq);
    const int64_t hop = hp->hop_lengths[0], have = jb_codes_len(&j->codes, 0);
    const int64_t margin = (jb_vqvae_margin(vq, 0, 1) + hop - 1) / hop;
    const int n = j->codes.n_samples;
    if (upto > have) upto = have;
    if (upto <= j->dec_upto) return 0;
    if (upto * hop > j->cap0) {   // grow the audio buffer (amortised doubling)
        int64_t cap = j->cap0 ? j->cap0 : 65536;
        while (cap < upto * hop) cap *= 2;
        float *a = malloc(sizeof(float) * (size_t)cap * (size_t)n);
        if (!a) return jb_err_set(err, JB_ENOMEM, "job %s: out of memory for audio", j->id);
        for (int k = 0; k < n && j->audio0; k++)
            memcpy(a + (size_t)k * cap, j->audio0 + (size_t)k * j->cap0,
                   sizeof(float) * (size_t)(j->dec_upto * hop));
        free(j->audio0);
        j->audio0 = a;
        j->cap0 = cap;
    }
    int64_t s0 = j->dec_upto - margin > 0 ? j->dec_upto - margin : 0;
    int64_t s1 = upto + margin < have ? upto + margin : have;
    int32_t *codes = malloc(sizeof(int32_t) * (size_t)(s1 - s0));
    float *out = malloc(sizeof(float) * (size_t)((s1 - s0) * hop));
    int rc = 0;
    if (!codes || !out) {
        rc = jb_err_set(err, JB_ENOMEM, "job %s: out of memory for audio", j->id);
    } else {
        for (int k = 0; k < n && !rc; k++) {
            memcpy(codes, jb_codes_row(&j->codes, 0, k) + s0, sizeof(int32_t) * (size_t)(s1 - s0));
            if (jb_vqvae_decode(vq, codes, 1, s1 - s0, 0, out, 0, err)) {
                rc = jb_err_prefix(err, "job %s sample %d", j->id, k);
                break;
            }
            memcpy(j->audio0 + (size_t)k * j->cap0 + j->dec_upto * hop,
                   out + (j->dec_upto - s0) * hop, sizeof(float) * (size_t)((upto - j->dec_upto) * hop));
        }
    }
    free(codes);
    free(out);
    if (!rc) j->dec_upto = upto;
    return rc;
}

static cjob_t *find(cjob_t *list, const char *id) {
    for (; list; list = list->next)
        if (!strcmp(list->id, id)) return list;
    return NULL;
}

static void unlink_job(cjob_t **list, cjob_t *j) {
    for (cjob_t **p = list; *p; p = &(*p)->next)
        if (*p == j) {
            *p = j->next;
            return;
        }
}

static int spool_done(const jb_collect_opts_t *o, const char *id, jb_err_t *err);

static int failed(const jb_collect_opts_t *o, jb_collect_stats_t *st, const char *id, int level,
                  int code, const char *why, jb_link_t *link, jb_err_t *err) {
    jb_log(JB_ERROR, "job=%s failed: %s", id, why);
    st->jobs_failed++;
    if (jb_outdir_write_error(o->root, id, level, code, why, err)) return -1;
    if (link) jb_link_done(link, id);   // the error record is the job's result
    return spool_done(o, id, err);
}

// ROOT/<id> already there (a job redone after this decoder wrote it): done.
static int already_written(const char *root, const char *id) {
    char path[4096];
    struct stat sb;
    snprintf(path, sizeof path, "%s/%s", root, id);
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

// The number of samples comes with the first codes; the spec says it too.
static int ensure_codes(cjob_t *j, const jb_msg_t *m, jb_err_t *err) {
    if (j->inited) return 0;
    int n = (int)(m->batch > 0 ? m->batch + (m->sample0 > 0 ? m->sample0 : 0) : 1);
    json_t *spec = j->codes.spec ? json_loads(j->codes.spec, 0, NULL) : NULL;
    json_t *ns = json_object_get(spec, "n_samples");
    if (json_is_integer(ns) && json_integer_value(ns) > 0) n = (int)json_integer_value(ns);
    json_decref(spec);
    char *keep_spec = j->codes.spec;
    j->codes.spec = NULL;
    if (jb_codes_init(&j->codes, j->id, 3, n, m->codebook > 0 ? m->codebook : -1, err)) {
        free(keep_spec);
        return -1;
    }
    j->codes.spec = keep_spec;
    j->inited = 1;
    return 0;
}

// ---- spool -----------------------------------------------------------------------

typedef struct {
    jb_msg_t *v;       // in.jbc messages of the spooled jobs, replayed first
    int n, cap, next;
    struct sjob {      // per spooled job: messages in in.jbc, and received again since
        char id[JB_WIRE_JOB_ID_MAX + 1];
        int64_t n_in, recv_n;
    } *jobs;
    int n_jobs;
} replay_t;

static int take_msg(jb_msg_t *m, uint64_t at, void *user) {
    (void)at;
    replay_t *r = user;
    if (r->n == r->cap) {
        int cap = r->cap ? 2 * r->cap : 64;
        jb_msg_t *p = realloc(r->v, sizeof *p * (size_t)cap);
        if (!p) return -1;
        r->v = p;
        r->cap = cap;
    }
    r->v[r->n++] = *m;   // takes the pointers
    m->spec = m->text = NULL;
    m->codes = NULL;
    return 0;
}

static void replay_free(replay_t *r) {
    for (int i = r->next; i < r->n; i++) jb_msg_clear(&r->v[i]);
    free(r->v);
    free(r->jobs);
}

static int run_exists(const char *root, const char *id) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", root, id);
    return access(path, F_OK) == 0;
}

// The spooled jobs: those already written are done (spool removed); the others are
// queued for decoding again.
static int replay_load(const jb_collect_opts_t *o, jb_link_t *link, replay_t *r, jb_err_t *err) {
    memset(r, 0, sizeof *r);
    if (!o->spool) return 0;
    int n = jb_spool_n_jobs(o->spool);
    r->jobs = calloc((size_t)(n ? n : 1), sizeof *r->jobs);
    if (!r->jobs) return jb_err_set(err, JB_ENOMEM, "out of memory");
    for (int i = 0; i < n; i++)
        snprintf(r->jobs[i].id, sizeof r->jobs[i].id, "%s", jb_spool_job_id(o->spool, i));
    for (int i = 0; i < n; i++) {
        struct sjob *sj = &r->jobs[r->n_jobs];
        *sj = r->jobs[i];
        if (run_exists(o->root, sj->id)) {
            jb_log(JB_INFO, "job=%s already written to %s/%s; spool removed", sj->id, o->root,
                   sj->id);
            if (jb_spool_remove(o->spool, sj->id, err)) return -1;
            if (link) jb_link_done(link, sj->id);
            continue;
        }
        int before = r->n;
        if (jb_spool_read(o->spool, sj->id, JB_SPOOL_IN, take_msg, r, err)) return -1;
        sj->n_in = r->n - before;
        if (link && jb_link_preload(link, sj->id, sj->n_in, err)) return -1;
        jb_log(JB_INFO, "job=%s resumed from the spool: %lld message(s)", sj->id,
               (long long)sj->n_in);
        r->n_jobs++;
    }
    return 0;
}

// A message from upstream: 1 = drop it (a spooled job's message sent again, or a job
// already written), 0 = take it (into the spool first), -1 = the spool write failed.
static int spool_in(const jb_collect_opts_t *o, jb_endpoint_t *in, replay_t *r, cjob_t *jobs,
                    jb_msg_t *m, jb_err_t *err) {
    // Over a link the persist hook has spooled it and the link drops what is held.
    if (!o->spool || !m->job_id[0] || jb_endpoint_link(in)) return 0;
    for (int i = 0; i < r->n_jobs; i++)
        if (!strcmp(r->jobs[i].id, m->job_id) && r->jobs[i].recv_n < r->jobs[i].n_in) {
            r->jobs[i].recv_n++;
            return 1;
        }
    if (!find(jobs, m->job_id) && run_exists(o->root, m->job_id)) {
        jb_log(JB_DEBUG, "job=%s: %s dropped: %s/%s is already written", m->job_id,
               jb_msg_type_name(m->type), o->root, m->job_id);
        return 1;
    }
    if (jb_spool_append(o->spool, m->job_id, JB_SPOOL_IN, m, err))
        return jb_err_prefix(err, "decoder: spool");
    return 0;
}

int jb_collect_persist(void *user, const jb_msg_t *msg, jb_err_t *err) {
    const jb_collect_opts_t *o = user;
    if (!o->spool || !msg->job_id[0]) return 0;
    if (o->spool_ready && !atomic_load(o->spool_ready))
        return jb_err_set(err, JB_EUNAVAIL, "decoder: starting (replaying the spool)");
    return jb_spool_append(o->spool, msg->job_id, JB_SPOOL_IN, msg, err);
}

static int spool_done(const jb_collect_opts_t *o, const char *id, jb_err_t *err) {
    return o->spool ? jb_spool_remove(o->spool, id, err) : 0;
}

int jb_collect_run(jb_vqvae_t *vq, jb_endpoint_t *in, const jb_collect_opts_t *o,
                   jb_collect_stats_t *st, jb_err_t *err) {
    cjob_t *jobs = NULL;
    jb_msg_t m;
    jb_msg_init(&m);
    memset(st, 0, sizeof *st);
    double t0 = -1;
    int rc = -1, eof = 0;
    jb_link_t *link = jb_endpoint_link(in);   // NULL for a stream
    replay_t rp;
    if (replay_load(o, link, &rp, err)) {
        replay_free(&rp);
        return -1;
    }
    if (o->spool_ready) atomic_store(o->spool_ready, 1);
    jb_service_ready("model loaded; waiting for jobs");
    for (;;) {
        jb_service_watchdog();
        if (o->stop && *o->stop) {
            rc = 0;
            break;
        }
        if (o->max_jobs > 0 && st->jobs_done + st->jobs_failed >= o->max_jobs) {
            rc = 0;
            break;
        }
        jb_err_t rerr = {0};
        jb_recv_t r;
        if (rp.next < rp.n) {   // the spooled jobs first
            jb_msg_clear(&m);
            m = rp.v[rp.next++];
            r = JB_RECV_MSG;
        } else {
            r = jb_endpoint_recv(in, &m, 200, &rerr);
            if (r == JB_RECV_MSG) {
                int d = spool_in(o, in, &rp, jobs, &m, err);
                if (d < 0) break;
                if (d) {
                    jb_msg_clear(&m);
                    continue;
                }
            }
        }
        if (r == JB_RECV_TIMEOUT) continue;
        if (r == JB_RECV_BAD) {
            jb_log(JB_WARN, "rejected a message: %s", rerr.msg);
            continue;
        }
        if (r == JB_RECV_ERROR) {
            *err = rerr;
            break;
        }
        if (r == JB_RECV_EOF) {
            rc = 0;
            eof = 1;
            break;
        }
        if (t0 < 0) t0 = jb_now();
        if (!m.job_id[0]) {   // heartbeats and the like: nothing to keep
            jb_msg_clear(&m);
            continue;
        }
        cjob_t *j = find(jobs, m.job_id);
        if (m.type == JB_MSG_CANCEL) {   // the link: this job went elsewhere
            jb_log(JB_INFO, "job=%s cancelled by its producer", m.job_id);
            if (j) {
                unlink_job(&jobs, j);
                cjob_free(j);
            }
            if (spool_done(o, m.job_id, err)) break;
            jb_msg_clear(&m);
            continue;
        }
        if (!j && link && m.type == JB_MSG_JOB && already_written(o->root, m.job_id)) {
            jb_log(JB_INFO, "job=%s: %s/%s already written; done", m.job_id, o->root, m.job_id);
            jb_link_done(link, m.job_id);
            jb_msg_clear(&m);
            continue;
        }
        if (!j && (m.type == JB_MSG_JOB || m.type == JB_MSG_CODES)) {
            j = calloc(1, sizeof *j);
            if (!j) {
                jb_err_set(err, JB_ENOMEM, "out of memory");
                break;
            }
            snprintf(j->id, sizeof j->id, "%s", m.job_id);
            j->t_start = jb_now();
            j->next = jobs;
            jobs = j;
        }
        jb_err_t why = {0};
        int bad = 0;
        switch (m.type) {
        case JB_MSG_JOB:
            if (m.spec && !j->codes.spec && !j->inited) {
                j->codes.spec = m.spec;   // taken over; ensure_codes keeps it
                m.spec = NULL;
            }
            break;
        case JB_MSG_CODES:
            bad = ensure_codes(j, &m, &why) || jb_codes_apply(&j->codes, &m, &why);
            if (!bad && m.level == 0) {
                // Decode what has enough context on its right; in steps of at least
                // ~1 s of audio so that the context is not decoded over and over.
                const jb_vqvae_hparams_t *hp = jb_vqvae_hparams(vq);
                int64_t hop = hp->hop_lengths[0];
                int64_t margin = (jb_vqvae_margin(vq, 0, 1) + hop - 1) / hop;
                int64_t ready = jb_codes_len(&j->codes, 0) - margin;
                int64_t step = o->decode_step ? o->decode_step : hp->sr / hop;
                if (o->decode_step >= 0 && ready - j->dec_upto >= step) {
                    int first = j->dec_upto == 0;
                    if (decode_more(vq, j, ready, err)) goto out;
                    if (first && st->first_audio_s <= 0) {
                        st->first_audio_s = jb_now() - t0;
                        jb_log(JB_INFO, "job=%s first audio decoded %.2f s after the job started",
                               j->id, st->first_audio_s);
                    }
                }
            }
            break;
        case JB_MSG_END:
            if (!j) break;
            if (m.level >= 0 && m.level < JB_CODES_MAX_LEVELS && m.text) {
                free(j->labels[m.level]);
                j->labels[m.level] = strdup(m.text);
            }
            if (m.level >= 0) {
                if (m.level < JB_CODES_MAX_LEVELS) j->t_end[m.level] = jb_now() - j->t_start;
                if (j->inited) bad = jb_codes_apply(&j->codes, &m, &why);
                break;
            }
            {   // END(-1): the job is complete
                unlink_job(&jobs, j);
                if (!j->inited) {
                    bad = failed(o, st, j->id, -1, 65, "the job ended without any codes", link, err);
                } else {
                    if (m.sample_rate > 0) j->codes.sample_rate = m.sample_rate;
                    if (m.audio_len > 0) j->codes.audio_len = m.audio_len;
                    if (j->dec_upto > 0 && decode_more(vq, j, jb_codes_len(&j->codes, 0), err))
                        goto out;
                    jb_outdir_job_t oj = {.codes = &j->codes, .alignment = j->align,
                                          .align_tokens = j->align_tokens,
                                          .align_cols = j->align_cols,
                                          .align_lyrics = j->align_lyrics};
                    for (int l = 0; l < JB_CODES_MAX_LEVELS; l++) {
                        oj.labels[l] = j->labels[l];
                        oj.level_seconds[l] = j->t_end[l];
                    }
                    if (j->dec_upto > 0) {
                        oj.audio[0] = j->audio0;
                        oj.audio_len[0] = j->cap0;   // row stride; rows hold dec_upto * hop
                    }
                    char *dir = NULL;
                    bad = jb_outdir_write(o->root, vq, &oj, &dir, err) ||
                          spool_done(o, j->id, err);
                    if (!bad) {
                        if (link) jb_link_done(link, j->id);   // renamed into place: DONE
                        st->jobs_done++;
                        st->total_s = jb_now() - t0;
                        if (st->first_audio_s <= 0) st->first_audio_s = st->total_s;
                        jb_log(JB_INFO, "job=%s written to %s (first audio %.2f s, all %.2f s "
                               "after the job's first message)", j->id, dir, st->first_audio_s,
                               st->total_s);
                    }
                    free(dir);
                }
                cjob_free(j);
                jb_msg_clear(&m);
                if (bad) goto out;
                continue;
            }
        case JB_MSG_ALIGN:
            if (!j || m.cols < 1 || m.batch < 1) break;
            free(j->align);
            free(j->align_lyrics);
            j->align = malloc(sizeof(float) * (size_t)(m.batch * m.count * m.cols));
            if (!j->align) {
                jb_err_set(err, JB_ENOMEM, "out of memory");
                goto out;
            }
            for (int64_t i = 0; i < m.batch * m.count * m.cols; i++)
                j->align[i] = (float)m.codes[i] / (float)JB_WIRE_ALIGN_ONE;
            j->align_tokens = m.count;
            j->align_cols = (int)m.cols;
            j->align_lyrics = m.text ? strdup(m.text) : NULL;
            break;
        case JB_MSG_ERROR:
            if (j) {
                unlink_job(&jobs, j);
                cjob_free(j);
            }
            if (failed(o, st, m.job_id, m.level, (int)(m.code > 0 ? m.code : 70),
                       m.text ? m.text : "failed upstream", link, err))
                goto out;
            break;
        default: break;
        }
        if (bad && j) {   // bad codes for this job: an error record, keep serving
            unlink_job(&jobs, j);
            char id[sizeof j->id];
            memcpy(id, j->id, sizeof id);
            cjob_free(j);
            if (failed(o, st, id, m.level, 65, why.msg, link, err)) goto out;
        }
        jb_msg_clear(&m);
    }
out:
    jb_msg_clear(&m);
    // Jobs the input left unfinished: an error record each, so none is lost silently.
    // (Stopped by a signal, they are left to be redone instead.)
    while (jobs) {
        cjob_t *j = jobs;
        jobs = j->next;
        if (eof && o->spool) {
            jb_log(JB_WARN, "job=%s: the input ended before the job was complete; kept in the "
                   "spool %s for a restart", j->id, jb_spool_dir(o->spool));
            st->jobs_kept++;
        } else if (eof) {
            jb_err_t e2 = {0};
            failed(o, st, j->id, -1, 69, "the input ended before the job was complete", link,
                   &e2);
        } else if (link) {   // stopped: another decoder instance can take it now
            jb_link_release(link, j->id);
        }
        cjob_free(j);
    }
    replay_free(&rp);
    return rc;
}
