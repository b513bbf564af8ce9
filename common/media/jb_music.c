// jb_music.c: see jb_music.h.
#include "jb_music.h"

#include <aubio/aubio.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

int jb_music_analyse(const float *x, int64_t n, int sr, jb_music_stats_t *acc, jb_err_t *err) {
    if (n < JB_MUSIC_WIN || sr <= 0)
        return jb_err_set(err, JB_EINVAL, "music: %lld samples at %d Hz: need at least %d",
                          (long long)n, sr, JB_MUSIC_WIN);
    int64_t nf = n / JB_MUSIC_HOP;
    aubio_pitch_t *pt = new_aubio_pitch("yinfast", JB_MUSIC_WIN, JB_MUSIC_HOP, (uint_t)sr);
    aubio_onset_t *on = new_aubio_onset("default", JB_MUSIC_WIN, JB_MUSIC_HOP, (uint_t)sr);
    fvec_t *in = new_fvec(JB_MUSIC_HOP), *po = new_fvec(1), *oo = new_fvec(1);
    float *f0 = malloc(sizeof(float) * (size_t)nf), *cf = malloc(sizeof(float) * (size_t)nf);
    double *rms = malloc(sizeof(double) * (size_t)nf);
    int rc = 0;
    if (!pt || !on || !in || !po || !oo || !f0 || !cf || !rms) {
        rc = jb_err_set(err, JB_ENOMEM, "music: aubio set-up failed (out of memory?)");
        goto done;
    }
    aubio_pitch_set_unit(pt, "Hz");
    aubio_pitch_set_silence(pt, -90.0f);   // loudness is judged below, per song
    aubio_onset_set_minioi_ms(on, 50.0f);
    double top = 0.0;
    int64_t onsets = 0;
    for (int64_t f = 0; f < nf; f++) {
        const float *h = x + f * JB_MUSIC_HOP;
        double s2 = 0.0;
        for (int i = 0; i < JB_MUSIC_HOP; i++) {
            in->data[i] = h[i];
            s2 += (double)h[i] * h[i];
        }
        rms[f] = sqrt(s2 / JB_MUSIC_HOP);
        if (rms[f] > top) top = rms[f];
        aubio_pitch_do(pt, in, po);
        f0[f] = po->data[0];
        cf[f] = aubio_pitch_get_confidence(pt);
        aubio_onset_do(on, in, oo);
        if (oo->data[0] != 0) onsets++;
    }
    // The tracker's output for hop f describes the window ending with it: the loudness of
    // a frame is that of the window's last hop (the hop just fed), as aubio's own silence
    // gate does.
    double gate = fmax(top * pow(10.0, -JB_MUSIC_LOUD_DB / 20.0),
                       pow(10.0, JB_MUSIC_FLOOR_DBFS / 20.0));
    // The note being held: its semitone and run length (0: none); the last held note's.
    long run_note = 0, held_note = 0;
    int run = 0;
    bool held_any = false;
    for (int64_t f = 0; f < nf; f++) {
        acc->frames++;
        bool pitched = false;
        double midi = 0.0;
        if (rms[f] >= gate && f * JB_MUSIC_HOP >= JB_MUSIC_WIN - JB_MUSIC_HOP) {
            acc->loud++;
            if (cf[f] >= JB_MUSIC_CONFIDENCE && f0[f] >= JB_MUSIC_FMIN && f0[f] <= JB_MUSIC_FMAX) {
                pitched = true;
                acc->pitched++;
                midi = 69.0 + 12.0 * log2(f0[f] / 440.0);
                if (fabs(midi - round(midi)) * 100.0 <= JB_MUSIC_TUNE_CENTS) acc->in_tune++;
            }
        }
        if (!pitched) {
            run = 0;
            continue;
        }
        long note = lround(midi);
        if (run && note == run_note) run++;
        else run_note = note, run = 1;
        if (run == JB_MUSIC_NOTE_FRAMES) {   // a held note begins
            if (held_any && note != held_note) acc->note_changes++;
            held_note = note, held_any = true;
        }
    }
    acc->onsets += onsets;
    acc->seconds += (double)n / sr;
done:
    if (pt) del_aubio_pitch(pt);
    if (on) del_aubio_onset(on);
    if (in) del_fvec(in);
    if (po) del_fvec(po);
    if (oo) del_fvec(oo);
    free(f0), free(cf), free(rms);
    return rc;
}

