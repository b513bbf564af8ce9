// jb_stage.c: see jb_stage.h and docs/wire.md ("Job stream").
#include "jb_stage.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
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
#include "jb_spool.h"
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
    // spool
    int64_t n_in;            // messages of this job in in.jbc
    int64_t recv_n;          // messages of this job received from upstream in this run: the
                             // first n_in of them (resent after a restart) are dropped
    uint32_t *in_sum;        // (n_in) checksums of the spooled inputs (pipe input after a
                             // restart): a resent message must be the same
    int *gen;                // (n_gen) type * 256 + level + 1 of the messages this stage had
                             // generated before a restart (in out.jbc): not sent again
    int n_gen, gen_idx;
    jb_codes_t mine;         // codes of this level from out.jbc (resumed job), or zeroed
    int resumed;
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
    jb_spool_t *spool;
    char model_id[160];      // the model and settings that make this stage's codes
    atomic_int spool_ready;  // replay done: a link input's persist hook may spool
    // Jobs finished here whose spool waits until the next stage has them.
    char (*finished)[JB_WIRE_JOB_ID_MAX + 1];
    int n_finished, cap_finished;
    // Replay of a spooled job: what on_message would send is captured here instead.
    int replaying;
    int out_broken;          // a send or spool write failed: the stage stops (not the job's fault)
    jb_msg_t *cap;
    int n_cap, cap_cap;
    // --control (NULL without) and the status the links' I/O threads report.
    jb_link_t *control;
    pthread_mutex_t status_mu;
    char *status;                     // JSON object text: stage, jobs, tokens/s, last error
    char last_error[512];
    double last_error_t;
    double rate_t[64];                // (time, tokens emitted so far) after each window
    int64_t rate_tok[64], tokens;
    int n_rate;
    // DONE from below (the output link's I/O thread): the job is finished for good
    // downstream (another copy may have got there first). The stage thread drops it and
    // its spool (drain_done); until then nothing more of it is sent or spooled.
    pthread_mutex_t done_mu;
    char (*done_q)[JB_WIRE_JOB_ID_MAX + 1];
    int n_done_q, cap_done_q;
    // The last 64 jobs DONE from below: the input link's persist hook spools nothing more
    // of them (a message it was persisting when the DONE came would recreate the spool
    // directory after drain_done removed it).
    char done_recent[64][JB_WIRE_JOB_ID_MAX + 1];
    int n_done_recent;
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
    jb_endpoint_t *eps[2] = {s->in, s->out};
    const char *names[2] = {"in", "out"};
    for (int i = 0; i < 2; i++) {
        char *t = jb_endpoint_status_json(eps[i]);   // NULL for a stream
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

// The output link's consumer reported a job DONE: so is it here (the output endpoint
// has passed the DONE upstream already, opts.upstream), and its spool goes.
static void stage_on_done(void *user, const char *job_id) {
    stage_t *s = user;
    pthread_mutex_lock(&s->done_mu);
    if (s->n_done_q == s->cap_done_q) {
        int cap = s->cap_done_q ? 2 * s->cap_done_q : 16;
        void *q = realloc(s->done_q, sizeof *s->done_q * (size_t)cap);
        if (q) s->done_q = q, s->cap_done_q = cap;
    }
    int queued = s->n_done_q < s->cap_done_q;
    if (queued) snprintf(s->done_q[s->n_done_q++], sizeof s->done_q[0], "%s", job_id);
    snprintf(s->done_recent[s->n_done_recent++ % 64], sizeof s->done_recent[0], "%s", job_id);
    pthread_mutex_unlock(&s->done_mu);
    if (!queued) jb_log(JB_WARN, "job=%s: out of memory queueing its DONE; its spool stays until "
                        "a restart replays it", job_id);
}

static int done_pending(stage_t *s, const char *id) {
    int r = 0;
    pthread_mutex_lock(&s->done_mu);
    for (int i = 0; i < s->n_done_q && !r; i++) r = !strcmp(s->done_q[i], id);
    pthread_mutex_unlock(&s->done_mu);
    return r;
}

static void drop_job(stage_t *s, struct job *j);
static struct job *find_job(stage_t *s, const char *id);

// The stage thread: jobs reported DONE from below are dropped here (a copy elsewhere
// finished first) and their spools removed. Before, the spool went on the I/O thread
// while this thread still sampled the job and spooled its next window into a new
// directory that no DONE removed (a job left in the spool: issue 18 D).
static void drain_done(stage_t *s) {
    char ids[16][JB_WIRE_JOB_ID_MAX + 1];
    for (;;) {   // 16 at a time, without the lock while dropping
        pthread_mutex_lock(&s->done_mu);
        int n = s->n_done_q < 16 ? s->n_done_q : 16;
        memcpy(ids, s->done_q, sizeof ids[0] * (size_t)n);
        memmove(s->done_q, s->done_q + n, sizeof ids[0] * (size_t)(s->n_done_q - n));
        s->n_done_q -= n;
        pthread_mutex_unlock(&s->done_mu);
        if (!n) return;
        for (int i = 0; i < n; i++) {
            struct job *j = find_job(s, ids[i]);
            if (j) {
                jb_log(JB_INFO, "job=%s: DONE from below while this stage still had it "
                       "(another copy finished first); dropped", ids[i]);
                drop_job(s, j);
            }
            jb_err_t e = {0};
            if (s->spool && jb_spool_remove(s->spool, ids[i], &e)) jb_log(JB_WARN, "%s", e.msg);
        }
    }
}

// A link input's new message, on its I/O thread: into in.jbc before it is acked.
// Refused (the producer resends it) until the spooled jobs are replayed and preloaded.
static int stage_persist(void *user, const jb_msg_t *m, jb_err_t *err) {
    stage_t *s = user;
    if (!atomic_load(&s->spool_ready))
        return jb_err_set(err, JB_EUNAVAIL, "%s: starting (replaying the spool)", s->o->stage);
    if (!m->job_id[0]) return 0;
    // The first message of a stream: which producer (and run of it) sent it, so that a
    // restart continues the held messages only with that same stream.
    char name[200], epoch[64], note[300];
    int rc = 0;
    pthread_mutex_lock(&s->done_mu);   // a DONE from below is recorded before or after this
    for (int i = 0; i < 64 && i < s->n_done_recent && !rc; i++)
        if (!strcmp(s->done_recent[i], m->job_id))
            rc = jb_err_set(err, JB_EUNAVAIL, "job %s is done below", m->job_id);
    if (!rc && m->seq == 0 &&
        !jb_endpoint_owner(s->in, m->job_id, name, sizeof name, epoch, sizeof epoch)) {
        snprintf(note, sizeof note, "%s\n%s\n", name, epoch);
        rc = jb_spool_put_note(s->spool, m->job_id, "from", note, err);
    }
    if (!rc) rc = jb_spool_append(s->spool, m->job_id, JB_SPOOL_IN, m, err);
    pthread_mutex_unlock(&s->done_mu);
    return rc;
}

// Which model and settings make this stage's codes: the model file's size and CRC-32
// (of the whole file up to 64 MiB, else of its safetensors header and 256 blocks of
// 4 KiB spread over it), the weights' type and the device. A spool records it: jobs
// spooled under another identity are not resumed with this one.
static int model_identity(const jb_stage_opts_t *o, char *buf, size_t n, jb_err_t *err) {
    int fd = open(o->model_path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st)) {
        int e = errno;
        if (fd >= 0) close(fd);
        return jb_err_set(err, JB_EIO, "%s: %s", o->model_path, strerror(e));
    }
    const int64_t size = (int64_t)st.st_size, whole = (int64_t)64 << 20, blk = 4096;
    uint8_t *b = malloc((size_t)blk);
    uint32_t crc = 0;
    int64_t hdr = size;
    if (b && size > whole && pread(fd, b, 8, 0) == 8) {
        uint64_t h = 0;
        for (int i = 7; i >= 0; i--) h = h << 8 | b[i];
        hdr = (int64_t)(8 + h < (uint64_t)size ? 8 + h : (uint64_t)size);
    }
    // [0, hdr): every byte (the whole file when small); then 256 spread blocks.
    for (int64_t at = 0; b && at < hdr;) {
        ssize_t r = pread(fd, b, (size_t)(hdr - at < blk ? hdr - at : blk), (off_t)at);
        if (r <= 0) break;
        crc = jb_frame_crc32(crc, b, (size_t)r);
        at += r;
    }
    for (int k = 0; b && hdr < size && k < 256; k++) {
        int64_t at = hdr + (size - hdr - blk) / 255 * k;
        ssize_t r = pread(fd, b, (size_t)blk, (off_t)(at > hdr ? at : hdr));
        if (r > 0) crc = jb_frame_crc32(crc, b, (size_t)r);
    }
    close(fd);
    if (!b) return jb_err_set(err, JB_ENOMEM, "out of memory");
    free(b);
    static const char *const wnames[] = {"stored", "f32", "f16", "bf16"};
    snprintf(buf, n, "size=%lld crc32=%08x weights=%s device=%s\n", (long long)size,
             (unsigned)crc, o->weights >= 0 && o->weights < 4 ? wnames[o->weights] : "?",
             o->cuda ? "cuda" : "cpu");
    return 0;
}

