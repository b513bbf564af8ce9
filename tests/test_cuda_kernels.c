// test_cuda_kernels.c: the CUDA side of the kernel layer against the CPU side.
//   - every launcher of common/cuda/jb_nn.cu and jb_conv.cu on device memory equals the CPU
//     launcher of jb_nn.c / jb_conv.c on the same random data (within 1e-6 for the element-wise
//     kernels, 1e-5 relative where a product is summed in another order), guard values past
//     the end of every output untouched;
//   - jb_gpu_gemm (cublasGemmEx) equals a naive double-precision column-major product on random
//     shapes, transposes and F32/F16/BF16 inputs; bad leading dimensions and mixed dtypes are
//     refused with a message;
//   - with the CPU emulation of CUDA (plain make): out of (fake) device memory, copies in the
//     wrong direction and the emulated device are clear errors / as described.
// Built against the emulation by plain make, against a real GPU with make CUDA=1 (test-gpu).
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jb_conv.h"
#include "jb_gpu.h"
#include "jb_nn.h"
#include "jb_tensor.h"
#include "jb_test.h"
#include "jb_device.h"

#ifdef JB_CUDA_EMU
#include "jb_cuda_emu.h"
int jb_cuda_device_open(int ordinal, char *name, size_t name_size, size_t *mem_free,
                        size_t *mem_total, jb_err_t *err);
#endif

#define GUARD 12345.0f
#define NG 17   // guard floats after every device output

static uint64_t st = 7;
static float frand(void) {
    st = st * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((st >> 40) / (double)(1 << 24)) * 2.0f - 1.0f;
}
static float *rnd(int64_t n) {
    float *p = malloc(sizeof(float) * (size_t)(n + NG));
    for (int64_t i = 0; i < n; i++) p[i] = frand();
    for (int i = 0; i < NG; i++) p[n + i] = GUARD;
    return p;
}

// A device copy of host (n floats + NG guards).
static float *dev_of(const float *h, int64_t n) {
    jb_err_t err = {0};
    float *d = jb_gpu_alloc(sizeof(float) * (size_t)(n + NG), &err);
    if (!d || jb_gpu_upload(d, h, sizeof(float) * (size_t)(n + NG), &err)) {
        fprintf(stderr, "device buffer of %lld floats: %s (%d)\n", (long long)n, err.msg, err.code);
        exit(1);
    }
    return d;
}

// Device output (n + guards) against the host result: max |d - h|, guards kept.
static void cmp(const char *what, const float *dev, const float *host, int64_t n, double tol_rel,
                double tol_abs) {
    jb_err_t err = {0};
    float *got = malloc(sizeof(float) * (size_t)(n + NG));
    int ok = jb_gpu_sync(&err) == 0 &&
             jb_gpu_download(got, dev, sizeof(float) * (size_t)(n + NG), &err) == 0;
    JB_CHECK(ok, "%s: download (%s)", what, err.msg);
    if (ok) {
        double ma, mr;
        int close = jb_test_close(got, host, (long)n, tol_rel, tol_abs, &ma, &mr);
        JB_CHECK(close, "%s: device vs CPU max abs diff %.3g", what, ma);
        int g = 1;
        for (int i = 0; i < NG; i++) g &= got[n + i] == GUARD;
        JB_CHECK(g, "%s: guard values past the end untouched", what);
    }
    free(got);
}

