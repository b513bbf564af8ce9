// test_jb_sampling.c: temperature, top-k, top-p, greedy and the categorical draw.
// Masks are derived by hand in the comments from the reference's filter_logits
// (jukebox/transformer/ops.py); draw frequencies are checked against the softmax with
// a chi-square test; determinism and batch independence of sampled tokens.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jb_sampling.h"
#include "jb_test.h"

static int kept_is(const float *l, int n, const char *mask) {   // mask: '1' kept, '0' -inf
    for (int i = 0; i < n; i++) {
        int kept = !(isinf(l[i]) && l[i] < 0);
        if (kept != (mask[i] == '1'))
            return 0;
    }
    return 1;
}

// Chi-square of counts against probabilities over bins with p > 0 (dof = that - 1).
static double chi2(const int *cnt, const double *p, int n, int total, int *dof) {
    double c = 0;
    *dof = -1;
    for (int i = 0; i < n; i++) {
        if (p[i] <= 0)
            continue;
        double e = total * p[i];
        c += (cnt[i] - e) * (cnt[i] - e) / e;
        ++*dof;
    }
    return c;
}

int main(void) {
    jb_err_t err;
    char scratch[4096];
    JB_CHECK(jb_sampling_scratch_bytes(64) <= sizeof scratch, "scratch size");

    // ---- top-k: threshold = k-th largest with ties counted; logits < threshold removed.
    float a[5] = {1, 3, 2, 3, 0};
    // k = 2: topk values (3, 3) -> threshold 3 -> keep indices 1 and 3.
    JB_CHECK(jb_sampling_top_k(a, 5, 2, scratch) == 2 && kept_is(a, 5, "01010"), "top-k 2");
    float b[5] = {1, 3, 2, 3, 0};
    // k = 3: (3, 3, 2) -> threshold 2 -> keep 1, 2, 3.
    JB_CHECK(jb_sampling_top_k(b, 5, 3, scratch) == 3 && kept_is(b, 5, "01110"), "top-k 3");
    float c[4] = {5, 5, 5, 1};
    // k = 1 with a three-way tie at the top: threshold 5, all three stay.
    JB_CHECK(jb_sampling_top_k(c, 4, 1, scratch) == 3 && kept_is(c, 4, "1110"), "top-k ties");
    float d[3] = {1, -INFINITY, 0};
    // k = 2 > finite count... (1, 0) -> threshold 0 -> nothing else removed; k = 10 -> all.
    JB_CHECK(jb_sampling_top_k(d, 3, 2, scratch) == 2 && kept_is(d, 3, "101"), "top-k with -inf");
    JB_CHECK(jb_sampling_top_k(d, 3, 10, scratch) == 2 && kept_is(d, 3, "101"), "top-k > bins");
    JB_CHECK(jb_sampling_top_k(d, 3, 0, scratch) == 2 && d[0] == 1 && d[2] == 0, "top-k 0: off");

    // ---- top-p: p = (0.5, 0.2, 0.3) sorted -> idx 0 (.5), 2 (.3), 1 (.2); cum .5 .8 1.
    float lp[3] = {logf(0.5f), logf(0.2f), logf(0.3f)};
    float e[3];
    memcpy(e, lp, sizeof e);
    // top_p .6: cum > .6 = (F, T, T), shifted (F, F, T): idx 1 (the .2) removed.
    JB_CHECK(jb_sampling_top_p(e, 3, 0.6f, scratch) == 2 && kept_is(e, 3, "101"), "top-p 0.6");
    memcpy(e, lp, sizeof e);
    // top_p .4: (T, T, T) shifted (F, T, T): only the first sorted (idx 0) stays.
    JB_CHECK(jb_sampling_top_p(e, 3, 0.4f, scratch) == 1 && kept_is(e, 3, "100"), "top-p 0.4");
    memcpy(e, lp, sizeof e);
    // top_p .9: (F, F, T) shifted (F, F, F): all stay. top_p 1: all stay.
    JB_CHECK(jb_sampling_top_p(e, 3, 0.9f, scratch) == 3, "top-p 0.9 keeps all");
    JB_CHECK(jb_sampling_top_p(e, 3, 1.0f, scratch) == 3, "top-p 1.0 keeps all");
    memcpy(e, lp, sizeof e);
    // top_p tiny: the most likely token always stays.
    JB_CHECK(jb_sampling_top_p(e, 3, 1e-6f, scratch) == 1 && kept_is(e, 3, "100"),
             "top-p keeps the first token");
    float f[4] = {0, 0, 0, 0};
    // Four ties of .25, top_p .3: cum .25 .5 .75 1 -> (F, T, T, T) shifted (F, F, T, T):
    // the two lowest indices stay (our tie order).
    JB_CHECK(jb_sampling_top_p(f, 4, 0.3f, scratch) == 2 && kept_is(f, 4, "1100"), "top-p ties");
    float g[3] = {0, -INFINITY, 0};
    // (.5, .5, 0): top_p .4 -> cum (.5, 1, 1) > .4 all, shifted (F, T, T): idx 0 only.
    JB_CHECK(jb_sampling_top_p(g, 3, 0.4f, scratch) == 1 && kept_is(g, 3, "100"),
             "top-p with -inf");

    // ---- greedy and temperature.
    float h[4] = {1, 3, 3, 0};
    JB_CHECK(jb_sampling_argmax(h, 4) == 1, "argmax: lowest index on ties (torch.argmax)");
    float nanrow[3] = {NAN, 2, 1};
    JB_CHECK(jb_sampling_argmax(nanrow, 3) == 1, "argmax skips NaN");
    float t2[2] = {2, 4};
    jb_sampling_temperature(t2, 2, 2.0f);
    JB_CHECK(t2[0] == 1 && t2[1] == 2, "temperature divides");
    jb_sampling_params_t pg = jb_sampling_default_params();
    pg.greedy = 1;
    jb_rng_stream_t s = jb_rng_stream(1, jb_rng_hash_job("t"), 0, 0);
    float h2[4] = {1, 3, 3, 0};
    JB_CHECK(jb_sampling_row(h2, 4, &pg, s, 0, scratch) == 1, "greedy row");
    jb_sampling_params_t pk1 = jb_sampling_default_params();
    pk1.top_k = 1;
    float h3[4] = {1, 2, 3, 0};
    JB_CHECK(jb_sampling_row(h3, 4, &pk1, s, 0, scratch) == 2, "top_k 1 = argmax");

    // ---- inverse CDF at chosen u: p = (.2, .3, .5): [0, .2) -> 0, [.2, .5) -> 1, else 2.
    float q[3] = {logf(0.2f), logf(0.3f), logf(0.5f)};
    JB_CHECK(jb_sampling_draw(q, 3, 0.0) == 0 && jb_sampling_draw(q, 3, 0.1999) == 0 &&
             jb_sampling_draw(q, 3, 0.2001) == 1 && jb_sampling_draw(q, 3, 0.4999) == 1 &&
             jb_sampling_draw(q, 3, 0.5001) == 2 && jb_sampling_draw(q, 3, 0.99999) == 2,
             "inverse CDF boundaries");
    float qi[3] = {-INFINITY, 0, -INFINITY};
    JB_CHECK(jb_sampling_draw(qi, 3, 0.0) == 1 && jb_sampling_draw(qi, 3, 0.999999) == 1,
             "-inf never drawn");
    float qn[2] = {-INFINITY, -INFINITY};
    JB_CHECK(jb_sampling_draw(qn, 2, 0.5) == -1, "nothing finite -> -1");

    // ---- frequencies: plain softmax, 6 bins (one -inf), 200000 draws; chi2 4 dof,
    // p = 0.001 critical value 18.47.
    const float base[6] = {0.0f, 0.5f, -0.5f, 1.0f, -INFINITY, 2.0f};
    const int N = 200000;
    double p[6], z = 0;
    for (int i = 0; i < 6; i++)
        z += (p[i] = exp((double)base[i]));
    for (int i = 0; i < 6; i++)
        p[i] /= z;
    int cnt[6] = {0}, dof, bad = 0;
    jb_sampling_params_t pd = jb_sampling_default_params();
    jb_rng_stream_t s9 = jb_rng_stream(9, jb_rng_hash_job("freq"), 3, 2);
    for (int it = 0; it < N; it++) {
        float row[6];
        memcpy(row, base, sizeof row);
        int32_t tk = jb_sampling_row(row, 6, &pd, s9, (uint64_t)it, scratch);
        if (tk < 0)
            bad++;
        else
            cnt[tk]++;
    }
    double x2 = chi2(cnt, p, 6, N, &dof);
    JB_CHECK(bad == 0 && cnt[4] == 0 && dof == 4 && x2 < 18.47,
             "softmax frequencies: chi2 %.2f (4 dof) < 18.47", x2);

    // temp 0.7 with top-k 3: kept logits 2.0, 1.0, 0.5 (indices 5, 3, 1) divided by 0.7,
    // expected p = their softmax, the rest 0. chi2 2 dof, critical 13.82.
    jb_sampling_params_t pt = jb_sampling_default_params();
    pt.temp = 0.7f;
    pt.top_k = 3;
    double pk[6] = {0};
    z = 0;
    for (int i = 0; i < 6; i++)
        if (i == 5 || i == 3 || i == 1)
            z += (pk[i] = exp((double)(base[i] / 0.7f)));
    for (int i = 0; i < 6; i++)
        pk[i] /= z;
    memset(cnt, 0, sizeof cnt);
    for (int it = 0; it < N; it++) {
        float row[6];
        memcpy(row, base, sizeof row);
        int32_t tk = jb_sampling_row(row, 6, &pt, s9, (uint64_t)it + 5000000, scratch);
        if (tk >= 0)
            cnt[tk]++;
    }
    x2 = chi2(cnt, pk, 6, N, &dof);
    JB_CHECK(cnt[0] == 0 && cnt[2] == 0 && cnt[4] == 0 && dof == 2 && x2 < 13.82,
             "temp 0.7 + top-k 3 frequencies: chi2 %.2f (2 dof) < 13.82", x2);

    // top-p 0.8 on p = softmax(base) = (.0748, .1234, .0454, .2034, 0, .5530) by hand;
    // sorted 5, 3, 1, 0, 2, 4 with cumulative-before 0, .553, .756, .880, ...: keep while
    // it is <= 0.8 -> {5, 3, 1}. The expected distribution is p renormalised on that set.
    int order[6] = {5, 3, 1, 0, 2, 4};   // base sorted descending (by hand)
    double cum = 0, pp[6] = {0}, zp = 0;
    for (int j = 0; j < 6; j++) {
        if (j == 0 || cum <= 0.8)
            pp[order[j]] = p[order[j]];
        cum += p[order[j]];
    }
    for (int i = 0; i < 6; i++)
        zp += pp[i];
    for (int i = 0; i < 6; i++)
        pp[i] /= zp;
    jb_sampling_params_t ptp = jb_sampling_default_params();
    ptp.top_p = 0.8f;
    memset(cnt, 0, sizeof cnt);
    for (int it = 0; it < N; it++) {
        float row[6];
        memcpy(row, base, sizeof row);
        int32_t tk = jb_sampling_row(row, 6, &ptp, s9, (uint64_t)it + 9000000, scratch);
        if (tk >= 0)
            cnt[tk]++;
    }
    x2 = chi2(cnt, pp, 6, N, &dof);
    JB_CHECK(pp[5] > 0 && pp[3] > 0 && pp[1] > 0 && pp[0] == 0 && cnt[0] == 0 && cnt[2] == 0 &&
                 dof == 2 && x2 < 13.82,
             "top-p 0.8 keeps {5, 3, 1}; frequencies chi2 %.2f (2 dof) < 13.82", x2);

    // ---- determinism and batch independence through jb_sampling_rows: samples 4, 1, 7 in
    // one batch give the same tokens as each alone, run after run.
    uint64_t job = jb_rng_hash_job("job-batch");
    int same = 1;
    for (uint64_t pos = 0; pos < 500; pos++) {
        float rows[3 * 6];
        for (int r = 0; r < 3; r++)
            memcpy(rows + r * 6, base, sizeof base);
        jb_rng_stream_t st[3] = {jb_rng_stream(5, job, 4, 1), jb_rng_stream(5, job, 1, 1),
                                 jb_rng_stream(5, job, 7, 1)};
        int32_t out[3];
        if (jb_sampling_rows(rows, 3, 6, &pd, st, pos, out, scratch, &err) < 0) {
            same = 0;
            break;
        }
        for (int r = 0; r < 3; r++) {
            float one[6];
            memcpy(one, base, sizeof one);
            int32_t t1;
            if (jb_sampling_rows(one, 1, 6, &pd, &st[r], pos, &t1, scratch, &err) < 0 ||
                t1 != out[r])
                same = 0;
        }
    }
    JB_CHECK(same, "tokens of a sample are the same in a batch of 3 and alone");

    // Errors.
    float nr[3] = {0, NAN, 1};
    int32_t o1;
    JB_CHECK(jb_sampling_rows(nr, 1, 3, &pd, &s, 17, &o1, scratch, &err) == -1 &&
             strstr(err.msg, "position 17"), "NaN row -> error naming the position");
    jb_sampling_params_t bp = jb_sampling_default_params();
    bp.top_k = 5;
    bp.top_p = 0.9f;
    JB_CHECK(jb_sampling_params_check(&bp, &err) == -1, "top-k with top-p refused");
    bp = jb_sampling_default_params();
    bp.temp = 0;
    JB_CHECK(jb_sampling_params_check(&bp, &err) == -1, "temp 0 refused");
    bp.temp = 1;
    bp.top_p = 1.5f;
    JB_CHECK(jb_sampling_params_check(&bp, &err) == -1, "top_p 1.5 refused");
    return jb_test_summary("test_jb_sampling");
}