// Each spooled job records the model identity its codes were made with (a note beside
// its out.jbc); resuming it with another model or settings (other weights, another
// weights type or device) would mix two models' codes in one job: refused.
static int check_spool_model(stage_t *s, jb_err_t *err) {
    if (model_identity(s->o, s->model_id, sizeof s->model_id, err)) return -1;
    char held[160];
    for (int i = 0; i < jb_spool_n_jobs(s->spool); i++) {
        const char *id = jb_spool_job_id(s->spool, i);
        if (jb_spool_get_note(s->spool, id, "model", held, sizeof held) <= 0 ||
            !strcmp(held, s->model_id))
            continue;
        char want[160];
        snprintf(want, sizeof want, "%s", s->model_id);
        held[strcspn(held, "\n")] = '\0';
        want[strcspn(want, "\n")] = '\0';
        return jb_err_set(err, JB_EINVAL, "%s: spool %s: job %s was made with another model or "
                          "settings (%s); %s here is %s: restart with the model and settings "
                          "the spool was made with, or with another (empty) spool",
                          s->o->stage, jb_spool_dir(s->spool), id, held, s->o->model_path, want);
    }
    return 0;
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
    free(j->gen);
    free(j->in_sum);
    jb_codes_free(&j->mine);
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

static int is_finished(const stage_t *s, const char *id) {
    for (int i = 0; i < s->n_finished; i++)
        if (!strcmp(s->finished[i], id)) return 1;
    return 0;
}

// The job is over here (END(-1) or ERROR sent): forgotten; its spool is removed
// once the next stage has everything (release_finished).
static int finish_job(stage_t *s, job_t *j, jb_err_t *err) {
    if (s->spool && !is_finished(s, j->spec.id)) {
        if (s->n_finished == s->cap_finished) {
            int cap = s->cap_finished ? 2 * s->cap_finished : 16;
            void *p = realloc(s->finished, sizeof *s->finished * (size_t)cap);
            if (!p) return jb_err_set(err, JB_ENOMEM, "out of memory");
            s->finished = p;
            s->cap_finished = cap;
        }
        snprintf(s->finished[s->n_finished++], sizeof s->finished[0], "%s", j->spec.id);
    }
    drop_job(s, j);
    return 0;
}

// Removes the spools of finished jobs. wait: at the end of the input, wait (stop
// flag honoured) for a pipe to be read empty. Output that is not a pipe: only
// after it was closed cleanly (closed = 1).
static int release_finished(stage_t *s, int wait, int closed, jb_err_t *err) {
    if (!s->spool || !s->n_finished) return 0;
    if (!closed) {
        int64_t unread = 0;
        int r;
        while ((r = jb_endpoint_unread(s->out, &unread)) == 1 && unread > 0 && wait &&
               !(s->o->stop && *s->o->stop)) {
            jb_service_watchdog();
            struct timespec ts = {0, 20 * 1000000};
            nanosleep(&ts, NULL);
        }
        if (r != 1 || unread > 0) return 0;   // not a pipe, reader gone, or not read yet
    }
    for (int i = 0; i < s->n_finished; i++) {
        if (jb_spool_remove(s->spool, s->finished[i], err)) return -1;
        jb_log(JB_DEBUG, "job=%s spool removed", s->finished[i]);
    }
    s->n_finished = 0;
    return 0;
}

static int capture(stage_t *s, const jb_msg_t *m, jb_err_t *err) {
    if (s->n_cap == s->cap_cap) {
        int cap = s->cap_cap ? 2 * s->cap_cap : 64;
        jb_msg_t *p = realloc(s->cap, sizeof *p * (size_t)cap);
        if (!p) return jb_err_set(err, JB_ENOMEM, "out of memory");
        s->cap = p;
        s->cap_cap = cap;
    }
    jb_msg_t *c = &s->cap[s->n_cap];
    *c = *m;   // deep copy of the owned pointers
    c->spec = NULL;
    c->text = NULL;
    c->codes = NULL;
    size_t n = jb_msg_payload_elems(m);
    if ((m->spec && jb_msg_set_spec(c, m->spec, err)) ||
        (m->text && jb_msg_set_text(c, m->text, err)) ||
        (m->codes && n && !(c->codes = malloc(sizeof(int32_t) * n)))) {
        jb_msg_clear(c);
        return jb_err_set(err, JB_ENOMEM, "out of memory");
    }
    if (c->codes) memcpy(c->codes, m->codes, sizeof(int32_t) * n);
    s->n_cap++;
    return 0;
}

// Every message out goes through here: with a spool, into the job's out.jbc first.
static int send_msg(stage_t *s, const jb_msg_t *m, jb_err_t *err) {
    if (s->replaying) return capture(s, m, err);
    if (m->job_id[0] && done_pending(s, m->job_id)) return 0;   // finished below: dropped soon
    // A job's first output here: which model makes its codes, first (check_spool_model).
    if (s->spool && m->job_id[0] && jb_spool_count(s->spool, m->job_id, JB_SPOOL_OUT) == 0 &&
        jb_spool_put_note(s->spool, m->job_id, "model", s->model_id, err)) {
        s->out_broken = 1;
        return jb_err_prefix(err, "%s: spool", s->o->stage);
    }
    if (s->spool && m->job_id[0] && jb_spool_append(s->spool, m->job_id, JB_SPOOL_OUT, m, err)) {
        s->out_broken = 1;
        return jb_err_prefix(err, "%s: spool", s->o->stage);
    }
    if (jb_endpoint_send(s->out, m, err) != 0) {
        s->out_broken = 1;
        return jb_err_prefix(err, "%s: sending %s of job %s", s->o->stage,
                             jb_msg_type_name(m->type), m->job_id);
    }
    return 0;
}

// A message this stage makes for job j (its codes, alignment, ENDs, an ERROR). A
// resumed job's out.jbc already held the first n_gen of them (they were re-sent
// from there on start): those are not sent again.
static int emit(stage_t *s, job_t *j, const jb_msg_t *m, jb_err_t *err) {
    if (j && j->gen_idx < j->n_gen && !s->replaying) {
        int want = j->gen[j->gen_idx], got = m->type * 256 + m->level + 1;
        if (want == got) {
            j->gen_idx++;
            return 0;
        }
        jb_log(JB_WARN, "job=%s level=%d: after the restart this stage makes %s where its spool "
               "holds %s; sending from here on", j->spec.id, s->info->level,
               jb_msg_type_name(m->type), jb_msg_type_name(want / 256));
        j->n_gen = j->gen_idx;
    }
    return send_msg(s, m, err);
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
             emit(s, j, &m, err);
    jb_msg_clear(&m);
    j->failed = 1;
    snprintf(s->failed_ids[s->n_failed++ % 32], sizeof s->failed_ids[0], "%s", j->spec.id);
    if (!rc) jb_endpoint_finished(s->out, j->spec.id);   // its ERROR is its result
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
    int rc = jb_msg_set_job_id(&m, j->spec.id, err) || emit(s, j, &m, err);
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
    if (jb_sample_plan_to(in, j->total, j->have, hop, &j->windows, &j->n_windows, err))
        return jb_err_prefix(err, "job %s", j->spec.id);
    j->started = 1;
    if (j->resumed) {
        // The windows whose codes reached out.jbc before the restart are done.
        int64_t mine = jb_codes_len(&j->mine, level);
        if (mine > j->total) mine = j->total;
        for (int k = 0; k < n && mine > j->have; k++)
            memcpy(j->zs + (int64_t)k * j->total + j->have,
                   jb_codes_row(&j->mine, level, k) + j->have,
                   sizeof(int32_t) * (size_t)(mine - j->have));
        if (mine > j->have) j->have = (int)mine;
        while (j->gen_idx < j->n_gen && j->gen[j->gen_idx] == JB_MSG_CODES * 256 + level + 1)
            j->gen_idx++;
        while (j->next_window < j->n_windows &&
               j->windows[j->next_window].start + j->windows[j->next_window].fill <= j->have)
            j->next_window++;
        jb_log(JB_INFO, "job=%s level=%d resumed at window %d of %d (%d of %d tokens)",
               j->spec.id, level, j->next_window, j->n_windows, j->have, j->total);
    }
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
         jb_msg_set_text(&m, lyrics, err) || emit(s, j, &m, err);
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
             (j->labels_json && jb_msg_set_text(&m, j->labels_json, err)) || emit(s, j, &m, err);
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

// The sampling settings of job j's windows at this stage's level.
static void window_opts(const stage_t *s, job_t *j, jb_sample_opts_t *o) {
    const int level = s->info->level;
    *o = (jb_sample_opts_t){0};
    o->sampling = jb_sampling_default_params();
    o->sampling.temp = (float)j->spec.temp[level];
    o->sampling.top_k = j->spec.top_k[level];
    o->sampling.top_p = (float)j->spec.top_p[level];
    o->sampling.greedy = j->spec.top_k[level] == 1;
    o->chunk_size = j->spec.chunk_size[level];
    o->max_batch_size = j->spec.max_batch_size[level] < s->o->max_batch ? j->spec.max_batch_size[level]
                                                                          : s->o->max_batch;
    o->hop_length = (int)(j->spec.hop_fraction[level] * s->info->n_ctx);
    o->seed = j->spec.seed;
    o->job_hash = jb_rng_hash_job(j->spec.id);
    o->on_step = on_step;
    o->on_step_user = j;
}

// Job j's next window as a part of a batch (jb_sample_windows); o: its settings.
static jb_sample_part_t window_part(const stage_t *s, job_t *j, const jb_sample_opts_t *o) {
    jb_sample_part_t pt = {o, j->spec.n_samples, j->windows[j->next_window], j->zs, j->total,
                           &j->have, NULL, 0, j->y, j->lyrics};
    if (s->info->x_cond) {
        pt.zs_above = jb_codes_row(&j->codes, s->info->level + 1, 0);
        pt.above_stride = (int)jb_codes_stride(&j->codes, s->info->level + 1);
    }
    return pt;
}

// After job j's window brought it from `before` codes to j->have: send the new codes, count.
static int window_done(stage_t *s, job_t *j, int before, jb_err_t *err) {
    j->next_window++;
    if (j->have > before && send_codes(s, j, before, j->have - before, err))   // the new codes
        return -1;
    s->tokens += (int64_t)(j->have - before) * j->spec.n_samples;
    s->rate_t[s->n_rate % 64] = jb_now();
    s->rate_tok[s->n_rate % 64] = s->tokens;
    s->n_rate++;
    // "window=k/n" in the progress lines: the front command's display shows it.
    snprintf(j->progress.what, sizeof j->progress.what, "job=%s level=%d window=%d/%d",
             j->spec.id, s->info->level, j->next_window, j->n_windows);
    jb_progress_update(&j->progress, j->have);
    return 0;
}

static int run_window(stage_t *s, job_t *j, jb_err_t *err) {
    jb_sample_opts_t o;
    window_opts(s, j, &o);
    jb_sample_part_t pt = window_part(s, j, &o);
    int before = j->have;
    if (jb_sample_window(s->sampler, &o, pt.n_samples, pt.win, pt.zs, pt.zs_stride, pt.have,
                         pt.zs_above, pt.above_stride, pt.y, pt.lyrics, err))
        return jb_err_prefix(err, "job %s", j->spec.id);
    return window_done(s, j, before, err);
}

// Many jobs in one step: the oldest job whose next window can run, and every other such job
// whose window has the same prime length, fill and chunk size, as long as their samples fit
// the sampler's batch (--max-batch), sampled together (jb_sample_windows); each job's codes
// are those it gets alone. order: the jobs, oldest last. Returns 1 when it ran a batch of two
// or more jobs, 0 when there is none to run (the caller then advances one job: also the path
// that names a failing job), -1 on a fatal error. CPU only: the device sampler takes one job.
static int run_batched(stage_t *s, job_t **order, int n_jobs, jb_err_t *err) {
    if (s->o->cuda) return 0;
    const int maxb = jb_prior_sampler_max_batch(s->sampler);
    job_t *sel[64];
    jb_sample_opts_t opts[64];
    int n = 0, rows = 0, P = -1, fill = 0, chunk = 0;
    for (int i = n_jobs - 1; i >= 0 && n < 64; i--) {
        job_t *j = order[i];
        if (j->failed || !j->started || j->level_done || j->next_window >= j->n_windows ||
            !window_ready(s, j))
            continue;
        jb_sample_window_t w = j->windows[j->next_window];
        int pj = jb_sample_window_prime(s->info, w, j->have), nj = j->spec.n_samples;
        if (w.fill <= pj || nj > j->spec.max_batch_size[s->info->level]) continue;
        if (n == 0) P = pj, fill = w.fill, chunk = j->spec.chunk_size[s->info->level];
        else if (pj != P || w.fill != fill || j->spec.chunk_size[s->info->level] != chunk)
            continue;
        if (rows + nj > maxb) continue;
        window_opts(s, j, &opts[n]);
        sel[n++] = j;
        rows += nj;
    }
    if (n < 2) return 0;
    jb_sample_part_t parts[64];
    int before[64];
    for (int i = 0; i < n; i++) {
        parts[i] = window_part(s, sel[i], &opts[i]);
        before[i] = sel[i]->have;
    }
    jb_err_t why = {0};
    if (jb_sample_windows(s->sampler, parts, n, &why)) {
        if (why.code == JB_ECANCEL) {
            *err = why;
            return -1;
        }
        // Whose fault it is shows when each job runs alone: that path fails the right one.
        jb_log(JB_WARN, "level %d: %d jobs in one batch failed (%s); running them one at a time",
               s->info->level, n, why.msg);
        return 0;
    }
    jb_log(JB_DEBUG, "level %d: one batch of %d jobs, %d samples", s->info->level, n, rows);
    for (int i = 0; i < n; i++)
        if (window_done(s, sel[i], before[i], err)) return -1;
    return 1;
}

// Moves a job on as far as it can without input: start, one window (when may_sample), finish.
// Returns 1 when it did work, 0 when it waits, -1 on a fatal error. It may free j.
static int advance(stage_t *s, job_t *j, int may_sample, jb_err_t *err) {
    if (j->failed) return 0;
    jb_err_t why = {0};
    if (j->prefix_done && !j->started) {
        if (start_level(s, j, &why)) {
            if (s->out_broken) {   // the output is gone: not the job's fault
                *err = why;
                return -1;
            }
            return fail_job(s, j, &why, err) ? -1 : 1;
        }
    }
    if (!j->started) return 0;
    if (!j->level_done && j->next_window >= j->n_windows) {
        if (finish_level(s, j, err)) return -1;   // (sending: fatal)
    } else if (may_sample && window_ready(s, j)) {
        if (run_window(s, j, &why)) {
            if (why.code == JB_ECANCEL || s->out_broken) {
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
        int rc = jb_msg_set_job_id(&m, j->spec.id, err) || emit(s, j, &m, err);
        jb_msg_clear(&m);
        if (rc) return -1;
        jb_log(JB_INFO, "job=%s level=%d done", j->spec.id, s->info->level);
        // DONE upstream: now for a stream output, which holds the job; for a link
        // output when its consumer reports it (then stage_on_done).
        jb_endpoint_finished(s->out, j->spec.id);
        return finish_job(s, j, err) ? -1 : 1;
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

// SIGTERM / SIGINT: the one place that decides to stop. It is asked between
// windows, so the window being sampled is finished (spooled and sent) first.
static int stop_requested(const stage_t *s) { return s->o->stop && *s->o->stop; }

static int on_message(stage_t *s, jb_msg_t *m, jb_err_t *err) {
    const int level = s->info->level;
    if (m->type == JB_MSG_CANCEL) {   // the link: this job went elsewhere
        job_t *c = find_job(s, m->job_id);
        jb_log(JB_INFO, "job=%s level=%d cancelled by its producer%s", m->job_id, level,
               c ? "; dropped" : "");
        if (c) drop_job(s, c);
        jb_endpoint_cancel(s->out, m->job_id);
        if (s->spool && jb_spool_remove(s->spool, m->job_id, err)) return -1;
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
            // Its length and sample count must be those of the prefix held, as for every
            // other level: a prefix that did not arrive whole fails the job instead of
            // being sampled anew (an upsample that silently is not one).
            if (j->prefix_done) {
                jb_err_set(&why, JB_EFORMAT, "a second end of level %d's prefix", level);
                return fail_job(s, j, &why, err);
            }
            if (jb_codes_apply(&j->codes, m, &why)) {
                jb_err_prefix(&why, "the prefix of level %d", level);
                return fail_job(s, j, &why, err);
            }
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
            if (send_msg(s, m, err)) return -1;
            return finish_job(s, j, err);
        }
        if (send_msg(s, m, err)) return -1;
        jb_endpoint_finished(s->out, m->job_id);
        return 0;
    default:
        return send_msg(s, m, err);
    }
}

// ---- spool: accepting input, replaying a job after a restart ---------------------------

// Checksum of a message's encoding (the link's seq and credit aside).
static uint32_t msg_sum(const jb_msg_t *m) {
    jb_msg_t x = *m;
    x.seq = x.credit = -1;
    jb_bytes_t h = {0}, p = {0};
    jb_err_t e;
    uint32_t c = 0;
    if (!jb_wire_encode(&x, &h, &p, &e))
        c = jb_frame_crc32(jb_frame_crc32(0, h.data, h.len), p.data, p.len);
    jb_bytes_free(&h);
    jb_bytes_free(&p);
    return c;
}

// One input message: a spooled job's message goes to in.jbc before it is acted on;
// what upstream resends of a job already in the spool is dropped.
static int accept_msg(stage_t *s, jb_msg_t *m, jb_err_t *err) {
    // A link input: spooled by the persist hook; what is held is dropped by the link.
    if (!s->spool || !m->job_id[0] || jb_endpoint_is_reliable(s->in))
        return on_message(s, m, err);
    job_t *j = find_job(s, m->job_id);
    if (j && j->recv_n < j->n_in) {   // resent after a restart: in.jbc has it
        if (j->in_sum && !j->failed && msg_sum(m) != j->in_sum[j->recv_n]) {
            jb_err_t why;
            jb_err_set(&why, JB_EFORMAT, "after the restart, upstream's message %lld of the job "
                       "differs from the one in the spool (another job under the same id, or "
                       "another model upstream?)", (long long)j->recv_n);
            j->recv_n++;
            return fail_job(s, j, &why, err);
        }
        j->recv_n++;
        return 0;
    }
    if (!j && is_finished(s, m->job_id)) return 0;   // done here; resent after a restart
    int take = j ? !j->failed : m->type == JB_MSG_JOB && !failed_before(s, m->job_id);
    if (take && jb_spool_append(s->spool, m->job_id, JB_SPOOL_IN, m, err))
        return jb_err_prefix(err, "%s: spool", s->o->stage);
    char id[JB_WIRE_JOB_ID_MAX + 1];
    snprintf(id, sizeof id, "%s", m->job_id);
    int rc = on_message(s, m, err);
    if (take && (j = find_job(s, id))) {
        j->recv_n++;
        j->n_in = jb_spool_count(s->spool, id, JB_SPOOL_IN);
    }
    return rc;
}

typedef struct {
    jb_msg_t *v;
    int n, cap;
} msgs_t;

static void msgs_free(msgs_t *a) {
    for (int i = 0; i < a->n; i++) jb_msg_clear(&a->v[i]);
    free(a->v);
    memset(a, 0, sizeof *a);
}

static int take_msg(jb_msg_t *m, uint64_t at, void *user) {
    (void)at;
    msgs_t *a = user;
    if (a->n == a->cap) {
        int cap = a->cap ? 2 * a->cap : 64;
        jb_msg_t *p = realloc(a->v, sizeof *p * (size_t)cap);
        if (!p) return -1;
        a->v = p;
        a->cap = cap;
    }
    a->v[a->n++] = *m;   // takes the pointers
    m->spec = m->text = NULL;
    m->codes = NULL;
    return 0;
}

// Same message (the link's seq and credit aside): same encoding.
static int same_msg(const jb_msg_t *a, const jb_msg_t *b) {
    if (a->type != b->type || a->level != b->level || a->offset != b->offset) return 0;
    jb_msg_t x = *a, y = *b;
    x.seq = y.seq = x.credit = y.credit = -1;
    jb_bytes_t h1 = {0}, p1 = {0}, h2 = {0}, p2 = {0};
    jb_err_t e;
    int same = !jb_wire_encode(&x, &h1, &p1, &e) && !jb_wire_encode(&y, &h2, &p2, &e) &&
               h1.len == h2.len && p1.len == p2.len && !memcmp(h1.data, h2.data, h1.len) &&
               (!p1.len || !memcmp(p1.data, p2.data, p1.len));
    jb_bytes_free(&h1);
    jb_bytes_free(&p1);
    jb_bytes_free(&h2);
    jb_bytes_free(&p2);
    return same;
}

// A spooled job after a restart:
//   1. out.jbc is sent again, as it is (downstream drops what it already has);
//   2. in.jbc goes through on_message with sending captured: the job's state again;
//   3. the captured forwards are matched in order against out.jbc: the rest of
//      out.jbc is what this stage had generated (its codes: the windows done);
//   4. the captured messages past the last match (received, never forwarded) go now.
static int replay_job(stage_t *s, const char *id, jb_err_t *err) {
    msgs_t out = {0}, in = {0};
    uint32_t *sums = NULL;   // (in.n) checksums of the spooled inputs
    int rc = -1;
    if (jb_spool_read(s->spool, id, JB_SPOOL_OUT, take_msg, &out, err) ||
        jb_spool_read(s->spool, id, JB_SPOOL_IN, take_msg, &in, err)) {
        jb_err_prefix(err, "%s: replaying job %s", s->o->stage, id);
        goto done;
    }
    for (int i = 0; i < out.n; i++)
        if (jb_endpoint_send(s->out, &out.v[i], err)) {
            jb_err_prefix(err, "%s: resending job %s", s->o->stage, id);
            goto done;
        }
    if (!jb_endpoint_is_reliable(s->in) && in.n > 0) {
        if (!(sums = malloc(sizeof(uint32_t) * (size_t)in.n))) {
            jb_err_set(err, JB_ENOMEM, "out of memory");
            goto done;
        }
        for (int i = 0; i < in.n; i++) sums[i] = msg_sum(&in.v[i]);
    }
    s->replaying = 1;
    for (int i = 0; i < in.n; i++)
        if (on_message(s, &in.v[i], err)) {
            s->replaying = 0;
            jb_err_prefix(err, "%s: replaying job %s", s->o->stage, id);
            goto done;
        }
    s->replaying = 0;
    job_t *j = find_job(s, id);
    {   // a link: only the stream the spool holds continues at in.n
        char from[400], *nl;
        const char *pname = NULL, *pepoch = NULL;
        if (jb_spool_get_note(s->spool, id, "from", from, sizeof from) > 0 &&
            (nl = strchr(from, '\n'))) {
            *nl = '\0';
            nl[1 + strcspn(nl + 1, "\n")] = '\0';
            pname = from;
            pepoch = nl + 1;
        }
        if (jb_endpoint_preload(s->in, id, in.n, pname, pepoch, err)) goto done;
    }
    if (j && !j->failed) {
        j->n_in = in.n;
        j->recv_n = 0;
        j->resumed = 1;
        j->in_sum = sums;   // a pipe: what upstream resends is checked against these
        sums = NULL;
        j->gen = malloc(sizeof(int) * (size_t)(out.n ? out.n : 1));
        if (!j->gen) {
            jb_err_set(err, JB_ENOMEM, "out of memory");
            goto done;
        }
        if (jb_codes_init(&j->mine, id, s->levels, j->spec.n_samples, s->info->bins, err))
            goto done;
    }
    int p = 0;
    for (int i = 0; i < out.n; i++) {
        const jb_msg_t *o = &out.v[i];
        if (p < s->n_cap && same_msg(o, &s->cap[p])) {
            p++;
            continue;
        }
        if (!j || j->failed) continue;
        j->gen[j->n_gen++] = o->type * 256 + o->level + 1;
        jb_err_t why = {0};
        if (o->type == JB_MSG_CODES && o->level == s->info->level &&
            jb_codes_put(&j->mine, o->level, o->offset, o->sample0 > 0 ? (int)o->sample0 : 0,
                         o->batch, o->count, o->codes, &why))
            jb_log(JB_WARN, "job=%s level=%d: spooled codes not usable (%s); they are sampled "
                   "again", id, s->info->level, why.msg);
    }
    int pending = s->n_cap - p;
    for (; p < s->n_cap; p++)
        if (send_msg(s, &s->cap[p], err)) goto done;
    jb_log(JB_INFO, "job=%s level=%d replayed from the spool: %d input message(s), %d output "
           "message(s) sent again, %d forwarded now", id, s->info->level, in.n, out.n, pending);
    if (!find_job(s, id) && !is_finished(s, id)) {   // nothing left to do for it
        if (jb_spool_remove(s->spool, id, err)) goto done;
    }
    rc = 0;
done:
    s->replaying = 0;
    for (int i = 0; i < s->n_cap; i++) jb_msg_clear(&s->cap[i]);
    s->n_cap = 0;
    msgs_free(&out);
    msgs_free(&in);
    free(sums);
    return rc;
}

// SIGTERM over a link: take no new work, hand back every job not finished here
// (its producer gives it to another instance at once) and cancel what was sent of it
// downstream; give the messages of finished jobs up to 2 s to be acked.
// (Streams: nothing to hand back; the jobs stay in the spool, if any.)
static void hand_back(stage_t *s) {
    jb_endpoint_pause(s->in);
    int n = 0;
    for (job_t *j = s->jobs; j; j = j->next)   // '|': both, whatever the first did
        n += jb_endpoint_release(s->in, j->spec.id) | jb_endpoint_cancel(s->out, j->spec.id);
    if (n) jb_log(JB_INFO, "handed back %d unfinished job(s)", n);
    jb_err_t e = {0};
    if (jb_endpoint_flush(s->out, 2000, 0, &e)) jb_log(JB_WARN, "%s", e.msg);
}

int jb_stage_prior_run(const jb_stage_opts_t *o, jb_err_t *err) {
    stage_t s = {.o = o, .status_mu = PTHREAD_MUTEX_INITIALIZER,
                 .done_mu = PTHREAD_MUTEX_INITIALIZER};
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
    if (o->spool) {
        if (!(s.spool = jb_spool_open(o->spool, err))) goto done;
        for (int i = 0; i < jb_spool_n_warnings(s.spool); i++)
            jb_log(JB_WARN, "%s", jb_spool_warning(s.spool, i));
        if (check_spool_model(&s, err)) goto done;
    }
    jb_link_opts_t lo;
    jb_link_default_opts(&lo);
    lo.name = o->name;
    char spool_name[200];   // with a spool, the default name survives a restart
    if (!lo.name && s.spool)
        lo.name = jb_spool_instance_name(s.spool, spool_name, sizeof spool_name);
    lo.stage = o->stage;
    if (o->heartbeat_ms > 0) lo.heartbeat_ms = o->heartbeat_ms;
    if (o->peer_timeout_ms > 0) lo.peer_timeout_ms = o->peer_timeout_ms;
    lo.stop = o->stop;
    lo.status = stage_status;
    lo.status_user = &s;
    update_status(&s);
    if (s.spool) {   // a link input spools on its I/O thread, once the replay is set up
        lo.persist = stage_persist;
        lo.persist_user = &s;
    }
    jb_endpoint_opts_t eo;
    jb_endpoint_default_opts(&eo);
    eo.link = &lo;
    // Each job's messages are bounded by its levels' lengths under this model (wire.md 3.1).
    eo.admit.sr = s.hp->sr;
    eo.admit.levels = s.hp->vqvae.levels;
    for (int l = 0; l < s.hp->vqvae.levels && l <= JB_WIRE_MAX_LEVEL; l++)
        eo.admit.hop[l] = s.hp->vqvae.hop_lengths[l];
    lo.admit = eo.admit;
    if (!(s.in = jb_endpoint_open_in(o->in, &eo, err))) goto done;
    eo.upstream = s.in;   // a job's DONE from below (or its end, on a stream) goes up
    lo.on_done = stage_on_done;
    lo.done_user = &s;
    if (!(s.out = jb_endpoint_open_out(o->out, &eo, err))) goto done;
    if (o->control) {
        jb_link_opts_t co = lo;
        co.role = JB_LINK_CONTROL;
        co.on_done = NULL;
        co.persist = NULL;
        co.status = control_status;
        if (!(s.control = jb_link_open(o->control, &co, err))) goto done;
    }
    jb_log(JB_INFO, "level=%d model=%s ready: in=%s out=%s%s%s", s.info->level, o->model_path,
           jb_endpoint_address(s.in), jb_endpoint_address(s.out), o->spool ? " spool=" : "",
           o->spool ? o->spool : "");
    if (s.spool) {
        int n = jb_spool_n_jobs(s.spool);
        char (*ids)[JB_WIRE_JOB_ID_MAX + 1] = malloc(sizeof *ids * (size_t)(n ? n : 1));
        if (!ids) {
            jb_err_set(err, JB_ENOMEM, "out of memory");
            goto done;
        }
        for (int i = 0; i < n; i++)
            snprintf(ids[i], sizeof ids[i], "%s", jb_spool_job_id(s.spool, i));
        for (int i = 0; i < n; i++)
            if (replay_job(&s, ids[i], err)) {
                free(ids);
                goto done;
            }
        free(ids);
        s.spool_ready = 1;   // the link input may persist new messages from here on
    }
    jb_service_ready("weights loaded; waiting for jobs");
    for (;;) {
        jb_service_watchdog();
        drain_done(&s);
        if (stop_requested(&s)) {
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
                int mrc = accept_msg(&s, &m, err);
                jb_msg_clear(&m);
                if (mrc) goto done;
                update_status(&s);
                continue;   // drain input first: forwarding stays prompt
            } else if (r == JB_RECV_EOF) {
                input_open = 0;
            } else if (r == JB_RECV_BAD) {
                // A message of a job in progress that cannot be read: the job is missing
                // part of its stream, so it fails as a whole (wire.md 8.3).
                job_t *bj = m.job_id[0] ? find_job(&s, m.job_id) : NULL;
                if (bj && !bj->failed) {
                    jb_err_prefix(&rerr, "a %s message of the job was refused",
                                  jb_msg_type_name(m.type));
                    if (fail_job(&s, bj, &rerr, err)) goto done;
                } else {
                    jb_log(JB_WARN, "rejected a message: %s", rerr.msg);
                }
                jb_msg_clear(&m);
            } else if (r == JB_RECV_ERROR) {
                *err = rerr;
                jb_err_prefix(err, "%s: input", o->stage);
                goto done;
            }
        }
        // One step: the windows of several jobs together when they can share a batch, else
        // the oldest job that can move.
        // First what every job can do without sampling (start, finish, END: quick, and a
        // batch must not starve it), then one batch or one window.
        int worked = 0;
        job_t *order[256];
        int n_jobs = 0;
        for (job_t *j = s.jobs; j && n_jobs < 256; j = j->next) order[n_jobs++] = j;
        for (int i = n_jobs - 1; i >= 0; i--) {   // list is newest first; advance may free
            int a = advance(&s, order[i], 0, err);
            if (a < 0) goto done;
            worked |= a;
        }
        n_jobs = 0;
        for (job_t *j = s.jobs; j && n_jobs < 256; j = j->next) order[n_jobs++] = j;
        if (!worked && (worked = run_batched(&s, order, n_jobs, err)) < 0) goto done;
        for (int i = n_jobs - 1; i >= 0 && !worked; i--) {
            int a = advance(&s, order[i], 1, err);
            if (a < 0) goto done;
            worked = a;
        }
        if (worked) update_status(&s);
        // Failed jobs are forgotten once their ERROR is out.
        for (job_t *j = s.jobs, *next; j; j = next) {
            next = j->next;
            if (j->failed && finish_job(&s, j, err)) goto done;
        }
        if (release_finished(&s, 0, 0, err)) goto done;
        if (!input_open && !worked) {
            if (s.jobs && s.spool) {   // upstream ended in the middle: kept for a restart
                char ids[256] = "";
                for (job_t *j = s.jobs; j; j = j->next)
                    if (strlen(ids) + strlen(j->spec.id) + 2 < sizeof ids)
                        snprintf(ids + strlen(ids), sizeof ids - strlen(ids), "%s%s",
                                 ids[0] ? " " : "", j->spec.id);
                release_finished(&s, 1, 0, err);
                jb_err_set(err, JB_EUNAVAIL, "%s: input ended in the middle of job(s) %s; kept "
                           "in the spool %s for a restart", o->stage, ids, o->spool);
                goto done;
            }
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
    // The pipe read empty: the next stage has every message of the finished jobs.
    if (release_finished(&s, 1, 0, err)) goto done;
    rc = 0;
done:
    jb_service_stopping();
    jb_msg_clear(&m);
    if (rc && err->code != JB_ECANCEL && err->msg[0]) note_error(&s, err->msg);
    // Stopped (between windows, or while a send waited for room): hand back.
    if (rc && err->code == JB_ECANCEL) hand_back(&s);
    jb_link_close(&s.control, 0);
    while (s.jobs) drop_job(&s, s.jobs);
    if (rc == 0 && s.out) {
        int64_t unread;
        int pipe_out = jb_endpoint_unread(s.out, &unread) != 0;
        int reliable_out = jb_endpoint_is_reliable(s.out);
        if (jb_endpoint_close(&s.out, err)) rc = -1;
        // A file closed cleanly holds the finished jobs. (A link output: only their
        // DONE removes them, stage_on_done.)
        else if (!pipe_out && !reliable_out && release_finished(&s, 0, 1, err)) rc = -1;
    }
    // The links' I/O threads use the spool (persist, DONE): they stop first.
    jb_endpoint_destroy(&s.out);
    jb_endpoint_destroy(&s.in);
    drain_done(&s);   // the last DONEs' spools
    jb_spool_destroy(&s.spool);
    free(s.finished);
    free(s.cap);
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
    pthread_mutex_destroy(&s.done_mu);
    free(s.done_q);
    return rc;
}