static void test_nn(void) {
    int rows = 37, C = 300;
    int64_t n = (int64_t)rows * C;
    float *x = rnd(n), *g = rnd(C), *b = rnd(C), *y = rnd(n);
    float *dx = dev_of(x, n), *dg = dev_of(g, C), *db = dev_of(b, C), *dy = dev_of(y, n);
    float *out = rnd(n), *dout = dev_of(out, n);

    jb_nn_layernorm(out, x, g, b, rows, C, 1e-5f);
    JB_CHECK(jb_nn_cuda_layernorm(dout, dx, dg, db, rows, C, 1e-5f) == 0, "layernorm launch");
    cmp("layernorm", dout, out, n, 1e-6, 1e-6);

    float *gl = malloc(sizeof(float) * (size_t)(n + NG));
    memcpy(gl, x, sizeof(float) * (size_t)(n + NG));
    float *dgl = dev_of(gl, n);
    jb_nn_quick_gelu(gl, n);
    JB_CHECK(jb_nn_cuda_quick_gelu(dgl, n) == 0, "quick_gelu launch");
    cmp("quick_gelu", dgl, gl, n, 1e-6, 1e-6);

    jb_nn_add(out, x, y, n);
    JB_CHECK(jb_nn_cuda_add(dout, dx, dy, n) == 0, "add launch");
    cmp("add", dout, out, n, 0, 0);

    jb_nn_add_bcast(out, g, n, C);
    JB_CHECK(jb_nn_cuda_add_bcast(dout, dg, n, C) == 0, "add_bcast launch");
    cmp("add_bcast", dout, out, n, 0, 0);

    memcpy(gl, x, sizeof(float) * (size_t)n);
    jb_gpu_upload(dgl, gl, sizeof(float) * (size_t)n, NULL);
    jb_nn_softmax(gl, rows, C);
    JB_CHECK(jb_nn_cuda_softmax(dgl, rows, C) == 0, "softmax launch");
    cmp("softmax", dgl, gl, n, 1e-6, 1e-7);

    // Embedding: 5 ids into a (V, C) table.
    int V = 11, nid = 5;
    int32_t ids[5] = {3, 0, 10, 7, 3};
    float *tab = rnd((int64_t)V * C), *dtab = dev_of(tab, (int64_t)V * C);
    int32_t *dids = jb_gpu_alloc(sizeof ids, NULL);
    jb_gpu_upload(dids, ids, sizeof ids, NULL);
    jb_nn_embed(out, tab, ids, nid, C, V);
    for (int i = 0; i < NG; i++) out[(int64_t)nid * C + i] = GUARD;
    float *deo = dev_of(out, (int64_t)nid * C);   // device output: nid rows + guards
    jb_gpu_memset(deo, 0, sizeof(float) * (size_t)nid * C, NULL);
    JB_CHECK(jb_nn_cuda_embed(deo, dtab, dids, nid, C, V) == 0, "embed launch");
    cmp("embed", deo, out, (int64_t)nid * C, 0, 0);
    jb_gpu_free(deo);

    // Attention over a cache: every kind, one pass of `rows_q` queries at t0.
    int N = 2, H = 3, hd = 8, S = H * hd, T = 24, bc = 6, E = 10, prime = 12;
    int kinds[6] = {0, 1, 2, 3, 6, 7};
    for (int ki = 0; ki < 6; ki++) {
        jb_nn_attn_kind_t kind = {kinds[ki], bc, E, prime};
        int cap = kinds[ki] == 6 ? E : kinds[ki] == 7 ? prime : T;
        int t0 = 9, nq = 5, w_cap = T > E ? T : E;
        int64_t nkv = (int64_t)N * cap * S, nqv = (int64_t)N * nq * 3 * S;
        float *q = rnd(nqv), *kc = rnd(nkv), *vc = rnd(nkv);
        int64_t no = (int64_t)N * nq * S, nw = (int64_t)N * nq * H * w_cap;
        float *ao = rnd(no), *aw = rnd(nw);
        float *dq = dev_of(q, nqv), *dk = dev_of(kc, nkv), *dv = dev_of(vc, nkv);
        float *dao = dev_of(ao, no), *daw = dev_of(aw, nw);
        jb_nn_attn(ao, aw, q, 3 * S, kc, vc, kind, N, nq, H, hd, cap, t0, w_cap, 0.35f);
        JB_CHECK(jb_nn_cuda_attn(dao, daw, dq, 3 * S, dk, dv, kind, N, nq, H, hd, cap, t0, w_cap,
                                 0.35f) == 0,
                 "attn kind %d launch", kinds[ki]);
        char what[64];
        snprintf(what, sizeof what, "attention kind %d output", kinds[ki]);
        cmp(what, dao, ao, no, 1e-6, 1e-6);
        snprintf(what, sizeof what, "attention kind %d weights", kinds[ki]);
        cmp(what, daw, aw, nw, 1e-6, 1e-7);
        free(q), free(kc), free(vc), free(ao), free(aw);
        jb_gpu_free(dq), jb_gpu_free(dk), jb_gpu_free(dv), jb_gpu_free(dao), jb_gpu_free(daw);
    }
    free(x), free(g), free(b), free(y), free(out), free(gl), free(tab);
    jb_gpu_free(dx), jb_gpu_free(dg), jb_gpu_free(db), jb_gpu_free(dy), jb_gpu_free(dout);
    jb_gpu_free(dgl), jb_gpu_free(dtab), jb_gpu_free(dids);
}

