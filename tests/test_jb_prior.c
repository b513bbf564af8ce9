// test_jb_prior.c: the prior's derived shapes and layer patterns against the golden cases'
// `derived` records, reproducible random sampling (run to run, process to process, batch slot
// independence, batch 1 vs batch 4), and clean errors on bad input.
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "jb_labels.h"
#include "jb_prior.h"
#include "jb_safetensors.h"
#include "jb_sample.h"
#include "jb_test.h"

#define GOLDEN "tests/golden/"

static void check_derived(const char *name) {
    char path[256];
    jb_err_t err;
    snprintf(path, sizeof path, GOLDEN "%s/case.json", name);
    json_error_t je;
    json_t *cj = json_load_file(path, 0, &je);
    JB_CHECK(cj != NULL, "%s: case.json", name);
    if (!cj) return;
    snprintf(path, sizeof path, GOLDEN "%s/model.safetensors", name);
    jb_prior_t *p = jb_prior_new(path, &err);
    JB_CHECK(p != NULL, "%s: load (%s)", name, p ? "" : err.msg);
    if (!p) {
        json_decref(cj);
        return;
    }
    json_t *d = json_object_get(cj, "derived");
    const jb_prior_info_t *in = jb_prior_info(p);
    JB_CHECK(in->bins == json_integer_value(json_object_get(d, "bins")), "%s: bins", name);
    JB_CHECK(in->seq_len == json_integer_value(json_object_get(d, "transformer_n_ctx")),
             "%s: transformer n_ctx %d", name, in->seq_len);
    JB_CHECK(in->raw_to_tokens == json_integer_value(json_object_get(d, "raw_to_tokens")),
             "%s: raw_to_tokens", name);
    JB_CHECK(in->sample_length == json_integer_value(json_object_get(d, "sample_length")),
             "%s: sample_length", name);
    JB_CHECK(in->label_len == json_integer_value(json_object_get(d, "label_len")),
             "%s: label_len", name);
    json_t *cd = json_object_get(d, "cond_downsample");
    JB_CHECK(in->cond_downsample == (json_is_null(cd) ? 0 : json_integer_value(cd)),
             "%s: cond_downsample", name);
    JB_CHECK(in->include_time_signal == json_is_true(json_object_get(d, "include_time_signal")),
             "%s: time signal", name);
    json_t *af = json_object_get(d, "attn_funcs");
    const jb_transformer_t *tf = jb_prior_transformer(p);
    int same = (int)json_array_size(af) == jb_transformer_hp(tf)->depth;
    for (size_t i = 0; same && i < json_array_size(af); i++)
        same = jb_transformer_layer_kind(tf, (int)i) == json_integer_value(json_array_get(af, i));
    JB_CHECK(same, "%s: attn_funcs of every layer", name);
    json_t *jb = json_object_get(d, "joint_bins");
    if (jb) JB_CHECK(in->seq_bins == json_integer_value(jb), "%s: joint bins", name);
    json_t *pl = json_object_get(d, "prime_len_attn");
    if (pl) JB_CHECK(jb_transformer_prime_keys(tf) == json_integer_value(pl), "%s: prime keys", name);
    jb_prior_destroy(&p);
    json_decref(cj);
}

// Four items (labels of the two stored ones, twice), random sampling (temp 1, no filter).
static int sample4(jb_prior_t *p, const int32_t *y2, uint64_t seed, int max_batch,
                   const uint32_t *ids, int32_t *out, jb_err_t *err) {
    const jb_prior_info_t *in = jb_prior_info(p);
    int L = in->label_len, T = in->n_ctx;
    int32_t y[4 * 64];
    for (int i = 0; i < 4; i++) memcpy(y + i * L, y2 + (i % 2) * L, sizeof(int32_t) * L);
    jb_prior_sampler_t *s = jb_prior_sampler_new(p, max_batch, 16, err);
    if (!s) return -1;
    jb_sample_opts_t o = {.sampling = jb_sampling_default_params(), .chunk_size = 16,
                          .max_batch_size = max_batch, .hop_length = T / 2, .seed = seed,
                          .job_hash = jb_rng_hash_job("test-job"), .sample_ids = ids};
    int len = 0;
    int rc = jb_sample_level(s, &o, 4, T, out, T, 0, NULL, 0, y, NULL, &len, err);
    jb_prior_sampler_destroy(&s);
    return rc || len != T ? -1 : 0;
}

