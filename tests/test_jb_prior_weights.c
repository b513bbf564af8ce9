// test_jb_prior_weights.c: priors loaded with their matrix weights converted (f32, f16, bf16,
// int8)
// and/or packed (jb_prior_new_opts) against the golden cases' reference logits and greedy
// tokens; the benchmark helpers (jb_tcache_fill_random, jb_prior_sampler_bench_setup/step).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jb_prior.h"
#include "jb_safetensors.h"
#include "jb_sample.h"
#include "jb_test.h"

#define GOLDEN "tests/golden/"

static const char *const cases[] = {"upsampler_bottom_tiny",    "upsampler_mid_tiny",
                                    "prior_top_5b_tiny",        "prior_top_5b_lyrics_tiny",
                                    "prior_top_1b_lyrics_tiny", "prior_top_5b_fp16w", NULL};

// Greedy tokens equal to the reference's, per weights option (JB_WEIGHTS_*), over the cases
// counted (the packed runs).
static long agree_total[5], agree_same[5];
// Teacher-forced top-1 agreement with the reference's logits, per weights option.
static long tf_agree_total[5], tf_agree_same[5];

// Logits of the golden inputs with opts vs the reference logits: relative RMS and max error
// (both over the reference's RMS). Greedy tokens vs the reference's: fraction equal.
static void check_case(const char *name, jb_weights_opts_t o, double tol_rms, double tol_max,
                       int count_greedy) {
    char path[256];
    jb_err_t err = {0};
    snprintf(path, sizeof path, GOLDEN "%s/io.safetensors", name);
    jb_st_t *io = jb_st_open(path, &err);
    JB_CHECK(io != NULL, "%s: io (%s)", name, io ? "" : err.msg);
    if (!io) return;
    snprintf(path, sizeof path, GOLDEN "%s/model.safetensors", name);
    jb_prior_t *p = jb_prior_new_opts(path, &o, &err);
    JB_CHECK(p != NULL, "%s %s%s: load (%s)", name, jb_weights_name(o.weights),
             o.packed ? " packed" : "", p ? "" : err.msg);
    if (!p) {
        jb_st_close(&io);
        return;
    }
    const jb_prior_info_t *in = jb_prior_info(p);
    const jb_st_entry_t *ez = jb_st_find(io, "z");
    int N = (int)ez->shape[0];
    int32_t *z = jb_st_get_i32(io, "z", -1, NULL, &err);
    int32_t *zc = jb_st_find(io, "z_cond") ? jb_st_get_i32(io, "z_cond", -1, NULL, &err) : NULL;
    int32_t *y = jb_st_find(io, "y") ? jb_st_get_i32(io, "y", -1, NULL, &err) : NULL;
    float *ref = jb_st_get_f32(io, "logits", -1, NULL, &err);
    int64_t n = (int64_t)N * in->seq_len * in->seq_bins;
    float *lg = malloc(sizeof(float) * (size_t)n);
    JB_CHECK_OK(jb_prior_forward(p, z, zc, y, N, lg, NULL, &err), &err, "forward");
    double ss = 0, se = 0, me = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)lg[i] - ref[i]);
        ss += (double)ref[i] * ref[i], se += d * d;
        if (d > me || d != d) me = d;
    }
    double rms = sqrt(ss / n), erms = sqrt(se / n) / rms, emax = me / rms;
    // Teacher-forced top-1: at each position, the argmax of our logits vs the reference's
    // (no cascade: a flip at one position does not change the inputs of the next).
    long tf_same = 0, tf_total = 0;
    for (int64_t r = 0; r < (int64_t)N * in->seq_len; r++) {
        const float *a = lg + r * in->seq_bins, *b = ref + r * in->seq_bins;
        int ia = 0, ib = 0;
        for (int j = 1; j < in->seq_bins; j++) {
            if (a[j] > a[ia]) ia = j;
            if (b[j] > b[ib]) ib = j;
        }
        tf_same += ia == ib, tf_total++;
    }
    if (count_greedy) tf_agree_total[o.weights] += tf_total, tf_agree_same[o.weights] += tf_same;
    JB_CHECK(erms <= tol_rms && emax <= tol_max,
             "%s %s%s: logits error rms %.2e, max %.2e of the reference rms (tolerance %.0e, %.0e)",
             name, jb_weights_name(o.weights), o.packed ? " packed" : "", erms, emax, tol_rms,
             tol_max);
    printf("  %-26s %-6s %-6s logits error: rms %.2e, max %.2e (of ref rms %.3f), top-1 %ld/%ld",
           name, jb_weights_name(o.weights), o.packed ? "packed" : "", erms, emax, rms, tf_same,
           tf_total);
    int32_t *want = jb_st_get_i32(io, "greedy", -1, NULL, &err);
    if (want) {
        int T = in->n_ctx;
        int32_t *got = malloc(sizeof(int32_t) * (size_t)N * T);
        jb_prior_sampler_t *s = jb_prior_sampler_new(p, N, 0, &err);
        JB_CHECK_OK(jb_prior_sample(s, N, y, zc, NULL, 0, 0, 0, jb_prior_choose_greedy, NULL, got,
                                    NULL, &err), &err, "greedy");
        int same = 0;
        for (int i = 0; i < N * T; i++) same += got[i] == want[i];
        printf(", greedy %d/%d equal", same, N * T);
        if (count_greedy) agree_total[o.weights] += N * T, agree_same[o.weights] += same;
        // Any weights: the first token depends only on the start conditioning and one step;
        // most sequences must still agree somewhere (a broken model agrees ~1/bins).
        JB_CHECK(same * 4 >= N * T || o.weights == JB_WEIGHTS_BF16 || o.weights == JB_WEIGHTS_F16 ||
                 o.weights == JB_WEIGHTS_INT8,
                 "%s: greedy %d/%d equal", name, same, N * T);
        if (o.weights == JB_WEIGHTS_F32 || o.weights == JB_WEIGHTS_STORED)
            JB_CHECK(same == N * T, "%s %s%s: greedy tokens %d/%d equal", name,
                     jb_weights_name(o.weights), o.packed ? " packed" : "", same, N * T);
        jb_prior_sampler_destroy(&s);
        free(got);
        free(want);
    }
    printf("\n");
    free(lg);
    free(z);
    free(zc);
    free(y);
    jb_free(ref);
    jb_prior_destroy(&p);
    jb_st_close(&io);
}