static void test_conv(void *blas) {
    struct {
        int C, OC, k, s, p, d, flags, t;   // t: 0 conv1d, 1 convt1d
        int64_t T;
    } cs[] = {
        {24, 32, 3, 1, 1, 1, 0, 0, 700},
        {24, 32, 3, 1, 3, 3, JB_CONV_RELU_IN | JB_CONV_RELU_OUT, 0, 700},
        {16, 24, 4, 2, 1, 1, 0, 0, 333},
        {16, 24, 4, 2, 1, 1, JB_CONV_DIRECT, 0, 333},
        {16, 24, 3, 1, 9, 9, JB_CONV_DIRECT | JB_CONV_ACC, 0, 600},
        {32, 16, 1, 1, 0, 1, 0, 0, 513},
        {32, 16, 1, 1, 0, 1, JB_CONV_ACC, 0, 513},
        {24, 16, 4, 2, 1, 1, 0, 1, 300},
        {24, 16, 4, 2, 1, 1, JB_CONV_DIRECT | JB_CONV_RELU_OUT, 1, 300},
        {24, 16, 4, 2, 1, 1, JB_CONV_DIRECT | JB_CONV_ACC, 1, 300},
    };
    openblas_set_num_threads(1);
    for (size_t ci = 0; ci < sizeof cs / sizeof cs[0]; ci++) {
        int C = cs[ci].C, OC = cs[ci].OC, k = cs[ci].k, s = cs[ci].s, p = cs[ci].p, d = cs[ci].d;
        int fl = cs[ci].flags, t = cs[ci].t;
        int64_t T = cs[ci].T;
        int64_t To = t ? jb_convt1d_out_len(T, k, s, p) : jb_conv1d_out_len(T, k, s, p, d);
        float *x = rnd(T * C), *w = rnd((int64_t)k * C * OC), *b = rnd(OC), *out = rnd(To * OC);
        float *wp = malloc(sizeof(float) * (size_t)k * C * OC);
        if (t) jb_convt1d_pack(wp, w, C, OC, k);
        else jb_conv1d_pack(wp, w, OC, C, k);
        size_t wsc = t ? jb_convt1d_ws_floats(T, C, OC, k, s, fl)
                       : jb_conv1d_ws_floats(T, C, k, s, p, d, fl);
        size_t wsd = t ? ((fl & JB_CONV_DIRECT) ? jb_convt1d_cuda_ws_floats(T, C, OC, k, s, fl)
                                                : jb_convt1d_ws_floats(T, C, OC, k, s, fl))
                       : jb_conv1d_cuda_ws_floats(T, C, k, s, p, d, fl);
        float *ws = malloc(sizeof(float) * (wsc + 1));
        float *dx = dev_of(x, T * C);
        float *dwp = jb_gpu_alloc(sizeof(float) * (size_t)k * C * OC, NULL);
        jb_gpu_upload(dwp, wp, sizeof(float) * (size_t)k * C * OC, NULL);
        float *db = dev_of(b, OC), *dout = dev_of(out, To * OC);
        float *dws = jb_gpu_alloc(sizeof(float) * (wsd + 1), NULL);
        int rc;
        if (t) {
            jb_convt1d(out, x, T, C, wp, b, OC, k, s, p, fl, ws);
            rc = jb_convt1d_cuda(blas, dout, dx, T, C, dwp, db, OC, k, s, p, fl, dws);
        } else {
            jb_conv1d(out, x, T, C, wp, b, OC, k, s, p, d, fl, ws);
            rc = jb_conv1d_cuda(blas, dout, dx, T, C, dwp, db, OC, k, s, p, d, fl, dws);
        }
        char what[96];
        snprintf(what, sizeof what, "%s C%d OC%d k%d s%d p%d d%d flags %d T %lld",
                 t ? "convt1d" : "conv1d", C, OC, k, s, p, d, fl, (long long)T);
        JB_CHECK(rc == 0, "%s: launch", what);
        cmp(what, dout, out, To * OC, 1e-5, 1e-5);
        free(x), free(w), free(b), free(out), free(wp), free(ws);
        jb_gpu_free(dx), jb_gpu_free(dwp), jb_gpu_free(db), jb_gpu_free(dout), jb_gpu_free(dws);
    }
}

