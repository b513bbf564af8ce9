// test_cuda_matmul.c: the device's batch-invariant product (jb_matmul_cuda.h).
//
// (a) Against a double-precision product of the same (widened) weights, for F32, F16 and BF16
//     weights, odd shapes (K and N not multiples of the tile or the slice; K past 512, so that
//     every slice and a short last one run), M = 1, 3, 16, 17, 40, with and without bias; an
//     element fails when |y - ref| > 1e-5 · Σ_k |x_k w_kn| (+ |b|): float32 accumulation stays
//     ~1e-6 of it, one lost or doubled term is ~1/K. 32 guard floats before and after y (in the
//     same device allocation) must be untouched.
// (b) Invariance: every row of a 40-row product is bit-identical to the same row computed
//     alone (M = 1) and inside another batch (17 rows of other data, the row at another place).
// (c) int8: F32 and BF16 matrices quantized by the CPU's jb_matmul_pack_q8, tiles and scales
//     uploaded as they are: (a) against the dequantized weights, the same bound against the
//     CPU's jb_matmul_packed on the same packed weights, and (b).
// Built against the CPU emulation of CUDA by plain make; against a GPU by make CUDA=1.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jb_device.h"
#include "jb_gpu.h"
#include "jb_matmul.h"
#include "jb_matmul_cuda.h"
#include "jb_tensor.h"
#include "jb_test.h"

#ifdef JB_CUDA_EMU
#include "jb_cuda_emu.h"
#endif

#define GUARD 32
static const float kGuard = -12345.5f;

static uint64_t rs = 7;
static float frand(void) {
    rs = rs * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((rs >> 40) / (double)(1 << 24)) * 2.0f - 1.0f;
}

// A host matrix (K, N) in dt, and its exact float32 values.
typedef struct {
    void *w;
    float *wf;
    jb_dtype_t dt;
    int K, N;
} hmat_t;

static hmat_t hmat_new(jb_dtype_t dt, int K, int N) {
    hmat_t m = {NULL, NULL, dt, K, N};
    size_t n = (size_t)K * N;
    m.w = malloc(n * jb_dtype_size(dt) + 1), m.wf = malloc(n * sizeof(float) + 1);
    for (size_t i = 0; i < n; i++) {
        float v = frand();
        uint16_t *h = (uint16_t *)m.w + i;
        if (dt == JB_F16) *h = jb_f32_to_f16(v), v = jb_f16_to_f32(*h);
        else if (dt == JB_BF16) *h = jb_f32_to_bf16(v), v = jb_bf16_to_f32(*h);
        else ((float *)m.w)[i] = v;
        m.wf[i] = v;
    }
    return m;
}

// y (M, N) on the device with guards: returns 0 and fills y (host, M·N) or -1 (+ err).
static int run(float *y, const float *x, int M, const void *dw, const float *dsc,
               const hmat_t *m, const float *bias, int *guards_ok, jb_err_t *err) {
    int K = m->K, N = m->N;
    size_t ny = (size_t)M * N, nb = ny + 2 * GUARD;
    float *hy = malloc(sizeof(float) * nb);
    for (size_t i = 0; i < nb; i++) hy[i] = kGuard;
    float *dx = jb_gpu_alloc(sizeof(float) * ((size_t)M * K + 1), err);
    float *dy = jb_gpu_alloc(sizeof(float) * nb, err);
    float *db = bias ? jb_gpu_alloc(sizeof(float) * (size_t)N, err) : NULL;
    int rc = -1;
    if (dx && dy && (!bias || db) && !jb_gpu_upload(dx, x, sizeof(float) * (size_t)M * K, err) &&
        !jb_gpu_upload(dy, hy, sizeof(float) * nb, err) &&
        (!bias || !jb_gpu_upload(db, bias, sizeof(float) * (size_t)N, err))) {
        jb_matmul_cuda_w_t w = {dw, dsc, m->dt, K, N};
        if (!jb_matmul_cuda(dy + GUARD, dx, &w, db, M, NULL, err) && !jb_gpu_sync(err) &&
            !jb_gpu_download(hy, dy, sizeof(float) * nb, err)) {
            rc = 0;
            int g = 1;
            for (int i = 0; i < GUARD; i++) g &= hy[i] == kGuard && hy[GUARD + ny + i] == kGuard;
            *guards_ok = g;
            memcpy(y, hy + GUARD, sizeof(float) * ny);
        }
    }
    jb_gpu_free(dx), jb_gpu_free(dy), jb_gpu_free(db);
    free(hy);
    return rc;
}

