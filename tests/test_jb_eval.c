// test_jb_eval.c: the evaluation figures of common/jb_eval.c against closed forms:
// SNR of a tone plus a known orthogonal tone, spectral convergence of scaled copies, the
// add-one unigram entropy of small histograms worked by hand, the mel filterbank's partition
// of unity and centres from the HTK formula, the log-mel energy of a bin-centred tone from
// the Hann window's DFT, and the nearest-centroid classifier on data where standardisation
// decides the answer.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "jb_eval.h"
#include "jb_test.h"

static const double PI = 3.14159265358979323846;

static double lcg(uint64_t *s) {   // uniform in [-1, 1)
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(*s >> 11) / 4503599627370496.0 - 1.0;
}

static void test_snr(void) {
    enum { N = 4410 * 4 };
    float *x = malloc(sizeof(float) * N), *xh = malloc(sizeof(float) * N);
    const double A = 0.8, Bn = 0.05;   // 20 log10(A / B) = 24.08 dB
    for (int n = 0; n < N; n++) {
        x[n] = (float)(A * sin(2 * PI * 5 * n / N));
        xh[n] = x[n] + (float)(Bn * cos(2 * PI * 11 * n / N));
    }
    double want = 20 * log10(A / Bn), got = jb_eval_snr_db(x, xh, N);
    JB_CHECK(fabs(got - want) < 1e-3, "SNR of a tone + an orthogonal tone: %.5f dB, closed form "
             "%.5f dB", got, want);
    double s, e;
    jb_eval_sq_sums(x, xh, N, &s, &e);
    JB_CHECK(fabs(s - A * A * N / 2) < 1e-3 * s && fabs(e - Bn * Bn * N / 2) < 1e-3 * e,
             "sums: signal %.4f (A²N/2 = %.4f), noise %.6f (B²N/2 = %.6f)", s, A * A * N / 2, e,
             Bn * Bn * N / 2);
    JB_CHECK(isinf(jb_eval_snr_db(x, x, N)) && jb_eval_snr_db(x, x, N) > 0,
             "SNR of an exact copy is +inf");
    for (int n = 0; n < N; n++) xh[n] = -x[n];   // error 2x: 10 log10(1/4)
    got = jb_eval_snr_db(x, xh, N);
    JB_CHECK(fabs(got + 20 * log10(2.0)) < 1e-6, "SNR of the negated signal: %.6f dB (-6.0206)",
             got);
    JB_CHECK(jb_eval_snr_from_sums(0, 1) < 0 && isinf(jb_eval_snr_from_sums(0, 1)) &&
                 jb_eval_snr_from_sums(0, 0) == 0,
             "edge cases: silence against noise -inf, silence against silence 0");
    free(x);
    free(xh);
}

static void test_spec_conv(void) {
    enum { N = 20000 };
    float *x = malloc(sizeof(float) * N), *xh = malloc(sizeof(float) * N);
    uint64_t seed = 7;
    for (int n = 0; n < N; n++) x[n] = (float)(0.5 * lcg(&seed));
    jb_err_t err = {0};
    const double scales[] = {0.7, 1.25, 0.0, 1.0};
    for (int i = 0; i < 4; i++) {
        for (int n = 0; n < N; n++) xh[n] = (float)(scales[i] * x[n]);
        double num = -1, den = -1;
        JB_CHECK_OK(jb_eval_spec_conv(x, xh, N, 2048, 512, &num, &den, &err), &err, "spec_conv");
        double sc = num / den, want = fabs(1 - scales[i]);
        JB_CHECK(fabs(sc - want) < 1e-6, "spectral convergence of %.2f x: %.8f, |1 - a| = %.8f",
                 scales[i], sc, want);
    }
    // a sign flip keeps every magnitude: SC 0
    for (int n = 0; n < N; n++) xh[n] = -x[n];
    double num, den;
    JB_CHECK_OK(jb_eval_spec_conv(x, xh, N, 1024, 256, &num, &den, &err), &err, "spec_conv");
    JB_CHECK(num / den < 1e-9, "spectral convergence of -x: %.3g (magnitudes equal)", num / den);
    JB_CHECK(jb_eval_spec_conv(x, xh, 500, 2048, 512, &num, &den, &err) == -1 && err.msg[0],
             "a signal shorter than n_fft/2 is refused: %s", err.msg);
    free(x);
    free(xh);
}

