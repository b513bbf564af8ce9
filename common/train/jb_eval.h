// jb_eval.h: the figures jukebox-eval reports on a trained model (docs/default_model.md):
// signal-to-noise ratio and spectral convergence of a reconstruction, the unigram baseline of
// a code stream, log-mel statistics of a song and a nearest-centroid classifier over them.
//
//   double snr = jb_eval_snr_db(x, xh, n);                        // dB
//   double num, den;
//   jb_eval_spec_conv(x, xh, n, 2048, 512, &num, &den, &err);     // sc = num / den
//   double h = jb_eval_unigram_entropy(counts, K);                // bits, add-one smoothed
//   double feat[2 * 64];
//   jb_eval_logmel_stats(x, n, 44100, 64, feat, &err);            // per-band mean, std
//   jb_eval_centroids_t *c = jb_eval_centroids_fit(feats, labels, N, D, C, &err);
//   int g = jb_eval_centroids_predict(c, feat);
//
// Definitions:
//   SNR = 10 log10(Σ x² / Σ (x − x̂)²) in dB (+inf when x̂ = x, −inf when x = 0 ≠ x̂).
//   Spectral convergence = ‖|S(x)| − |S(x̂)|‖_F / ‖|S(x)|‖_F with S the STFT of jb_stft.h
//   (periodic Hann window of n_fft samples, hop, centred, reflect-padded, one-sided).
//   Unigram baseline: p_k = (c_k + 1) / (Σc + K) (add-one smoothing over K codes); its
//   entropy −Σ p log2 p, and the cross-entropy of a code stream under it, both in bits.
//   Log-mel: power spectrum |S|² (n_fft 2048, hop 512) through n_mels triangular filters
//   on the HTK mel scale (mel = 2595 log10(1 + f/700)) from 0 Hz to sr/2, peak 1, then
//   10 log10(E + 1e-10); the features are every band's mean over frames, then every
//   band's standard deviation (population), 2 · n_mels values.
//   Classifier: every feature standardised by the training set's mean and standard
//   deviation (a constant feature gets deviation 1), one centroid a class (the mean of its
//   standardised training features), prediction = the nearest centroid (Euclidean; the
//   lowest class on ties). A class without training items is never predicted.
//
// Thread rules: functions are reentrant; a fitted classifier is immutable (share it).
// Ownership: jb_eval_centroids_fit allocates, jb_eval_centroids_destroy frees and NULLs.
#ifndef JB_EVAL_H
#define JB_EVAL_H

#include <stdint.h>

#include "jb_err.h"

#define JB_EVAL_MEL_NFFT 2048
#define JB_EVAL_MEL_HOP 512

// x, xh: (n). The sums Σx² and Σ(x − x̂)², for aggregating over several signals.
void jb_eval_sq_sums(const float *x, const float *xh, int64_t n, double *signal, double *noise);
// 10 log10(signal / noise) with the edge cases above.
double jb_eval_snr_from_sums(double signal, double noise);
// x, xh: (n). SNR in dB.
double jb_eval_snr_db(const float *x, const float *xh, int64_t n);

// x, xh: (n), n > n_fft / 2. *num = ‖|S(x)| − |S(x̂)|‖_F, *den = ‖|S(x)|‖_F (window n_fft).
// -1 + err on a bad size or out of memory.
int jb_eval_spec_conv(const float *x, const float *xh, int64_t n, int n_fft, int hop,
                      double *num, double *den, jb_err_t *err);

// counts: (K) code counts. Entropy (bits) of the add-one smoothed distribution.
double jb_eval_unigram_entropy(const int64_t *counts, int K);
// counts: (K); codes: (n) in [0, K). Mean −log2 p(code) under the smoothed distribution;
// -1 + err (JB_EINVAL) for a code out of range (named by position), *bits untouched.
int jb_eval_unigram_xent(const int64_t *counts, int K, const int32_t *codes, int64_t n,
                         double *bits, jb_err_t *err);

// fb: (n_mels, n_fft / 2 + 1) written: the triangular filters described above.
void jb_eval_mel_filterbank(int sr, int n_fft, int n_mels, float *fb);
// x: (n) mono at sr Hz, n > JB_EVAL_MEL_NFFT / 2. *out: (*frames, n_mels) log-mel energies
// in dB, malloc'd (caller frees). -1 + err.
int jb_eval_logmel(const float *x, int64_t n, int sr, int n_mels, float **out, int *frames,
                   jb_err_t *err);
// x: (n). feat: (2 · n_mels) written: per-band mean, then per-band std of jb_eval_logmel.
int jb_eval_logmel_stats(const float *x, int64_t n, int sr, int n_mels, double *feat,
                         jb_err_t *err);

typedef struct jb_eval_centroids jb_eval_centroids_t;   // opaque
// feats: (N, D); labels: (N) in [0, C). NULL + err for a label out of range, N < 1, D < 1,
// C < 1 or out of memory.
jb_eval_centroids_t *jb_eval_centroids_fit(const double *feats, const int *labels, int N, int D,
                                           int C, jb_err_t *err);
void jb_eval_centroids_destroy(jb_eval_centroids_t **c_p);
// feat: (D). The predicted class, or -1 when no class has training items.
int jb_eval_centroids_predict(const jb_eval_centroids_t *c, const double *feat);

// spec: (frames, n_mels) dB values (jb_eval_logmel). A picture (width frames, height
// n_mels · scale, low bands at the bottom), dark = loud, over the top `range_db` dB of the
// spectrogram, written as a grayscale PNG. -1 + err.
int jb_eval_spectrogram_png(const char *path, const float *spec, int frames, int n_mels,
                            int scale, double range_db, jb_err_t *err);

#endif
