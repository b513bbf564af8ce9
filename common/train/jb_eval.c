// jb_eval.c: evaluation figures (see jb_eval.h).
#include "jb_eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "jb_html.h"
#include "jb_stft.h"

void jb_eval_sq_sums(const float *x, const float *xh, int64_t n, double *signal, double *noise) {
    double s = 0, e = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)x[i] - (double)xh[i];
        s += (double)x[i] * x[i];
        e += d * d;
    }
    *signal = s;
    *noise = e;
}

double jb_eval_snr_from_sums(double signal, double noise) {
    if (noise == 0) return signal == 0 ? 0.0 : INFINITY;
    if (signal == 0) return -INFINITY;
    return 10.0 * log10(signal / noise);
}

double jb_eval_snr_db(const float *x, const float *xh, int64_t n) {
    double s, e;
    jb_eval_sq_sums(x, xh, n, &s, &e);
    return jb_eval_snr_from_sums(s, e);
}

int jb_eval_spec_conv(const float *x, const float *xh, int64_t n, int n_fft, int hop,
                      double *num, double *den, jb_err_t *err) {
    jb_stft_t *st = jb_stft_new(n_fft, hop, n_fft, n, err);
    if (!st) return -1;
    int F = jb_stft_frames(st), B = jb_stft_bins(st);
    double *spec = malloc(sizeof(double) * (size_t)F * 2 * B);
    double *ma = malloc(sizeof(double) * (size_t)F * B);
    double *mb = malloc(sizeof(double) * (size_t)F * B);
    int rc = -1;
    if (!spec || !ma || !mb) {
        jb_err_set(err, JB_ENOMEM, "spectral convergence: out of memory (%d frames)", F);
        goto done;
    }
    jb_stft_forward(st, spec, x);
    jb_stft_magnitude(st, ma, spec);
    jb_stft_forward(st, spec, xh);
    jb_stft_magnitude(st, mb, spec);
    double a = 0, b = 0;
    for (int64_t i = 0; i < (int64_t)F * B; i++) {
        double d = ma[i] - mb[i];
        a += d * d;
        b += ma[i] * ma[i];
    }
    *num = sqrt(a);
    *den = sqrt(b);
    rc = 0;
done:
    free(spec);
    free(ma);
    free(mb);
    jb_stft_destroy(&st);
    return rc;
}

double jb_eval_unigram_entropy(const int64_t *counts, int K) {
    double total = 0, h = 0;
    for (int k = 0; k < K; k++) total += (double)counts[k];
    for (int k = 0; k < K; k++) {
        double p = ((double)counts[k] + 1.0) / (total + K);
        h -= p * log2(p);
    }
    return h;
}

int jb_eval_unigram_xent(const int64_t *counts, int K, const int32_t *codes, int64_t n,
                         double *bits, jb_err_t *err) {
    double total = 0, s = 0;
    for (int k = 0; k < K; k++) total += (double)counts[k];
    for (int64_t i = 0; i < n; i++) {
        if (codes[i] < 0 || codes[i] >= K)
            return jb_err_set(err, JB_EINVAL, "unigram: code %d at position %lld is outside "
                              "[0, %d)", codes[i], (long long)i, K);
        s -= log2(((double)counts[codes[i]] + 1.0) / (total + K));
    }
    *bits = n > 0 ? s / (double)n : 0.0;
    return 0;
}

static double hz_to_mel(double f) { return 2595.0 * log10(1.0 + f / 700.0); }
static double mel_to_hz(double m) { return 700.0 * (pow(10.0, m / 2595.0) - 1.0); }

void jb_eval_mel_filterbank(int sr, int n_fft, int n_mels, float *fb) {
    int B = n_fft / 2 + 1;
    double top = hz_to_mel(sr / 2.0);
    memset(fb, 0, sizeof(float) * (size_t)n_mels * B);
    for (int m = 0; m < n_mels; m++) {
        double lo = mel_to_hz(top * m / (n_mels + 1));
        double c = mel_to_hz(top * (m + 1) / (n_mels + 1));
        double hi = mel_to_hz(top * (m + 2) / (n_mels + 1));
        for (int k = 0; k < B; k++) {
            double f = (double)k * sr / n_fft, w = 0;
            if (f > lo && f <= c) w = (f - lo) / (c - lo);
            else if (f > c && f < hi) w = (hi - f) / (hi - c);
            fb[(size_t)m * B + k] = (float)w;
        }
    }
}

int jb_eval_logmel(const float *x, int64_t n, int sr, int n_mels, float **out, int *frames,
                   jb_err_t *err) {
    *out = NULL;
    *frames = 0;
    if (n_mels < 1) return jb_err_set(err, JB_EINVAL, "log-mel: %d bands", n_mels);
    jb_stft_t *st = jb_stft_new(JB_EVAL_MEL_NFFT, JB_EVAL_MEL_HOP, JB_EVAL_MEL_NFFT, n, err);
    if (!st) return -1;
    int F = jb_stft_frames(st), B = jb_stft_bins(st);
    double *spec = malloc(sizeof(double) * (size_t)F * 2 * B);
    float *fb = malloc(sizeof(float) * (size_t)n_mels * B);
    float *o = malloc(sizeof(float) * (size_t)F * n_mels);
    if (!spec || !fb || !o) {
        free(spec), free(fb), free(o);
        jb_stft_destroy(&st);
        return jb_err_set(err, JB_ENOMEM, "log-mel: out of memory (%d frames)", F);
    }
    jb_stft_forward(st, spec, x);
    jb_eval_mel_filterbank(sr, JB_EVAL_MEL_NFFT, n_mels, fb);
    for (int f = 0; f < F; f++) {
        const double *re = spec + (size_t)f * 2 * B, *im = re + B;
        for (int m = 0; m < n_mels; m++) {
            const float *w = fb + (size_t)m * B;
            double e = 0;
            for (int k = 0; k < B; k++)
                if (w[k] != 0) e += w[k] * (re[k] * re[k] + im[k] * im[k]);
            o[(size_t)f * n_mels + m] = (float)(10.0 * log10(e + 1e-10));
        }
    }
    free(spec);
    free(fb);
    jb_stft_destroy(&st);
    *out = o;
    *frames = F;
    return 0;
}

