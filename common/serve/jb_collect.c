// jb_collect.c: see jb_collect.h.
#include "jb_collect.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "jb_codes.h"
#include "jb_reader.h"
#include "jb_log.h"
#include "jb_outdir.h"
#include "jb_progress.h"
#include "jb_service.h"

// The decoder's state of one job, on its reader job (jb_reader.h: codes, labels,
// alignment): the bottom level decoded as its codes arrive. audio0 (n_samples, cap0)
// holds the audio of codes [0, dec_upto), final (a margin of context was available).
typedef struct {
    float *audio0;
    int64_t cap0, dec_upto;
    // Seconds from the job's first message here until each level's END: when that
    // level's codes were complete (the page shows them as the levels' compute times).
    double t_start, t_end[JB_CODES_MAX_LEVELS];
    double first_audio;   // seconds from t_start to its first audio (0: none yet)
    double busy_s;        // wall seconds spent decoding it and writing its run directory
} cstate_t;

// The job's state, made on its first message (t_start: now).
static cstate_t *cstate_of(jb_reader_job_t *j) {
    if (!j->user && (j->user = calloc(1, sizeof(cstate_t)))) ((cstate_t *)j->user)->t_start = jb_now();
    return j->user;
}

static void cstate_free(void *p) {
    cstate_t *cs = p;
    if (!cs) return;
    free(cs->audio0);
    free(cs);
}