// The benchmark helpers on the tiny bottom upsampler (width 32, depth 4, n_state 8, MLP 32).
static void check_bench_helpers(void) {
    jb_err_t err = {0};
    jb_weights_opts_t o = {JB_WEIGHTS_BF16, 1};
    jb_prior_t *p = jb_prior_new_opts(GOLDEN "upsampler_bottom_tiny/model.safetensors", &o, &err);
    JB_CHECK(p != NULL, "load bf16 packed (%s)", p ? "" : err.msg);
    if (!p) return;
    const jb_transformer_t *tf = jb_prior_transformer(p);
    // (W·3S + S·W + W·M + M·W) two-byte weights a layer, 4 layers
    size_t want = (size_t)4 * (32 * 24 + 8 * 32 + 32 * 32 + 32 * 32) * 2;
    JB_CHECK(jb_transformer_step_weight_bytes(tf) == want, "step weight bytes %zu, expected %zu",
             jb_transformer_step_weight_bytes(tf), want);
    JB_CHECK(jb_transformer_step_weight_params(tf) == (int64_t)want / 2,
             "step weight params %lld, expected %zu",
             (long long)jb_transformer_step_weight_params(tf), want / 2);
    const jb_prior_info_t *in = jb_prior_info(p);
    jb_prior_sampler_t *s = jb_prior_sampler_new(p, 4, 1, &err);
    JB_CHECK(s != NULL, "sampler");
    JB_CHECK(jb_prior_sampler_bench_setup(s, 4, 0, 1, &err) == -1, "setup at 0 refused");
    JB_CHECK(jb_prior_sampler_bench_setup(s, 4, in->seq_len, 1, &err) == -1, "setup at n_ctx refused");
    JB_CHECK_OK(jb_prior_sampler_bench_setup(s, 3, 40, 1, &err), &err, "setup at 40, batch 3");
    int32_t out[4] = {-1, -1, -1, -1};
    int ok = 1;
    for (int t = 40; t < in->seq_len && ok; t++) {
        ok = jb_prior_sampler_step(s, jb_prior_choose_greedy, NULL, out, &err) == 0;
        for (int n = 0; n < 3; n++) ok = ok && out[n] >= 0 && out[n] < in->seq_bins;
    }
    JB_CHECK(ok, "steps from 40 to n_ctx give tokens in range (%s)", ok ? "" : err.msg);
    JB_CHECK(jb_prior_sampler_step(s, jb_prior_choose_greedy, NULL, out, &err) == -1,
             "a step past n_ctx is refused");
    jb_prior_sampler_destroy(&s);
    jb_prior_destroy(&p);
    JB_CHECK(jb_weights_parse("bf16") == JB_WEIGHTS_BF16 && jb_weights_parse("stored") == 0 &&
             jb_weights_parse("f16") == JB_WEIGHTS_F16 && jb_weights_parse("f32") == JB_WEIGHTS_F32 &&
             jb_weights_parse("int8") == JB_WEIGHTS_INT8 && jb_weights_parse("fp8") == -1 &&
             jb_weights_parse(NULL) == -1, "jb_weights_parse");
    o.weights = 9;
    p = jb_prior_new_opts(GOLDEN "upsampler_bottom_tiny/model.safetensors", &o, &err);
    JB_CHECK(p == NULL && err.code == JB_EINVAL, "a bad weights option is refused");
}