int jb_eval_logmel_stats(const float *x, int64_t n, int sr, int n_mels, double *feat,
                         jb_err_t *err) {
    float *lm;
    int F;
    if (jb_eval_logmel(x, n, sr, n_mels, &lm, &F, err)) return -1;
    for (int m = 0; m < n_mels; m++) {
        double s = 0, ss = 0;
        for (int f = 0; f < F; f++) s += lm[(size_t)f * n_mels + m];
        double mean = s / F;
        for (int f = 0; f < F; f++) {
            double d = lm[(size_t)f * n_mels + m] - mean;
            ss += d * d;
        }
        feat[m] = mean;
        feat[n_mels + m] = sqrt(ss / F);
    }
    free(lm);
    return 0;
}

struct jb_eval_centroids {
    int C, D;
    double *mu;     // (D) training mean
    double *sd;     // (D) training standard deviation (1 where 0)
    double *cen;    // (C, D) centroids of the standardised features
    int *count;     // (C) training items a class
};

void jb_eval_centroids_destroy(jb_eval_centroids_t **c_p) {
    if (!c_p || !*c_p) return;
    jb_eval_centroids_t *c = *c_p;
    free(c->mu);
    free(c->sd);
    free(c->cen);
    free(c->count);
    free(c);
    *c_p = NULL;
}

jb_eval_centroids_t *jb_eval_centroids_fit(const double *feats, const int *labels, int N, int D,
                                           int C, jb_err_t *err) {
    if (N < 1 || D < 1 || C < 1) {
        jb_err_set(err, JB_EINVAL, "centroids: %d items, %d features, %d classes", N, D, C);
        return NULL;
    }
    for (int i = 0; i < N; i++)
        if (labels[i] < 0 || labels[i] >= C) {
            jb_err_set(err, JB_EINVAL, "centroids: item %d has class %d, outside [0, %d)", i,
                       labels[i], C);
            return NULL;
        }
    jb_eval_centroids_t *c = calloc(1, sizeof *c);
    if (!c) goto oom;
    c->C = C, c->D = D;
    c->mu = calloc((size_t)D, sizeof(double));
    c->sd = calloc((size_t)D, sizeof(double));
    c->cen = calloc((size_t)C * D, sizeof(double));
    c->count = calloc((size_t)C, sizeof(int));
    if (!c->mu || !c->sd || !c->cen || !c->count) goto oom;
    for (int d = 0; d < D; d++) {
        double s = 0, ss = 0;
        for (int i = 0; i < N; i++) s += feats[(size_t)i * D + d];
        double m = s / N;
        for (int i = 0; i < N; i++) {
            double e = feats[(size_t)i * D + d] - m;
            ss += e * e;
        }
        c->mu[d] = m;
        c->sd[d] = ss > 0 ? sqrt(ss / N) : 1.0;
    }
    for (int i = 0; i < N; i++) {
        c->count[labels[i]]++;
        for (int d = 0; d < D; d++)
            c->cen[(size_t)labels[i] * D + d] += (feats[(size_t)i * D + d] - c->mu[d]) / c->sd[d];
    }
    for (int k = 0; k < C; k++)
        for (int d = 0; d < D && c->count[k]; d++) c->cen[(size_t)k * D + d] /= c->count[k];
    return c;
oom:
    jb_eval_centroids_destroy(&c);
    jb_err_set(err, JB_ENOMEM, "centroids: out of memory");
    return NULL;
}

int jb_eval_centroids_predict(const jb_eval_centroids_t *c, const double *feat) {
    int best = -1;
    double bd = INFINITY;
    for (int k = 0; k < c->C; k++) {
        if (!c->count[k]) continue;
        double s = 0;
        for (int d = 0; d < c->D; d++) {
            double e = (feat[d] - c->mu[d]) / c->sd[d] - c->cen[(size_t)k * c->D + d];
            s += e * e;
        }
        if (s < bd) bd = s, best = k;
    }
    return best;
}

int jb_eval_spectrogram_png(const char *path, const float *spec, int frames, int n_mels,
                            int scale, double range_db, jb_err_t *err) {
    if (frames < 1 || n_mels < 1 || scale < 1 || !(range_db > 0))
        return jb_err_set(err, JB_EINVAL, "%s: spectrogram %dx%d, scale %d, range %g dB", path,
                          frames, n_mels, scale, range_db);
    int w = frames, h = n_mels * scale;
    uint8_t *pix = malloc((size_t)w * h);
    if (!pix) return jb_err_set(err, JB_ENOMEM, "%s: out of memory", path);
    float top = -INFINITY;
    for (int64_t i = 0; i < (int64_t)frames * n_mels; i++) top = spec[i] > top ? spec[i] : top;
    for (int y = 0; y < h; y++) {
        int m = n_mels - 1 - y / scale;
        for (int x = 0; x < w; x++) {
            double v = (spec[(size_t)x * n_mels + m] - (top - range_db)) / range_db;
            v = v < 0 ? 0 : v > 1 ? 1 : v;
            pix[(size_t)y * w + x] = (uint8_t)lrint(255.0 * (1.0 - v));
        }
    }
    int rc = jb_png_write_gray(path, pix, w, h, err);
    free(pix);
    return rc;
}
