// jb_audio.h: audio files in and out of the VQ-VAE (libsndfile + libsoxr).
//
//   float *x; int64_t n; jb_audio_info_t info;
//   jb_audio_read("song.flac", 44100, &x, &n, &info, &err);      // mono, 44.1 kHz
//   jb_audio_write("out.wav", x, n, 44100, JB_AUDIO_AUTO, &err); // 16-bit PCM WAV
//   free(x);
//
// Reading: every format the installed libsndfile opens (WAV, FLAC, OGG/Vorbis, Opus,
// AIFF, ..., and MPEG layer III when libsndfile was built with mpg123, as Debian's 1.2
// is: jb_audio_can_read_mp3()). Samples come out as float in [-1, 1] (libsndfile's
// normalisation), channels are mixed down to mono by their mean, and the result is
// resampled to the requested rate with libsoxr at SOXR_HQ (20-bit precision, linear
// phase, passband to 91% of Nyquist). The resampled length is round(n * out / in).
// A file whose decoder delivers fewer frames than its header announced (a truncated
// FLAC, OGG or MP3, a WAV whose data chunk is cut short) is an error, not a short read.
//
// Writing: the format comes from the file name's extension (".wav", ".flac"; case
// ignored) or from an explicit jb_audio_format_t. WAV is 16-bit PCM by default (what
// the reference writes, and what every player takes), clipped to [-1, 1]; 32-bit float
// WAV on request (keeps values outside [-1, 1]). FLAC is 16-bit. The whole file is
// encoded in memory, then written to a temporary name in the same directory, fsync'd
// and renamed, so the output appears only complete; on any failure nothing is left.
// Path "-" writes the bytes to stdout (reading: "-" reads all of stdin).
//
// Errors (jb_err_t, message names the file): JB_ENOENT missing file, JB_EFORMAT corrupt,
// truncated or empty audio, JB_EUNSUP a format libsndfile cannot read or an extension
// we cannot write, JB_EIO read/write failure, JB_ENOMEM.
// Thread rules: reentrant; no global state. Ownership: *out from jb_audio_read is
// malloc'd and owned by the caller (free()).
#ifndef JB_AUDIO_H
#define JB_AUDIO_H

#include <stddef.h>
#include <stdint.h>

#include "jb_err.h"

typedef enum {
    JB_AUDIO_AUTO = 0,     // from the extension: .wav -> WAV_PCM16, .flac -> FLAC
    JB_AUDIO_WAV_PCM16,
    JB_AUDIO_WAV_FLOAT,
    JB_AUDIO_FLAC,         // 16-bit
} jb_audio_format_t;

// What the source file was (before mix-down and resampling).
typedef struct {
    int64_t frames;        // frames in the file
    int sample_rate;       // Hz
    int channels;
    char format[64];       // libsndfile's name of the major format, e.g. "FLAC (Free ...)"
} jb_audio_info_t;

// Reads path ("-" = stdin) to mono float32 at out_rate Hz (out_rate <= 0: keep the file's
// rate). *out: (*n) samples, malloc'd, caller frees. info may be NULL.
// 0 / -1 + err (see above); on failure *out is NULL and *n is 0.
int jb_audio_read(const char *path, int out_rate, float **out, int64_t *n,
                  jb_audio_info_t *info, jb_err_t *err);

// Same from bytes in memory; name is used in messages only.
int jb_audio_read_mem(const void *data, size_t len, const char *name, int out_rate,
                      float **out, int64_t *n, jb_audio_info_t *info, jb_err_t *err);

// x: (n) mono samples at sample_rate Hz, n >= 1. Writes path ("-" = stdout) in fmt
// (JB_AUDIO_AUTO: by extension; "-" with AUTO means WAV_PCM16). 0 / -1 + err.
int jb_audio_write(const char *path, const float *x, int64_t n, int sample_rate,
                   jb_audio_format_t fmt, jb_err_t *err);

// Format that jb_audio_write would use for path with JB_AUDIO_AUTO; -1 + err (JB_EUNSUP)
// for an extension we do not write. Lets a program refuse a bad -o before any work.
int jb_audio_format_for_path(const char *path, jb_audio_format_t *fmt, jb_err_t *err);

// Resamples x: (n) from in_rate to out_rate with libsoxr (SOXR_HQ). *out: (*out_n =
// round(n * out_rate / in_rate)) samples, malloc'd. Same rate: a copy. 0 / -1 + err.
int jb_audio_resample(const float *x, int64_t n, int in_rate, int out_rate, float **out,
                      int64_t *out_n, jb_err_t *err);

// 1 when the linked libsndfile lists an MPEG major format (reads MP3), else 0.
int jb_audio_can_read_mp3(void);

#endif