static void test_unigram(void) {
    // counts 3,1,0,0 -> smoothed 4/8, 2/8, 1/8, 1/8: H = 0.5 + 0.5 + 0.375 + 0.375 = 1.75
    const int64_t c[4] = {3, 1, 0, 0};
    double h = jb_eval_unigram_entropy(c, 4);
    JB_CHECK(fabs(h - 1.75) < 1e-12, "entropy of smoothed (3,1,0,0): %.12f, by hand 1.75", h);
    int64_t u[256];
    for (int k = 0; k < 256; k++) u[k] = 17;
    h = jb_eval_unigram_entropy(u, 256);
    JB_CHECK(fabs(h - 8.0) < 1e-12, "entropy of a flat histogram of 256 codes: %.12f (8)", h);
    int64_t z[16] = {0};
    h = jb_eval_unigram_entropy(z, 16);
    JB_CHECK(fabs(h - 4.0) < 1e-12, "entropy of an empty histogram of 16: %.12f (4)", h);
    // one code only, 1000 times, K = 2: p = 1001/1002, 1/1002
    int64_t one[2] = {1000, 0};
    double p = 1001.0 / 1002, q = 1.0 / 1002, want = -(p * log2(p) + q * log2(q));
    h = jb_eval_unigram_entropy(one, 2);
    JB_CHECK(fabs(h - want) < 1e-12, "entropy of (1000, 0): %.12f (%.12f)", h, want);

    // codes 0,0,1,3 under (4,2,1,1)/8: (1 + 1 + 2 + 3) / 4 = 1.75 bits
    const int32_t codes[4] = {0, 0, 1, 3};
    double bits = -1;
    jb_err_t err = {0};
    JB_CHECK_OK(jb_eval_unigram_xent(c, 4, codes, 4, &bits, &err), &err, "xent");
    JB_CHECK(fabs(bits - 1.75) < 1e-12, "cross-entropy of 0,0,1,3: %.12f (1.75)", bits);
    const int32_t bad[3] = {0, 4, 1};
    bits = 123;
    JB_CHECK(jb_eval_unigram_xent(c, 4, bad, 3, &bits, &err) == -1 && strstr(err.msg, "position 1")
                 && bits == 123,
             "a code out of range is refused, named by position: %s", err.msg);
}

static double hz2mel(double f) { return 2595.0 * log10(1.0 + f / 700.0); }
static double mel2hz(double m) { return 700.0 * (pow(10.0, m / 2595.0) - 1.0); }

