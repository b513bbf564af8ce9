// jb_stage_status.c: the status of a prior stage that its links report (jb_stage_private.h).
#include "jb_stage_private.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "jb_log.h"

// ---- status (read by the links' I/O threads) ---------------------------------------

void stage_update_status(stage_t *s) {
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
    // Tokens per second over the last minute: the tokens of the windows finished in it
    // (all of them, the first included) over the minute, or over the time since the
    // stage started when that is shorter.
    double tps = 0, since = s->t_start;
    int64_t base = 0;
    int n = s->n_rate < 64 ? s->n_rate : 64;
    for (int k = 0; k < n; k++) {   // newest first: the last record older than the minute
        int i = (s->n_rate - 1 - k) % 64;
        if (now - s->rate_t[i] > 60) {
            since = s->rate_t[i], base = s->rate_tok[i];
            break;
        }
        if (k == n - 1 && s->n_rate > 64)   // 64 windows within the minute: from the oldest
            since = s->rate_t[i], base = s->rate_tok[i];
    }
    double span = now - since < 60 ? now - since : 60;
    if (span > 0) tps = (double)(s->tokens - base) / span;
    json_object_set_new(o, "tokens_per_s", json_real(tps));
    json_object_set_new(o, "tokens_total", json_integer(s->tokens));
    // "at" (jb_now() of the error) becomes "ago_s" when the status is read (stage_status):
    // a snapshot of an idle stage is not rebuilt for every reader.
    if (s->last_error[0])
        json_object_set_new(o, "last_error", json_pack("{s:s,s:f}", "text", s->last_error,
                                                       "at", s->last_error_t));
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    pthread_mutex_lock(&s->status_mu);
    free(s->status);
    s->status = text;
    s->t_status = now;
    pthread_mutex_unlock(&s->status_mu);
}

char *stage_status(void *user) {
    stage_t *s = user;
    pthread_mutex_lock(&s->status_mu);
    char *t = s->status ? strdup(s->status) : NULL;
    pthread_mutex_unlock(&s->status_mu);
    json_t *o = t ? json_loads(t, 0, NULL) : NULL;
    json_t *le = json_object_get(o, "last_error");
    json_t *at = json_object_get(le, "at");
    if (!json_is_number(at)) {
        json_decref(o);
        return t;
    }
    json_object_set_new(le, "ago_s", json_real(jb_now() - json_number_value(at)));
    json_object_del(le, "at");
    free(t);
    t = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return t;
}

// --control: the stage's status plus both links'.
char *stage_control_status(void *user) {
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

void stage_note_error(stage_t *s, const char *text) {
    snprintf(s->last_error, sizeof s->last_error, "%s", text);
    s->last_error_t = jb_now();
}

void stage_count_tokens(stage_t *s, int64_t n) {
    s->tokens += n;
    s->rate_t[s->n_rate % 64] = jb_now();
    s->rate_tok[s->n_rate % 64] = s->tokens;
    s->n_rate++;
}
