// test_cuda_prior.c: sampling with the transformer on the device (jb_prior_cuda.h) against the
// golden fixtures of the prior cases (tests/golden/prior_*/io.safetensors): greedy ancestral
// sampling of a whole window and greedy sampling primed with the case's prime codes, in passes of
// the case's chunk_size, must give the reference's codes ("greedy", "primed_greedy"), and the
// same codes as the CPU sampler (jb_prior_sample).
// Built against the CPU emulation of CUDA by plain make; against a GPU by make CUDA=1.
#include <jansson.h>
#include <math.h>
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
        int32_t *zc = jb_st_find(io, "z_cond") ? jb_st_get_i32(io, "z_cond", -1, NULL, &err) : NULL;
        int32_t *want = jb_st_get_i32(io, "greedy", -1, NULL, &err);
        int32_t *got = malloc(sizeof(int32_t) * (size_t)N * T);
        int32_t *cpu = malloc(sizeof(int32_t) * (size_t)N * T);
        jb_prior_cuda_t *s = jb_prior_cuda_new(p, N, chunk, 0, &err);
        JB_CHECK(s != NULL, "%s: device sampler (%s)", name, err.msg);
        jb_prior_sampler_t *cs = jb_prior_sampler_new(p, N, chunk, &err);
        int64_t at = -1;
        if (s && cs && zc) {   // an upsampler: the Conditioner on the device
            int64_t nx = (int64_t)N * T * jb_prior_info(p)->width;
            float *dx = malloc(sizeof(float) * (size_t)nx), *cx = malloc(sizeof(float) * (size_t)nx);
            float *rx = jb_st_get_f32(io, "cond.x", -1, NULL, &err);
            int ok = dx && cx && rx && jb_prior_cuda_cond_x(s, zc, N, dx, &err) == 0 &&
                     jb_prior_cond_x(p, y, zc, N, cx, &err) == 0;
            JB_CHECK(ok, "%s: conditioner on the device (%s)", name, err.msg);
            double dc = 0, dr = 0, sc = 0;
            for (int64_t i = 0; ok && i < nx; i++) {
                double a = fabs((double)dx[i] - cx[i]), b = fabs((double)dx[i] - rx[i]);
                if (a > dc || a != a) dc = a;
                if (b > dr || b != b) dr = b;
                if (fabs(rx[i]) > sc) sc = fabs(rx[i]);
            }
            JB_CHECK(ok && dc <= 1e-5 * sc, "%s: device cond.x vs CPU max abs %.3g (scale %.3g)",
                     name, dc, sc);
            JB_CHECK(ok && dr <= 7e-5, "%s: device cond.x vs reference max abs %.3g (tolerance "
                     "abs 7e-5 + rel 1e-4)", name, dr);
            zc[1] = jb_prior_info(p)->bins;   // an out-of-range code is refused, naming it
            JB_CHECK(jb_prior_cuda_cond_x(s, zc, N, dx, &err) == -1 && strstr(err.msg, "outside"),
                     "%s: bad conditioning code refused (%s)", name, err.msg);
            err = (jb_err_t){0};
            jb_free(rx), free(dx), free(cx);
            jb_free(zc);
            zc = jb_st_get_i32(io, "z_cond", -1, NULL, &err);
        }
        if (s && cs) {
            int ok = jb_prior_cuda_sample(s, N, y, zc, NULL, 0, 0, 0, jb_prior_choose_greedy,
                                          NULL, got, NULL, &err) == 0;
            JB_CHECK(ok, "%s: device greedy (%s)", name, err.msg);
            JB_CHECK(ok && same(got, want, (int64_t)N * T, &at),
                     "%s: device greedy == reference (%d x %d codes; first difference at %lld)",
                     name, N, T, (long long)at);
            ok = jb_prior_sample(cs, N, y, zc, NULL, 0, 0, 0, jb_prior_choose_greedy, NULL, cpu,
                                 NULL, &err) == 0;
            JB_CHECK(ok && same(got, cpu, (int64_t)N * T, &at), "%s: device greedy == CPU greedy",
                     name);
            if (ep) {
                int P = (int)ep->shape[1];
                int32_t *prime = jb_st_get_i32(io, "prime", -1, NULL, &err);
                int32_t *pw = jb_st_get_i32(io, "primed_greedy", -1, NULL, &err);
                ok = prime && pw &&
                     jb_prior_cuda_sample(s, N, y, zc, prime, P, 0, chunk,
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
            int ok = jb_prior_sample(cs, N, y, zc, NULL, 0, 0, 0, jb_prior_choose_greedy, NULL,
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
        jb_free(y), jb_free(want), jb_free(zc);
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
                           "prior_top_1b_lyrics_tiny", "upsampler_mid_tiny",
                           "upsampler_bottom_tiny"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(cases[i]);
#ifdef JB_CUDA_EMU
    JB_CHECK(jb_cuda_emu_used() == 0, "every device allocation freed (%zu bytes left)",
             jb_cuda_emu_used());
#endif
    return jb_test_summary("test_cuda_prior");
}
