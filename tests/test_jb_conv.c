// test_jb_conv.c: jb_conv against a naive direct convolution written from the PyTorch
// definitions (weights in their stored layouts), on random data; both conv1d methods,
// the ReLU/accumulate flags, dilation, stride, padding, transposed convolutions, and
// guard values past the end of every output.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "jb_conv.h"
#include "jb_test.h"

#define GUARD 16
#define GUARD_VAL 12345.0f

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(void) {   // uniform in [-1, 1)
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 40) * (1.0 / 8388608.0)) - 1.0f;
}
static float *rand_buf(int64_t n) {
    float *b = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) b[i] = frand();
    return b;
}

// Conv1d, w: (OC, C, k), x: (T, C), out: (T_out, OC), double accumulation.
static void ref_conv1d(double *out, const float *x, int64_t T, int C, const float *w,
                       const float *b, int OC, int k, int s, int p, int d, int relu_in) {
    int64_t T_out = (T + 2 * p - (int64_t)d * (k - 1) - 1) / s + 1;
    for (int64_t t = 0; t < T_out; t++)
        for (int o = 0; o < OC; o++) {
            double acc = b ? b[o] : 0.0;
            for (int c = 0; c < C; c++)
                for (int j = 0; j < k; j++) {
                    int64_t u = t * s + (int64_t)j * d - p;
                    if (u < 0 || u >= T) continue;
                    double v = x[u * C + c];
                    if (relu_in && v < 0) v = 0;
                    acc += v * w[((int64_t)o * C + c) * k + j];
                }
            out[t * OC + o] = acc;
        }
}

// ConvTranspose1d, w: (C, OC, k): scatter form, straight from the definition.
static void ref_convt1d(double *out, const float *x, int64_t T, int C, const float *w,
                        const float *b, int OC, int k, int s, int p) {
    int64_t T_out = (T - 1) * s - 2 * p + k;
    for (int64_t t = 0; t < T_out; t++)
        for (int o = 0; o < OC; o++) out[t * OC + o] = b ? b[o] : 0.0;
    for (int64_t u = 0; u < T; u++)
        for (int c = 0; c < C; c++)
            for (int o = 0; o < OC; o++)
                for (int j = 0; j < k; j++) {
                    int64_t t = u * s - p + j;
                    if (t < 0 || t >= T_out) continue;
                    out[t * OC + o] += (double)x[u * C + c] * w[((int64_t)c * OC + o) * k + j];
                }
}

static int close_to(const float *got, const double *want, int64_t n, double *maxd) {
    int ok = 1;
    *maxd = 0;
    for (int64_t i = 0; i < n; i++) {
        double dd = fabs(got[i] - want[i]);
        if (!(dd <= 1e-5 + 1e-5 * fabs(want[i]))) ok = 0;
        if (dd > *maxd || dd != dd) *maxd = dd;
    }
    return ok;
}

static int guards_ok(const float *buf, int64_t n) {
    for (int i = 0; i < GUARD; i++)
        if (buf[n + i] != GUARD_VAL) return 0;
    return 1;
}

static void check_conv1d(int64_t T, int C, int OC, int k, int s, int p, int d, int flags) {
    int64_t T_out = jb_conv1d_out_len(T, k, s, p, d);
    float *x = rand_buf(T * C), *w = rand_buf((int64_t)OC * C * k), *b = rand_buf(OC);
    float *wp = malloc(sizeof(float) * (size_t)OC * C * k);
    jb_conv1d_pack(wp, w, OC, C, k);
    size_t nws = jb_conv1d_ws_floats(T, C, k, s, p, d, flags);
    float *ws = malloc(sizeof(float) * (nws + GUARD));
    for (int i = 0; i < GUARD; i++) ws[nws + i] = GUARD_VAL;
    float *out = malloc(sizeof(float) * (size_t)(T_out * OC + GUARD));
    float *init = rand_buf(T_out * OC);
    memcpy(out, init, sizeof(float) * (size_t)(T_out * OC));
    for (int i = 0; i < GUARD; i++) out[T_out * OC + i] = GUARD_VAL;
    double *want = malloc(sizeof(double) * (size_t)(T_out * OC));
    ref_conv1d(want, x, T, C, w, b, OC, k, s, p, d, (flags & JB_CONV_RELU_IN) != 0);
    for (int64_t i = 0; i < T_out * OC; i++) {
        if (flags & JB_CONV_ACC) want[i] += init[i];
        if ((flags & JB_CONV_RELU_OUT) && want[i] < 0) want[i] = 0;
    }
    jb_conv1d(out, x, T, C, wp, b, OC, k, s, p, d, flags, ws);
    double maxd;
    int ok = close_to(out, want, T_out * OC, &maxd);
    JB_CHECK(ok && guards_ok(out, T_out * OC) && guards_ok(ws, (int64_t)nws),
             "conv1d T=%lld C=%d OC=%d k=%d s=%d p=%d d=%d flags=%d: T_out=%lld max|diff|=%.2g",
             (long long)T, C, OC, k, s, p, d, flags, (long long)T_out, maxd);
    free(x), free(w), free(b), free(wp), free(ws), free(out), free(init), free(want);
}