static void test_mel(void) {
    enum { SR = 44100, NFFT = 2048, M = 64, B = NFFT / 2 + 1 };
    float *fb = malloc(sizeof(float) * M * B);
    jb_eval_mel_filterbank(SR, NFFT, M, fb);
    double top = hz2mel(SR / 2.0);
    double c0 = mel2hz(top / (M + 1)), cl = mel2hz(top * M / (M + 1));
    int ok_range = 1, ok_unity = 1;
    double worst = 0;
    for (int k = 0; k < B; k++) {
        double f = (double)k * SR / NFFT, s = 0;
        for (int m = 0; m < M; m++) {
            float w = fb[m * B + k];
            if (w < 0 || w > 1) ok_range = 0;
            s += w;
        }
        if (f >= c0 && f <= cl && fabs(s - 1) > 1e-5) ok_unity = 0, worst = fabs(s - 1);
    }
    JB_CHECK(ok_range, "filter weights in [0, 1]");
    JB_CHECK(ok_unity, "between the first and last centre the filters sum to 1 (worst %.2g)",
             worst);
    int ok_peak = 1;
    for (int m = 0; m < M; m++) {   // the largest weight sits at a bin next to the centre
        double c = mel2hz(top * (m + 1) / (M + 1));
        int arg = 0;
        for (int k = 1; k < B; k++)
            if (fb[m * B + k] > fb[m * B + arg]) arg = k;
        if (fabs(arg - c * NFFT / SR) > 1.0) ok_peak = 0;
    }
    JB_CHECK(ok_peak, "each filter peaks within one bin of its HTK centre frequency");

    // A cosine centred on bin k0: |X[k0]| = A N/4, |X[k0 ± 1]| = A N/8 (Hann), 0 elsewhere;
    // an interior frame's band energies follow from the filter weights at those bins.
    const int k0 = 93;
    const double A = 0.5;
    enum { T = SR };
    float *x = malloc(sizeof(float) * T);
    for (int n = 0; n < T; n++) x[n] = (float)(A * cos(2 * PI * k0 * (double)n / NFFT));
    float *lm = NULL;
    int F = 0;
    jb_err_t err = {0};
    JB_CHECK_OK(jb_eval_logmel(x, T, SR, M, &lm, &F, &err), &err, "logmel");
    JB_CHECK(F == 1 + T / 512, "frames: %d (1 + T / 512 = %d)", F, 1 + T / 512);
    double a0 = A * NFFT / 4, a1 = A * NFFT / 8, maxd = 0;
    for (int m = 0; lm && m < M; m++) {
        double e = fb[m * B + k0] * a0 * a0 + fb[m * B + k0 - 1] * a1 * a1 +
                   fb[m * B + k0 + 1] * a1 * a1;
        double want = 10 * log10(e + 1e-10), got = lm[(F / 2) * M + m];
        if (e > 1e-3 * a0 * a0) maxd = fabs(got - want) > maxd ? fabs(got - want) : maxd;
    }
    JB_CHECK(maxd < 0.01, "log-mel of a bin-centred tone (interior frame) against the Hann DFT: "
             "worst %.4f dB in the bands it reaches", maxd);
    double feat[2 * M];
    JB_CHECK_OK(jb_eval_logmel_stats(x, T, SR, M, feat, &err), &err, "stats");
    double md = 0;
    for (int m = 0; lm && m < M; m++) {
        double s = 0, ss = 0;
        for (int f = 0; f < F; f++) s += lm[f * M + m];
        for (int f = 0; f < F; f++) ss += (lm[f * M + m] - s / F) * (lm[f * M + m] - s / F);
        double d = fabs(feat[m] - s / F) + fabs(feat[M + m] - sqrt(ss / F));
        md = d > md ? d : md;
    }
    JB_CHECK(md < 1e-4, "stats are each band's mean and std of the log-mel frames (%.2g)", md);
    char path[] = "/tmp/test_jb_eval_XXXXXX";
    int fd = mkstemp(path);
    if (fd >= 0) close(fd);
    JB_CHECK_OK(jb_eval_spectrogram_png(path, lm, F, M, 2, 80, &err), &err, "png");
    FILE *f = fopen(path, "rb");
    unsigned char hdr[24] = {0};
    size_t got = f ? fread(hdr, 1, 24, f) : 0;
    if (f) fclose(f);
    unlink(path);
    unsigned w = (unsigned)hdr[16] << 24 | hdr[17] << 16 | hdr[18] << 8 | hdr[19];
    unsigned h = (unsigned)hdr[20] << 24 | hdr[21] << 16 | hdr[22] << 8 | hdr[23];
    JB_CHECK(got == 24 && !memcmp(hdr + 1, "PNG", 3) && w == (unsigned)F && h == 2 * M,
             "spectrogram PNG: %ux%u (frames x 2 bands)", w, h);
    free(lm);
    free(x);
    free(fb);
}

static void test_centroids(void) {
    // Feature 0 carries the class (±1 plus small noise); feature 1 is noise 1000 times as
    // large. Unstandardised, feature 1 would decide; standardised, feature 0 does.
    enum { N = 200, D = 2 };
    double f[N * D];
    int lab[N];
    uint64_t s = 3;
    for (int i = 0; i < N; i++) {
        lab[i] = i % 2;
        f[i * D] = (lab[i] ? 1.0 : -1.0) + 0.2 * lcg(&s);
        f[i * D + 1] = 1000.0 * lcg(&s);
    }
    jb_err_t err = {0};
    jb_eval_centroids_t *c = jb_eval_centroids_fit(f, lab, N, D, 3, &err);
    JB_CHECK(c != NULL, "fit (%s)", err.msg);
    int ok = 0;
    for (int i = 0; c && i < 100; i++) {
        int want = i % 2;
        double q[2] = {(want ? 1.0 : -1.0) + 0.2 * lcg(&s), 1000.0 * lcg(&s)};
        ok += jb_eval_centroids_predict(c, q) == want;
    }
    JB_CHECK(ok == 100, "standardised nearest centroid: %d / 100 new points right", ok);
    double q[2] = {0.9, 0};
    JB_CHECK(c && jb_eval_centroids_predict(c, q) != 2, "a class without items is never chosen");
    jb_eval_centroids_destroy(&c);
    JB_CHECK(c == NULL, "destroy NULLs the pointer");
    jb_eval_centroids_destroy(&c);
    lab[5] = 7;
    c = jb_eval_centroids_fit(f, lab, N, D, 3, &err);
    JB_CHECK(c == NULL && strstr(err.msg, "item 5"), "a class out of range is refused: %s",
             err.msg);
}

int main(void) {
    test_snr();
    test_spec_conv();
    test_unigram();
    test_mel();
    test_centroids();
    return jb_test_summary("test_jb_eval");
}
