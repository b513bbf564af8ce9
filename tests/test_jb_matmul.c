// test_jb_matmul.c: every product of jb_matmul against a float64 reference.
//
// Random shapes (odd K and N included), M = 1..17 and 300 (the streaming
// kernel and the BLAS path), weights F32 / F16 / BF16, with and without bias,
// accumulate, packed weights, the transposed product; with every kernel this
// build and CPU have (plain C, AVX2, AVX-512). The tolerance is relative to
// sum_k |x_k w_kn| (+ |bias| + |y0|): float32 accumulation stays ~1e-6 of it,
// (int8 weights: against the dequantized weights, and within the quantization bound of the
// unquantized ones; rows bit-identical whatever the batch, for every form and kernel)
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

// The int8 contract of jb_matmul.h, computed here independently: per column and group of
// JB_MATMUL_Q8_GROUP rows, scale = max |w| / 127, q = round(w / scale). wq: the dequantized
// weights (K, N) scale·q; gmax: (ceil(K / G), N) the groups' max |w|.
static void quantize_ref(const float *wf, int K, int N, float *wq, float *gmax) {
    const int G = JB_MATMUL_Q8_GROUP;
    for (int g = 0; g * G < K; g++)
        for (int n = 0; n < N; n++) {
            int k0 = g * G, k1 = k0 + G < K ? k0 + G : K;
            float amax = 0;
            for (int k = k0; k < k1; k++)
                if (fabsf(wf[(size_t)k * N + n]) > amax) amax = fabsf(wf[(size_t)k * N + n]);
            float s = amax / 127.0f, inv = amax > 0 ? 127.0f / amax : 0.0f;
            gmax[(size_t)g * N + n] = amax;
            for (int k = k0; k < k1; k++)
                wq[(size_t)k * N + n] = s * nearbyintf(wf[(size_t)k * N + n] * inv);
        }
}

// jb_matmul_pack_q8: the product equals x·(scale·q) to float32 accumulation (TOL), every entry
// point, guards intact; and it stays within the quantization bound of x·W:
// |y - x·W| <= Σ_k |x_k| · max|w|_group / 254 (+ float32 rounding).
static void check_q8(const char *kern, jb_dtype_t dt, int M, int K, int N) {
    const int G = JB_MATMUL_Q8_GROUP, ng = (K + G - 1) / G;
    size_t nw = (size_t)K * N, ny = (size_t)M * N;
    float *wf = malloc((nw + 1) * sizeof(float)), *wq = malloc((nw + 1) * sizeof(float));
    float *gmax = malloc(((size_t)ng * N + 1) * sizeof(float));
    void *w = make_w(dt, K, N, wf);
    quantize_ref(wf, K, N, wq, gmax);
    float *x = malloc(((size_t)M * K + 1) * sizeof(float));
    float *bias = malloc(N * sizeof(float)), *y0 = malloc(ny * sizeof(float));
    float *buf = malloc((ny + 2 * GUARD) * sizeof(float));
    for (size_t i = 0; i < (size_t)M * K; i++) x[i] = frand();
    for (int n = 0; n < N; n++) bias[n] = frand();
    for (size_t i = 0; i < ny; i++) y0[i] = frand();
    jb_err_t err = {0};
    jb_matmul_packed_t *pk = jb_matmul_pack_q8(w, dt, K, N, &err);
    JB_CHECK(pk != NULL, "pack_q8 %s K=%d N=%d (%s)", dname(dt), K, N, err.msg);
    if (pk) {
        JB_CHECK(jb_matmul_packed_dtype(pk) == JB_I8, "pack_q8 holds I8");
        size_t tiles = (size_t)(N + 31) / 32;
        JB_CHECK(jb_matmul_packed_bytes(pk) == tiles * 32 * ((size_t)K + 4 * (size_t)ng),
                 "pack_q8 bytes: %zu", jb_matmul_packed_bytes(pk));
        for (int variant = 0; variant < 3; variant++) {   // plain, bias, acc
            float *y = guarded(buf, ny);
            const float *b = variant == 1 ? bias : NULL, *yin = variant == 2 ? y0 : NULL;
            if (yin) memcpy(y, y0, ny * sizeof(float));
            if (variant == 2) jb_matmul_packed_acc(y, x, pk, M);
            else jb_matmul_packed(y, x, pk, b, M);
            double e = worst_err(y, yin, x, wq, b, M, K, N, 0);
            JB_CHECK(e <= TOL, "%s q8 from %s variant %d M=%d K=%d N=%d: worst error %.2e", kern,
                     dname(dt), variant, M, K, N, e);
            JB_CHECK(guards_ok(buf, ny), "%s q8 variant %d M=%d K=%d N=%d: guards intact", kern,
                     variant, M, K, N);
            if (variant != 0) continue;
            double worst = 0;   // against the unquantized weights, in units of the bound
            for (int m = 0; m < M; m++)
                for (int n = 0; n < N; n++) {
                    double s = 0, bound = 0, a = 0;
                    for (int k = 0; k < K; k++) {
                        double p = (double)x[(size_t)m * K + k] * wf[(size_t)k * N + n];
                        s += p, a += fabs(p);
                        bound += fabs(x[(size_t)m * K + k]) * gmax[(size_t)(k / G) * N + n] / 254;
                    }
                    double r = fabs(y[(size_t)m * N + n] - s) / (bound + 1e-5 * a + 1e-30);
                    if (r > worst) worst = r;
                }
            JB_CHECK(worst <= 1.0, "%s q8 M=%d K=%d N=%d: error vs unquantized W within the "
                     "bound (%.2f of it)", kern, M, K, N, worst);
        }
    }
    jb_matmul_packed_destroy(&pk);
    free(wf), free(wq), free(gmax), free(w), free(x), free(bias), free(y0), free(buf);
}

