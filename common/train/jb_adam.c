// jb_adam.c: see jb_adam.h.
#include "jb_adam.h"

#include <math.h>
#include <stdlib.h>

#include "jb_tensor.h"

struct jb_adam {
    int64_t n, t;
    float *m, *v;   // (n)
};

jb_adam_hp_t jb_adam_defaults(void) {
    jb_adam_hp_t h = {.lr = 3e-4, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0,
                      .clip = 1.0, .ignore_grad_norm = 0, .lr_warmup = 100, .lr_decay = 1e10,
                      .lr_gamma = 1, .lr_scale = 1, .lr_use_linear_decay = 0,
                      .lr_start_linear_decay = 0};
    return h;
}

jb_adam_t *jb_adam_new(int64_t n, jb_err_t *err) {
    jb_adam_t *a = calloc(1, sizeof *a);
    if (a) {
        a->n = n;
        a->m = jb_calloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
        a->v = jb_calloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    }
    if (!a || !a->m || !a->v) {
        jb_adam_destroy(&a);
        jb_err_set(err, JB_ENOMEM, "adam: out of memory (%lld parameters)", (long long)n);
        return NULL;
    }
    return a;
}

void jb_adam_destroy(jb_adam_t **a_p) {
    if (!a_p || !*a_p) return;
    jb_free((*a_p)->m);
    jb_free((*a_p)->v);
    free(*a_p);
    *a_p = NULL;
}

int64_t jb_adam_t_count(const jb_adam_t *a) { return a->t; }
float *jb_adam_m(jb_adam_t *a) { return a->m; }
float *jb_adam_v(jb_adam_t *a) { return a->v; }
void jb_adam_set_t(jb_adam_t *a, int64_t t) { a->t = t; }

double jb_adam_lr(const jb_adam_hp_t *hp, int64_t position) {
    double s = (double)position;
    double warm = hp->lr_warmup > 0 ? fmin(1.0, s / hp->lr_warmup) : 1.0;
    double lam;
    if (hp->lr_use_linear_decay) {
        double decay = 1.0 - fmax(0.0, s - hp->lr_start_linear_decay) / hp->lr_decay;
        lam = hp->lr_scale * warm * fmax(0.0, decay);
    } else {
        lam = hp->lr_scale * pow(hp->lr_gamma, floor(s / hp->lr_decay)) * warm;
    }
    return hp->lr * lam;
}

double jb_adam_grad_norm(const float *g, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)g[i] * g[i];
    return sqrt(s);
}

double jb_adam_clip_scale(const jb_adam_hp_t *hp, double gn) {
    double c = gn / hp->clip;
    return c > 1.0 ? c : 1.0;
}

int jb_adam_skip(const jb_adam_hp_t *hp, double gn) {
    return hp->ignore_grad_norm > 0 && gn > hp->ignore_grad_norm;
}

void jb_adam_step(jb_adam_t *a, const jb_adam_hp_t *hp, float *p, const float *g, double lr,
                  double scale) {
    a->t++;
    // float32 element ops with the constants rounded as the reference's tensor ops round them
    float b1 = (float)hp->beta1, b2 = (float)hp->beta2;
    float c1 = (float)(1.0 - hp->beta1), c2 = (float)(1.0 - hp->beta2);
    float eps = (float)hp->eps, wd = (float)hp->weight_decay, sc = (float)scale;
    double bc1 = 1.0 - pow(hp->beta1, (double)a->t), bc2 = 1.0 - pow(hp->beta2, (double)a->t);
    float step = (float)(lr * sqrt(bc2) / bc1);
    float *m = a->m, *v = a->v;
#pragma omp parallel for if (a->n > 65536)
    for (int64_t i = 0; i < a->n; i++) {
        float gi = g[i] / sc;
        m[i] = m[i] * b1 + c1 * gi;
        v[i] = v[i] * b2 + c2 * (gi * gi);
        float upd = m[i] / (sqrtf(v[i]) + eps) + wd * p[i];
        p[i] = p[i] + (-step) * upd;
    }
}
