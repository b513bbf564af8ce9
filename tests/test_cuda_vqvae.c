// test_cuda_vqvae.c: the VQ-VAE on the device (jb_vqvae_cuda.h) against the golden fixtures of
// the vqvae cases (tests/golden/vqvae_*/io.safetensors) and against the CPU model: for every
// level and every conv method, encoding gives the reference's codes (near-ties excepted, as
// the golden checker) and the CPU's latents, decoding the reference's audio within the case's
// tolerance and the CPU's within 1e-5 relative; chunked passes equal whole ones; memory planning
// refuses with needed vs free; everything is freed.
// Built against the CPU emulation of CUDA by plain make; against a GPU by make CUDA=1.
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jb_device.h"
#include "jb_safetensors.h"
#include "jb_tensor.h"
#include "jb_test.h"
#include "jb_vqvae.h"
#include "jb_vqvae_cuda.h"

#ifdef JB_CUDA_EMU
#include "jb_cuda_emu.h"
#endif

static double max_abs_diff(const float *a, const float *b, int64_t n, double *scale) {
    double m = 0, s = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > m || d != d) m = d;
        if (fabs(b[i]) > s) s = fabs(b[i]);
    }
    if (scale) *scale = s;
    return m;
}

// every element within abs + rel * |ref|
static int close_to(const float *a, const float *ref, int64_t n, double rel, double abs) {
    for (int64_t i = 0; i < n; i++)
        if (!(fabs((double)a[i] - ref[i]) <= abs + rel * fabs(ref[i]))) return 0;
    return 1;
}

static void tolerance(json_t *cj, const char *tensor, double *rel, double *abs) {
    json_t *t = json_object_get(json_object_get(cj, "tolerance_per_tensor"), tensor);
    if (!t) t = json_object_get(cj, "tolerance");
    *rel = json_number_value(json_object_get(t, "rel"));
    *abs = json_number_value(json_object_get(t, "abs"));
}

static const char *method_name[] = {"im2col", "direct", "winograd"};

