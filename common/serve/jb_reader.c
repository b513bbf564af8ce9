// jb_reader.c: see jb_reader.h.
#include "jb_reader.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jb_job.h"

struct jb_reader {
    jb_reader_opts_t o;
    jb_reader_job_t *jobs;       // open, newest first
    int n_open;
    char (*closed)[JB_WIRE_JOB_ID_MAX + 1];   // ring of JB_READER_CLOSED ids
    int n_closed;
};

jb_reader_t *jb_reader_new(const jb_reader_opts_t *opts, jb_err_t *err) {
    jb_reader_t *r = calloc(1, sizeof *r);
    if (!r || !(r->closed = calloc(JB_READER_CLOSED, sizeof *r->closed))) {
        free(r);
        jb_err_set(err, JB_ENOMEM, "reader: out of memory");
        return NULL;
    }
    r->o = *opts;
    if (r->o.levels < 1 || r->o.levels > JB_CODES_MAX_LEVELS) r->o.levels = 3;
    if (r->o.max_jobs < 1) r->o.max_jobs = 256;
    return r;
}

void jb_reader_job_free(jb_reader_job_t **job_p) {
    if (!job_p || !*job_p) return;
    jb_reader_job_t *j = *job_p;
    jb_codes_free(&j->codes);
    free(j->spec);
    for (int l = 0; l < JB_CODES_MAX_LEVELS; l++) free(j->labels[l]);
    free(j->align);
    free(j->align_lyrics);
    if (j->user) (j->free_user ? j->free_user : free)(j->user);
    free(j);
    *job_p = NULL;
}

void jb_reader_destroy(jb_reader_t **self_p) {
    if (!self_p || !*self_p) return;
    jb_reader_t *r = *self_p;
    while (r->jobs) {
        jb_reader_job_t *j = r->jobs;
        r->jobs = j->next;
        jb_reader_job_free(&j);
    }
    free(r->closed);
    free(r);
    *self_p = NULL;
}

int jb_reader_n_open(const jb_reader_t *r) { return r->n_open; }

static jb_reader_job_t *find(const jb_reader_t *r, const char *id);
jb_reader_job_t *jb_reader_find(jb_reader_t *r, const char *id) { return find(r, id); }

static jb_reader_job_t *find(const jb_reader_t *r, const char *id) {
    for (jb_reader_job_t *j = r->jobs; j; j = j->next)
        if (!strcmp(j->id, id)) return j;
    return NULL;
}

static int is_closed(const jb_reader_t *r, const char *id) {
    int n = r->n_closed < JB_READER_CLOSED ? r->n_closed : JB_READER_CLOSED;
    for (int i = 0; i < n; i++)
        if (!strcmp(r->closed[i], id)) return 1;
    return 0;
}

static void close_id(jb_reader_t *r, const char *id) {
    snprintf(r->closed[r->n_closed++ % JB_READER_CLOSED], JB_WIRE_JOB_ID_MAX + 1, "%s", id);
}

// Takes j out of the open list (not freed).
static void unlink_job(jb_reader_t *r, jb_reader_job_t *j) {
    for (jb_reader_job_t **p = &r->jobs; *p; p = &(*p)->next)
        if (*p == j) {
            *p = j->next;
            j->next = NULL;
            r->n_open--;
            return;
        }
}

// The job fails: its state goes, its id is closed, ev says why.
static void fail(jb_reader_t *r, jb_reader_job_t *j, const char *id, int level, int code,
                 const char *why, jb_reader_ev_t *ev) {
    ev->kind = JB_READ_FAILED;
    snprintf(ev->id, sizeof ev->id, "%s", id);
    ev->level = level;
    ev->code = code;
    snprintf(ev->why, sizeof ev->why, "%s", why);
    if (j) {
        if (ev->job == j) ev->job = NULL;   // opened by this very message: gone with it
        unlink_job(r, j);
        jb_reader_job_free(&j);
    }
    close_id(r, id);
}

