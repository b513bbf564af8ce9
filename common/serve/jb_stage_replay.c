// jb_stage_replay.c: a prior stage's spool (jb_stage.h, "With a spool"): recording input,
// replaying a spooled job after a restart, removing the spools of finished jobs, and the
// DONEs from below that remove them over a link. Shared state: jb_stage_private.h.
#include "jb_stage_private.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "jb_log.h"
#include "jb_service.h"

// ---- DONE from below -----------------------------------------------------------------

// The output link's consumer reported a job DONE: so is it here (the output endpoint
// has passed the DONE upstream already, opts.upstream), and its spool goes.
void stage_on_done(void *user, const char *job_id) {
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

int stage_done_pending(stage_t *s, const char *id) {
    int r = 0;
    pthread_mutex_lock(&s->done_mu);
    for (int i = 0; i < s->n_done_q && !r; i++) r = !strcmp(s->done_q[i], id);
    pthread_mutex_unlock(&s->done_mu);
    return r;
}


// The stage thread: jobs reported DONE from below are dropped here (a copy elsewhere
// finished first) and their spools removed. Before, the spool went on the I/O thread
// while this thread still sampled the job and spooled its next window into a new
// directory that no DONE removed (a job left in the spool: issue 18 D).
void stage_drain_done(stage_t *s) {
    char ids[16][JB_WIRE_JOB_ID_MAX + 1];
    for (;;) {   // 16 at a time, without the lock while dropping
        pthread_mutex_lock(&s->done_mu);
        int n = s->n_done_q < 16 ? s->n_done_q : 16;
        if (!n) {   // (done_q may still be NULL: no memcpy from it, even of 0 bytes)
            pthread_mutex_unlock(&s->done_mu);
            return;
        }
        memcpy(ids, s->done_q, sizeof ids[0] * (size_t)n);
        memmove(s->done_q, s->done_q + n, sizeof ids[0] * (size_t)(s->n_done_q - n));
        s->n_done_q -= n;
        pthread_mutex_unlock(&s->done_mu);
        for (int i = 0; i < n; i++) {
            struct job *j = stage_find_job(s, ids[i]);
            if (j) {
                jb_log(JB_INFO, "job=%s: DONE from below while this stage still had it "
                       "(another copy finished first); dropped", ids[i]);
                stage_drop_job(s, j);
            }
            jb_err_t e = {0};
            if (s->spool && jb_spool_remove(s->spool, ids[i], &e)) jb_log(JB_WARN, "%s", e.msg);
        }
    }
}

// ---- recording input, the model a spool was made with ----------------------------------

// A link input's new message, on its I/O thread: into in.jbc before it is acked.
// Refused (the producer resends it) until the spooled jobs are replayed and preloaded.
int stage_persist(void *user, const jb_msg_t *m, jb_err_t *err) {
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
int stage_check_spool_model(stage_t *s, jb_err_t *err) {
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

// ---- finished jobs ---------------------------------------------------------------------

int stage_is_finished(const stage_t *s, const char *id) {
    for (int i = 0; i < s->n_finished; i++)
        if (!strcmp(s->finished[i], id)) return 1;
    return 0;
}

// The job is over here (END(-1) or ERROR sent): forgotten; its spool is removed
// once the next stage has everything (stage_release_finished).
int stage_finish_job(stage_t *s, job_t *j, jb_err_t *err) {
    if (s->spool && !stage_is_finished(s, j->spec.id)) {
        if (s->n_finished == s->cap_finished) {
            int cap = s->cap_finished ? 2 * s->cap_finished : 16;
            void *p = realloc(s->finished, sizeof *s->finished * (size_t)cap);
            if (!p) return jb_err_set(err, JB_ENOMEM, "out of memory");
            s->finished = p;
            s->cap_finished = cap;
        }
        snprintf(s->finished[s->n_finished++], sizeof s->finished[0], "%s", j->spec.id);
    }
    stage_drop_job(s, j);
    return 0;
}

// Removes the spools of finished jobs. wait: at the end of the input, wait (stop
// flag honoured) for a pipe to be read empty. Output that is not a pipe: only
// after it was closed cleanly (closed = 1).
int stage_release_finished(stage_t *s, int wait, int closed, jb_err_t *err) {
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

int stage_capture(stage_t *s, const jb_msg_t *m, jb_err_t *err) {
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
int stage_accept_msg(stage_t *s, jb_msg_t *m, jb_err_t *err) {
    // A link input: spooled by the persist hook; what is held is dropped by the link.
    if (!s->spool || !m->job_id[0] || jb_endpoint_records_input(s->in))
        return stage_on_message(s, m, err);
    job_t *j = stage_find_job(s, m->job_id);
    if (j && j->recv_n < j->n_in) {   // resent after a restart: in.jbc has it
        if (j->in_sum && !j->failed && msg_sum(m) != j->in_sum[j->recv_n]) {
            jb_err_t why;
            jb_err_set(&why, JB_EFORMAT, "after the restart, upstream's message %lld of the job "
                       "differs from the one in the spool (another job under the same id, or "
                       "another model upstream?)", (long long)j->recv_n);
            j->recv_n++;
            return stage_fail_job(s, j, &why, err);
        }
        j->recv_n++;
        return 0;
    }
    if (!j && stage_is_finished(s, m->job_id)) return 0;   // done here; resent after a restart
    int take = j ? !j->failed : m->type == JB_MSG_JOB && !stage_failed_before(s, m->job_id);
    if (take && jb_spool_append(s->spool, m->job_id, JB_SPOOL_IN, m, err))
        return jb_err_prefix(err, "%s: spool", s->o->stage);
    char id[JB_WIRE_JOB_ID_MAX + 1];
    snprintf(id, sizeof id, "%s", m->job_id);
    int rc = stage_on_message(s, m, err);
    if (take && (j = stage_find_job(s, id))) {
        j->recv_n++;
        j->n_in = jb_spool_count(s->spool, id, JB_SPOOL_IN);
    }
    return rc;
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
//   2. in.jbc goes through stage_on_message with sending captured: the job's state again;
//   3. the captured forwards are matched in order against out.jbc: the rest of
//      out.jbc is what this stage had generated (its codes: the windows done);
//   4. the captured messages past the last match (received, never forwarded) go now.
int stage_replay_job(stage_t *s, const char *id, jb_err_t *err) {
    jb_msg_list_t out = {0}, in = {0};
    uint32_t *sums = NULL;   // (in.n) checksums of the spooled inputs
    int rc = -1;
    if (jb_spool_read(s->spool, id, JB_SPOOL_OUT, jb_msg_list_take, &out, err) ||
        jb_spool_read(s->spool, id, JB_SPOOL_IN, jb_msg_list_take, &in, err)) {
        jb_err_prefix(err, "%s: replaying job %s", s->o->stage, id);
        goto done;
    }
    for (int i = 0; i < out.n; i++)
        if (jb_endpoint_send(s->out, &out.v[i], err)) {
            jb_err_prefix(err, "%s: resending job %s", s->o->stage, id);
            goto done;
        }
    if (!jb_endpoint_records_input(s->in) && in.n > 0) {
        if (!(sums = malloc(sizeof(uint32_t) * (size_t)in.n))) {
            jb_err_set(err, JB_ENOMEM, "out of memory");
            goto done;
        }
        for (int i = 0; i < in.n; i++) sums[i] = msg_sum(&in.v[i]);
    }
    s->replaying = 1;
    for (int i = 0; i < in.n; i++)
        if (stage_on_message(s, &in.v[i], err)) {
            s->replaying = 0;
            jb_err_prefix(err, "%s: replaying job %s", s->o->stage, id);
            goto done;
        }
    s->replaying = 0;
    job_t *j = stage_find_job(s, id);
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
        j->gen = malloc(sizeof *j->gen * (size_t)(out.n ? out.n : 1));
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
        int forwarded = p < s->n_cap && same_msg(o, &s->cap[p]);
        if (forwarded) p++;
        if (!j || j->failed) continue;
        if (!forwarded)
            j->gen[j->n_gen++] = (jb_stage_gen_t){o->type, o->level, o->offset, o->sample0};
        // This level's codes, the forwarded prefix and the windows made: what is done.
        jb_err_t why = {0};
        if (o->type == JB_MSG_CODES && o->level == s->info->level &&
            jb_codes_put(&j->mine, o->level, o->offset, o->sample0 > 0 ? (int)o->sample0 : 0,
                         o->batch, o->count, o->codes, &why))
            jb_log(JB_WARN, "job=%s level=%d: spooled codes not usable (%s); they are sampled "
                   "again", id, s->info->level, why.msg);
    }
    int pending = s->n_cap - p;
    for (; p < s->n_cap; p++)
        if (stage_send_msg(s, &s->cap[p], err)) goto done;
    jb_log(JB_INFO, "job=%s level=%d replayed from the spool: %d input message(s), %d output "
           "message(s) sent again, %d forwarded now", id, s->info->level, in.n, out.n, pending);
    if (!stage_find_job(s, id) && !stage_is_finished(s, id)) {   // nothing left to do for it
        if (jb_spool_remove(s->spool, id, err)) goto done;
    }
    rc = 0;
done:
    s->replaying = 0;
    for (int i = 0; i < s->n_cap; i++) jb_msg_clear(&s->cap[i]);
    s->n_cap = 0;
    jb_msg_list_free(&out, 0);
    jb_msg_list_free(&in, 0);
    free(sums);
    return rc;
}

// Every spooled job replayed (stage_replay_job), then a link input may persist new
// messages. 0 / -1 + err.
int stage_replay_all(stage_t *s, jb_err_t *err) {
    if (!s->spool) return 0;
    int n = jb_spool_n_jobs(s->spool);
    char (*ids)[JB_WIRE_JOB_ID_MAX + 1] = malloc(sizeof *ids * (size_t)(n ? n : 1));
    if (!ids) return jb_err_set(err, JB_ENOMEM, "out of memory");
    for (int i = 0; i < n; i++) snprintf(ids[i], sizeof ids[i], "%s", jb_spool_job_id(s->spool, i));
    for (int i = 0; i < n; i++)
        if (stage_replay_job(s, ids[i], err)) {
            free(ids);
            return -1;
        }
    free(ids);
    s->spool_ready = 1;   // the link input may persist new messages from here on
    return 0;
}
