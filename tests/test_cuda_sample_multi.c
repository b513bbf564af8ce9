// test_cuda_sample_multi.c: several jobs' windows in one batch on the device give each job the
// codes it gets alone on the device, byte for byte (the products are batch-invariant:
// jb_matmul_cuda.h).
//
// Per golden prior (an upsampler with its Conditioner, the 1b lyrics prior with labels and
// lyrics in its sequence, the 5b lyrics prior with its encoder, the f16-weight prior): a CPU
// sampler of batch 8 with the device attached (jb_prior_cuda_attach, as the stages do), three
// jobs of 1, 2 and 3 samples with their own seeds, job ids, labels, codes above and lyrics, a
// level of 1.5 windows (windows at 0 and T/2: primes of 0 and T/2, so the priming passes run
// batched too). Reference: each job's windows alone (jb_sample_window). Batched: the three
// jobs' windows in one jb_sample_windows call per window. Greedy, then sampled (temperature,
// top-k, top-p: each row its own seeded stream). And with int8 weights (--weights int8) on two
// of them, whose device codes must also equal the CPU int8 sampler's.
// Built against the CPU emulation of CUDA by plain make; against a GPU by make CUDA=1.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jb_device.h"
#include "jb_prior.h"
#include "jb_prior_cuda.h"
#include "jb_rng.h"
#include "jb_safetensors.h"
#include "jb_sample.h"
#include "jb_test.h"

#ifdef JB_CUDA_EMU
#include "jb_cuda_emu.h"
#endif

#define JOBS 3
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
    jb_sample_lyrics_t lyr[JOBS];
} job_t;

// Job j of a model: samples, labels, codes above, lyrics; sampled (not greedy) settings differ.
static void job_init(job_t *b, int j, const char *name, const jb_prior_info_t *in,
                     const int32_t *y_io, const int32_t *lyric_tokens, int sampled) {
    int T = in->n_ctx, L = in->label_len;
    memset(b, 0, sizeof *b);
    snprintf(b->id, sizeof b->id, "job-%d-%s", j, name);
    b->n = j + 1;
    b->total = T * 3 / 2;
    b->o = (jb_sample_opts_t){.sampling = jb_sampling_default_params(), .chunk_size = 8,
                              .max_batch_size = MAXB, .hop_length = T / 2,
                              .seed = 100 + (uint64_t)j, .job_hash = jb_rng_hash_job(b->id)};
    if (!sampled) b->o.sampling.greedy = 1;
    if (sampled && j == 1) b->o.sampling.temp = 0.9f;
    if (sampled && j == 2) b->o.sampling.top_k = 5;
    if (sampled && j == 0) b->o.sampling.top_p = 0.8f;
    b->zs = calloc((size_t)b->n * b->total, sizeof(int32_t));
    if (in->x_cond) {
        b->above_len = b->total / in->cond_downsample;
        b->above = malloc(sizeof(int32_t) * (size_t)b->n * b->above_len);
        for (int i = 0; i < b->n * b->above_len; i++)
            b->above[i] = (int32_t)urand((uint32_t)in->bins);
    }
    if (y_io) {
        b->y = malloc(sizeof(int32_t) * (size_t)b->n * L);
        for (int i = 0; i < b->n; i++) {
            memcpy(b->y + i * L, y_io + ((j + i) % 2) * L, sizeof(int32_t) * (size_t)L);
            b->y[i * L + 0] = T * in->raw_to_tokens * 3;            // total length
            b->y[i * L + 1] = (int32_t)(j * in->raw_to_tokens);     // offset
        }
    }
    for (int i = 0; i < b->n; i++) b->lyr[i] = (jb_sample_lyrics_t){lyric_tokens + j + i, 24};
}