// Winograd F(2,3) (k 3, stride 1, padding = dilation d) against the CPU version.
static void test_wino(void *blas) {
    struct {
        int C, OC, d, flags;
        int64_t T;
    } cs[] = {{24, 32, 1, 0, 701}, {16, 24, 3, JB_CONV_RELU_IN | JB_CONV_RELU_OUT, 600},
              {16, 16, 9, JB_CONV_ACC, 333}, {8, 8, 27, 0, 50}};
    for (size_t ci = 0; ci < sizeof cs / sizeof cs[0]; ci++) {
        int C = cs[ci].C, OC = cs[ci].OC, d = cs[ci].d, fl = cs[ci].flags;
        int64_t T = cs[ci].T;
        float *x = rnd(T * C), *w = rnd((int64_t)3 * C * OC), *b = rnd(OC), *out = rnd(T * OC);
        float *wg = malloc(sizeof(float) * 4 * (size_t)C * OC);
        jb_conv1d_pack_wino(wg, w, OC, C);
        size_t wsc = jb_conv1d_wino_ws_floats(T, C, OC, d);
        size_t wsd = jb_conv1d_wino_cuda_ws_floats(T, C, OC, d);
        float *ws = malloc(sizeof(float) * (wsc + 1));
        float *dx = dev_of(x, T * C), *db = dev_of(b, OC), *dout = dev_of(out, T * OC);
        float *dwg = jb_gpu_alloc(sizeof(float) * 4 * (size_t)C * OC, NULL);
        jb_gpu_upload(dwg, wg, sizeof(float) * 4 * (size_t)C * OC, NULL);
        float *dws = jb_gpu_alloc(sizeof(float) * (wsd + 1), NULL);
        jb_conv1d_wino(out, x, T, C, wg, b, OC, d, fl, ws);
        int rc = jb_conv1d_wino_cuda(blas, dout, dx, T, C, dwg, db, OC, d, fl, dws);
        char what[96];
        snprintf(what, sizeof what, "conv1d_wino C%d OC%d d%d flags %d T %lld", C, OC, d, fl,
                 (long long)T);
        JB_CHECK(rc == 0, "%s: launch", what);
        cmp(what, dout, out, T * OC, 1e-5, 1e-5);
        free(x), free(w), free(b), free(out), free(wg), free(ws);
        jb_gpu_free(dx), jb_gpu_free(db), jb_gpu_free(dout), jb_gpu_free(dwg), jb_gpu_free(dws);
    }
}

// Column-major element (r, c) of op(X) where X is stored (ld, ·).
static double el(const void *X, jb_dtype_t dt, int ld, int trans, int r, int c) {
    size_t idx = trans ? (size_t)r * (size_t)ld + (size_t)c : (size_t)c * (size_t)ld + (size_t)r;
    if (dt == JB_F32) return ((const float *)X)[idx];
    uint16_t h = ((const uint16_t *)X)[idx];
    return dt == JB_F16 ? jb_f16_to_f32(h) : jb_bf16_to_f32(h);
}