// Elements of y (M, N) outside 1e-5 · Σ|x w| (+ |b|) of the double product; worst ratio.
static long bad_elems(const float *y, const float *x, const float *wf, const float *b, int M,
                      int K, int N, double *worst) {
    long bad = 0;
    *worst = 0;
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double ref = b ? b[n] : 0, mag = b ? fabs(b[n]) : 0;
            for (int k = 0; k < K; k++) {
                double t = (double)x[(size_t)m * K + k] * wf[(size_t)k * N + n];
                ref += t, mag += fabs(t);
            }
            double e = fabs(y[(size_t)m * N + n] - ref), tol = 1e-5 * mag + 1e-30;
            if (!(e <= tol)) bad++;
            if (e / tol > *worst || e != e) *worst = e / tol;
        }
    return bad;
}

// (b) invariance: rows of a 40-row product (y, from x) alone and inside another batch.
static void check_invariance(const char *what, const float *x, const float *y, const float *b,
                             const void *dw, const float *dsc, const hmat_t *m) {
    int K = m->K, N = m->N;
    jb_err_t err = {0};
    long alone = 0, other = 0;
    float *x2 = malloc(sizeof(float) * 17 * K), *y2 = malloc(sizeof(float) * 17 * N);
    float *y1 = malloc(sizeof(float) * N);
    for (int r = 0; r < 40; r++) {
        int g;
        if (run(y1, x + (size_t)r * K, 1, dw, dsc, m, b, &g, &err) ||
            memcmp(y1, y + (size_t)r * N, sizeof(float) * N))
            alone++;
        int at = (r * 7) % 17;   // row r among 16 rows of other data
        for (int i = 0; i < 17 * K; i++) x2[i] = frand();
        memcpy(x2 + (size_t)at * K, x + (size_t)r * K, sizeof(float) * K);
        if (run(y2, x2, 17, dw, dsc, m, b, &g, &err) ||
            memcmp(y2 + (size_t)at * N, y + (size_t)r * N, sizeof(float) * N))
            other++;
    }
    JB_CHECK(alone == 0 && other == 0, "%s (%d, %d): rows of a 40-row product bit-identical "
             "alone (%ld of 40 differ) and in another 17-row batch (%ld differ)", what, K, N,
             alone, other);
    free(x2), free(y2), free(y1);
}

