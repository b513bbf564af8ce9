// golden_vqvae.c: golden checker of kind "vqvae" (README section A).
// For every level L: encode x -> zs.L (exact except near-ties: margin.L < 1e-4 * dist_scale.L),
// decode the stored zs.L -> x_out.L and z_rand.L -> x_rand_out.L within tolerance.
#include <stdio.h>
#include <stdlib.h>

#include "golden.h"
#include "golden_device.h"
#include "jb_safetensors.h"
#include "jb_tensor.h"
#include "jb_vqvae.h"

int golden_run_vqvae(const golden_case_t *c, golden_result_t *r) {
    jb_err_t err = {0};
    jb_st_t *model = jb_st_open(golden_path(c, "model.safetensors"), &err);
    jb_st_t *io = model ? jb_st_open(golden_path(c, "io.safetensors"), &err) : NULL;
    jb_vqvae_t *vq = io ? jb_vqvae_new(model, 0, &err) : NULL;
    void *dev = NULL;
    float *x = NULL;
    if (!vq || golden_vqvae_device(vq, &dev, &err)) {
        golden_fail(r, "%s", err.msg);
        goto done;
    }
    const jb_st_entry_t *xe = jb_st_get(io, "x", -1, NULL, &err);
    if (!xe || xe->ndim != 3 || xe->shape[2] != 1) {
        golden_fail(r, "x: %s", xe ? "expected [N, T, 1]" : err.msg);
        goto done;
    }
    int N = (int)xe->shape[0];
    int64_t T = xe->shape[1];
    x = jb_st_get_f32(io, "x", -1, NULL, &err);
    if (!x) {
        golden_fail(r, "%s", err.msg);
        goto done;
    }
    const jb_vqvae_hparams_t *hp = jb_vqvae_hparams(vq);
    for (int L = 0; L < hp->levels; L++) {
        int64_t TL = T / hp->hop_lengths[L];
        int64_t zshape[2] = {N, TL}, xshape[3] = {N, T, 1};
        char nz[32], nm[32], nd[32], nx[32], nr[32], nxr[32];
        snprintf(nz, sizeof nz, "zs.%d", L);
        snprintf(nm, sizeof nm, "margin.%d", L);
        snprintf(nd, sizeof nd, "dist_scale.%d", L);
        snprintf(nx, sizeof nx, "x_out.%d", L);
        snprintf(nr, sizeof nr, "z_rand.%d", L);
        snprintf(nxr, sizeof nxr, "x_rand_out.%d", L);
        int32_t *zs = jb_st_get_i32(io, nz, 2, zshape, &err);
        int32_t *zr = zs ? jb_st_get_i32(io, nr, 2, zshape, &err) : NULL;
        float *mg = zr ? jb_st_get_f32(io, nm, 2, zshape, &err) : NULL;
        float *ds = mg ? jb_st_get_f32(io, nd, 2, zshape, &err) : NULL;
        float *xo = ds ? jb_st_get_f32(io, nx, 3, xshape, &err) : NULL;
        float *xro = xo ? jb_st_get_f32(io, nxr, 3, xshape, &err) : NULL;
        int32_t *ours = malloc(sizeof(int32_t) * (size_t)(N * TL));
        float *out = malloc(sizeof(float) * (size_t)(N * T));
        if (!xro || !ours || !out) {
            golden_fail(r, "level %d: %s", L, err.msg[0] ? err.msg : "out of memory");
        } else {
            char what[128];
            if (jb_vqvae_encode(vq, x, N, T, L, ours, 0, &err)) {
                golden_fail(r, "encode level %d: %s", L, err.msg);
            } else {
                // near-ties may go either way in float32: take the reference's code there
                int64_t ties = 0, tie_diff = 0;
                for (int64_t i = 0; i < N * TL; i++)
                    if (mg[i] < 1e-4f * ds[i]) {
                        ties++;
                        if (ours[i] != zs[i]) tie_diff++;
                        ours[i] = zs[i];
                    }
                snprintf(what, sizeof what, "%s (%lld near-ties, %lld differ)", nz,
                         (long long)ties, (long long)tie_diff);
                golden_check_equal_i32(r, what, ours, zs, N * TL);
            }
            double rel, abs;
            if (jb_vqvae_decode(vq, zs, N, TL, L, out, 0, &err)) {
                golden_fail(r, "decode level %d: %s", L, err.msg);
            } else {
                golden_tolerance(c, nx, xo, N * T, &rel, &abs);
                golden_check_close(r, nx, out, xo, N * T, rel, abs);
            }
            if (jb_vqvae_decode(vq, zr, N, TL, L, out, 0, &err)) {
                golden_fail(r, "decode level %d: %s", L, err.msg);
            } else {
                golden_tolerance(c, nxr, xro, N * T, &rel, &abs);
                golden_check_close(r, nxr, out, xro, N * T, rel, abs);
            }
        }
        jb_free(zs), jb_free(zr), jb_free(mg), jb_free(ds), jb_free(xo), jb_free(xro);
        free(ours), free(out);
    }
done:
    jb_free(x);
    golden_vqvae_release(vq, &dev);
    jb_vqvae_destroy(&vq);
    jb_st_close(&io);
    jb_st_close(&model);
    return r->failed ? -1 : 0;
}