static int count_diff(const int32_t *a, const int32_t *b, int n) {
    int d = 0;
    for (int i = 0; i < n; i++) d += a[i] != b[i];
    return d;
}

static void reproducibility(void) {
    jb_err_t err;
    jb_prior_t *p = jb_prior_new(GOLDEN "prior_top_5b_tiny/model.safetensors", &err);
    jb_st_t *io = jb_st_open(GOLDEN "prior_top_5b_tiny/io.safetensors", &err);
    JB_CHECK(p && io, "load prior_top_5b_tiny");
    if (!p || !io) {
        jb_prior_destroy(&p);
        jb_st_close(&io);
        return;
    }
    int32_t *y2 = jb_st_get_i32(io, "y", -1, NULL, &err);
    int T = jb_prior_info(p)->n_ctx, n = 4 * T;
    int32_t *a = malloc(sizeof(int32_t) * n), *b = malloc(sizeof(int32_t) * n);
    int32_t *c = malloc(sizeof(int32_t) * n);
    const uint32_t ids[4] = {0, 1, 0, 1};   // items 0 and 2 are the same sample
    JB_CHECK_OK(sample4(p, y2, 7, 4, ids, a, &err), &err, "sample batch 4");
    JB_CHECK_OK(sample4(p, y2, 7, 4, ids, b, &err), &err, "sample again");
    JB_CHECK(count_diff(a, b, n) == 0, "same seed, same codes run to run");
    JB_CHECK(count_diff(a, a + 2 * T, 2 * T) == 0,
             "a sample's codes do not depend on its batch slot (items 0,1 == 2,3)");
    JB_CHECK_OK(sample4(p, y2, 8, 4, ids, c, &err), &err, "other seed");
    int dseed = count_diff(a, c, n);
    JB_CHECK(dseed > 0, "another seed gives other codes (%d of %d differ)", dseed, n);
    // Batch 1 vs batch 4: the same draws; only float rounding of batched products can differ.
    JB_CHECK_OK(sample4(p, y2, 7, 1, ids, c, &err), &err, "sample batch 1");
    int d14 = count_diff(a, c, n);
    printf("  batch 1 vs batch 4: %d of %d codes differ\n", d14, n);
    JB_CHECK(d14 <= n / 10, "batch 1 vs batch 4: %d of %d codes differ", d14, n);
    // Another process.
    int fd[2];
    if (pipe(fd) == 0) {
        pid_t pid = fork();
        if (pid == 0) {
            close(fd[0]);
            int rc = sample4(p, y2, 7, 4, ids, c, &err);
            ssize_t w = rc ? -1 : write(fd[1], c, sizeof(int32_t) * (size_t)n);
            _exit(w == (ssize_t)(sizeof(int32_t) * (size_t)n) ? 0 : 1);
        }
        close(fd[1]);
        size_t got = 0;
        while (got < sizeof(int32_t) * (size_t)n) {
            ssize_t r = read(fd[0], (char *)c + got, sizeof(int32_t) * (size_t)n - got);
            if (r <= 0) break;
            got += (size_t)r;
        }
        close(fd[0]);
        int st = 0;
        waitpid(pid, &st, 0);
        JB_CHECK(got == sizeof(int32_t) * (size_t)n && count_diff(a, c, n) == 0,
                 "same codes in another process");
    }
    // Greedy through the sampling layer (top_k 1) equals the prior's own argmax chooser.
    jb_prior_sampler_t *s = jb_prior_sampler_new(p, 2, 8, &err);
    int32_t g1[2 * 64], g2[2 * 64];
    JB_CHECK_OK(jb_prior_sample(s, 2, y2, NULL, NULL, 0, 0, 0, jb_prior_choose_greedy, NULL, g1,
                                NULL, &err), &err, "greedy");
    int32_t *ref = jb_st_get_i32(io, "greedy", -1, NULL, &err);
    JB_CHECK(ref && count_diff(g1, ref, 2 * T) == 0, "greedy equals the reference");
    jb_sample_opts_t o = {.sampling = jb_sampling_default_params(), .chunk_size = 8,
                          .max_batch_size = 2, .hop_length = T, .seed = 99};
    o.sampling.top_k = 1;
    int len = 0;
    JB_CHECK_OK(jb_sample_level(s, &o, 2, T, g2, T, 0, NULL, 0, y2, NULL, &len, &err), &err,
                "sample_level top_k 1");
    JB_CHECK(count_diff(g1, g2, 2 * T) == 0, "sample_level with top_k 1 is greedy");
    // Partial windows (total < n_ctx, sample_partial_window): greedy is causal, so each run
    // continues the reference's greedy codes.
    {
        int32_t zp[2 * 96];
        memset(zp, 0, sizeof zp);
        int n40 = 0;
        JB_CHECK_OK(jb_sample_level(s, &o, 2, 40, zp, 96, 0, NULL, 0, y2, NULL, &n40, &err), &err,
                    "partial window from nothing");
        int same = n40 == 40;
        for (int i = 0; i < 2 && same; i++) same = count_diff(zp + i * 96, ref + i * T, 40) == 0;
        JB_CHECK(same, "partial window of 40 = the first 40 greedy codes (%d codes)", n40);
        for (int i = 0; i < 2; i++) memcpy(zp + i * 96, ref + i * T, sizeof(int32_t) * 30);
        int n50 = 0;
        JB_CHECK_OK(jb_sample_level(s, &o, 2, 20, zp, 96, 30, NULL, 0, y2, NULL, &n50, &err), &err,
                    "partial window after 30 codes");
        same = n50 == 50;
        for (int i = 0; i < 2 && same; i++) same = count_diff(zp + i * 96, ref + i * T, 50) == 0;
        JB_CHECK(same, "20 more codes after 30 continue the greedy run (%d codes)", n50);
        int n70 = 0;
        JB_CHECK_OK(jb_sample_level(s, &o, 2, 20, zp, 96, 50, NULL, 0, y2, NULL, &n70, &err), &err,
                    "partial window after 50 codes");
        same = n70 == 70;
        for (int i = 0; i < 2 && same; i++) same = count_diff(zp + i * 96, ref + i * T, 50) == 0;
        JB_CHECK(same, "a window at 6 keeps the 50 codes and ends at 70 (%d codes)", n70);
        // A stage's plan counts the level's length: 30 present of 50 -> one window [0, T)
        // filled to 50; nothing when the length is there.
        const jb_prior_info_t *pin = jb_prior_info(p);
        jb_sample_window_t *pw = NULL;
        int npw = -1;
        JB_CHECK_OK(jb_sample_plan_to(pin, 50, 30, T, &pw, &npw, &err), &err, "plan_to 50 from 30");
        JB_CHECK(npw == 1 && pw && pw[0].start == 0 && pw[0].fill == 50,
                 "plan_to: one partial window filled to the length (%d windows)", npw);
        free(pw);
        pw = NULL;
        JB_CHECK_OK(jb_sample_plan_to(pin, 50, 50, T, &pw, &npw, &err), &err, "plan_to 50 from 50");
        JB_CHECK(npw == 0 && !pw, "plan_to: nothing to sample when the length is present");
    }
    // Bad input is refused with a message.
    int32_t z[2 * 64];
    memset(z, 0, sizeof z);
    z[5] = 64;
    float *lg = malloc(sizeof(float) * 2 * 64 * 64);
    JB_CHECK(jb_prior_forward(p, z, NULL, y2, 2, lg, NULL, &err) == -1 && strstr(err.msg, "64"),
             "code out of range refused: %s", err.msg);
    JB_CHECK(jb_prior_forward(p, z, NULL, NULL, 2, lg, NULL, &err) == -1,
             "missing labels refused: %s", err.msg);
    int32_t ybad[2 * 16];
    memcpy(ybad, y2, sizeof(int32_t) * 2 * jb_prior_info(p)->label_len);
    ybad[3] = 99999;
    z[5] = 0;
    JB_CHECK(jb_prior_forward(p, z, NULL, ybad, 2, lg, NULL, &err) == -1 &&
             strstr(err.msg, "artist"), "artist id out of range refused: %s", err.msg);
    JB_CHECK(jb_prior_sample(s, 3, y2, NULL, NULL, 0, 0, 0, jb_prior_choose_greedy, NULL, g1,
                             NULL, &err) == -1, "batch above the sampler's refused: %s", err.msg);
    free(lg);
    jb_free(ref);
    jb_prior_sampler_destroy(&s);
    free(a), free(b), free(c);
    jb_free(y2);
    jb_prior_destroy(&p);
    jb_st_close(&io);
}