// The store, once the first codes (or a level's end) come: the spec's sample count, or
// the rows seen so far.
static int ensure_codes(jb_reader_t *r, jb_reader_job_t *j, const jb_msg_t *m, jb_err_t *err) {
    if (j->inited) return 0;
    int n = j->spec_samples;
    if (n < 1) {
        int64_t rows = m->type == JB_MSG_CODES ? (m->sample0 > 0 ? m->sample0 : 0) + m->batch
                       : m->batch > 0 ? m->batch : 1;
        if (rows > JB_JOB_MAX_SAMPLES)
            return jb_err_set(err, JB_EFORMAT, "job %s level %d: samples up to %" PRId64
                              " without a job message (at most %d)", j->id, m->level, rows,
                              JB_JOB_MAX_SAMPLES);
        n = (int)rows;
    }
    if (jb_codes_init(&j->codes, j->id, r->o.levels, n, r->o.codebook, err)) return -1;
    j->codes.spec = j->spec;   // the store owns it from here
    j->spec = NULL;
    j->inited = 1;
    return 0;
}

// Codes a job without a job message may hold after this message, as the dense store
// counts them (samples x tokens of each level).
static int64_t unknown_codes_after(const jb_reader_job_t *j, const jb_msg_t *m) {
    const jb_codes_t *c = &j->codes;
    int64_t rows = (m->sample0 > 0 ? m->sample0 : 0) + m->batch;
    if (rows < c->n_samples) rows = c->n_samples;
    int64_t total = 0;
    for (int l = 0; l < c->levels; l++) {
        int64_t t = 0;
        for (int s = 0; s < c->n_samples; s++)
            if (jb_codes_sample_len(c, l, s) > t) t = jb_codes_sample_len(c, l, s);
        if (l == m->level && m->offset + m->count > t) t = m->offset + m->count;
        total += rows * t;
    }
    return total;
}

static int add_codes(jb_reader_t *r, jb_reader_job_t *j, const jb_msg_t *m, jb_err_t *why) {
    if (m->level >= r->o.levels)
        return jb_err_set(why, JB_EFORMAT, "job %s: codes of level %d, the model has levels "
                          "0..%d", j->id, m->level, r->o.levels - 1);
    if (ensure_codes(r, j, m, why)) return -1;
    int64_t rows = (m->sample0 > 0 ? m->sample0 : 0) + m->batch;
    if (j->spec_samples < 1) {   // no job message: bounded by the unknown-job rules
        if (rows > JB_JOB_MAX_SAMPLES)
            return jb_err_set(why, JB_EFORMAT, "job %s level %d: samples up to %" PRId64
                              " without a job message (at most %d)", j->id, m->level, rows,
                              JB_JOB_MAX_SAMPLES);
        if (unknown_codes_after(j, m) > JB_READER_UNKNOWN_CODES)
            return jb_err_set(why, JB_EFORMAT, "job %s level %d offset %" PRId64 ": over %"
                              PRId64 " codes for a job without a job message", j->id,
                              m->level, m->offset, JB_READER_UNKNOWN_CODES);
        if (rows > j->codes.n_samples && jb_codes_grow_samples(&j->codes, (int)rows, why))
            return -1;
    }
    return jb_codes_apply(&j->codes, m, why);
}

static int has_codes(const jb_reader_job_t *j) {
    if (!j->inited) return 0;
    for (int l = 0; l < j->codes.levels; l++)
        for (int s = 0; s < j->codes.n_samples; s++)
            if (jb_codes_sample_len(&j->codes, l, s) > 0) return 1;
    return 0;
}

static int code_of(int64_t c) { return c >= 1 && c <= 255 ? (int)c : 70; }

// A new job: JB_READ_OPENED, or (over max_jobs) failed at once. 0, or -1 + err (no memory).
static int open_job(jb_reader_t *r, const jb_msg_t *m, jb_reader_ev_t *ev,
                    jb_reader_job_t **j_p, jb_err_t *err) {
    if (r->n_open >= r->o.max_jobs) {
        char why[200];
        snprintf(why, sizeof why, "job %s: over %d jobs open at once", m->job_id, r->o.max_jobs);
        fail(r, NULL, m->job_id, -1, 65, why, ev);
        return 0;
    }
    jb_reader_job_t *j = calloc(1, sizeof *j);
    if (!j) return jb_err_set(err, JB_ENOMEM, "job %s: out of memory", m->job_id);
    snprintf(j->id, sizeof j->id, "%s", m->job_id);
    j->free_user = r->o.free_user;
    j->next = r->jobs;
    r->jobs = j;
    r->n_open++;
    ev->kind = JB_READ_OPENED;
    ev->job = j;
    *j_p = j;
    return 0;
}