static void test_gemm(void *blas) {
    jb_dtype_t dts[3] = {JB_F32, JB_F16, JB_BF16};
    for (int it = 0; it < 24; it++) {
        jb_dtype_t dt = dts[it % 3];
        int ta = (it / 3) % 2, tb = (it / 6) % 2;
        int m = 1 + (int)((frand() + 1) * 40), n = 1 + (int)((frand() + 1) * 30);
        int k = 1 + (int)((frand() + 1) * 50);
        int ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
        int lda = ar + it % 3, ldb = br + (it % 2) * 5, ldc = m + 2;
        size_t es = jb_dtype_size(dt);
        size_t na = (size_t)lda * ac, nb = (size_t)ldb * bc, nc = (size_t)ldc * n;
        void *A = malloc(na * es), *B = malloc(nb * es);
        for (size_t i = 0; i < na; i++) {
            float v = frand();
            if (dt == JB_F32) ((float *)A)[i] = v;
            else ((uint16_t *)A)[i] = dt == JB_F16 ? jb_f32_to_f16(v) : jb_f32_to_bf16(v);
        }
        for (size_t i = 0; i < nb; i++) {
            float v = frand();
            if (dt == JB_F32) ((float *)B)[i] = v;
            else ((uint16_t *)B)[i] = dt == JB_F16 ? jb_f32_to_f16(v) : jb_f32_to_bf16(v);
        }
        float *Cm = rnd((int64_t)nc), *ref = malloc(sizeof(float) * nc);
        float alpha = 0.75f, beta = it % 4 == 0 ? 0.0f : 0.5f;
        memcpy(ref, Cm, sizeof(float) * nc);
        double amax = 0;
        for (int c = 0; c < n; c++)
            for (int r = 0; r < m; r++) {
                double s = 0, sa = 0;
                for (int q = 0; q < k; q++) {
                    double p = el(A, dt, lda, ta, r, q) * el(B, dt, ldb, tb, q, c);
                    s += p, sa += fabs(p);
                }
                if (sa > amax) amax = sa;
                size_t o = (size_t)c * ldc + r;
                ref[o] = (float)(alpha * s + (beta != 0.0f ? beta * Cm[o] : 0.0));
            }
        void *dA = jb_gpu_alloc(na * es, NULL), *dB = jb_gpu_alloc(nb * es, NULL);
        jb_gpu_upload(dA, A, na * es, NULL);
        jb_gpu_upload(dB, B, nb * es, NULL);
        float *dC = dev_of(Cm, (int64_t)nc);
        jb_err_t err = {0};
        int rc = jb_gpu_gemm(blas, ta, tb, m, n, k, alpha, dA, dt, lda, dB, dt, ldb, beta, dC, ldc,
                             &err);
        char what[96];
        snprintf(what, sizeof what, "gemm %s ta%d tb%d m%d n%d k%d lda%d ldb%d", jb_dtype_name(dt),
                 ta, tb, m, n, k, lda, ldb);
        JB_CHECK(rc == 0, "%s (%s)", what, err.msg);
        // Between the columns (rows m..ldc-1) C must be left as it was: compare all of it.
        for (int c = 0; c < n; c++)
            for (int r = m; r < ldc; r++) ref[(size_t)c * ldc + r] = Cm[(size_t)c * ldc + r];
        cmp(what, dC, ref, (int64_t)nc, 0, 2e-6 * amax + 1e-6);
        if (it == 0) {
            rc = jb_gpu_gemm(blas, ta, tb, m, n, k, alpha, dA, dt, ar - 1 > 0 ? ar - 1 : 0, dB, dt,
                             ldb, beta, dC, ldc, &err);
            JB_CHECK(rc == -1 && strstr(err.msg, "CUBLAS_STATUS_INVALID_VALUE") &&
                         strstr(err.msg, "cublasGemmEx"),
                     "lda < rows refused naming the call: %s", err.msg);
            rc = jb_gpu_gemm(blas, ta, tb, m, n, k, alpha, dA, JB_F16, lda, dB, JB_F32, ldb, beta,
                             dC, ldc, &err);
            JB_CHECK(rc == -1 && err.code == JB_EUNSUP, "mixed F16 x F32 refused: %s", err.msg);
#ifdef JB_CUDA_EMU
            rc = jb_gpu_gemm(blas, ta, tb, m, n, k, alpha, A, dt, lda, dB, dt, ldb, beta, dC, ldc,
                             &err);
            JB_CHECK(rc == -1 && strstr(err.msg, "INVALID_VALUE"),
                     "emulation: a host pointer to cuBLAS refused: %s", err.msg);
#endif
        }
        free(A), free(B), free(Cm), free(ref);
        jb_gpu_free(dA), jb_gpu_free(dB), jb_gpu_free(dC);
    }
}

#ifdef JB_CUDA_EMU
static void test_emulation(void) {
    jb_err_t err = {0};
    char name[128];
    size_t fr = 0, tot = 0;
    JB_CHECK(jb_cuda_device_open(0, name, sizeof name, &fr, &tot, &err) == 0 &&
                 strstr(name, "emulation") && tot > 0 && fr <= tot,
             "emulated device opens: %s", name);
    JB_CHECK(jb_cuda_device_open(1, name, sizeof name, &fr, &tot, &err) == -1 &&
                 strstr(err.msg, "only 1 CUDA device"),
             "cuda:1 refused: %s", err.msg);
    size_t old = jb_cuda_emu_set_mem(jb_cuda_emu_used() + ((size_t)1 << 20));
    void *p = jb_gpu_alloc((size_t)2 << 20, &err);
    JB_CHECK(!p && err.code == JB_ENOMEM && strstr(err.msg, "out of device memory"),
             "2 MiB with 1 MiB free: %s", err.msg);
    p = jb_gpu_alloc((size_t)1 << 19, &err);
    JB_CHECK(p != NULL, "512 KiB with 1 MiB free fits");
    size_t f2, t2;
    JB_CHECK(jb_gpu_mem_info(&f2, &t2, &err) == 0 && f2 == ((size_t)1 << 19),
             "cudaMemGetInfo counts the allocation: %zu free", f2);
    float host[4] = {1, 2, 3, 4};
    JB_CHECK(jb_gpu_upload(host, p, sizeof host, &err) == -1 &&
                 strstr(err.msg, "cudaMemcpy") && strstr(err.msg, "direction"),
             "upload into a host pointer refused: %s", err.msg);
    JB_CHECK(jb_gpu_upload(p, host, ((size_t)1 << 19) + 4, &err) == -1,
             "copy past the end of an allocation refused: %s", err.msg);
    jb_gpu_free(p);
    jb_cuda_emu_set_mem(old);
    JB_CHECK(jb_cuda_emu_launches() > 0 && jb_cuda_emu_blas_calls() > 0,
             "launches %llu, cuBLAS calls %llu went through the emulation",
             (unsigned long long)jb_cuda_emu_launches(),
             (unsigned long long)jb_cuda_emu_blas_calls());
}
#endif