static void run_case(const char *name) {
    const char *g = getenv("GOLDEN") ? getenv("GOLDEN") : "tests/golden";
    char path[512];
    jb_err_t err = {0};
    snprintf(path, sizeof path, "%s/%s/case.json", g, name);
    json_t *cj = json_load_file(path, 0, NULL);
    snprintf(path, sizeof path, "%s/%s/model.safetensors", g, name);
    jb_st_t *model = jb_st_open(path, &err);
    snprintf(path, sizeof path, "%s/%s/io.safetensors", g, name);
    jb_st_t *io = model ? jb_st_open(path, &err) : NULL;
    jb_vqvae_t *cpu = io ? jb_vqvae_new(model, 0, &err) : NULL;
    jb_vqvae_t *dev = cpu ? jb_vqvae_new(model, 0, &err) : NULL;
    JB_CHECK(cj && dev, "%s: open (%s)", name, err.msg);
    if (!cj || !dev) goto done;
    jb_vqvae_cuda_t *d = jb_vqvae_cuda_new(dev, &err);
    JB_CHECK(d != NULL, "%s: device VQ-VAE (%s)", name, err.msg);
    if (!d) goto done;
    JB_CHECK_OK(jb_vqvae_cuda_attach(dev, d, &err), &err, "attach");
    const jb_st_entry_t *xe = jb_st_find(io, "x");
    int N = (int)xe->shape[0];
    int64_t T = xe->shape[1];
    float *x = jb_st_get_f32(io, "x", -1, NULL, &err);
    const jb_vqvae_hparams_t *hp = jb_vqvae_hparams(dev);
    size_t nT = (size_t)N * (size_t)T;
    float *a = malloc(sizeof(float) * nT), *b = malloc(sizeof(float) * nT);
    float *la = malloc(sizeof(float) * nT * hp->emb_width);
    float *lb = malloc(sizeof(float) * nT * hp->emb_width);
    int32_t *za = malloc(sizeof(int32_t) * nT), *zb = malloc(sizeof(int32_t) * nT);
    for (int method = 0; method < 3; method++) {
        JB_CHECK_OK(jb_vqvae_set_method(cpu, method, &err), &err, "set_method cpu");
        JB_CHECK_OK(jb_vqvae_set_method(dev, method, &err), &err, "set_method dev");
        for (int L = 0; L < hp->levels; L++) {
            int64_t TL = T / hp->hop_lengths[L], nz = (int64_t)N * TL;
            int64_t zshape[2] = {N, TL}, xshape[3] = {N, T, 1};
            char nm[32];
            snprintf(nm, sizeof nm, "zs.%d", L);
            int32_t *zs = jb_st_get_i32(io, nm, 2, zshape, &err);
            snprintf(nm, sizeof nm, "margin.%d", L);
            float *mg = jb_st_get_f32(io, nm, 2, zshape, &err);
            snprintf(nm, sizeof nm, "dist_scale.%d", L);
            float *ds = jb_st_get_f32(io, nm, 2, zshape, &err);
            snprintf(nm, sizeof nm, "x_out.%d", L);
            float *xo = jb_st_get_f32(io, nm, 3, xshape, &err);
            double rel, abs_tol;
            tolerance(cj, nm, &rel, &abs_tol);
            const char *m = method_name[method];
#ifdef JB_CUDA_EMU
            uint64_t launches = jb_cuda_emu_launches();
#endif
            int ok = jb_vqvae_encode(dev, x, N, T, L, za, 0, &err) == 0;
            JB_CHECK(ok, "%s %s L%d: device encode (%s)", name, m, L, err.msg);
#ifdef JB_CUDA_EMU
            JB_CHECK(jb_cuda_emu_launches() > launches, "%s %s L%d: encode ran on the device",
                     name, m, L);
#endif
            JB_CHECK_OK(jb_vqvae_encode(cpu, x, N, T, L, zb, 0, &err), &err, "cpu encode");
            int64_t ties = 0, off_ref = 0, off_cpu = 0;
            for (int64_t i = 0; i < nz && ok; i++) {
                int tie = mg[i] < 1e-4f * ds[i];
                ties += tie;
                off_ref += !tie && za[i] != zs[i];
                off_cpu += !tie && za[i] != zb[i];
            }
            JB_CHECK(ok && off_ref == 0 && off_cpu == 0,
                     "%s %s L%d: device codes == reference and CPU (%lld codes, %lld near-ties "
                     "skipped; %lld / %lld differ)", name, m, L, (long long)nz, (long long)ties,
                     (long long)off_ref, (long long)off_cpu);
            int64_t nl = nz * hp->emb_width;
            double sc = 0, dl = 1e30;
            if (jb_vqvae_encode_latents(dev, x, N, T, L, la, 0, &err) == 0 &&
                jb_vqvae_encode_latents(cpu, x, N, T, L, lb, 0, &err) == 0)
                dl = max_abs_diff(la, lb, nl, &sc);
            JB_CHECK(dl <= 1e-5 * sc, "%s %s L%d: device latents vs CPU max abs %.3g (scale %.3g)",
                     name, m, L, dl, sc);
            double dd = 1e30, dr = 1e30;
            ok = jb_vqvae_decode(dev, zs, N, TL, L, a, 0, &err) == 0 &&
                 jb_vqvae_decode(cpu, zs, N, TL, L, b, 0, &err) == 0;
            if (ok) dd = max_abs_diff(a, b, N * T, &sc), dr = max_abs_diff(a, xo, N * T, NULL);
            JB_CHECK(ok && dd <= 1e-5 * sc,
                     "%s %s L%d: device decode vs CPU max abs %.3g (scale %.3g)", name, m, L, dd,
                     sc);
            JB_CHECK(ok && close_to(a, xo, N * T, rel, abs_tol),
                     "%s %s L%d: device decode vs reference max abs %.3g (tolerance rel %g abs %g)",
                     name, m, L, dr, rel, abs_tol);
            if (method == JB_VQVAE_DEFAULT_METHOD) {
                // chunks of a quarter of the signal, each with its margins: the same results
                int64_t top = hp->hop_lengths[hp->levels - 1], chunk = T / 4 / top * top;
                if (chunk % hp->hop_lengths[L] == 0 && chunk > 0) {
                    ok = jb_vqvae_decode(dev, zs, N, TL, L, b, chunk, &err) == 0;
                    dd = ok ? max_abs_diff(b, a, N * T, &sc) : 1e30;
                    JB_CHECK(ok && dd <= 1e-5 * sc,
                             "%s L%d: device decode in chunks of %lld vs one pass max abs %.3g",
                             name, L, (long long)chunk, dd);
                    ok = jb_vqvae_encode(dev, x, N, T, L, zb, chunk, &err) == 0;
                    int64_t diff = 0;
                    for (int64_t i = 0; i < nz && ok; i++)
                        diff += za[i] != zb[i] && !(mg[i] < 1e-4f * ds[i]);
                    JB_CHECK(ok && diff == 0, "%s L%d: device encode in chunks of %lld == one "
                             "pass (%lld differ; %s)", name, L, (long long)chunk,
                             (long long)diff, ok ? "" : err.msg);
                }
            }
            jb_free(zs), jb_free(mg), jb_free(ds), jb_free(xo);
        }
    }
    // a window the device was not sized for is refused by the window functions themselves
    JB_CHECK(jb_vqvae_cuda_decode(d, 0, za, jb_vqvae_max_window(dev) + 1, 0, 1, a, &err) == -1 &&
             strstr(err.msg, "max window"), "%s: oversized window refused (%s)", name, err.msg);
    JB_CHECK_OK(jb_vqvae_cuda_attach(dev, NULL, &err), &err, "detach");
    jb_vqvae_cuda_destroy(&d);
    free(a), free(b), free(la), free(lb), free(za), free(zb);
    jb_free(x);
done:
    jb_vqvae_destroy(&cpu);
    jb_vqvae_destroy(&dev);
    jb_st_close(&io);
    jb_st_close(&model);
    json_decref(cj);
}