// weights: JB_WEIGHTS_STORED or JB_WEIGHTS_INT8 (the device multiplies the CPU's int8 tiles;
// then each job alone on the CPU too, whose codes the device's must equal).
static void run_model(const char *name, int sampled, int weights) {
    char path[256];
    const char *g = getenv("GOLDEN") ? getenv("GOLDEN") : "tests/golden";
    jb_err_t err = {0};
    snprintf(path, sizeof path, "%s/%s/model.safetensors", g, name);
    jb_weights_opts_t wo = {weights, 0};
    jb_prior_t *p = jb_prior_new_opts(path, &wo, &err);
    snprintf(path, sizeof path, "%s/%s/io.safetensors", g, name);
    jb_st_t *io = p ? jb_st_open(path, &err) : NULL;
    jb_prior_cuda_t *d = io ? jb_prior_cuda_new(p, MAXB, 8, 0, &err) : NULL;
    jb_prior_sampler_t *s = d ? jb_prior_sampler_new(p, MAXB, 8, &err) : NULL;
    int ok = s && jb_prior_cuda_attach(s, d, &err) == 0;
    JB_CHECK(ok, "%s: load, device sampler, attach (%s)", name, err.msg);
    const jb_prior_info_t *in = p ? jb_prior_info(p) : NULL;
    int32_t *y_io = ok && (in->labels || in->lyrics) ? jb_st_get_i32(io, "y", -1, NULL, &err)
                                                     : NULL;
    int32_t lyric_tokens[32];   // ids of the model's vocabulary
    for (int i = 0; ok && i < 32; i++)
        lyric_tokens[i] = in->n_vocab > 1 ? (int32_t)(1 + (i * 7 + 3) % (in->n_vocab - 1)) : 0;
    job_t jobs[JOBS];
    int32_t *ref[JOBS] = {0};
    jb_sample_window_t *win = NULL;
    int n_win = 0;
    if (ok) {
        for (int j = 0; j < JOBS; j++) job_init(&jobs[j], j, name, in, y_io, lyric_tokens, sampled);
        ok = jb_sample_plan(in, jobs[0].total, 0, in->n_ctx / 2, &win, &n_win, &err) == 0 &&
             n_win == 2;
        JB_CHECK(ok, "%s: two windows (%d; %s)", name, n_win, err.msg);
    }
#ifdef JB_CUDA_EMU
    uint64_t l0 = jb_cuda_emu_launches();
#endif
    // Reference: each job's windows alone on the device.
    for (int j = 0; ok && j < JOBS; j++) {
        job_t *b = &jobs[j];
        for (int w = 0; ok && w < n_win; w++)
            ok = jb_sample_window(s, &b->o, b->n, win[w], b->zs, b->total, &b->have, b->above,
                                  b->above_len, b->y, in->lyrics ? b->lyr : NULL, &err) == 0;
        JB_CHECK(ok && b->have == b->total, "%s: job %d alone (%s)", name, j, err.msg);
        ref[j] = b->zs;
        b->zs = calloc((size_t)b->n * b->total, sizeof(int32_t));
        b->have = 0;
    }
#ifdef JB_CUDA_EMU
    JB_CHECK(!ok || jb_cuda_emu_launches() > l0 + (uint64_t)in->n_ctx, "%s: it ran on the device",
             name);
#endif
    if (ok && weights == JB_WEIGHTS_INT8) {   // the CPU's int8 sampler, each job alone
        jb_prior_sampler_t *cs = jb_prior_sampler_new(p, MAXB, 8, &err);
        long differ = 0, total = 0;
        for (int j = 0; cs && j < JOBS; j++) {
            job_t *b = &jobs[j];
            for (int w = 0; ok && w < n_win; w++)
                ok = jb_sample_window(cs, &b->o, b->n, win[w], b->zs, b->total, &b->have,
                                      b->above, b->above_len, b->y, in->lyrics ? b->lyr : NULL,
                                      &err) == 0;
            for (int i = 0; i < b->n * b->total; i++) differ += b->zs[i] != ref[j][i];
            total += (long)b->n * b->total;
            memset(b->zs, 0, sizeof(int32_t) * (size_t)b->n * b->total);
            b->have = 0;
        }
        JB_CHECK(cs && ok && differ == 0, "%s int8 (%s): device codes == the CPU int8 sampler's "
                 "(%ld of %ld differ; %s)", name, sampled ? "sampled" : "greedy", differ, total,
                 err.msg);
        jb_prior_sampler_destroy(&cs);
    }
    // Batched: the three jobs' windows in one call per window (6 rows).
    for (int w = 0; ok && w < n_win; w++) {
        jb_sample_part_t parts[JOBS];
        for (int j = 0; j < JOBS; j++) {
            job_t *b = &jobs[j];
            parts[j] = (jb_sample_part_t){&b->o, b->n, win[w], b->zs, b->total, &b->have,
                                          b->above, b->above_len, b->y,
                                          in->lyrics ? b->lyr : NULL};
        }
        ok = jb_sample_windows(s, parts, JOBS, &err) == 0;
        JB_CHECK(ok, "%s: window %d of three jobs in one batch (%s)", name, w, err.msg);
    }
    long differ = 0, total = 0;
    for (int j = 0; ok && j < JOBS; j++) {
        for (int i = 0; i < jobs[j].n * jobs[j].total; i++) differ += jobs[j].zs[i] != ref[j][i];
        total += (long)jobs[j].n * jobs[j].total;
    }
    JB_CHECK(ok && differ == 0, "%s (%s%s): three jobs (1 + 2 + 3 samples) batched on the "
             "device: codes byte-identical to each job alone (%ld of %ld differ)", name,
             sampled ? "sampled" : "greedy", weights == JB_WEIGHTS_INT8 ? ", int8" : "", differ,
             total);
    for (int j = 0; in && n_win && j < JOBS; j++) {
        free(jobs[j].zs), free(jobs[j].above), free(jobs[j].y);
        free(ref[j]);
    }
    free(win);
    jb_free(y_io);
    jb_prior_sampler_destroy(&s);
    jb_prior_cuda_destroy(&d);
    jb_prior_destroy(&p);
    jb_st_close(&io);
}

int main(void) {
#ifndef JB_CUDA_EMU
    {   // a real CUDA build: the device must be there (make test-gpu)
        jb_device_t dev;
        jb_err_t derr = {0};
        int dok = jb_device_parse("cuda", &dev, &derr) == 0 && jb_device_open(&dev, &derr) == 0;
        JB_CHECK(dok, "CUDA device: %s", derr.msg);
        if (!dok) return jb_test_summary("test_cuda_sample_multi");
    }
#endif
    const char *models[] = {"upsampler_mid_tiny", "prior_top_1b_lyrics_tiny",
                            "prior_top_5b_lyrics_tiny", "prior_top_5b_fp16w"};
    for (int sampled = 0; sampled < 2; sampled++) {
        for (size_t i = 0; i < sizeof models / sizeof models[0]; i++)
            run_model(models[i], sampled, JB_WEIGHTS_STORED);
        run_model("prior_top_1b_lyrics_tiny", sampled, JB_WEIGHTS_INT8);
        run_model("upsampler_mid_tiny", sampled, JB_WEIGHTS_INT8);
    }
#ifdef JB_CUDA_EMU
    JB_CHECK(jb_cuda_emu_used() == 0, "every device allocation freed (%zu bytes left)",
             jb_cuda_emu_used());
#endif
    return jb_test_summary("test_cuda_sample_multi");
}