// Batch invariance: the rows of x multiplied M at a time, from any offset, give the same bits
// as the same rows inside a product of 16 rows (a row's result must not depend on the rows
// around it or on their number: a job's codes must not depend on the jobs sampled with it).
// form: 0 jb_matmul, 1 jb_matmul_acc, 2 packed, 3 packed q8.
// ML: the rows of a large-M product (priming, the upsamplers' conditioner); more than 96
// crosses row blocks of the AVX2 schedule for many rows.
static void check_invariant(const char *kern, jb_dtype_t dt, int form, int K, int N, int ML) {
    const int MM = JB_MATMUL_SMALL_M;
    size_t nw = (size_t)K * N, ny = (size_t)ML * N;
    float *wf = malloc((nw + 1) * sizeof(float));
    void *w = make_w(dt, K, N, wf);
    float *x = malloc((size_t)ML * K * sizeof(float)), *bias = malloc(N * sizeof(float));
    float *y0 = malloc(ny * sizeof(float)), *full = malloc(ny * sizeof(float));
    float *y = malloc(ny * sizeof(float));
    for (size_t i = 0; i < (size_t)ML * K; i++) x[i] = frand();
    for (int n = 0; n < N; n++) bias[n] = frand();
    for (size_t i = 0; i < ny; i++) y0[i] = frand();
    jb_err_t err = {0};
    jb_matmul_packed_t *pk = form == 2   ? jb_matmul_pack(w, dt, K, N, &err)
                             : form == 3 ? jb_matmul_pack_q8(w, dt, K, N, &err)
                                         : NULL;
    static const char *fname[] = {"plain", "acc", "packed", "packed q8"};
#define RUN(Y, X, M)                                                          \
    do {                                                                      \
        if (form == 0) jb_matmul(Y, X, w, dt, bias, M, K, N);                 \
        else if (form == 1) jb_matmul_acc(Y, X, w, dt, M, K, N);              \
        else jb_matmul_packed(Y, X, pk, bias, M);                             \
    } while (0)
    if (form >= 2 && !pk) {
        JB_CHECK(0, "pack %s: %s", fname[form], err.msg);
    } else {
        memcpy(full, y0, ny * sizeof(float));
        RUN(full, x, MM);
        int bad = 0, first_m = 0, first_o = 0;
        for (int M = 1; M < MM; M++)
            for (int o = 0; o + M <= MM; o += M > 4 ? 3 : 1) {
                memcpy(y, y0 + (size_t)o * N, (size_t)M * N * sizeof(float));
                RUN(y, x + (size_t)o * K, M);
                if (memcmp(y, full + (size_t)o * N, (size_t)M * N * sizeof(float)) && !bad++)
                    first_m = M, first_o = o;
            }
        JB_CHECK(bad == 0, "%s %s %s K=%d N=%d: rows identical whatever the batch (%d products "
                 "differ, the first M=%d at row %d)", kern, dname(dt), fname[form], K, N, bad,
                 first_m, first_o);
        // Large M (priming several windows at once): each row as computed alone. The plain C
        // kernel hands large M to BLAS sgemm, which promises no such thing.
        if (strcmp(kern, "c")) {
            memcpy(full, y0, ny * sizeof(float));
            RUN(full, x, ML);
            bad = 0;
            for (int o = 0; o < ML; o++) {
                memcpy(y, y0 + (size_t)o * N, (size_t)N * sizeof(float));
                RUN(y, x + (size_t)o * K, 1);
                if (memcmp(y, full + (size_t)o * N, (size_t)N * sizeof(float)) && !bad++)
                    first_o = o;
            }
            JB_CHECK(bad == 0, "%s %s %s K=%d N=%d: rows of a %d-row product identical to each "
                     "row alone (%d differ, the first row %d)", kern, dname(dt), fname[form], K,
                     N, ML, bad, first_o);
        }
    }
#undef RUN
    jb_matmul_packed_destroy(&pk);
    free(wf), free(w), free(x), free(bias), free(y0), free(full), free(y);
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
    // The output projection of a step of M jobs: each job's logits as computed alone (the
    // plain C kernel hands large M to BLAS sgemm, which promises no such thing).
    float *one = malloc((size_t)N * sizeof(float));
    int bad = 0;
    for (int m = 0; m < M && (strcmp(jb_matmul_kernel_name(), "c") || M <= JB_MATMUL_SMALL_M);
         m++) {
        jb_matmul_wt(one, x + (size_t)m * K, w, 1, K, N);
        bad += memcmp(one, y + (size_t)m * N, (size_t)N * sizeof(float)) != 0;
    }
    JB_CHECK(bad == 0, "%s wt M=%d K=%d N=%d: rows identical to each row alone (%d differ)",
             jb_matmul_kernel_name(), M, K, N, bad);
    free(one);
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
            check_case(kern, dt, 200, 70, 1048);  // several row blocks, 1024 + a tail
        }
        for (int di = 0; di < 3; di++) {   // int8 from each dtype
            for (int M = 1; M <= JB_MATMUL_SMALL_M + 1; M++) check_q8(kern, dts[di], M, 133, 77);
            check_q8(kern, dts[di], 3, 300, 1000);
            check_q8(kern, dts[di], 300, 77, 129);   // large M: dequantized into sgemm
        }
        for (int i = 0; i < 6; i++) check_q8(kern, JB_F32, irand(1, 17), irand(1, 300), irand(1, 300));
        for (int di = 0; di < 3; di++)
            for (int form = 0; form < 4; form++) {
                check_invariant(kern, dts[di], form, 133, 77, 40);
                check_invariant(kern, dts[di], form, 300, 1000, 40);
            }
        for (int di = 0; di < 3; di++)   // unpacked, many rows, N a multiple of 1 KiB of f32
            check_invariant(kern, dts[di], di % 2, 70, 1024 + 24, 200);
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
    err.msg[0] = 0;
    JB_CHECK(jb_matmul_pack_q8(wz, JB_I8, 1, 1, &err) == NULL && err.msg[0],
             "pack_q8 refuses I8: %s", err.msg);
    err.msg[0] = 0;
    JB_CHECK(jb_matmul_pack_q8(wz, JB_F32, 0, 1, &err) == NULL && err.msg[0],
             "pack_q8 refuses K = 0: %s", err.msg);
    return jb_test_summary("test_jb_matmul");
}