// A job's spec by the rules every stage applies (wire.md 2.3, 2.4: jb_job_from_json,
// jb_job_validate): its id that of the message, its fields in range. 0 / -1 + why.
static int spec_valid(const char *id, const char *text, jb_err_t *why) {
    json_error_t jerr;
    json_t *js = json_loads(text, 0, &jerr);
    if (!js) return jb_err_set(why, JB_EFORMAT, "job %s: spec: %s", id, jerr.text);
    jb_job_t job;
    jb_job_defaults(&job);
    snprintf(job.id, sizeof job.id, "%s", id);
    int rc = jb_job_from_json(js, &job, why);
    if (!rc && strcmp(job.id, id))
        rc = jb_err_set(why, JB_EFORMAT, "job %s: the spec's id '%.80s' differs from the "
                        "message's", id, job.id);
    if (!rc) rc = jb_job_validate(&job, why);
    if (rc) jb_err_prefix(why, "the job message's spec");
    jb_job_free(&job);
    json_decref(js);
    return rc ? -1 : 0;
}

// JOB: the spec (taken from m), or checked against the codes that came first. 0 / -1 + why.
static int on_spec(jb_reader_job_t *j, jb_msg_t *m, jb_err_t *why) {
    if (m->spec && spec_valid(j->id, m->spec, why)) return -1;
    json_t *spec = m->spec ? json_loads(m->spec, 0, NULL) : NULL;
    json_t *ns = json_object_get(spec, "n_samples");
    int n = json_is_integer(ns) && json_integer_value(ns) >= 1 &&
            json_integer_value(ns) <= JB_CODES_MAX_SAMPLES ? (int)json_integer_value(ns) : 0;
    json_decref(spec);
    int bad = 0;
    if (j->inited) {   // codes came first: the store checks a second spec
        bad = jb_codes_apply(&j->codes, m, why);
        if (!bad && n && j->spec_samples != n) {
            if (n < j->codes.n_samples)
                bad = jb_err_set(why, JB_EFORMAT, "job %s: the job message says %d "
                                 "samples, codes for %d came before it", j->id, n,
                                 j->codes.n_samples);
            else
                bad = jb_codes_grow_samples(&j->codes, n, why);
            if (!bad) j->spec_samples = n;
        }
    } else if (j->spec && m->spec && strcmp(j->spec, m->spec)) {
        bad = jb_err_set(why, JB_EFORMAT, "job %s: a second job message with another "
                         "spec", j->id);
    } else if (!j->spec && m->spec) {
        j->spec = m->spec;   // taken over
        m->spec = NULL;
        j->spec_samples = n;
    }
    return bad ? -1 : 0;
}

// END(level >= 0): that level's codes are complete; its text (what the stage used) kept.
static int on_level_end(jb_reader_t *r, jb_reader_job_t *j, jb_msg_t *m, jb_err_t *why) {
    if (m->level >= r->o.levels)
        return jb_err_set(why, JB_EFORMAT, "job %s: end of level %d, the model has "
                          "levels 0..%d", j->id, m->level, r->o.levels - 1);
    if (m->text) {
        free(j->labels[m->level]);
        j->labels[m->level] = m->text;   // taken over
        m->text = NULL;
    }
    return ensure_codes(r, j, m, why) || jb_codes_apply(&j->codes, m, why) ? -1 : 0;
}

// END(-1): the job is complete (JB_READ_DONE), or fails without codes. 0 / -1 + why.
static int on_job_end(jb_reader_t *r, jb_reader_job_t *j, jb_msg_t *m, jb_reader_ev_t *ev,
                      jb_err_t *why) {
    if (!has_codes(j)) {
        char w[200];
        snprintf(w, sizeof w, "job %s: the job ended without any codes", j->id);
        fail(r, j, m->job_id, -1, 65, w, ev);
        return 0;
    }
    if (jb_codes_apply(&j->codes, m, why)) return -1;
    unlink_job(r, j);
    close_id(r, j->id);
    ev->kind = JB_READ_DONE;
    ev->job = j;
    return 0;
}

