// test_jb_matmul.c: every product of jb_matmul against a float64 reference.
//
// Random shapes (odd K and N included), M = 1..17 and 300 (the streaming
// kernel and the BLAS path), weights F32 / F16 / BF16, with and without bias,
// accumulate, packed weights, the transposed product; with every kernel this
// build and CPU have (plain C, AVX2, AVX-512). The tolerance is relative to
// sum_k |x_k w_kn| (+ |bias| + |y0|): float32 accumulation stays ~1e-6 of it,
// while one product term lost or doubled is ~1/K of it. Guard values before
// and after y catch writes out of bounds, as llama.cpp's test-backend-ops.
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jb_matmul.h"
#include "jb_test.h"

#define GUARD 32
#define GUARD_VAL -7777.25f
#define TOL 1e-5

static uint64_t rng = 0x243f6a8885a308d3ull;
static double urand(void) {   // [0, 1)
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (rng >> 11) * (1.0 / 9007199254740992.0);
}
static float frand(void) { return (float)(2 * urand() - 1); }
static int irand(int lo, int hi) { return lo + (int)(urand() * (hi - lo + 1)); }

// Random weights (K, N) in dt, and their exact float32 values in wf.
static void *make_w(jb_dtype_t dt, int K, int N, float *wf) {
    size_t n = (size_t)K * N;
    void *w = malloc(n * jb_dtype_size(dt) + 1);
    for (size_t i = 0; i < n; i++) {
        float v = frand();
        if (dt == JB_F32) {
            ((float *)w)[i] = wf[i] = v;
        } else if (dt == JB_F16) {
            uint16_t h = jb_f32_to_f16(v);
            ((uint16_t *)w)[i] = h;
            wf[i] = jb_f16_to_f32(h);
        } else {
            uint16_t h = jb_f32_to_bf16(v);
            ((uint16_t *)w)[i] = h;
            wf[i] = jb_bf16_to_f32(h);
        }
    }
    return w;
}

// y buffer with GUARD floats either side; returns the start of y.
static float *guarded(float *buf, size_t n) {
    for (size_t i = 0; i < n + 2 * GUARD; i++) buf[i] = GUARD_VAL;
    return buf + GUARD;
}
static int guards_ok(const float *buf, size_t n) {
    for (size_t i = 0; i < GUARD; i++)
        if (buf[i] != GUARD_VAL || buf[GUARD + n + i] != GUARD_VAL) return 0;
    return 1;
}

// Worst |y - ref| / scale over the output; NaN gives +inf.
// wt: W is (N, K) (the transposed product) instead of (K, N).
static double worst_err(const float *y, const float *y0, const float *x, const float *wf,
                        const float *bias, int M, int K, int N, int wt) {
    double worst = 0;
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double s = 0, a = 0;
            if (bias) {
                s += bias[n];
                a += fabs(bias[n]);
            }
            if (y0) {
                s += y0[(size_t)m * N + n];
                a += fabs(y0[(size_t)m * N + n]);
            }
            for (int k = 0; k < K; k++) {
                double w = wt ? wf[(size_t)n * K + k] : wf[(size_t)k * N + n];
                double p = (double)x[(size_t)m * K + k] * w;
                s += p;
                a += fabs(p);
            }
            double v = y[(size_t)m * N + n];
            if (!isfinite(v)) return INFINITY;
            double e = fabs(v - s) / (a + 1e-30);
            if (e > worst) worst = e;
        }
    return worst;
}

static const char *dname(jb_dtype_t dt) { return jb_dtype_name(dt); }

// One shape, one dtype, every entry point with (K, N) weights.
static void check_case(const char *kern, jb_dtype_t dt, int M, int K, int N) {
    size_t nw = (size_t)K * N, ny = (size_t)M * N;
    float *wf = malloc((nw + 1) * sizeof(float));
    void *w = make_w(dt, K, N, wf);
    float *x = malloc(((size_t)M * K + 1) * sizeof(float));
    float *bias = malloc(N * sizeof(float));
    float *y0 = malloc(ny * sizeof(float));
    float *buf = malloc((ny + 2 * GUARD) * sizeof(float));
    for (size_t i = 0; i < (size_t)M * K; i++) x[i] = frand();
    for (int n = 0; n < N; n++) bias[n] = frand();
    for (size_t i = 0; i < ny; i++) y0[i] = frand();
    jb_err_t err = {0};
    jb_matmul_packed_t *pk = jb_matmul_pack(w, dt, K, N, &err);
    JB_CHECK(pk != NULL, "pack %s K=%d N=%d (%s)", dname(dt), K, N, err.msg);

    for (int variant = 0; variant < 6; variant++) {
        // 0 plain, 1 bias, 2 acc, 3 packed, 4 packed + bias, 5 packed acc
        if (variant >= 3 && !pk) break;
        float *y = guarded(buf, ny);
        const float *b = variant == 1 || variant == 4 ? bias : NULL;
        const float *yin = variant == 2 || variant == 5 ? y0 : NULL;
        if (yin) memcpy(y, y0, ny * sizeof(float));
        switch (variant) {
        case 0: jb_matmul(y, x, w, dt, NULL, M, K, N); break;
        case 1: jb_matmul(y, x, w, dt, bias, M, K, N); break;
        case 2: jb_matmul_acc(y, x, w, dt, M, K, N); break;
        case 3: jb_matmul_packed(y, x, pk, NULL, M); break;
        case 4: jb_matmul_packed(y, x, pk, bias, M); break;
        case 5: jb_matmul_packed_acc(y, x, pk, M); break;
        }
        static const char *vname[] = {"plain", "bias", "acc", "packed", "packed+bias",
                                      "packed acc"};
        double e = worst_err(y, yin, x, wf, b, M, K, N, 0);
        JB_CHECK(e <= TOL, "%s %s %s M=%d K=%d N=%d: worst error %.2e of sum|xw|", kern,
                 dname(dt), vname[variant], M, K, N, e);
        JB_CHECK(guards_ok(buf, ny), "%s %s %s M=%d K=%d N=%d: guards intact", kern, dname(dt),
                 vname[variant], M, K, N);
    }
    jb_matmul_packed_destroy(&pk);
    JB_CHECK(pk == NULL, "destroy sets NULL");
    free(wf);
    free(w);
    free(x);
    free(bias);
    free(y0);
    free(buf);
}