// Random sampling (temp 1) of 16 items with batches of 4 vs batches of 1, 8 seeds: the draws
// are the same by design (one counter-based stream per item), and the products of a row do not
// depend on the rows beside it (batch-invariant kernels), so the codes must be identical.
static void batch_1_vs_4(const char *name, jb_weights_opts_t o) {
    char path[256];
    jb_err_t err = {0};
    snprintf(path, sizeof path, GOLDEN "%s/model.safetensors", name);
    jb_prior_t *p = jb_prior_new_opts(path, &o, &err);
    snprintf(path, sizeof path, GOLDEN "%s/io.safetensors", name);
    jb_st_t *io = jb_st_open(path, &err);
    JB_CHECK(p && io, "%s: load", name);
    if (!p || !io) {
        jb_prior_destroy(&p);
        jb_st_close(&io);
        return;
    }
    const jb_prior_info_t *in = jb_prior_info(p);
    int L = in->label_len, T = in->n_ctx, I = 16;
    int32_t *y2 = jb_st_get_i32(io, "y", -1, NULL, &err);
    int32_t *y = malloc(sizeof(int32_t) * (size_t)I * L);
    for (int i = 0; i < I; i++) memcpy(y + i * L, y2 + (i % 2) * L, sizeof(int32_t) * L);
    int32_t *a = malloc(sizeof(int32_t) * (size_t)I * T), *b = malloc(sizeof(int32_t) * (size_t)I * T);
    long diff = 0, items = 0, total = 0;
    for (uint64_t seed = 1; seed <= 8; seed++) {
        int32_t *res[2] = {a, b};
        for (int k = 0; k < 2; k++) {
            int mb = k ? 1 : 4, len = 0;
            jb_prior_sampler_t *s = jb_prior_sampler_new(p, mb, 16, &err);
            jb_sample_opts_t so = {.sampling = jb_sampling_default_params(), .chunk_size = 16,
                                   .max_batch_size = mb, .hop_length = T / 2, .seed = seed,
                                   .job_hash = jb_rng_hash_job("batch-test")};
            JB_CHECK_OK(jb_sample_level(s, &so, I, T, res[k], T, 0, NULL, 0, y, NULL, &len, &err),
                        &err, "sample level");
            jb_prior_sampler_destroy(&s);
        }
        for (int i = 0; i < I; i++) {
            int d = 0;
            for (int t = 0; t < T; t++) d += a[i * T + t] != b[i * T + t];
            diff += d, items += d > 0;
        }
        total += (long)I * T;
    }
    printf("  %s %s%s: batch 1 vs batch 4, temperature 1: %ld of %ld codes differ (%ld of %d "
           "items)\n", name, jb_weights_name(o.weights), o.packed ? " packed" : "", diff, total,
           items, 8 * I);
    // The kernels are batch-invariant (test_jb_matmul): a row's bits do not depend on the
    // rows sampled with it, so not a single code may differ.
    JB_CHECK(diff == 0, "%s: batch 1 vs 4: %ld of %ld codes differ", name, diff, total);
    free(a);
    free(b);
    free(y);
    free(y2);
    jb_prior_destroy(&p);
    jb_st_close(&io);
}

