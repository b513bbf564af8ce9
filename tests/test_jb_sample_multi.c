// test_jb_sample_multi.c: several jobs' windows in one batch (jb_sample_windows) give each job
// the codes it gets alone, byte for byte.
//
// Per golden prior (an upsampler conditioned on the level above, the 1b lyrics prior with
// labels and lyrics in its sequence, the 5b lyrics prior with its encoder): five jobs with
// their own seeds, job ids, sample counts, labels, sampling settings and codes above, a level
// of 2.5 windows (windows at 0, T/2, T, 1.5T: primes of 0 and T/2). Reference: each job alone
// (jb_sample_level, one item at a time). Batched: a scheduler as a stage's, every round
// advancing the jobs whose next windows share prime length and fill (the most rows), up to 8
// rows; job 0 starts
// two windows ahead of the others, so that batches mix windows at different starts. Also the
// contract's refusals: parts of different prime lengths, too many rows, nothing to sample.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jb_prior.h"
#include "jb_rng.h"
#include "jb_safetensors.h"
#include "jb_sample.h"
#include "jb_test.h"

#define GOLDEN "tests/golden/"
#define JOBS 5
#define MAXB 8

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t urand(uint32_t n) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)(rng >> 33) % n;
}

typedef struct {
    jb_sample_opts_t o;
    char id[32];
    int n, total, have;
    int32_t *zs, *above, *y;   // (n, total), (n, above_len), (n, label_len)
    int above_len;
    jb_sample_lyrics_t lyr[4];
    jb_sample_window_t *win;
    int n_win, next;
} job_t;