// ALIGN: the lyric alignment as weights in [0, 1] and its lyrics (taken from m).
static int on_align(jb_reader_job_t *j, jb_msg_t *m, jb_err_t *err) {
    if (m->batch < 1 || m->cols < 1 || !m->codes) return 0;
    size_t n = (size_t)m->batch * (size_t)m->count * (size_t)m->cols;
    float *a = malloc(sizeof(float) * n);
    if (!a) return jb_err_set(err, JB_ENOMEM, "job %s: out of memory", j->id);
    for (size_t i = 0; i < n; i++) a[i] = (float)m->codes[i] / (float)JB_WIRE_ALIGN_ONE;
    free(j->align);
    free(j->align_lyrics);
    j->align = a;
    j->align_tokens = m->count;
    j->align_cols = (int)m->cols;
    j->align_lyrics = m->text;   // taken over
    m->text = NULL;
    return 0;
}

int jb_reader_feed(jb_reader_t *r, jb_msg_t *m, jb_reader_ev_t *ev, jb_err_t *err) {
    memset(ev, 0, sizeof *ev);
    ev->level = -1;
    switch (m->type) {
    case JB_MSG_JOB: case JB_MSG_CODES: case JB_MSG_END: case JB_MSG_ALIGN:
    case JB_MSG_ERROR: case JB_MSG_CANCEL:
        break;
    default: return 0;   // the link's and status messages: nothing to keep
    }
    if (!m->job_id[0]) return 0;
    snprintf(ev->id, sizeof ev->id, "%s", m->job_id);
    jb_reader_job_t *j = find(r, m->job_id);
    if (m->type == JB_MSG_CANCEL) {
        if (j) {
            unlink_job(r, j);
            jb_reader_job_free(&j);
        }
        ev->kind = JB_READ_CANCEL;
        return 0;
    }
    if (!j && is_closed(r, m->job_id)) {
        ev->kind = JB_READ_DROPPED;
        return 0;
    }
    if (m->type == JB_MSG_ERROR) {
        char why[512];
        snprintf(why, sizeof why, "failed upstream: %s", m->text ? m->text : "(no reason given)");
        fail(r, j, m->job_id, m->level, code_of(m->code), why, ev);
        return 0;
    }
    if (!j) {
        if (open_job(r, m, ev, &j, err)) return -1;
        if (!j) return 0;   // over max_jobs: failed
    }
    jb_err_t why = {0};
    int bad = 0;
    switch (m->type) {
    case JB_MSG_JOB: bad = on_spec(j, m, &why); break;
    case JB_MSG_CODES:
        bad = add_codes(r, j, m, &why);
        if (!bad) {   // (also for the message that opened the job)
            ev->kind = JB_READ_CODES;
            ev->job = j;
            ev->level = m->level;
        }
        break;
    case JB_MSG_END:
        bad = m->level >= 0 ? on_level_end(r, j, m, &why) : on_job_end(r, j, m, ev, &why);
        break;
    case JB_MSG_ALIGN: return on_align(j, m, err);
    default: break;
    }
    if (bad) {
        if (why.code == JB_ENOMEM) {
            *err = why;
            return -1;
        }
        fail(r, j, m->job_id, m->level, 65, why.msg, ev);
    }
    return 0;
}

void jb_reader_refused(jb_reader_t *r, const jb_msg_t *m, const jb_err_t *why,
                       jb_reader_ev_t *ev) {
    memset(ev, 0, sizeof *ev);
    ev->level = -1;
    if (!m->job_id[0]) return;
    snprintf(ev->id, sizeof ev->id, "%s", m->job_id);
    jb_reader_job_t *j = find(r, m->job_id);
    if (!j && is_closed(r, m->job_id)) {
        ev->kind = JB_READ_DROPPED;
        return;
    }
    char w[512];
    if (m->type > JB_MSG_NONE && m->type < JB_MSG_TYPE_COUNT)
        snprintf(w, sizeof w, "the job's %s message was refused: %.400s",
                 jb_msg_type_name(m->type), why->msg);
    else   // an unknown type or version: no name to give
        snprintf(w, sizeof w, "a message of the job was refused: %.400s", why->msg);
    fail(r, j, m->job_id, -1, 65, w, ev);
}

jb_reader_job_t *jb_reader_take_open(jb_reader_t *r) {
    jb_reader_job_t *oldest = NULL;
    while (r->jobs) {   // reverse: the list is newest first
        jb_reader_job_t *j = r->jobs;
        r->jobs = j->next;
        j->next = oldest;
        oldest = j;
        close_id(r, j->id);
    }
    r->n_open = 0;
    return oldest;
}