// (a) and (b) for one matrix m on the device (dw, dsc); pk: the CPU's int8 packing of the
// same weights, whose product (jb_matmul_packed) the device must also match, or NULL.
static void check_matrix(const char *what, const hmat_t *m, const void *dw, const float *dsc,
                         const jb_matmul_packed_t *pk) {
    static const int Ms[] = {1, 3, 16, 17, 40};
    int K = m->K, N = m->N;
    jb_err_t err = {0};
    float *x = malloc(sizeof(float) * 40 * K), *b = malloc(sizeof(float) * N);
    float *y = malloc(sizeof(float) * 40 * N), *yc = malloc(sizeof(float) * 40 * N);
    for (int i = 0; i < 40 * K; i++) x[i] = frand();
    for (int i = 0; i < N; i++) b[i] = frand();
    for (size_t mi = 0; mi < sizeof Ms / sizeof Ms[0]; mi++)
        for (int wb = 0; wb < 2; wb++) {
            int M = Ms[mi], g = 0;
            int rok = run(y, x, M, dw, dsc, m, wb ? b : NULL, &g, &err) == 0;
            double worst = 0;
            long bad = rok ? bad_elems(y, x, m->wf, wb ? b : NULL, M, K, N, &worst) : -1;
            JB_CHECK(rok && bad == 0 && g, "%s (%d, %d) M %d%s: %ld of %d elements outside "
                     "1e-5 of sum |x w| (worst %.3g of it), guards %s (%s)", what, K, N, M,
                     wb ? " + bias" : "", bad, M * N, worst, g ? "intact" : "OVERWRITTEN",
                     err.msg);
            if (!pk || !rok) continue;
            // the CPU's int8 product of the same packed weights, same measure
            jb_matmul_packed(yc, x, pk, wb ? b : NULL, M);
            long badc = 0;
            double wc = 0;
            for (int r = 0; r < M; r++)
                for (int n = 0; n < N; n++) {
                    double mag = wb ? fabs(b[n]) : 0;
                    for (int k = 0; k < K; k++)
                        mag += fabs((double)x[r * K + k] * m->wf[k * N + n]);
                    double e = fabs((double)y[r * N + n] - yc[r * N + n]);
                    badc += !(e <= 1e-5 * mag);
                    if (e / (1e-5 * mag + 1e-30) > wc) wc = e / (1e-5 * mag + 1e-30);
                }
            JB_CHECK(badc == 0, "%s (%d, %d) M %d%s: device vs the CPU's jb_matmul_packed: %ld "
                     "elements outside 1e-5 of sum |x w| (worst %.3g of it)", what, K, N, M,
                     wb ? " + bias" : "", badc, wc);
        }
    if (run(y, x, 40, dw, dsc, m, b, &(int){0}, &err) == 0)
        check_invariance(what, x, y, b, dw, dsc, m);
    free(x), free(b), free(y), free(yc);
}

static const int kShapes[][2] = {{133, 77}, {64, 192}, {1, 33}, {700, 40}, {257, 1}, {1100, 65}};

static void check_dtype(jb_dtype_t dt) {
    jb_err_t err = {0};
    for (size_t si = 0; si < sizeof kShapes / sizeof kShapes[0]; si++) {
        int K = kShapes[si][0], N = kShapes[si][1];
        hmat_t m = hmat_new(dt, K, N);
        void *dw = jb_gpu_alloc((size_t)K * N * jb_dtype_size(dt), &err);
        int ok = dw && !jb_gpu_upload(dw, m.w, (size_t)K * N * jb_dtype_size(dt), &err);
        JB_CHECK(ok, "%s (%d, %d): upload (%s)", jb_dtype_name(dt), K, N, err.msg);
        if (ok) check_matrix(jb_dtype_name(dt), &m, dw, NULL, NULL);
        jb_gpu_free(dw);
        free(m.w), free(m.wf);
    }
}