// In-place radix-2 FFT of (re, im), n a power of two.
static void fft(double *re, double *im, int n) {
    for (int i = 1, j = 0; i < n; i++) {
        int bit = n >> 1;
        for (; j & bit; bit >>= 1) j ^= bit;
        j ^= bit;
        if (i < j) {
            double t = re[i]; re[i] = re[j]; re[j] = t;
            t = im[i]; im[i] = im[j]; im[j] = t;
        }
    }
    for (int len = 2; len <= n; len <<= 1) {
        double a = -2.0 * M_PI / len;
        for (int i = 0; i < n; i += len)
            for (int k = 0; k < len / 2; k++) {
                double wr = cos(a * k), wi = sin(a * k);
                double ur = re[i + k], ui = im[i + k];
                double vr = re[i + k + len / 2] * wr - im[i + k + len / 2] * wi;
                double vi = re[i + k + len / 2] * wi + im[i + k + len / 2] * wr;
                re[i + k] = ur + vr, im[i + k] = ui + vi;
                re[i + k + len / 2] = ur - vr, im[i + k + len / 2] = ui - vi;
            }
    }
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double jb_music_line_db(const float *x, int64_t n, int sr, double freq) {
    enum { N = 4096, H = 2048, B = N / 2 + 1 };
    if (n < N || sr <= 0 || !(freq > 0 && freq < sr / 2.0 - 600.0)) return NAN;
    double *re = malloc(sizeof(double) * N), *im = malloc(sizeof(double) * N);
    double *p = calloc(B, sizeof(double)), *nb = malloc(sizeof(double) * B);
    double out = NAN;
    if (!re || !im || !p || !nb) goto done;
    for (int64_t s = 0; s + N <= n; s += H) {
        for (int i = 0; i < N; i++) {
            re[i] = x[s + i] * (0.5 - 0.5 * cos(2.0 * M_PI * i / N));
            im[i] = 0.0;
        }
        fft(re, im, N);
        for (int k = 0; k < B; k++) p[k] += re[k] * re[k] + im[k] * im[k];
    }
    double df = (double)sr / N, peak = 0.0;
    int m = 0;
    for (int k = 0; k < B; k++) {
        double d = fabs(k * df - freq);
        if (d <= 20.0) peak = fmax(peak, p[k]);
        else if (d <= 600.0) nb[m++] = p[k];
    }
    if (m == 0) goto done;
    qsort(nb, (size_t)m, sizeof(double), cmp_double);
    double med = m % 2 ? nb[m / 2] : 0.5 * (nb[m / 2 - 1] + nb[m / 2]);
    out = 10.0 * log10((peak + 1e-30) / (med + 1e-30));
done:
    free(re), free(im), free(p), free(nb);
    return out;
}

typedef struct {
    double v;
    int i;
} ranked_t;

static int cmp_ranked(const void *a, const void *b) {
    const ranked_t *x = a, *y = b;
    return (x->v > y->v) - (x->v < y->v);
}

// r: (n) average ranks (1-based) of a.
static int ranks(const double *a, int n, double *r) {
    ranked_t *t = malloc(sizeof(ranked_t) * (size_t)n);
    if (!t) return -1;
    for (int i = 0; i < n; i++) t[i] = (ranked_t){a[i], i};
    qsort(t, (size_t)n, sizeof *t, cmp_ranked);
    for (int i = 0; i < n;) {
        int j = i;
        while (j + 1 < n && t[j + 1].v == t[i].v) j++;
        for (int k = i; k <= j; k++) r[t[k].i] = 0.5 * (i + j) + 1.0;
        i = j + 1;
    }
    free(t);
    return 0;
}

double jb_music_spearman(const double *a, const double *b, int n) {
    if (n < 2) return NAN;
    double *ra = malloc(sizeof(double) * (size_t)n), *rb = malloc(sizeof(double) * (size_t)n);
    double out = NAN;
    if (!ra || !rb || ranks(a, n, ra) || ranks(b, n, rb)) goto done;
    double ma = 0, mb = 0;
    for (int i = 0; i < n; i++) ma += ra[i], mb += rb[i];
    ma /= n, mb /= n;
    double sab = 0, saa = 0, sbb = 0;
    for (int i = 0; i < n; i++) {
        sab += (ra[i] - ma) * (rb[i] - mb);
        saa += (ra[i] - ma) * (ra[i] - ma);
        sbb += (rb[i] - mb) * (rb[i] - mb);
    }
    if (saa > 0 && sbb > 0) out = sab / sqrt(saa * sbb);
done:
    free(ra), free(rb);
    return out;
}

// The most attended character of one alignment frame (the first of equals), or -1 when the
// frame attends nowhere (all weights 0).
static int frame_argmax(const double *row, int n_chars) {
    if (n_chars < 1) return -1;
    int best = 0;
    for (int c = 1; c < n_chars; c++)
        if (row[c] > row[best]) best = c;
    return row[best] > 0 ? best : -1;
}

double jb_music_alignment_span(const double *att, int n_frames, int n_chars, int *first,
                               int *last) {
    int lo = -1, hi = -1;
    for (int f = 0; f < n_frames; f++) {
        int best = frame_argmax(att + (size_t)f * n_chars, n_chars);
        if (best < 0) continue;
        if (lo < 0 || best < lo) lo = best;
        if (best > hi) hi = best;
    }
    if (first) *first = lo;
    if (last) *last = hi;
    return lo < 0 ? 0.0 : (double)(hi - lo + 1) / n_chars;
}

double jb_music_alignment_rank(const double *att, int n_frames, int n_chars) {
    if (n_frames < 2 || n_chars < 1) return NAN;
    double *t = malloc(sizeof(double) * (size_t)n_frames);
    double *pos = malloc(sizeof(double) * (size_t)n_frames);
    double out = NAN;
    if (!t || !pos) goto done;
    int m = 0;
    for (int f = 0; f < n_frames; f++) {
        int best = frame_argmax(att + (size_t)f * n_chars, n_chars);
        if (best < 0) continue;
        t[m] = f, pos[m] = best, m++;
    }
    out = jb_music_spearman(t, pos, m);
done:
    free(t), free(pos);
    return out;
}
