// jb_stft.c: direct-DFT STFT (torch.stft semantics) and its adjoint.
#include "jb_stft.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct jb_stft {
    int n_fft, hop, win, left, F, B;
    int64_t T;
    int fft;          // n_fft a power of two: radix-2 FFT per frame; else the DFT basis
    double *basis;    // DFT: (win, 2B): win[m] cos(2 pi k (left+m) / n_fft), -win[m] sin(...)
    double *frames;   // DFT: (F, win) scratch
    double *window;   // FFT: (win) periodic Hann
    double *tw;       // FFT: (n_fft) cos, sin of 2 pi j / n_fft for j < n_fft / 2
    int *rev;         // FFT: (n_fft) bit reversal
    double *bre, *bim;   // FFT: (n_fft) scratch
};

// In-place iterative radix-2 FFT, X[k] = sum_n x[n] e^{-2 pi i k n / N}.
static void fft(const jb_stft_t *st, double *re, double *im) {
    int n = st->n_fft;
    for (int i = 0; i < n; i++) {
        int j = st->rev[i];
        if (j > i) {
            double t = re[i]; re[i] = re[j]; re[j] = t;
            t = im[i]; im[i] = im[j]; im[j] = t;
        }
    }
    for (int len = 2; len <= n; len <<= 1) {
        int half = len / 2, step = n / len;
        for (int i = 0; i < n; i += len)
            for (int j = 0; j < half; j++) {
                double wr = st->tw[2 * j * step], wi = -st->tw[2 * j * step + 1];
                int a = i + j, b = a + half;
                double xr = re[b] * wr - im[b] * wi, xi = re[b] * wi + im[b] * wr;
                re[b] = re[a] - xr, im[b] = im[a] - xi;
                re[a] += xr, im[a] += xi;
            }
    }
}

jb_stft_t *jb_stft_new(int n_fft, int hop, int win, int64_t T, jb_err_t *err) {
    if (n_fft < 2 || hop < 1 || win < 1 || win > n_fft) {
        jb_err_set(err, JB_EINVAL, "stft: bad sizes n_fft %d hop %d window %d", n_fft, hop, win);
        return NULL;
    }
    if (n_fft / 2 >= T) {
        jb_err_set(err, JB_EINVAL, "stft: reflect padding %d needs a signal longer than that, got %lld",
                   n_fft / 2, (long long)T);
        return NULL;
    }
    jb_stft_t *st = calloc(1, sizeof *st);
    if (!st) {
        jb_err_set(err, JB_ENOMEM, "stft: out of memory");
        return NULL;
    }
    st->n_fft = n_fft, st->hop = hop, st->win = win, st->T = T;
    st->left = (n_fft - win) / 2;
    st->F = (int)(1 + T / hop);
    st->B = n_fft / 2 + 1;
    st->fft = (n_fft & (n_fft - 1)) == 0;
    if (st->fft) {
        st->window = malloc(sizeof(double) * (size_t)win);
        st->tw = malloc(sizeof(double) * (size_t)n_fft);
        st->rev = malloc(sizeof(int) * (size_t)n_fft);
        st->bre = malloc(sizeof(double) * (size_t)n_fft);
        st->bim = malloc(sizeof(double) * (size_t)n_fft);
        if (!st->window || !st->tw || !st->rev || !st->bre || !st->bim) {
            jb_stft_destroy(&st);
            jb_err_set(err, JB_ENOMEM, "stft: out of memory");
            return NULL;
        }
        for (int m = 0; m < win; m++) st->window[m] = 0.5 - 0.5 * cos(2.0 * M_PI * m / win);
        for (int j = 0; j < n_fft / 2; j++) {
            st->tw[2 * j] = cos(2.0 * M_PI * j / n_fft);
            st->tw[2 * j + 1] = sin(2.0 * M_PI * j / n_fft);
        }
        int bits = 0;
        while ((1 << bits) < n_fft) bits++;
        for (int i = 0; i < n_fft; i++) {
            int r = 0;
            for (int b = 0; b < bits; b++) r |= ((i >> b) & 1) << (bits - 1 - b);
            st->rev[i] = r;
        }
        return st;
    }
    st->basis = malloc(sizeof(double) * (size_t)win * 2 * st->B);
    st->frames = malloc(sizeof(double) * (size_t)st->F * win);
    if (!st->basis || !st->frames) {
        jb_stft_destroy(&st);
        jb_err_set(err, JB_ENOMEM, "stft: out of memory");
        return NULL;
    }
    int B = st->B;
    for (int m = 0; m < win; m++) {
        double w = 0.5 - 0.5 * cos(2.0 * M_PI * m / win);
        int64_t n = st->left + m;
        for (int k = 0; k < B; k++) {
            double ang = 2.0 * M_PI * (double)((k * n) % n_fft) / n_fft;
            st->basis[(size_t)m * 2 * B + k] = w * cos(ang);
            st->basis[(size_t)m * 2 * B + B + k] = -w * sin(ang);
        }
    }
    return st;
}