static void check_wino(int64_t T, int C, int OC, int d, int flags) {
    float *x = rand_buf(T * C), *w = rand_buf((int64_t)OC * C * 3), *b = rand_buf(OC);
    float *wg = malloc(sizeof(float) * (size_t)OC * C * 4);
    jb_conv1d_pack_wino(wg, w, OC, C);
    size_t nws = jb_conv1d_wino_ws_floats(T, C, OC, d);
    float *ws = malloc(sizeof(float) * (nws + GUARD));
    for (int i = 0; i < GUARD; i++) ws[nws + i] = GUARD_VAL;
    float *out = malloc(sizeof(float) * (size_t)(T * OC + GUARD));
    float *init = rand_buf(T * OC);
    memcpy(out, init, sizeof(float) * (size_t)(T * OC));
    for (int i = 0; i < GUARD; i++) out[T * OC + i] = GUARD_VAL;
    double *want = malloc(sizeof(double) * (size_t)(T * OC));
    ref_conv1d(want, x, T, C, w, b, OC, 3, 1, d, d, (flags & JB_CONV_RELU_IN) != 0);
    for (int64_t i = 0; i < T * OC; i++) {
        if (flags & JB_CONV_ACC) want[i] += init[i];
        if ((flags & JB_CONV_RELU_OUT) && want[i] < 0) want[i] = 0;
    }
    jb_conv1d_wino(out, x, T, C, wg, b, OC, d, flags, ws);
    double maxd;
    int ok = close_to(out, want, T * OC, &maxd);
    JB_CHECK(ok && guards_ok(out, T * OC) && guards_ok(ws, (int64_t)nws),
             "winograd conv T=%lld C=%d OC=%d d=%d flags=%d: max|diff|=%.2g", (long long)T, C,
             OC, d, flags, maxd);
    free(x), free(w), free(b), free(wg), free(ws), free(out), free(init), free(want);
}

static void check_convt1d(int64_t T, int C, int OC, int k, int s, int p, int flags) {
    int64_t T_out = jb_convt1d_out_len(T, k, s, p);
    float *x = rand_buf(T * C), *w = rand_buf((int64_t)C * OC * k), *b = rand_buf(OC);
    float *wp = malloc(sizeof(float) * (size_t)OC * C * k);
    jb_convt1d_pack(wp, w, C, OC, k);
    size_t nws = jb_convt1d_ws_floats(T, C, OC, k, s, flags);
    float *ws = malloc(sizeof(float) * (nws + GUARD));
    for (int i = 0; i < GUARD; i++) ws[nws + i] = GUARD_VAL;
    float *out = malloc(sizeof(float) * (size_t)(T_out * OC + GUARD));
    float *init = rand_buf(T_out * OC);
    memcpy(out, init, sizeof(float) * (size_t)(T_out * OC));
    for (int i = 0; i < GUARD; i++) out[T_out * OC + i] = GUARD_VAL;
    double *want = malloc(sizeof(double) * (size_t)(T_out * OC));
    ref_convt1d(want, x, T, C, w, b, OC, k, s, p);
    for (int64_t i = 0; i < T_out * OC; i++) {
        if (flags & JB_CONV_ACC) want[i] += init[i];
        if ((flags & JB_CONV_RELU_OUT) && want[i] < 0) want[i] = 0;
    }
    jb_convt1d(out, x, T, C, wp, b, OC, k, s, p, flags, ws);
    double maxd;
    int ok = close_to(out, want, T_out * OC, &maxd);
    JB_CHECK(ok && guards_ok(out, T_out * OC) && guards_ok(ws, (int64_t)nws),
             "convt1d T=%lld C=%d OC=%d k=%d s=%d p=%d flags=%d: T_out=%lld max|diff|=%.2g",
             (long long)T, C, OC, k, s, p, flags, (long long)T_out, maxd);
    free(x), free(w), free(b), free(wp), free(ws), free(out), free(init), free(want);
}