// Decodes bottom-level codes [dec_upto, upto) of every sample with `margin` codes of
// context on each side where they exist, keeping only the middle: equal to decoding
// the whole level at once (the VQ-VAE's chunked decode works the same way).
static int decode_more(jb_vqvae_t *vq, jb_reader_job_t *rj, int64_t upto, jb_err_t *err) {
    cstate_t *j = rj->user;
    const char *id = rj->id;
    const jb_vqvae_hparams_t *hp = jb_vqvae_hparams(vq);
    const int64_t hop = hp->hop_lengths[0], have = jb_codes_len(&rj->codes, 0);
    const int64_t margin = (jb_vqvae_margin(vq, 0, 1) + hop - 1) / hop;
    const int n = rj->codes.n_samples;
    if (upto > have) upto = have;
    if (upto <= j->dec_upto) return 0;
    if (upto * hop > j->cap0) {   // grow the audio buffer (amortised doubling)
        int64_t cap = j->cap0 ? j->cap0 : 65536;
        while (cap < upto * hop) cap *= 2;
        float *a = malloc(sizeof(float) * (size_t)cap * (size_t)n);
        if (!a) return jb_err_set(err, JB_ENOMEM, "job %s: out of memory for audio", id);
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
        rc = jb_err_set(err, JB_ENOMEM, "job %s: out of memory for audio", id);
    } else {
        for (int k = 0; k < n && !rc; k++) {
            memcpy(codes, jb_codes_row(&rj->codes, 0, k) + s0, sizeof(int32_t) * (size_t)(s1 - s0));
            if (jb_vqvae_decode(vq, codes, 1, s1 - s0, 0, out, 0, err)) {
                rc = jb_err_prefix(err, "job %s sample %d", id, k);
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

static int spool_done(const jb_collect_opts_t *o, const char *id, jb_err_t *err);

static int failed(const jb_collect_opts_t *o, jb_collect_stats_t *st, const char *id, int level,
                  int code, const char *why, jb_endpoint_t *in, jb_err_t *err) {
    jb_log(JB_ERROR, "job=%s failed: %s", id, why);
    // The exit status it gives: 69 for a job the input left unfinished, 65 otherwise
    // (bad data, or an error record from upstream whatever its class).
    if (!st->jobs_failed) st->first_fail_code = level == -2 ? 69 : 65;
    if (level == -2) level = -1;
    st->jobs_failed++;
    if (jb_outdir_write_error(o->root, id, level, code, why, err)) return -1;
    jb_endpoint_done(in, id);   // the error record is the job's result
    return spool_done(o, id, err);
}

// ROOT/<id> already there (a job redone after this decoder wrote it): done.
static int already_written(const char *root, const char *id) {
    char path[4096];
    struct stat sb;
    snprintf(path, sizeof path, "%s/%s", root, id);
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

// ---- spool -----------------------------------------------------------------------

typedef struct {
    jb_msg_list_t in;  // in.jbc messages of the spooled jobs, replayed first; [0, next)
    int next;          // were taken out
    struct sjob {      // per spooled job: messages in in.jbc, and received again since
        char id[JB_WIRE_JOB_ID_MAX + 1];
        int64_t n_in, recv_n;
    } *jobs;
    int n_jobs;
} replay_t;

static void replay_free(replay_t *r) {
    jb_msg_list_free(&r->in, r->next);
    free(r->jobs);
}

static int run_exists(const char *root, const char *id) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", root, id);
    return access(path, F_OK) == 0;
}

// The spooled jobs: those already written are done (spool removed); the others are
// queued for decoding again.
static int replay_load(const jb_collect_opts_t *o, jb_endpoint_t *in, replay_t *r,
                       jb_err_t *err) {
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
            jb_endpoint_done(in, sj->id);
            continue;
        }
        int before = r->in.n;
        if (jb_spool_read(o->spool, sj->id, JB_SPOOL_IN, jb_msg_list_take, &r->in, err))
            return -1;
        sj->n_in = r->in.n - before;
        // Whose stream the held messages are (recorded at its seq 0): only that one
        // continues them (docs/reliability.md, "Ownership of a job across restarts").
        char from[400], *nl;
        const char *pname = NULL, *pepoch = NULL;
        if (jb_spool_get_note(o->spool, sj->id, "from", from, sizeof from) > 0 &&
            (nl = strchr(from, '\n'))) {
            *nl = '\0';
            pname = from;
            nl[1 + strcspn(nl + 1, "\n")] = '\0';
            pepoch = nl + 1;
        }
        if (jb_endpoint_records_input(in) && !pname && sj->n_in > 0) {
            // No record of whose stream this is: its seq 0 (which records it) is not among
            // the held messages, so no producer can continue them, and fed to the reader
            // they could even make a whole job without its job message. Void: the job is
            // taken again from seq 0 when a producer sends it.
            jb_log(JB_WARN, "job=%s: the spool %s holds %lld message(s) without their "
                   "stream's start (no producer recorded); void, the job is taken again from "
                   "seq 0", sj->id, jb_spool_dir(o->spool), (long long)sj->n_in);
            for (int k = before; k < r->in.n; k++) jb_msg_clear(&r->in.v[k]);
            r->in.n = before;
            if (jb_spool_remove(o->spool, sj->id, err)) return -1;
            continue;
        }
        if (jb_endpoint_preload(in, sj->id, sj->n_in, pname, pepoch, err)) return -1;
        jb_log(JB_INFO, "job=%s resumed from the spool: %lld message(s)", sj->id,
               (long long)sj->n_in);
        r->n_jobs++;
    }
    return 0;
}

// A message from upstream: 1 = drop it (a spooled job's message sent again, or a job
// already written), 0 = take it (into the spool first), -1 = the spool write failed.
static int spool_in(const jb_collect_opts_t *o, jb_endpoint_t *in, replay_t *r, jb_reader_t *rd,
                    jb_msg_t *m, jb_err_t *err) {
    // Over a link the persist hook has spooled it and the link drops what is held.
    if (!o->spool || !m->job_id[0] || jb_endpoint_records_input(in)) return 0;
    for (int i = 0; i < r->n_jobs; i++)
        if (!strcmp(r->jobs[i].id, m->job_id) && r->jobs[i].recv_n < r->jobs[i].n_in) {
            r->jobs[i].recv_n++;
            return 1;
        }
    if (!jb_reader_find(rd, m->job_id) && run_exists(o->root, m->job_id)) {
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
    // A job already written here (resent by a producer whose DONE was lost, to an instance
    // that has forgotten it): taken without spooling; the collector answers DONE and drops
    // it (take(), whose test this is). Spooled, its entry would stay for ever. A job being
    // written now has had all its messages, so nothing of it reaches this hook after its
    // directory appears.
    if (already_written(o->root, msg->job_id)) return 0;
    // The first message of a stream: which producer (and run of it) sent it, so that a
    // restart continues the held messages only with that same stream.
    char name[200], epoch[64], note[300];
    if (msg->seq == 0 &&
        !jb_endpoint_owner(o->in, msg->job_id, name, sizeof name, epoch, sizeof epoch)) {
        snprintf(note, sizeof note, "%s\n%s\n", name, epoch);
        if (jb_spool_put_note(o->spool, msg->job_id, "from", note, err)) return -1;
    }
    return jb_spool_append(o->spool, msg->job_id, JB_SPOOL_IN, msg, err);
}

static int spool_done(const jb_collect_opts_t *o, const char *id, jb_err_t *err) {
    return o->spool ? jb_spool_remove(o->spool, id, err) : 0;
}

// The job is complete: its run directory. 0, or -1 + err (the directory could not be
// written: the decoder stops).
static int write_run(jb_vqvae_t *vq, const jb_collect_opts_t *o, jb_collect_stats_t *st,
                     double t0, jb_endpoint_t *in, jb_reader_job_t *j, jb_err_t *err) {
    const jb_vqvae_hparams_t *hp = jb_vqvae_hparams(vq);
    cstate_t *cs = j->user;
    // What the codes file of the run says of them: this model's rate, and the audio
    // length the run's audio has (the job's sample length when nothing said otherwise).
    if (j->codes.sample_rate <= 0) j->codes.sample_rate = hp->sr;
    if (j->codes.audio_len <= 0) {   // always said (wire.md 5), even when nothing is cut
        int64_t T = jb_codes_len(&j->codes, 0) * hp->hop_lengths[0];
        json_t *spec = j->codes.spec ? json_loads(j->codes.spec, 0, NULL) : NULL;
        json_t *ss = json_object_get(spec, "sample_seconds");
        if (json_is_number(ss) && json_number_value(ss) > 0) {
            int64_t n = llround(json_number_value(ss) * hp->sr);
            if (n > 0 && n < T) T = n;
        }
        json_decref(spec);
        if (T > 0) j->codes.audio_len = T;
    }
    double t_busy = jb_now();
    if (cs && cs->dec_upto > 0 && decode_more(vq, j, jb_codes_len(&j->codes, 0), err)) return -1;
    jb_outdir_job_t oj = {.codes = &j->codes, .alignment = j->align,
                          .align_tokens = j->align_tokens, .align_cols = j->align_cols,
                          .align_lyrics = j->align_lyrics};
    for (int l = 0; l < JB_CODES_MAX_LEVELS; l++) {
        oj.labels[l] = j->labels[l];
        if (cs) oj.level_seconds[l] = cs->t_end[l];
    }
    if (cs && cs->dec_upto > 0) {
        oj.audio[0] = cs->audio0;
        oj.audio_len[0] = cs->cap0;   // row stride; rows hold dec_upto * hop
    }
    char *dir = NULL;
    if (jb_outdir_write(o->root, vq, &oj, &dir, err) || spool_done(o, j->id, err)) {
        free(dir);
        return -1;
    }
    jb_endpoint_done(in, j->id);   // renamed into place: DONE
    st->jobs_done++;
    double now = jb_now();
    st->total_s = now - t0;
    if (st->first_audio_s <= 0) st->first_audio_s = st->total_s;
    // This job's own figures (from its first message here); codes and busy are what
    // jukebox-bench pipeline reads to size the decoder (docs/bench.md).
    double all = cs ? now - cs->t_start : st->total_s;
    double first = cs && cs->first_audio > 0 ? cs->first_audio : all;
    jb_log(JB_INFO, "job=%s written to %s (first audio %.2f s, all %.2f s after the job's first "
           "message) codes=%lld busy=%.3fs", j->id, dir, first, all,
           (long long)jb_codes_len(&j->codes, 0) * j->codes.n_samples,
           (cs ? cs->busy_s : 0) + now - t_busy);
    free(dir);
    return 0;
}

// Bottom codes arrived: decode what has enough context on its right, in steps of at
// least ~1 s of audio so that the context is not decoded over and over.
static int codes_arrived(jb_vqvae_t *vq, const jb_collect_opts_t *o, jb_collect_stats_t *st,
                         double t0, jb_reader_job_t *j, jb_err_t *err) {
    // Only once the sample count is fixed (a job message said it): rows may still be
    // added to a job without one, and the audio buffer is sized by the sample count.
    if (j->spec_samples < 1) return 0;
    cstate_t *cs = cstate_of(j);
    if (!cs) return jb_err_set(err, JB_ENOMEM, "out of memory");
    const jb_vqvae_hparams_t *hp = jb_vqvae_hparams(vq);
    int64_t hop = hp->hop_lengths[0];
    int64_t margin = (jb_vqvae_margin(vq, 0, 1) + hop - 1) / hop;
    int64_t ready = jb_codes_len(&j->codes, 0) - margin;
    int64_t step = o->decode_step ? o->decode_step : hp->sr / hop;
    if (o->decode_step < 0 || ready - cs->dec_upto < step) return 0;
    int first = cs->dec_upto == 0;
    double t_busy = jb_now();
    if (decode_more(vq, j, ready, err)) return -1;
    double now = jb_now();
    cs->busy_s += now - t_busy;
    if (first) {   // every job's (the stats keep the decoder's first)
        cs->first_audio = now - cs->t_start;
        if (st->first_audio_s <= 0) st->first_audio_s = now - t0;
        jb_log(JB_INFO, "job=%s first audio decoded %.2f s after the job started", j->id,
               cs->first_audio);
    }
    return 0;
}

// The next message: a spooled job's first (replayed), else from the input, into the spool
// (a stream with a spool). *r: what came (JB_RECV_TIMEOUT also for a message dropped as
// already held or written). 0, or -1 + err (the spool could not be written).
static int next_msg(const jb_collect_opts_t *o, jb_endpoint_t *in, replay_t *rp, jb_reader_t *rd,
                    jb_msg_t *m, jb_recv_t *r, jb_err_t *rerr, jb_err_t *err) {
    jb_msg_clear(m);
    if (rp->next < rp->in.n) {   // the spooled jobs first
        *m = rp->in.v[rp->next++];
        *r = JB_RECV_MSG;
        return 0;
    }
    *r = jb_endpoint_recv(in, m, 200, rerr);
    if (*r != JB_RECV_MSG) return 0;
    int d = spool_in(o, in, rp, rd, m, err);
    if (d < 0) return -1;
    if (d) {
        jb_msg_clear(m);
        *r = JB_RECV_TIMEOUT;
    }
    return 0;
}

// What a job's event means here: its audio so far, its run directory, its error record,
// its spool gone. 0, or -1 + err (fatal: the decoder stops).
static int on_event(jb_vqvae_t *vq, const jb_collect_opts_t *o, jb_collect_stats_t *st,
                    double t0, jb_endpoint_t *in, jb_reader_ev_t *ev, jb_err_t *err) {
    switch (ev->kind) {
    case JB_READ_CODES:
        return ev->level == 0 ? codes_arrived(vq, o, st, t0, ev->job, err) : 0;
    case JB_READ_DONE: {
        int bad = write_run(vq, o, st, t0, in, ev->job, err);
        jb_reader_job_free(&ev->job);
        return bad ? -1 : 0;
    }
    case JB_READ_FAILED:
        return failed(o, st, ev->id, ev->level, ev->code, ev->why, in, err);
    case JB_READ_CANCEL:   // the link: this job went elsewhere
        jb_log(JB_INFO, "job=%s cancelled by its producer", ev->id);
        return spool_done(o, ev->id, err);
    case JB_READ_DROPPED:
        jb_log(JB_DEBUG, "job=%s: a message after the job's result, dropped", ev->id);
        return 0;
    default: return 0;
    }
}

// One message (r: JB_RECV_MSG, or JB_RECV_BAD with rerr saying why) through the reader,
// then its event. 0, or -1 + err (fatal).
static int take(jb_vqvae_t *vq, const jb_collect_opts_t *o, jb_collect_stats_t *st, double t0,
                jb_endpoint_t *in, jb_reader_t *rd, jb_msg_t *m, jb_recv_t r,
                const jb_err_t *rerr, jb_err_t *err) {
    jb_reader_ev_t ev;
    if (r == JB_RECV_BAD) {
        jb_reader_refused(rd, m, rerr, &ev);
        if (ev.kind == JB_READ_NONE) {
            jb_log(JB_WARN, "skipped a message: %s", rerr->msg);
            st->msgs_skipped++;
        }
    } else {
        // (A stream without a spool writes such a job again, as ROOT/<id>.1.)
        if (m->job_id[0] && !jb_reader_find(rd, m->job_id) && m->type == JB_MSG_JOB &&
            jb_endpoint_records_input(in) && already_written(o->root, m->job_id)) {
            jb_log(JB_INFO, "job=%s: %s/%s already written; done", m->job_id, o->root,
                   m->job_id);
            jb_endpoint_done(in, m->job_id);
            jb_msg_clear(m);
            return 0;
        }
        // A level's END: when its codes were complete (the page's compute times).
        int end_level = m->type == JB_MSG_END ? m->level : -1;
        char end_id[sizeof m->job_id];
        snprintf(end_id, sizeof end_id, "%s", m->job_id);
        if (jb_reader_feed(rd, m, &ev, err)) return -1;
        jb_reader_job_t *oj = ev.job ? ev.job : jb_reader_find(rd, end_id);
        cstate_t *cs = oj ? cstate_of(oj) : NULL;
        if (cs && end_level >= 0 && end_level < JB_CODES_MAX_LEVELS)
            cs->t_end[end_level] = jb_now() - cs->t_start;
    }
    jb_msg_clear(m);
    return on_event(vq, o, st, t0, in, &ev, err);
}

// Jobs the input left unfinished: an error record each, so none is lost silently.
// With a spool they are kept for a restart; stopped by a signal, they are handed
// back (a link) to be redone.
static void leave_open_jobs(const jb_collect_opts_t *o, jb_collect_stats_t *st,
                            jb_endpoint_t *in, jb_reader_t *rd, int eof, int broken) {
    for (jb_reader_job_t *j = jb_reader_take_open(rd), *next; j; j = next) {
        next = j->next;
        if ((eof || broken) && o->spool) {
            jb_log(JB_WARN, "job=%s: the input %s before the job was complete; kept in the "
                   "spool %s for a restart", j->id, eof ? "ended" : "broke",
                   jb_spool_dir(o->spool));
            st->jobs_kept++;
        } else if (eof || broken) {
            jb_err_t e2 = {0};
            failed(o, st, j->id, eof ? -2 : -1, eof ? 69 : 65, eof ? "the input ended before "
                   "the job was complete" : "the input broke (a corrupt or truncated frame) "
                   "before the job was complete", in, &e2);
        } else {   // stopped: another decoder instance can take it now (a link)
            jb_endpoint_release(in, j->id);
        }
        jb_reader_job_free(&j);
    }
}

int jb_collect_run(jb_vqvae_t *vq, jb_endpoint_t *in, const jb_collect_opts_t *o,
                   jb_collect_stats_t *st, jb_err_t *err) {
    jb_msg_t m;
    jb_msg_init(&m);
    memset(st, 0, sizeof *st);
    double t0 = -1;
    int rc = -1, eof = 0, broken = 0;
    const jb_vqvae_hparams_t *hp = jb_vqvae_hparams(vq);
    jb_reader_opts_t ro = {.levels = hp->levels, .codebook = hp->l_bins,
                           .free_user = cstate_free};
    jb_reader_t *rd = jb_reader_new(&ro, err);
    if (!rd) return -1;
    replay_t rp;
    if (replay_load(o, in, &rp, err)) {
        replay_free(&rp);
        jb_reader_destroy(&rd);
        return -1;
    }
    if (o->spool_ready) atomic_store(o->spool_ready, 1);
    jb_service_ready("model loaded; waiting for jobs");
    for (;;) {
        jb_service_watchdog();
        if ((o->stop && *o->stop) ||
            (o->max_jobs > 0 && st->jobs_done + st->jobs_failed >= o->max_jobs)) {
            rc = 0;
            break;
        }
        jb_err_t rerr = {0};
        jb_recv_t r;
        if (next_msg(o, in, &rp, rd, &m, &r, &rerr, err)) break;
        if (r == JB_RECV_TIMEOUT) continue;
        if (r == JB_RECV_ERROR) {   // the stream cannot go on: its open jobs fail below
            *err = rerr;
            broken = 1;
            break;
        }
        if (r == JB_RECV_EOF) {
            rc = 0;
            eof = 1;
            break;
        }
        if (t0 < 0) t0 = jb_now();
        if (take(vq, o, st, t0, in, rd, &m, r, &rerr, err)) break;
    }
    jb_msg_clear(&m);
    leave_open_jobs(o, st, in, rd, eof, broken);
    replay_free(&rp);
    jb_reader_destroy(&rd);
    return rc;
}