int main(void) {
#ifndef JB_CUDA_EMU
    {   // a real CUDA build: the device must be there (make test-gpu)
        jb_device_t dev;
        jb_err_t derr = {0};
        int dok = jb_device_parse("cuda", &dev, &derr) == 0 && jb_device_open(&dev, &derr) == 0;
        JB_CHECK(dok, "CUDA device: %s", derr.msg);
        if (!dok) return jb_test_summary("test_cuda_vqvae");
    }
#endif
    run_case("vqvae_tiny");
    run_case("vqvae_real_shape");
#ifdef JB_CUDA_EMU
    // memory planning against a small fake device
    {
        const char *g = getenv("GOLDEN") ? getenv("GOLDEN") : "tests/golden";
        char path[512];
        jb_err_t err = {0};
        snprintf(path, sizeof path, "%s/vqvae_real_shape/model.safetensors", g);
        jb_st_t *model = jb_st_open(path, &err);
        jb_vqvae_t *vq = model ? jb_vqvae_new(model, 0, &err) : NULL;
        JB_CHECK(vq != NULL, "real-shape model (%s)", err.msg);
        if (vq) {
            jb_vqvae_cuda_plan_t pl;
            jb_vqvae_cuda_plan(vq, &pl);
            size_t nw;
            jb_vqvae_weights(vq, &nw);
            JB_CHECK(pl.weights >= nw * 4 && pl.acts > 0, "plan: weights %zu bytes, acts %zu",
                     pl.weights, pl.acts);
            size_t old = jb_cuda_emu_set_mem(pl.weights + pl.acts / 2);
            jb_vqvae_cuda_t *d = jb_vqvae_cuda_new(vq, &err);
            JB_CHECK(!d && err.code == JB_ENOMEM && strstr(err.msg, "needs") &&
                     strstr(err.msg, "free"), "too small a device refused: %s", err.msg);
            jb_vqvae_cuda_destroy(&d);
            jb_cuda_emu_set_mem(pl.weights + pl.acts + (1 << 20));
            d = jb_vqvae_cuda_new(vq, &err);
            JB_CHECK(d != NULL, "exactly enough device memory accepted (%s)", err.msg);
            jb_vqvae_cuda_destroy(&d);
            jb_cuda_emu_set_mem(old);
            // a smaller window needs less
            jb_vqvae_t *small = jb_vqvae_new(model, 1 << 15, &err);
            jb_vqvae_cuda_plan_t ps;
            if (small) jb_vqvae_cuda_plan(small, &ps);
            JB_CHECK(small && ps.acts < pl.acts / 8, "window 2^15: %zu activation bytes vs %zu",
                     small ? ps.acts : 0, pl.acts);
            jb_vqvae_destroy(&small);
        }
        jb_vqvae_destroy(&vq);
        jb_st_close(&model);
    }
    JB_CHECK(jb_cuda_emu_used() == 0, "every device allocation freed (%zu bytes left)",
             jb_cuda_emu_used());
#endif
    return jb_test_summary("test_cuda_vqvae");
}