void jb_stft_destroy(jb_stft_t **st_p) {
    if (!st_p || !*st_p) return;
    free((*st_p)->basis);
    free((*st_p)->frames);
    free((*st_p)->window), free((*st_p)->tw), free((*st_p)->rev);
    free((*st_p)->bre), free((*st_p)->bim);
    free(*st_p);
    *st_p = NULL;
}

int jb_stft_frames(const jb_stft_t *st) { return st->F; }
int jb_stft_bins(const jb_stft_t *st) { return st->B; }

// Index into x of padded position i (reflect padding of n_fft/2).
static int64_t src_index(const jb_stft_t *st, int64_t i) {
    int64_t j = i - st->n_fft / 2;
    if (j < 0) j = -j;
    if (j >= st->T) j = 2 * (st->T - 1) - j;
    return j;
}

void jb_stft_forward(jb_stft_t *st, double *spec, const float *x) {
    if (st->fft) {
        int n = st->n_fft, B = st->B;
        for (int f = 0; f < st->F; f++) {
            memset(st->bre, 0, sizeof(double) * n);
            memset(st->bim, 0, sizeof(double) * n);
            for (int m = 0; m < st->win; m++)
                st->bre[st->left + m] =
                    x[src_index(st, (int64_t)f * st->hop + st->left + m)] * st->window[m];
            fft(st, st->bre, st->bim);
            memcpy(spec + (size_t)f * 2 * B, st->bre, sizeof(double) * B);
            memcpy(spec + (size_t)f * 2 * B + B, st->bim, sizeof(double) * B);
        }
        return;
    }
    for (int f = 0; f < st->F; f++)
        for (int m = 0; m < st->win; m++)
            st->frames[(size_t)f * st->win + m] =
                x[src_index(st, (int64_t)f * st->hop + st->left + m)];
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, st->F, 2 * st->B, st->win, 1.0,
                st->frames, st->win, st->basis, 2 * st->B, 0.0, spec, 2 * st->B);
}

void jb_stft_backward(jb_stft_t *st, float *dx, const double *dspec) {
    if (st->fft) {
        // d frame[n] = win[n] Re(sum_k (dre_k + i dim_k) e^{+2 pi i k n / N})
        //            = win[n] Re(FFT(conj(Z))[n]), Z = dre + i dim on bins < B, 0 above
        int n = st->n_fft, B = st->B;
        for (int f = 0; f < st->F; f++) {
            memset(st->bre, 0, sizeof(double) * n);
            memset(st->bim, 0, sizeof(double) * n);
            for (int k = 0; k < B; k++) {
                st->bre[k] = dspec[(size_t)f * 2 * B + k];
                st->bim[k] = -dspec[(size_t)f * 2 * B + B + k];
            }
            fft(st, st->bre, st->bim);
            for (int m = 0; m < st->win; m++)
                dx[src_index(st, (int64_t)f * st->hop + st->left + m)] +=
                    (float)(st->bre[st->left + m] * st->window[m]);
        }
        return;
    }
    // dframes (F, win) = dspec (F, 2B) · basisᵀ
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, st->F, st->win, 2 * st->B, 1.0, dspec,
                2 * st->B, st->basis, 2 * st->B, 0.0, st->frames, st->win);
    for (int f = 0; f < st->F; f++)
        for (int m = 0; m < st->win; m++)
            dx[src_index(st, (int64_t)f * st->hop + st->left + m)] +=
                (float)st->frames[(size_t)f * st->win + m];
}

void jb_stft_magnitude(const jb_stft_t *st, double *mag, const double *spec) {
    int B = st->B;
    for (int f = 0; f < st->F; f++)
        for (int k = 0; k < B; k++) {
            double re = spec[(size_t)f * 2 * B + k], im = spec[(size_t)f * 2 * B + B + k];
            mag[(size_t)f * B + k] = sqrt(re * re + im * im);
        }
}