// Alignment over a song: one window equals the reference's attention; several windows place
// each window's weights at the lyric positions it covers, the first window winning.
static void alignment(void) {
    jb_err_t err;
    jb_prior_t *p = jb_prior_new(GOLDEN "prior_top_5b_lyrics_tiny/model.safetensors", &err);
    jb_st_t *io = jb_st_open(GOLDEN "prior_top_5b_lyrics_tiny/io.safetensors", &err);
    JB_CHECK(p && io, "load prior_top_5b_lyrics_tiny");
    if (!p || !io) {
        jb_prior_destroy(&p);
        jb_st_close(&io);
        return;
    }
    const jb_prior_info_t *in = jb_prior_info(p);
    int T = in->n_ctx, nt = in->n_tokens, L = in->label_len;
    int32_t *y = jb_st_get_i32(io, "y", -1, NULL, &err), *z = jb_st_get_i32(io, "z", -1, NULL, &err);
    float *ref = jb_st_get_f32(io, "attn", -1, NULL, &err);
    // (a) one window; the item's lyrics are exactly its n_tokens tokens.
    jb_sample_lyrics_t ly[2];
    for (int i = 0; i < 2; i++) ly[i].tokens = y + i * L + L - nt, ly[i].n = nt;
    float *a0 = malloc(sizeof(float) * T * nt), *a1 = malloc(sizeof(float) * T * nt);
    float *outs[2] = {a0, a1};
    JB_CHECK_OK(jb_sample_alignment(p, 2, T, z, T, y, ly, T, outs, &err), &err, "alignment");
    double m = 0;
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < T * nt; k++) {
            double d = fabs((double)outs[i][k] - ref[(int64_t)i * T * nt + k]);
            m = d > m ? d : m;
        }
    JB_CHECK(m <= 1e-5, "one-window alignment equals the reference attention (max |diff| %.3g)", m);
    // (b) three windows (hop n_ctx/2) over 2·n_ctx codes and 40 lyric tokens.
    int total = 2 * T, nf = 40;
    int32_t *zz = malloc(sizeof(int32_t) * total), full[40];
    memcpy(zz, z, sizeof(int32_t) * T);
    memcpy(zz + T, z + T, sizeof(int32_t) * T);
    for (int k = 0; k < nf; k++) full[k] = ly[0].tokens[k % nt];
    jb_sample_lyrics_t lf = {full, nf};
    int32_t yb[64];   // a song long enough for three windows
    memcpy(yb, y, sizeof(int32_t) * L);
    yb[0] = 80000, yb[1] = 1000;
    float *al = malloc(sizeof(float) * total * nf);
    JB_CHECK_OK(jb_sample_alignment(p, 1, total, zz, total, yb, &lf, T / 2, &al, &err), &err,
                "alignment over 3 windows");
    int32_t yw[64], idx[64];
    memcpy(yw, yb, sizeof(int32_t) * L);
    yw[2] = in->sample_length;
    jb_labels_lyric_window(full, nf, nt, yw[0], yw[1], yw[2], yw + L - nt, idx, &err);
    float *lg = malloc(sizeof(float) * in->seq_len * in->seq_bins), *w0 = malloc(sizeof(float) * T * nt);
    JB_CHECK_OK(jb_prior_forward(p, zz, NULL, yw, 1, lg, w0, &err), &err, "window 0 forward");
    double m2 = 0, rowmax = 0;
    for (int t = 0; t < T; t++)
        for (int k = 0; k < nt; k++) {
            double d = fabs((double)al[t * nf + idx[k]] - w0[t * nt + k]);
            m2 = d > m2 ? d : m2;
        }
    for (int t = 0; t < total; t++) {
        double s = 0;
        for (int k = 0; k < nf; k++) s += al[t * nf + k];
        rowmax = s > rowmax ? s : rowmax;
    }
    JB_CHECK(m2 == 0, "rows of the first window hold its weights at its lyric indices");
    JB_CHECK(rowmax <= 1.0 + 1e-5 && rowmax > 0.5, "rows are distributions (max sum %.6f)", rowmax);
    // (c) a hop that does not divide the rest (get_starts): the last window moves back to end
    // at the last code (the reference's starts for 2·n_ctx codes, hop h: 0, h, ..., then
    // total - n_ctx), and the rows only it covers hold its weights. (This was refused as "a
    // window past the end", which failed a top prior with lyrics on a 6 s song.)
    int h = T * 3 / 4;   // starts 0, h, then 2h clamped to T
    JB_CHECK_OK(jb_sample_alignment(p, 1, total, zz, total, yb, &lf, h, &al, &err), &err,
                "alignment with a hop of 3/4 of the window over two windows of codes");
    memcpy(yw, yb, sizeof(int32_t) * L);
    yw[2] = in->sample_length;
    yw[1] = (int32_t)(yb[1] + (int64_t)T * in->raw_to_tokens);
    jb_labels_lyric_window(full, nf, nt, yw[0], yw[1], yw[2], yw + L - nt, idx, &err);
    JB_CHECK_OK(jb_prior_forward(p, zz + T, NULL, yw, 1, lg, w0, &err), &err,
                "the last window's forward (start n_ctx)");
    double m3 = 0;
    for (int t = h + T; t < total; t++)   // rows after window h's end: the last window's only
        for (int k = 0; k < nt; k++) {
            double d = fabs((double)al[t * nf + idx[k]] - w0[(t - T) * nt + k]);
            m3 = d > m3 ? d : m3;
        }
    JB_CHECK(m3 == 0, "rows only the last (moved back) window covers hold its weights "
             "(max |diff| %.3g)", m3);
    free(a0), free(a1), free(zz), free(al), free(lg), free(w0);
    jb_free(y), jb_free(z), jb_free(ref);
    jb_prior_destroy(&p);
    jb_st_close(&io);
}