static void check_wt(int M, int K, int N) {
    size_t nw = (size_t)K * N, ny = (size_t)M * N;
    float *w = malloc(nw * sizeof(float));
    float *x = malloc((size_t)M * K * sizeof(float));
    float *buf = malloc((ny + 2 * GUARD) * sizeof(float));
    for (size_t i = 0; i < nw; i++) w[i] = frand();
    for (size_t i = 0; i < (size_t)M * K; i++) x[i] = frand();
    float *y = guarded(buf, ny);
    jb_matmul_wt(y, x, w, M, K, N);
    double e = worst_err(y, NULL, x, w, NULL, M, K, N, 1);
    JB_CHECK(e <= TOL, "%s wt M=%d K=%d N=%d: worst error %.2e", jb_matmul_kernel_name(), M, K,
             N, e);
    JB_CHECK(guards_ok(buf, ny), "wt M=%d K=%d N=%d: guards intact", M, K, N);
    free(w);
    free(x);
    free(buf);
}

int main(void) {
    static const char *kernels[] = {"c", "avx2", "avx512"};
    static const jb_dtype_t dts[] = {JB_F32, JB_F16, JB_BF16};
    for (int ki = 0; ki < 3; ki++) {
        if (jb_matmul_set_kernel(kernels[ki]) < 0) {
            printf("  (kernel %s not in this build or CPU: skipped)\n", kernels[ki]);
            continue;
        }
        const char *kern = jb_matmul_kernel_name();
        for (int di = 0; di < 3; di++) {
            jb_dtype_t dt = dts[di];
            // every M of the streaming kernel and one past it, on an odd shape
            for (int M = 1; M <= JB_MATMUL_SMALL_M + 1; M++) check_case(kern, dt, M, 133, 77);
            // shapes that split across threads, with micro-panel tails of 24, 8, 1.. columns
            check_case(kern, dt, 1, 300, 1000);
            check_case(kern, dt, 4, 257, 1463);
            check_case(kern, dt, 16, 129, 1049);
            // random shapes
            for (int i = 0; i < 12; i++)
                check_case(kern, dt, irand(1, 17), irand(1, 300), irand(1, 300));
            check_case(kern, dt, 300, 77, 129);   // large M: BLAS, or the AVX-512 kernel
            check_case(kern, dt, 40, 200, 1100);  // large M across threads
        }
        check_wt(1, 1920, 2048);
        for (int M = 1; M <= 17; M++) check_wt(M, irand(1, 200), irand(1, 150));
        check_wt(300, 64, 100);
    }
    jb_matmul_set_kernel(NULL);

    // Edge cases: M = 0 writes nothing; K = 0 gives the bias.
    float buf[8 + 2 * GUARD], bias[8] = {1, 2, 3, 4, 5, 6, 7, 8}, wz[1] = {0}, xz[1] = {0};
    float *y = guarded(buf, 8);
    jb_matmul(y, xz, wz, JB_F32, bias, 0, 4, 8);
    JB_CHECK(y[0] == GUARD_VAL && guards_ok(buf, 8), "M = 0 writes nothing");
    jb_matmul(y, xz, wz, JB_BF16, bias, 1, 0, 8);
    JB_CHECK(!memcmp(y, bias, sizeof bias) && guards_ok(buf, 8), "K = 0: y = bias");

    jb_err_t err = {0};
    JB_CHECK(jb_matmul_pack(wz, JB_I32, 1, 1, &err) == NULL && err.msg[0],
             "pack refuses I32: %s", err.msg);
    return jb_test_summary("test_jb_matmul");
}