// (c) int8: weights in src (F32 or BF16) quantized by the CPU's jb_matmul_pack_q8, its tiles and
// scales uploaded as they are; the exact weights are the dequantized q·scale.
static void check_q8(jb_dtype_t src) {
    jb_err_t err = {0};
    for (size_t si = 0; si < sizeof kShapes / sizeof kShapes[0]; si++) {
        int K = kShapes[si][0], N = kShapes[si][1], ng = (K + 63) / 64;
        hmat_t m = hmat_new(src, K, N);
        jb_matmul_packed_t *pk = jb_matmul_pack_q8(m.w, src, K, N, &err);
        const void *q;
        const float *sc;
        size_t qb = 0, sb = 0;
        if (pk) jb_matmul_packed_arrays(pk, &q, &qb, &sc, &sb);
        JB_CHECK(pk && qb == (size_t)((N + 31) / 32) * K * 32 &&
                     sb == sizeof(float) * ((N + 31) / 32) * ng * 32,
                 "int8 from %s (%d, %d): packed, %zu + %zu bytes (%s)", jb_dtype_name(src), K, N,
                 qb, sb, err.msg);
        void *dq = pk ? jb_gpu_alloc(qb, &err) : NULL;
        float *dsc = pk ? jb_gpu_alloc(sb, &err) : NULL;
        int ok = dq && dsc && !jb_gpu_upload(dq, q, qb, &err) && !jb_gpu_upload(dsc, sc, sb, &err);
        for (int k = 0; ok && k < K; k++)   // the weights the device and the CPU multiply
            for (int n = 0; n < N; n++) {
                int t = n / 32, c = n % 32;
                m.wf[(size_t)k * N + n] = (float)((const int8_t *)q)[((size_t)t * K + k) * 32 + c] *
                                          sc[((size_t)t * ng + k / 64) * 32 + c];
            }
        m.dt = JB_I8;
        char what[32];
        snprintf(what, sizeof what, "I8 (from %s)", jb_dtype_name(src));
        if (ok) check_matrix(what, &m, dq, dsc, pk);
        JB_CHECK(ok, "%s (%d, %d): upload (%s)", what, K, N, err.msg);
        jb_gpu_free(dq), jb_gpu_free(dsc);
        jb_matmul_packed_destroy(&pk);
        free(m.w), free(m.wf);
    }
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

// JB_CUDA_TIMING (make test-gpu): jb_matmul_cuda against cuBLAS (jb_gpu_gemm: f32, and bf16
// with activations rounded to bf16, its tensor-core path) on one upsampler_level_0 c_fc product
// (1920 × 1920) at 1, 4, 8 and 16 rows, weights read from memory (each call the next of enough
// copies to fill 256 MiB, beyond the L2 cache): ms per product and the weight bytes / time.
// Under the emulation (one copy, 2 calls) the figures time the CPU and mean nothing.
static void time_products(void) {
#ifdef JB_CUDA_EMU
    const int K = 1920, N = 1920, reps = 2, emu = 1;
#else
    const int K = 1920, N = 1920, reps = 100, emu = 0;
#endif
    static const int Ms[] = {1, 4, 8, 16};
    jb_err_t err = {0};
    void *blas = jb_gpu_blas_new(&err);
    float *x = jb_gpu_alloc(sizeof(float) * 16 * K, &err);
    float *y = jb_gpu_alloc(sizeof(float) * 16 * N, &err);
    uint16_t *xh = jb_gpu_alloc(sizeof(uint16_t) * 16 * K, &err);
    jb_dtype_t dts[3] = {JB_F32, JB_BF16, JB_I8};
    void *w[3] = {NULL, NULL, NULL};
    float *sc = NULL;
    hmat_t m32 = hmat_new(JB_F32, K, N), m16 = hmat_new(JB_BF16, K, N);
    jb_matmul_packed_t *pk = jb_matmul_pack_q8(m32.w, JB_F32, K, N, &err);
    const void *q = NULL;
    const float *hsc = NULL;
    size_t qb = 0, sb = 0;
    if (pk) jb_matmul_packed_arrays(pk, &q, &qb, &hsc, &sb);
    size_t wb[3] = {sizeof(float) * K * N, sizeof(uint16_t) * K * N, qb};
    int copies[3];
    const void *src[3] = {m32.w, m16.w, q};
    int ok = pk != NULL;
    for (int d = 0; ok && d < 3; d++) {   // copy c of dtype d at w[d] + c · wb[d]
        copies[d] = emu ? 1 : (int)(((size_t)256 << 20) / wb[d]) + 1;
        ok = (w[d] = jb_gpu_alloc(wb[d] * copies[d], &err)) != NULL;
        for (int c = 0; ok && c < copies[d]; c++)
            ok = !jb_gpu_upload((char *)w[d] + wb[d] * c, src[d], wb[d], &err);
    }
    sc = jb_gpu_alloc(sb > 0 ? sb : 1, &err);   // scales: one copy (1/16 of int8's bytes)
    ok = ok && blas && x && y && xh && sc && !jb_gpu_upload(sc, hsc, sb, &err) &&
             !jb_gpu_memset(x, 0, sizeof(float) * 16 * K, &err) &&
             !jb_gpu_memset(xh, 0, sizeof(uint16_t) * 16 * K, &err);
    JB_CHECK(ok, "timing setup (%s)", err.msg);
    for (size_t mi = 0; ok && mi < sizeof Ms / sizeof Ms[0]; mi++) {
        int M = Ms[mi];
        for (int d = 0; d < 3; d++) {
            jb_matmul_cuda_w_t mw = {w[d], d == 2 ? sc : NULL, dts[d], K, N};
            double t = now_ms();
            for (int r = 0; ok && r < reps; r++) {
                mw.w = (char *)w[d] + wb[d] * (r % copies[d]);
                ok = !jb_matmul_cuda(y, x, &mw, NULL, M, NULL, &err);
            }
            ok = ok && !jb_gpu_sync(&err);
            double ms = (now_ms() - t) / reps, gb = (double)(wb[d] + (d == 2 ? sb : 0)) / 1e6 / ms;
            printf("(%d x %d) M %2d %-4s jb_matmul_cuda %.4f ms (%.0f GB/s of weights)", K, N, M,
                   jb_dtype_name(dts[d]), ms, gb);
            if (d < 2) {   // cuBLAS: f32 x f32, or bf16 x bf16 (x rounded)
                t = now_ms();
                for (int r = 0; ok && r < reps; r++)
                    ok = !jb_gpu_gemm(blas, 0, 0, N, M, K, 1.0f,
                                      (char *)w[d] + wb[d] * (r % copies[d]), dts[d], N,
                                      d ? (const void *)xh : (const void *)x, dts[d], K, 0.0f, y,
                                      N, &err);
                ok = ok && !jb_gpu_sync(&err);
                ms = (now_ms() - t) / reps;
                printf(", cuBLAS %.4f ms (%.0f GB/s)", ms, (double)wb[d] / 1e6 / ms);
            }
            printf("\n");
        }
    }
    JB_CHECK(ok, "timing runs (%s)", err.msg);
#ifdef JB_CUDA_EMU
    printf("(the CUDA emulation: CPU times, not GPU figures)\n");
#endif
    for (int d = 0; d < 3; d++) jb_gpu_free(w[d]);
    jb_gpu_free(sc), jb_gpu_free(x), jb_gpu_free(y), jb_gpu_free(xh);
    jb_gpu_blas_destroy(blas);
    jb_matmul_packed_destroy(&pk);
    free(m32.w), free(m32.wf), free(m16.w), free(m16.wf);
}

int main(void) {
#ifndef JB_CUDA_EMU
    {   // a real CUDA build: the device must be there (make test-gpu)
        jb_device_t dev;
        jb_err_t derr = {0};
        int dok = jb_device_parse("cuda", &dev, &derr) == 0 && jb_device_open(&dev, &derr) == 0;
        JB_CHECK(dok, "CUDA device: %s", derr.msg);
        if (!dok) return jb_test_summary("test_cuda_matmul");
    }
#endif
    check_dtype(JB_F32);
    check_dtype(JB_F16);
    check_dtype(JB_BF16);
    check_q8(JB_F32);
    check_q8(JB_BF16);
    jb_err_t err = {0};
    jb_matmul_cuda_w_t bad = {NULL, NULL, JB_I32, 4, 4};
    JB_CHECK(jb_matmul_cuda(NULL, NULL, &bad, NULL, 1, NULL, &err) == -1 && err.code == JB_EINVAL,
             "int32 weights refused: %s", err.msg);
    bad.dt = JB_F32;
    JB_CHECK(jb_matmul_cuda(NULL, NULL, &bad, NULL, 65535 * 16 + 1, NULL, &err) == -1 &&
             err.code == JB_EINVAL, "more rows than a grid holds refused: %s", err.msg);
    bad.dt = JB_I8;
    JB_CHECK(jb_matmul_cuda(NULL, NULL, &bad, NULL, 1, NULL, &err) == -1 && err.code == JB_EINVAL,
             "int8 weights without scales refused: %s", err.msg);
    if (getenv("JB_CUDA_TIMING")) time_products();
#ifdef JB_CUDA_EMU
    JB_CHECK(jb_cuda_emu_used() == 0, "every device allocation freed (%zu bytes left)",
             jb_cuda_emu_used());
#endif
    return jb_test_summary("test_cuda_matmul");
}
