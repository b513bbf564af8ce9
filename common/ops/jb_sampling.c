// jb_sampling.c: logit filters and per-row sampling (see jb_sampling.h).
#include "jb_sampling.h"

#include <stdlib.h>

typedef struct {
    float v;
    int32_t i;
} pair_t;

jb_sampling_params_t jb_sampling_default_params(void) {
    jb_sampling_params_t p = {.temp = 1.0f, .top_k = 0, .top_p = 0.0f, .greedy = 0};
    return p;
}

int jb_sampling_params_check(const jb_sampling_params_t *p, jb_err_t *err) {
    if (!(p->temp > 0.0f) || isinf(p->temp))
        return jb_err_set(err, JB_EINVAL, "sampling: temperature %g must be > 0 and finite",
                          (double)p->temp);
    if (p->top_k < 0)
        return jb_err_set(err, JB_EINVAL, "sampling: top_k %d must be >= 0", p->top_k);
    if (!(p->top_p >= 0.0f && p->top_p <= 1.0f))
        return jb_err_set(err, JB_EINVAL, "sampling: top_p %g must be in [0, 1]", (double)p->top_p);
    if (p->top_k > 0 && p->top_p > 0.0f)
        return jb_err_set(err, JB_EINVAL,
                          "sampling: top_k (%d) and top_p (%g) together (the reference refuses)",
                          p->top_k, (double)p->top_p);
    return 0;
}

size_t jb_sampling_scratch_bytes(int bins) {
    return (size_t)(bins > 0 ? bins : 1) * sizeof(pair_t);
}

void jb_sampling_temperature(float *logits, int bins, float temp) {
    if (temp == 1.0f)
        return;     // x / 1 == x exactly; skip the pass
    for (int i = 0; i < bins; i++)
        logits[i] = logits[i] / temp;    // division as the reference (not * 1/temp)
}

static int count_kept(const float *logits, int bins) {
    int n = 0;
    for (int i = 0; i < bins; i++)
        n += !(isinf(logits[i]) && logits[i] < 0);
    return n;
}

static int cmp_desc_f(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

int jb_sampling_top_k(float *logits, int bins, int k, void *scratch) {
    if (k <= 0 || bins <= 0)
        return count_kept(logits, bins);
    if (k > bins)
        k = bins;
    float *v = scratch;
    for (int i = 0; i < bins; i++)
        v[i] = logits[i];
    qsort(v, (size_t)bins, sizeof *v, cmp_desc_f);
    float thr = v[k - 1];   // torch.topk(...)[0][..., -1]: the k-th largest, ties counted
    for (int i = 0; i < bins; i++)
        if (logits[i] < thr)
            logits[i] = -INFINITY;
    return count_kept(logits, bins);
}

// Descending by value, then ascending by index: a total order, so qsort is deterministic.
static int cmp_pair(const void *a, const void *b) {
    const pair_t *x = a, *y = b;
    if (x->v != y->v)
        return x->v > y->v ? -1 : 1;
    return (x->i > y->i) - (x->i < y->i);
}

int jb_sampling_top_p(float *logits, int bins, float top_p, void *scratch) {
    if (!(top_p > 0.0f) || bins <= 0)
        return count_kept(logits, bins);
    pair_t *s = scratch;
    for (int i = 0; i < bins; i++) {
        s[i].v = logits[i];
        s[i].i = i;
    }
    qsort(s, (size_t)bins, sizeof *s, cmp_pair);
    double m = (double)s[0].v, total = 0.0;
    if (isinf(s[0].v))
        return count_kept(logits, bins);     // nothing finite (all -inf): leave as is
    for (int j = 0; j < bins; j++)
        total += exp((double)s[j].v - m);
    // remove[j] = cum[j-1] > top_p (shifted right; remove[0] = false)
    double cum = 0.0;
    for (int j = 0; j < bins; j++) {
        if (j > 0 && (float)(cum / total) > top_p)
            logits[s[j].i] = -INFINITY;
        cum += exp((double)s[j].v - m);
    }
    return count_kept(logits, bins);
}

int32_t jb_sampling_row(float *logits, int bins, const jb_sampling_params_t *p,
                        jb_rng_stream_t stream, uint64_t position, void *scratch) {
    for (int i = 0; i < bins; i++)
        if (logits[i] != logits[i])
            return -1;      // torch's Categorical refuses NaN logits
    jb_sampling_temperature(logits, bins, p->temp);
    if (p->greedy || p->top_k == 1) {
        int32_t t = jb_sampling_argmax(logits, bins);
        return t >= 0 && !(isinf(logits[t]) && logits[t] < 0) ? t : -1;
    }
    jb_sampling_top_k(logits, bins, p->top_k, scratch);
    jb_sampling_top_p(logits, bins, p->top_p, scratch);
    return jb_sampling_draw(logits, bins, jb_rng_uniform_f64(stream, position, 0));
}

int jb_sampling_rows(float *logits, int N, int bins, const jb_sampling_params_t *p,
                     const jb_rng_stream_t *streams, uint64_t position, int32_t *out,
                     void *scratch, jb_err_t *err) {
    if (jb_sampling_params_check(p, err) < 0)
        return -1;
    for (int n = 0; n < N; n++) {
        out[n] = jb_sampling_row(logits + (size_t)n * bins, bins, p, streams[n], position,
                                 scratch);
        if (out[n] < 0)
            return jb_err_set(err, JB_EINVAL,
                              "sampling: sample %u level %u position %llu: logits have NaN "
                              "or nothing finite", streams[n].sample, streams[n].level,
                              (unsigned long long)position);
    }
    return 0;
}