// The block-cooperative row kernels (shared memory, barriers; under the emulation one coroutine
// per thread) against the CPU bodies: rows shorter than a block, not a multiple of it, and a
// prior's width; in place for LayerNorm.
static void test_block(void) {
    static const int shapes[][2] = {{5, 1}, {3, 37}, {7, 256}, {4, 300}, {2, 4800}, {65, 64}};
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        int rows = shapes[k][0], C = shapes[k][1];
        int64_t n = (int64_t)rows * C;
        float *x = rnd(n), *g = rnd(C), *b = rnd(C), *out = rnd(n);
        for (int64_t i = 0; i < n; i++) x[i] = 3.0f * x[i] + 0.5f;   // a mean away from 0
        float *dx = dev_of(x, n), *dg = dev_of(g, C), *db = dev_of(b, C), *dout = dev_of(out, n);
        char what[96];
        jb_nn_layernorm(out, x, g, b, rows, C, 1e-5f);
        JB_CHECK(jb_nn_cuda_layernorm_block(dout, dx, dg, db, rows, C, 1e-5f, NULL) == 0,
                 "block layernorm launch (%d x %d)", rows, C);
        snprintf(what, sizeof what, "block layernorm %d x %d", rows, C);
        cmp(what, dout, out, n, 1e-6, 1e-6);
        JB_CHECK(jb_nn_cuda_layernorm_block(dx, dx, dg, db, rows, C, 1e-5f, NULL) == 0,
                 "block layernorm in place launch");
        snprintf(what, sizeof what, "block layernorm in place %d x %d", rows, C);
        cmp(what, dx, out, n, 1e-6, 1e-6);
        float *sm = malloc(sizeof(float) * (size_t)(n + NG));
        memcpy(sm, x, sizeof(float) * (size_t)(n + NG));
        float *dsm = dev_of(sm, n);
        jb_nn_softmax(sm, rows, C);
        JB_CHECK(jb_nn_cuda_softmax_block(dsm, rows, C, NULL) == 0, "block softmax launch");
        snprintf(what, sizeof what, "block softmax %d x %d", rows, C);
        cmp(what, dsm, sm, n, 1e-5, 1e-7);
        jb_gpu_free(dx), jb_gpu_free(dg), jb_gpu_free(db), jb_gpu_free(dout), jb_gpu_free(dsm);
        free(x), free(g), free(b), free(out), free(sm);
    }
}

int main(void) {
#ifndef JB_CUDA_EMU
    {   // a real CUDA build: the device must be there (make test-gpu)
        jb_device_t dev;
        jb_err_t derr = {0};
        int dok = jb_device_parse("cuda", &dev, &derr) == 0 && jb_device_open(&dev, &derr) == 0;
        JB_CHECK(dok, "CUDA device: %s", derr.msg);
        if (!dok) return jb_test_summary("test_cuda_kernels");
        printf("device: %s, %.1f GiB free\n", dev.name, (double)dev.mem_free / (1 << 30));
    }
#endif
    jb_err_t err = {0};
    void *blas = jb_gpu_blas_new(&err);
    JB_CHECK(blas != NULL, "cuBLAS handle (%s)", err.msg);
    if (!blas) return jb_test_summary("test_cuda_kernels");
    test_nn();
    test_block();
    test_conv(blas);
    test_wino(blas);
    test_gemm(blas);
#ifdef JB_CUDA_EMU
    test_emulation();
    JB_CHECK(jb_cuda_emu_used() == 0, "every device allocation freed (%zu bytes left)",
             jb_cuda_emu_used());
#endif
    jb_gpu_blas_destroy(blas);
    return jb_test_summary("test_cuda_kernels");
}