int main(void) {
    openblas_set_num_threads(1);   // jb_conv calls sgemm from OpenMP threads
    JB_CHECK(jb_conv1d_out_len(2048, 4, 2, 1, 1) == 1024, "encoder down conv halves T");
    JB_CHECK(jb_conv1d_out_len(100, 3, 1, 27, 27) == 100, "dilated conv keeps T");
    JB_CHECK(jb_convt1d_out_len(1024, 4, 2, 1) == 2048, "decoder up conv doubles T");
    JB_CHECK(jb_conv1d_out_len(2, 5, 1, 0, 1) == 0, "too short: no output");

    const int methods[2] = {0, JB_CONV_DIRECT};
    for (int m = 0; m < 2; m++) {
        int M = methods[m];
        check_conv1d(37, 3, 5, 3, 1, 1, 1, M);                       // plain k=3
        check_conv1d(64, 8, 8, 3, 1, 9, 9, M | JB_CONV_RELU_IN | JB_CONV_RELU_OUT);  // resnet
        check_conv1d(40, 8, 8, 3, 1, 27, 27, M | JB_CONV_RELU_IN);   // dilation > T
        check_conv1d(64, 1, 8, 4, 2, 1, 1, M);                       // encoder down, C=1
        check_conv1d(65, 6, 4, 4, 2, 1, 1, M);                       // odd T
        check_conv1d(50, 4, 7, 5, 3, 2, 2, M);                       // stride 3, dilation 2
        check_conv1d(50, 4, 7, 8, 4, 2, 1, M | JB_CONV_ACC);         // stride 4 encoder, acc
        check_conv1d(33, 8, 8, 1, 1, 0, 1, M | JB_CONV_ACC);         // 1x1 residual
        check_conv1d(33, 8, 8, 1, 1, 0, 1, M | JB_CONV_RELU_IN);     // 1x1 with relu on input
        check_conv1d(33, 8, 3, 3, 1, 1, 1, M | JB_CONV_ACC | JB_CONV_RELU_IN);
        // several row blocks (JB_CONV_BLOCK rows each), the last one partial
        check_conv1d(1500, 8, 8, 3, 1, 9, 9, M | JB_CONV_RELU_IN | JB_CONV_RELU_OUT);
        check_conv1d(2100, 4, 6, 4, 2, 1, 1, M);
        check_conv1d(1100, 8, 8, 1, 1, 0, 1, M | JB_CONV_ACC);
    }
    check_wino(37, 3, 5, 1, 0);
    check_wino(64, 8, 8, 9, JB_CONV_RELU_IN | JB_CONV_RELU_OUT);
    check_wino(41, 8, 8, 27, JB_CONV_RELU_IN);            // dilation > T
    check_wino(100, 4, 6, 3, JB_CONV_ACC);                  // T not a multiple of 2d
    check_wino(1, 4, 4, 1, 0);                               // one sample
    check_wino(3000, 16, 8, 81, JB_CONV_RELU_IN | JB_CONV_RELU_OUT);   // several blocks
    check_wino(2500, 8, 16, 1, JB_CONV_ACC | JB_CONV_RELU_IN);
    for (int m = 0; m < 2; m++) {
        int M = methods[m];
        check_convt1d(32, 8, 8, 4, 2, 1, M);                              // decoder up, s=2
        check_convt1d(31, 5, 3, 4, 2, 1, M | JB_CONV_ACC);
        check_convt1d(16, 6, 4, 8, 4, 2, M | JB_CONV_RELU_OUT);               // s=4, k=2s, p=s/2
        check_convt1d(20, 3, 5, 3, 1, 1, M);                              // stride 1
        check_convt1d(9, 4, 2, 5, 3, 0, M);                               // k not a multiple of s
        check_convt1d(12, 4, 2, 3, 2, 2, M);                              // p > s/2
        check_convt1d(1, 3, 3, 4, 2, 1, M);                               // one input step
        check_convt1d(7, 3, 2, 2, 3, 0, M);                               // k < s: empty phase
        check_convt1d(1300, 8, 6, 4, 2, 1, M | JB_CONV_ACC);              // several blocks
        check_convt1d(700, 4, 5, 8, 4, 2, M | JB_CONV_RELU_OUT);
    }
    return jb_test_summary("test_jb_conv");
}