int main(void) {
    // f32/stored, packed or not: float32 accumulation in another order only.
    // bf16 weights (8 bits of mantissa): each weight off by up to 2^-9 relative; the logits of
    // these tiny models come out a few 1e-3 of their rms off; 3e-2 rms / 2e-1 max leaves room
    // and still catches a wrong conversion (an unrounded or byte-swapped weight gives ~1).
    for (int i = 0; cases[i]; i++) {
        check_case(cases[i], (jb_weights_opts_t){JB_WEIGHTS_STORED, 1}, 1e-4, 1e-3, 0);
        check_case(cases[i], (jb_weights_opts_t){JB_WEIGHTS_F32, 1}, 1e-4, 1e-3, 0);
        check_case(cases[i], (jb_weights_opts_t){JB_WEIGHTS_F16, 0}, 1e-2, 5e-2, 0);
        check_case(cases[i], (jb_weights_opts_t){JB_WEIGHTS_BF16, 0}, 3e-2, 2e-1, 0);
        check_case(cases[i], (jb_weights_opts_t){JB_WEIGHTS_BF16, 1}, 3e-2, 2e-1, 1);
        // int8, a scale per column and 64 rows: each weight off by up to max|w|/254 of its
        // group, a few times bf16's error on these weights; same tolerances as bf16.
        check_case(cases[i], (jb_weights_opts_t){JB_WEIGHTS_INT8, 1}, 3e-2, 2e-1, 1);
    }
    for (int w = JB_WEIGHTS_BF16; w <= JB_WEIGHTS_INT8; w++)
        printf("  %s packed: greedy tokens equal to the reference's: %ld of %ld (%.1f %%)\n",
               jb_weights_name(w), agree_same[w], agree_total[w],
               100.0 * agree_same[w] / (agree_total[w] ? agree_total[w] : 1));
    for (int w = JB_WEIGHTS_BF16; w <= JB_WEIGHTS_INT8; w++)
        printf("  %s packed: teacher-forced top-1 equal to the reference's: %ld of %ld (%.1f %%)\n",
               jb_weights_name(w), tf_agree_same[w], tf_agree_total[w],
               100.0 * tf_agree_same[w] / (tf_agree_total[w] ? tf_agree_total[w] : 1));
    // Rounding flips some argmaxes, and one flip changes every later token of that sequence;
    // most must agree all the same. int8: per position, with the reference's inputs (no
    // cascade), the top-1 token must equal the reference's at >= 98 % (measured: 791 of 800;
    // bf16 797); its free-running greedy agreement, where the first flip carries to the end of
    // the window, is lower than bf16's (677 vs 753 of 768: docs/bench.md) and held to >= 80 %.
    JB_CHECK(agree_same[JB_WEIGHTS_BF16] * 2 >= agree_total[JB_WEIGHTS_BF16],
             "bf16 greedy agreement %ld of %ld", agree_same[JB_WEIGHTS_BF16],
             agree_total[JB_WEIGHTS_BF16]);
    JB_CHECK(tf_agree_total[JB_WEIGHTS_INT8] > 0 &&
             tf_agree_same[JB_WEIGHTS_INT8] * 100 >= tf_agree_total[JB_WEIGHTS_INT8] * 98,
             "int8 teacher-forced top-1 agreement %ld of %ld >= 98 %%",
             tf_agree_same[JB_WEIGHTS_INT8], tf_agree_total[JB_WEIGHTS_INT8]);
    JB_CHECK(agree_same[JB_WEIGHTS_INT8] * 10 >= agree_total[JB_WEIGHTS_INT8] * 8,
             "int8 greedy agreement %ld of %ld >= 80 %%", agree_same[JB_WEIGHTS_INT8],
             agree_total[JB_WEIGHTS_INT8]);
    check_bench_helpers();
    batch_1_vs_4("prior_top_5b_tiny", (jb_weights_opts_t){JB_WEIGHTS_STORED, 0});
    batch_1_vs_4("prior_top_5b_tiny", (jb_weights_opts_t){JB_WEIGHTS_BF16, 1});
    batch_1_vs_4("prior_top_1b_lyrics_tiny", (jb_weights_opts_t){JB_WEIGHTS_STORED, 0});
    batch_1_vs_4("prior_top_1b_lyrics_tiny", (jb_weights_opts_t){JB_WEIGHTS_INT8, 1});
    return jb_test_summary("test_jb_prior_weights");
}
