// jb_optim.c: see jb_optim.h.
#include "jb_optim.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jb_safetensors.h"

void jb_optim_free(jb_optim_t *s) {
    for (int i = 0; i < s->n; i++) jb_adam_destroy(&s->adam[i]);
    free(s->adam), free(s->names), free(s->w), free(s->g), free(s->len);
    memset(s, 0, sizeof *s);
}

int jb_optim_alloc(jb_optim_t *s, int n, jb_err_t *err) {
    s->n = n;
    s->adam = calloc((size_t)n, sizeof *s->adam);
    s->names = calloc((size_t)n, sizeof *s->names);
    s->w = calloc((size_t)n, sizeof *s->w);
    s->g = calloc((size_t)n, sizeof *s->g);
    s->len = calloc((size_t)n, sizeof *s->len);
    if (!s->adam || !s->names || !s->w || !s->g || !s->len)
        return jb_err_set(err, JB_ENOMEM, "out of memory");
    return 0;
}

int jb_optim_make(jb_optim_t *s, jb_err_t *err) {
    for (int i = 0; i < s->n; i++)
        if (!(s->adam[i] = jb_adam_new(s->len[i], err))) return -1;
    return 0;
}

double jb_optim_step(jb_optim_t *s, const jb_adam_hp_t *hp, int64_t position, double *lr_out,
                     int *skipped) {
    double ss = 0;
    for (int i = 0; i < s->n; i++) {
        double gn = jb_adam_grad_norm(s->g[i], s->len[i]);
        ss += gn * gn;
    }
    double gn = sqrt(ss), lr = jb_adam_lr(hp, position);
    *lr_out = lr;
    *skipped = jb_adam_skip(hp, gn);
    if (!*skipped) {
        double scale = jb_adam_clip_scale(hp, gn);
        for (int i = 0; i < s->n; i++) jb_adam_step(s->adam[i], hp, s->w[i], s->g[i], lr, scale);
    }
    return gn;
}

int jb_optim_save(const char *path, const jb_optim_t *s, int64_t step, const jb_optim_run_t *run,
                  jb_err_t *err) {
    const char *what = run->trains;
    uint64_t seed = run->seed;
    int batch = run->batch;
    int64_t window = run->window;
    jb_st_writer_t *w = jb_st_writer_new(err);
    if (!w) return -1;
    char buf[64], nm[300];
    int rc = -1;
    if (jb_st_writer_meta(w, "kind", "optim", err) || jb_st_writer_meta(w, "trains", what, err))
        goto done;
    snprintf(buf, sizeof buf, "%lld", (long long)step);
    if (jb_st_writer_meta(w, "step", buf, err)) goto done;
    snprintf(buf, sizeof buf, "%lld", (long long)(s->n ? jb_adam_t_count(s->adam[0]) : 0));
    if (jb_st_writer_meta(w, "adam_t", buf, err)) goto done;
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)seed);
    if (jb_st_writer_meta(w, "seed", buf, err)) goto done;
    snprintf(buf, sizeof buf, "%d", batch);
    if (jb_st_writer_meta(w, "batch", buf, err)) goto done;
    snprintf(buf, sizeof buf, "%lld", (long long)window);
    if (jb_st_writer_meta(w, "window", buf, err)) goto done;
    // data windows are draws step * batch + b of the seed's stream: the position is the step
    snprintf(buf, sizeof buf, "%lld", (long long)step * batch);
    if (jb_st_writer_meta(w, "data_draw", buf, err)) goto done;
    for (int i = 0; i < s->n; i++) {
        int64_t shp[1] = {s->len[i]};
        snprintf(nm, sizeof nm, "m.%s", s->names[i]);
        if (jb_st_writer_add(w, nm, JB_F32, 1, shp, jb_adam_m(s->adam[i]), err)) goto done;
        snprintf(nm, sizeof nm, "v.%s", s->names[i]);
        if (jb_st_writer_add(w, nm, JB_F32, 1, shp, jb_adam_v(s->adam[i]), err)) goto done;
    }
    rc = jb_st_writer_write(w, path, NULL, NULL, err);
done:
    jb_st_writer_destroy(&w);
    return rc;
}

static int meta_i64(const jb_st_t *st, const char *key, int64_t *out, jb_err_t *err) {
    const char *v = jb_st_meta(st, key);
    char *end;
    errno = 0;
    long long x = v ? strtoll(v, &end, 10) : -1;
    if (!v || errno || end == v || *end || x < 0)
        return jb_err_set(err, JB_EFORMAT, "%s: metadata '%s' missing or bad", jb_st_path(st), key);
    *out = x;
    return 0;
}

int jb_optim_load(const char *path, jb_optim_t *s, const jb_optim_run_t *run, int64_t *step,
                  jb_err_t *err) {
    const char *what = run->trains;
    uint64_t seed = run->seed;
    int batch = run->batch;
    int64_t window = run->window;
    jb_st_t *st = jb_st_open(path, err);
    if (!st) return jb_err_prefix(err, "--resume");
    int rc = -1;
    int64_t t, sd, b, win;
    const char *tr = jb_st_meta(st, "trains");
    if (!tr || strcmp(tr, what)) {
        jb_err_set(err, JB_EFORMAT, "%s: not the optimiser state of a %s run", path, what);
        goto done;
    }
    if (meta_i64(st, "step", step, err) || meta_i64(st, "adam_t", &t, err) ||
        meta_i64(st, "seed", &sd, err) || meta_i64(st, "batch", &b, err) ||
        meta_i64(st, "window", &win, err))
        goto done;
    if ((uint64_t)sd != seed || b != batch || win != window) {
        jb_err_set(err, JB_EINVAL, "%s: saved with --seed %lld --batch %lld window %lld; "
                   "resume with the same", path, (long long)sd, (long long)b, (long long)win);
        goto done;
    }
    for (int i = 0; i < s->n; i++) {
        char nm[300];
        int64_t shp[1] = {s->len[i]};
        snprintf(nm, sizeof nm, "m.%s", s->names[i]);
        const jb_st_entry_t *m = jb_st_get(st, nm, 1, shp, err);
        snprintf(nm, sizeof nm, "v.%s", s->names[i]);
        const jb_st_entry_t *v = m ? jb_st_get(st, nm, 1, shp, err) : NULL;
        if (!v) goto done;
        if (m->dtype != JB_F32 || v->dtype != JB_F32) {
            jb_err_set(err, JB_EFORMAT, "%s: moments of '%s' are not F32", path, s->names[i]);
            goto done;
        }
        memcpy(jb_adam_m(s->adam[i]), m->data, m->nbytes);
        memcpy(jb_adam_v(s->adam[i]), v->data, v->nbytes);
        jb_adam_set_t(s->adam[i], t);
    }
    rc = 0;
done:
    jb_st_close(&st);
    return rc;
}

