// jb_admit.c: see jb_admit.h.
#include "jb_admit.h"

#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char id[JB_WIRE_JOB_ID_MAX + 1];    // "" = free slot
    int64_t samples;                    // spec n_samples
    int64_t tokens[JB_WIRE_MAX_LEVEL + 1];   // per level, -1 = no bound known
} entry_t;

struct jb_admit {
    jb_admit_model_t model;
    entry_t *e;       // JB_ADMIT_JOBS slots, filled round robin
    int next;
};

jb_admit_t *jb_admit_new(const jb_admit_model_t *model, jb_err_t *err) {
    jb_admit_t *a = calloc(1, sizeof *a);
    if (!a || !(a->e = calloc(JB_ADMIT_JOBS, sizeof *a->e))) {
        free(a);
        jb_err_set(err, JB_ENOMEM, "admission table: out of memory");
        return NULL;
    }
    if (model && model->levels > 0) {
        if (model->levels > JB_WIRE_MAX_LEVEL + 1 || model->sr < 1) {
            jb_admit_destroy(&a);
            jb_err_set(err, JB_EINVAL, "admission table: bad model (%d levels, %d Hz)",
                       model->levels, model->sr);
            return NULL;
        }
        for (int l = 0; l < model->levels; l++)
            if (model->hop[l] < 1) {
                jb_admit_destroy(&a);
                jb_err_set(err, JB_EINVAL, "admission table: level %d hop %d", l,
                           model->hop[l]);
                return NULL;
            }
        a->model = *model;
    }
    return a;
}

void jb_admit_destroy(jb_admit_t **self_p) {
    if (!self_p || !*self_p) return;
    free((*self_p)->e);
    free(*self_p);
    *self_p = NULL;
}

static entry_t *find(const jb_admit_t *a, const char *id) {
    for (int i = 0; i < JB_ADMIT_JOBS; i++)
        if (a->e[i].id[0] && !strcmp(a->e[i].id, id)) return &a->e[i];
    return NULL;
}

// Bounds from a JOB's spec. A spec it cannot read (the stage refuses it later) bounds
// nothing: its messages are held to the unknown-job cap.
static void learn(jb_admit_t *a, const jb_msg_t *m) {
    entry_t *e = find(a, m->job_id);
    if (!e) {
        e = &a->e[a->next];
        a->next = (a->next + 1) % JB_ADMIT_JOBS;
    }
    memset(e, 0, sizeof *e);
    json_t *spec = m->spec ? json_loads(m->spec, 0, NULL) : NULL;
    json_t *ns = json_object_get(spec, "n_samples");
    double sec = 0;
    const char *keys[] = {"total_seconds", "sample_seconds"};
    for (int k = 0; k < 2; k++) {
        json_t *v = json_object_get(spec, keys[k]);
        if (json_is_number(v) && json_number_value(v) > sec) sec = json_number_value(v);
    }
    if (!json_is_integer(ns) || json_integer_value(ns) < 1 || !(sec > 0) || sec > 1e7) {
        json_decref(spec);
        return;   // slot stays free
    }
    snprintf(e->id, sizeof e->id, "%s", m->job_id);
    e->samples = json_integer_value(ns);
    json_decref(spec);
    for (int l = 0; l <= JB_WIRE_MAX_LEVEL; l++) e->tokens[l] = -1;
    const jb_admit_model_t *md = &a->model;
    if (md->levels > 0) {
        int top = md->hop[md->levels - 1];
        // audio samples, padded to the top hop as the encoder and the stages pad
        int64_t n = (int64_t)ceil(sec * md->sr / top) * top;
        for (int l = 0; l < md->levels; l++) e->tokens[l] = n / md->hop[l];
    }
}

int64_t jb_admit_level_tokens(const jb_admit_t *a, const char *job_id, int level) {
    const entry_t *e = find(a, job_id);
    if (!e || level < 0 || level > JB_WIRE_MAX_LEVEL) return -1;
    return e->tokens[level];
}

int jb_admit_check(void *user, const jb_msg_t *m, uint64_t raw_len, jb_err_t *err) {
    jb_admit_t *a = user;
    switch (m->type) {
    case JB_MSG_JOB:
        learn(a, m);
        return 0;
    case JB_MSG_END:
    case JB_MSG_ERROR:
    case JB_MSG_CANCEL: {   // the job is over (END without a level)
        entry_t *e = m->type == JB_MSG_END && m->level >= 0 ? NULL : find(a, m->job_id);
        if (e) e->id[0] = 0;
        return 0;
    }
    case JB_MSG_CODES:
    case JB_MSG_ALIGN: break;
    default: return 0;
    }
    const char *what = m->type == JB_MSG_CODES ? "codes" : "align";
    const entry_t *e = find(a, m->job_id);
    if (!e) {
        if (raw_len > JB_ADMIT_UNKNOWN_RAW)
            return jb_err_set(err, JB_EFORMAT, "job %s level %d: %s message of %" PRIu64
                              " bytes decompressed for a job without a job message (at "
                              "most %u)", m->job_id, m->level, what, raw_len,
                              JB_ADMIT_UNKNOWN_RAW);
        return 0;
    }
    int64_t s0 = m->sample0 > 0 ? m->sample0 : 0;
    if (s0 + m->batch > e->samples)
        return jb_err_set(err, JB_EFORMAT, "job %s level %d offset %" PRId64 ": %s for samples "
                          "[%" PRId64 ", %" PRId64 "), the job has %" PRId64, m->job_id,
                          m->level, m->offset, what, s0, s0 + m->batch, e->samples);
    int64_t off = m->offset > 0 ? m->offset : 0;
    int64_t t = e->tokens[m->level];
    if (t >= 0 && off + m->count > t)
        return jb_err_set(err, JB_EFORMAT, "job %s level %d offset %" PRId64 ": %s up to token "
                          "%" PRId64 ", the job's level holds %" PRId64 " tokens", m->job_id,
                          m->level, off, what, off + m->count, t);
    return 0;
}