static void run_model(const char *name) {
    char path[256];
    jb_err_t err = {0};
    snprintf(path, sizeof path, GOLDEN "%s/model.safetensors", name);
    jb_prior_t *p = jb_prior_new(path, &err);
    snprintf(path, sizeof path, GOLDEN "%s/io.safetensors", name);
    jb_st_t *io = jb_st_open(path, &err);
    JB_CHECK(p && io, "%s: load (%s)", name, err.msg);
    if (!p || !io) {
        jb_prior_destroy(&p);
        jb_st_close(&io);
        return;
    }
    const jb_prior_info_t *in = jb_prior_info(p);
    int T = in->n_ctx, L = in->label_len;
    int32_t *y_io = in->labels || in->lyrics ? jb_st_get_i32(io, "y", -1, NULL, &err) : NULL;
    int32_t lyric_tokens[32];   // ids of the model's vocabulary
    for (int i = 0; i < 32; i++)
        lyric_tokens[i] = in->n_vocab > 1 ? (int32_t)(1 + (i * 7 + 3) % (in->n_vocab - 1)) : 0;
    job_t jobs[JOBS];
    memset(jobs, 0, sizeof jobs);
    static const int n_samples[JOBS] = {1, 2, 1, 3, 1};
    for (int j = 0; j < JOBS; j++) {
        job_t *b = &jobs[j];
        snprintf(b->id, sizeof b->id, "job-%d-%s", j, name);
        b->n = n_samples[j];
        b->total = T * 5 / 2;
        b->o = (jb_sample_opts_t){.sampling = jb_sampling_default_params(), .chunk_size = 8,
                                  .max_batch_size = 1, .hop_length = T / 2,
                                  .seed = 100 + (uint64_t)j, .job_hash = jb_rng_hash_job(b->id)};
        if (j == 1) b->o.sampling.temp = 0.9f;
        if (j == 2) b->o.sampling.top_k = 5;
        if (j == 3) b->o.sampling.top_p = 0.8f;
        b->zs = calloc((size_t)b->n * b->total, sizeof(int32_t));
        if (in->x_cond) {
            b->above_len = b->total / in->cond_downsample;
            b->above = malloc(sizeof(int32_t) * (size_t)b->n * b->above_len);
            for (int i = 0; i < b->n * b->above_len; i++) b->above[i] = (int32_t)urand((uint32_t)in->bins);
        }
        if (y_io) {
            b->y = malloc(sizeof(int32_t) * (size_t)b->n * L);
            for (int i = 0; i < b->n; i++) {
                memcpy(b->y + i * L, y_io + ((j + i) % 2) * L, sizeof(int32_t) * (size_t)L);
                b->y[i * L + 0] = T * in->raw_to_tokens * 3;            // total length
                b->y[i * L + 1] = (int32_t)(j * in->raw_to_tokens);     // offset
            }
        }
        for (int i = 0; i < b->n; i++)
            b->lyr[i] = (jb_sample_lyrics_t){lyric_tokens + j, 24};
    }
    // Reference: every job alone.
    int32_t *ref[JOBS] = {0};
    jb_prior_sampler_t *s1 = jb_prior_sampler_new(p, 1, 8, &err);
    JB_CHECK(s1 != NULL, "%s: sampler (%s)", name, err.msg);
    for (int j = 0; j < JOBS && s1; j++) {
        job_t *b = &jobs[j];
        int len = 0;
        JB_CHECK_OK(jb_sample_level(s1, &b->o, b->n, b->total, b->zs, b->total, 0, b->above,
                                    b->above_len, b->y, in->lyrics ? b->lyr : NULL, &len, &err),
                    &err, "job alone");
        ref[j] = b->zs;
        b->zs = calloc((size_t)b->n * b->total, sizeof(int32_t));
        JB_CHECK_OK(jb_sample_plan(in, b->total, 0, T / 2, &b->win, &b->n_win, &err), &err,
                    "plan");
    }
    jb_prior_sampler_destroy(&s1);
    // Batched: job 0 runs its first two windows alone.
    jb_prior_sampler_t *s = jb_prior_sampler_new(p, MAXB, 8, &err);
    JB_CHECK(s != NULL, "%s: batch sampler (%s)", name, err.msg);
    int batches = 0, mixed = 0, max_rows = 0;
    jb_sample_part_t parts[JOBS];
    for (int round = 0; s && round < 100; round++) {
        // The (prime, fill) shared by the most rows, as a stage would choose.
        int keyP = -1, keyF = -1, best = 0, np = 0, rows = 0;
        for (int j = 0; j < JOBS; j++) {
            job_t *b = &jobs[j];
            if (b->next >= b->n_win || (round < 2 && j != 0)) continue;
            int P = jb_sample_window_prime(in, b->win[b->next], b->have), sum = 0;
            for (int k = 0; k < JOBS; k++) {
                job_t *c = &jobs[k];
                if (c->next < c->n_win && !(round < 2 && k != 0) &&
                    jb_sample_window_prime(in, c->win[c->next], c->have) == P &&
                    c->win[c->next].fill == b->win[b->next].fill)
                    sum += c->n;
            }
            if (sum > best) best = sum, keyP = P, keyF = b->win[b->next].fill;
        }
        for (int j = 0; j < JOBS && best; j++) {
            job_t *b = &jobs[j];
            if (b->next >= b->n_win || (round < 2 && j != 0)) continue;
            if (jb_sample_window_prime(in, b->win[b->next], b->have) != keyP ||
                b->win[b->next].fill != keyF || rows + b->n > MAXB)
                continue;
            parts[np++] = (jb_sample_part_t){&b->o, b->n, b->win[b->next], b->zs, b->total,
                                             &b->have, b->above, b->above_len, b->y,
                                             in->lyrics ? b->lyr : NULL};
            rows += b->n;
        }
        if (!np) break;
        int ok = jb_sample_windows(s, parts, np, &err) == 0;
        JB_CHECK(ok, "%s round %d: %d windows in one batch (%s)", name, round, np, err.msg);
        if (!ok) break;
        batches++;
        if (rows > max_rows) max_rows = rows;
        for (int i = 1; i < np; i++)
            if (parts[i].win.start != parts[0].win.start) mixed = 1;
        for (int j = 0; j < JOBS; j++)
            for (int i = 0; i < np; i++)
                if (parts[i].have == &jobs[j].have) jobs[j].next++;
    }
    long differ = 0, total = 0;
    for (int j = 0; j < JOBS; j++) {
        job_t *b = &jobs[j];
        JB_CHECK(b->next == b->n_win && b->have == b->total, "%s job %d: every window (%d of %d), "
                 "%d codes", name, j, b->next, b->n_win, b->have);
        for (int i = 0; i < b->n * b->total; i++) differ += b->zs[i] != ref[j][i];
        total += (long)b->n * b->total;
    }
    printf("  %s: %d jobs (%d samples) in %d batches of up to %d rows, windows at different "
           "starts mixed: %s; codes differing from each job alone: %ld of %ld\n", name, JOBS,
           1 + 2 + 1 + 3 + 1, batches, max_rows, mixed ? "yes" : "no", differ, total);
    JB_CHECK(mixed, "%s: some batch mixed windows at different starts", name);
    JB_CHECK(max_rows > 3, "%s: some batch held several jobs (%d rows)", name, max_rows);
    JB_CHECK(differ == 0, "%s: every job's codes byte-identical to the job alone (%ld of %ld "
             "differ)", name, differ, total);
    // Refusals, no `have` changed: different primes; more rows than the sampler holds.
    if (s) {
        job_t *a = &jobs[0], *b = &jobs[1];
        int ha = 0, hb = T;
        jb_sample_window_t w0 = {0, T}, w1 = {T / 2, T};
        jb_sample_part_t two[2] = {
            {&a->o, a->n, w0, a->zs, a->total, &ha, a->above, a->above_len, a->y, a->lyr},
            {&b->o, b->n, w1, b->zs, b->total, &hb, b->above, b->above_len, b->y, b->lyr}};
        JB_CHECK(jb_sample_windows(s, two, 2, &err) == -1 && err.code == JB_EINVAL && ha == 0 &&
                 hb == T, "%s: primes 0 and %d in one batch refused: %s", name, T / 2, err.msg);
        jb_sample_part_t many[JOBS + 1];   // 8 rows + job 3's 3 again
        int h[JOBS + 1] = {0};
        for (int j = 0; j <= JOBS; j++) {
            job_t *c = &jobs[j < JOBS ? j : 3];
            many[j] = (jb_sample_part_t){&c->o, c->n, w0, c->zs, c->total, &h[j], c->above,
                                         c->above_len, c->y, c->lyr};
        }
        err.msg[0] = 0;
        JB_CHECK(jb_sample_windows(s, many, JOBS + 1, &err) == -1 && err.code == JB_EINVAL &&
                 h[0] == 0, "%s: 11 rows in a sampler of 8 refused: %s", name, err.msg);
        int hd = T;   // the window is complete: nothing to sample
        jb_sample_part_t done = {&a->o, a->n, w0, a->zs, a->total, &hd, a->above, a->above_len,
                                 a->y, a->lyr};
        JB_CHECK(jb_sample_windows(s, &done, 1, &err) == -1 && hd == T,
                 "%s: a window with nothing to sample refused: %s", name, err.msg);
    }
    jb_prior_sampler_destroy(&s);
    for (int j = 0; j < JOBS; j++) {
        free(jobs[j].zs), free(jobs[j].above), free(jobs[j].y), free(jobs[j].win);
        free(ref[j]);
    }
    jb_free(y_io);
    jb_prior_destroy(&p);
    jb_st_close(&io);
}

int main(void) {
    run_model("upsampler_bottom_tiny");
    run_model("prior_top_1b_lyrics_tiny");
    run_model("prior_top_5b_lyrics_tiny");
    return jb_test_summary("test_jb_sample_multi");
}
