// jb_stft.h: the short-time Fourier transform of torch.stft as the reference's spectral
// losses call it (utils/audio_utils.py), and its adjoint for the backward pass.
//
//   S = torch.stft(x, n_fft, hop, win_length=w, window=hann_window(w))  on a mono (T) signal
//   * window: periodic Hann of length w, 0.5 - 0.5 cos(2 pi n / w), zero-padded on both sides
//     to n_fft (left = (n_fft - w) / 2);
//   * center=True: the signal is padded by n_fft/2 on both ends with REFLECT padding
//     (x[-i] = x[i], x[T-1+i] = x[T-1-i]); frames = 1 + T / hop, frame f starts at f*hop of
//     the padded signal;
//   * one-sided: bins 0..n_fft/2; not normalised: X[f, k] = sum_n frame[n] win[n] e^{-2 pi i k n / n_fft}.
//
// Computed in double: for a power-of-two n_fft by an in-place radix-2 FFT per frame; for any
// other size as a direct DFT, frames (F, w) times a basis (w, 2B) of windowed cosines and
// negated sines through cblas_dgemm (built once per plan). The backward is the adjoint of
// each step (the inverse-direction transform, the window, the reflect padding).
//
// Thread rules: a plan owns its scratch: one thread at a time per plan.
// Ownership: jb_stft_new allocates, jb_stft_destroy frees (and NULLs the pointer).
#ifndef JB_STFT_H
#define JB_STFT_H

#include <stdint.h>

#include "jb_err.h"

typedef struct jb_stft jb_stft_t;   // opaque

// A plan for signals of length T. Errors: w > n_fft, hop < 1, n_fft/2 >= T (reflect
// padding needs pad < T, as torch requires).
jb_stft_t *jb_stft_new(int n_fft, int hop, int win, int64_t T, jb_err_t *err);
void jb_stft_destroy(jb_stft_t **st_p);

int jb_stft_frames(const jb_stft_t *st);   // F = 1 + T / hop
int jb_stft_bins(const jb_stft_t *st);     // B = n_fft / 2 + 1

// spec: (F, 2B) rows [re_0..re_{B-1}, im_0..im_{B-1}] of the signal x: (T).
void jb_stft_forward(jb_stft_t *st, double *spec, const float *x);
// dx: (T) += the gradient given dspec: (F, 2B) (the adjoint of jb_stft_forward).
void jb_stft_backward(jb_stft_t *st, float *dx, const double *dspec);

// mag: (F, B) = sqrt(re² + im²) of spec: (F, 2B).
void jb_stft_magnitude(const jb_stft_t *st, double *mag, const double *spec);

#endif
