// test_cuda_prior.c: sampling with the transformer on the device (jb_prior_cuda.h) against the
// golden fixtures of the prior cases (tests/golden/prior_*/io.safetensors): greedy ancestral
// sampling of a whole window and greedy sampling primed with the case's prime codes, in passes of
// the case's chunk_size, must give the reference's codes ("greedy", "primed_greedy"), and the
// same codes as the CPU sampler (jb_prior_sample).
// Built against the CPU emulation of CUDA by plain make; against a GPU by make CUDA=1.
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jb_device.h"
#include "jb_prior.h"
#include "jb_prior_cuda.h"
#include "jb_safetensors.h"
#include "jb_test.h"

#ifdef JB_CUDA_EMU
#include "jb_cuda_emu.h"
#endif

static int same(const int32_t *a, const int32_t *b, int64_t n, int64_t *first) {
    for (int64_t i = 0; i < n; i++)
        if (a[i] != b[i]) {
            *first = i;
            return 0;
        }
    return 1;
}

static void run_case(const char *name) {
    const char *g = getenv("GOLDEN") ? getenv("GOLDEN") : "tests/golden";
    char path[512];
    jb_err_t err = {0};
    snprintf(path, sizeof path, "%s/%s/case.json", g, name);
    json_t *cj = json_load_file(path, 0, NULL);
    JB_CHECK(cj != NULL, "%s: case.json", name);
    if (!cj) return;
    int chunk = (int)json_integer_value(json_object_get(cj, "chunk_size"));
    snprintf(path, sizeof path, "%s/%s/model.safetensors", g, name);
    jb_prior_t *p = jb_prior_new(path, &err);
    snprintf(path, sizeof path, "%s/%s/io.safetensors", g, name);
    jb_st_t *io = p ? jb_st_open(path, &err) : NULL;
    JB_CHECK(p && io, "%s: open (%s)", name, err.msg);
    const jb_st_entry_t *ey = io ? jb_st_find(io, "y") : NULL;
    const jb_st_entry_t *eg = io ? jb_st_find(io, "greedy") : NULL;
    const jb_st_entry_t *ep = io ? jb_st_find(io, "prime") : NULL;
    if (!p || !io || !eg) goto done;
    {
        int N = (int)eg->shape[0], T = (int)eg->shape[1];
        int32_t *y = ey ? jb_st_get_i32(io, "y", -1, NULL, &err) : NULL;
        int32_t *want = jb_st_get_i32(io, "greedy", -1, NULL, &err);
        int32_t *got = malloc(sizeof(int32_t) * (size_t)N * T);
        int32_t *cpu = malloc(sizeof(int32_t) * (size_t)N * T);
        jb_prior_cuda_t *s = jb_prior_cuda_new(p, N, chunk, 0, &err);
        JB_CHECK(s != NULL, "%s: device sampler (%s)", name, err.msg);
        jb_prior_sampler_t *cs = jb_prior_sampler_new(p, N, chunk, &err);
        int64_t at = -1;
        if (s && cs) {
            int ok = jb_prior_cuda_sample(s, N, y, NULL, NULL, 0, 0, 0, jb_prior_choose_greedy,
                                          NULL, got, NULL, &err) == 0;
            JB_CHECK(ok, "%s: device greedy (%s)", name, err.msg);
            JB_CHECK(ok && same(got, want, (int64_t)N * T, &at),
                     "%s: device greedy == reference (%d x %d codes; first difference at %lld)",
                     name, N, T, (long long)at);
            ok = jb_prior_sample(cs, N, y, NULL, NULL, 0, 0, 0, jb_prior_choose_greedy, NULL, cpu,
                                 NULL, &err) == 0;
            JB_CHECK(ok && same(got, cpu, (int64_t)N * T, &at), "%s: device greedy == CPU greedy",
                     name);
            if (ep) {
                int P = (int)ep->shape[1];
                int32_t *prime = jb_st_get_i32(io, "prime", -1, NULL, &err);
                int32_t *pw = jb_st_get_i32(io, "primed_greedy", -1, NULL, &err);
                ok = prime && pw &&
                     jb_prior_cuda_sample(s, N, y, NULL, prime, P, 0, chunk,
                                          jb_prior_choose_greedy, NULL, got, NULL, &err) == 0;
                JB_CHECK(ok, "%s: device primed (%s)", name, err.msg);
                JB_CHECK(ok && same(got, pw, (int64_t)N * T, &at),
                         "%s: device primed greedy (prime %d, chunks of %d) == reference "
                         "(first difference at %lld)", name, P, chunk, (long long)at);
                jb_free(prime), jb_free(pw);
            }
        }
        // The CPU sampler's API with the device attached (what the stages do with --device).
        if (s && cs) {
            jb_prior_sampler_t *big = jb_prior_sampler_new(p, N + 1, chunk, &err);
            JB_CHECK(big && jb_prior_cuda_attach(big, s, &err) == -1 && err.code == JB_ENOMEM,
                     "%s: attaching to a sampler of a larger batch refused: %s", name, err.msg);
            jb_prior_sampler_destroy(&big);
            JB_CHECK(jb_prior_cuda_attach(cs, s, &err) == 0, "%s: attach (%s)", name, err.msg);
#ifdef JB_CUDA_EMU
            uint64_t l0 = jb_cuda_emu_launches();
#endif
            memset(got, 0xff, sizeof(int32_t) * (size_t)N * T);
            int ok = jb_prior_sample(cs, N, y, NULL, NULL, 0, 0, 0, jb_prior_choose_greedy, NULL,
                                     got, NULL, &err) == 0;
            JB_CHECK(ok && same(got, want, (int64_t)N * T, &at),
                     "%s: jb_prior_sample with the device attached == reference (%s)", name,
                     err.msg);
#ifdef JB_CUDA_EMU
            JB_CHECK(jb_cuda_emu_launches() > l0 + (uint64_t)T, "%s: it ran on the device",
                     name);
#endif
            jb_prior_sampler_set_backend(cs, NULL, NULL);
        }
        jb_prior_sampler_destroy(&cs);
        jb_prior_cuda_destroy(&s);
        free(got), free(cpu);
        jb_free(y), jb_free(want);
    }
done:
    jb_st_close(&io);
    jb_prior_destroy(&p);
    json_decref(cj);
}

int main(void) {
#ifndef JB_CUDA_EMU
    {   // a real CUDA build: the device must be there (make test-gpu)
        jb_device_t dev;
        jb_err_t derr = {0};
        int dok = jb_device_parse("cuda", &dev, &derr) == 0 && jb_device_open(&dev, &derr) == 0;
        JB_CHECK(dok, "CUDA device: %s", derr.msg);
        if (!dok) return jb_test_summary("test_cuda_prior");
    }
#endif
    const char *cases[] = {"prior_top_5b_tiny", "prior_top_5b_fp16w", "prior_top_5b_lyrics_tiny",
                           "prior_top_1b_lyrics_tiny"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(cases[i]);
#ifdef JB_CUDA_EMU
    JB_CHECK(jb_cuda_emu_used() == 0, "every device allocation freed (%zu bytes left)",
             jb_cuda_emu_used());
#endif
    return jb_test_summary("test_cuda_prior");
}