// jb_prior_set_alignment: which layer/head the alignment records (jukebox-eval align).
static void set_alignment(void) {
    jb_err_t err;
    jb_prior_t *p = jb_prior_new(GOLDEN "prior_top_5b_lyrics_tiny/model.safetensors", &err);
    jb_prior_t *q = jb_prior_new(GOLDEN "prior_top_5b_tiny/model.safetensors", &err);
    jb_st_t *io = jb_st_open(GOLDEN "prior_top_5b_lyrics_tiny/io.safetensors", &err);
    JB_CHECK(p && q && io, "load prior_top_5b_lyrics_tiny and prior_top_5b_tiny");
    if (!p || !q || !io) goto done;
    const jb_prior_info_t *in = jb_prior_info(p);
    const jb_prior_hparams_t *hp = jb_prior_hparams(p);
    int T = in->n_ctx, nt = in->n_tokens, L0 = hp->alignment_layer, H0 = hp->alignment_head;
    JB_CHECK(jb_prior_set_alignment(q, 0, 0, &err) == -1 && err.code == JB_EINVAL,
             "a prior without lyrics is refused (%s)", err.msg);
    JB_CHECK(jb_prior_set_alignment(p, hp->depth, 0, &err) == -1 && err.code == JB_EINVAL &&
             jb_prior_set_alignment(p, L0, hp->heads, &err) == -1 &&
             jb_prior_set_alignment(p, -1, 0, &err) == -1,
             "layer or head out of range refused (%s)", err.msg);
    // the lyrics encoder model: only its encoder-attention (kind 6) layers see the lyrics
    int kind6 = -1, other = -1;
    for (int d = 0; d < hp->depth; d++) {
        jb_transformer_layer_t l;
        jb_transformer_layer(jb_prior_transformer(p), d, &l);
        if (l.kind == 6 && d != L0 && kind6 < 0) kind6 = d;
        if (l.kind != 6 && other < 0) other = d;
    }
    JB_CHECK(other >= 0 && jb_prior_set_alignment(p, other, 0, &err) == -1 &&
             strstr(err.msg, "does not attend"), "layer %d (not encoder attention) refused", other);
    JB_CHECK(hp->alignment_layer == L0 && hp->alignment_head == H0, "a refusal changes nothing");
    int32_t *y = jb_st_get_i32(io, "y", -1, NULL, &err), *z = jb_st_get_i32(io, "z", -1, NULL, &err);
    float *ref = jb_st_get_f32(io, "attn", -1, NULL, &err);
    float *lg = malloc(sizeof(float) * in->seq_len * in->seq_bins);
    float *a = malloc(sizeof(float) * T * nt), *b = malloc(sizeof(float) * T * nt);
    int other_head = (H0 + 1) % hp->heads;
    JB_CHECK_OK(jb_prior_set_alignment(p, kind6 >= 0 ? kind6 : L0, other_head, &err), &err,
                "another encoder-attention head");
    JB_CHECK_OK(jb_prior_forward(p, z, NULL, y, 1, lg, a, &err), &err, "forward, another head");
    JB_CHECK_OK(jb_prior_set_alignment(p, L0, H0, &err), &err, "back to the stored head");
    JB_CHECK_OK(jb_prior_forward(p, z, NULL, y, 1, lg, b, &err), &err, "forward, stored head");
    double dref = 0, dother = 0, rowmax = 0;
    for (int k = 0; k < T * nt; k++) {
        dref = fmax(dref, fabs((double)b[k] - ref[k]));
        dother = fmax(dother, fabs((double)a[k] - b[k]));
    }
    for (int t = 0; t < T; t++) {
        double s = 0;
        for (int k = 0; k < nt; k++) s += a[t * nt + k];
        rowmax = fmax(rowmax, s);
    }
    JB_CHECK(dref <= 1e-5, "the stored head again gives the reference attention (%.3g)", dref);
    JB_CHECK(dother > 1e-3 && rowmax <= 1 + 1e-5,
             "another head records other weights (max |diff| %.3g), rows distributions", dother);
    free(lg), free(a), free(b);
    jb_free(y), jb_free(z), jb_free(ref);
done:
    jb_prior_destroy(&p);
    jb_prior_destroy(&q);
    jb_st_close(&io);
}

int main(void) {
    alignment();
    set_alignment();
    const char *cases[] = {"prior_top_5b_tiny", "prior_top_5b_fp16w", "prior_top_5b_lyrics_tiny",
                           "prior_top_1b_lyrics_tiny", "upsampler_mid_tiny",
                           "upsampler_bottom_tiny"};
    for (int i = 0; i < 6; i++) check_derived(cases[i]);
    reproducibility();
    jb_err_t err;
    jb_prior_t *p = jb_prior_new(GOLDEN "no_such_case/model.safetensors", &err);
    JB_CHECK(!p && err.code == JB_ENOENT, "missing file: %s", err.msg);
    p = jb_prior_new(GOLDEN "vqvae_tiny/model.safetensors", &err);
    JB_CHECK(!p && strstr(err.msg, "vqvae_tiny"), "a VQ-VAE file is refused: %s", err.msg);
    return jb_test_summary("test_jb_prior");
}
