// jb_music.h: musical figures of a song for jukebox-eval music (docs/default_model.md): how
// much of it has a clear pitch, how much of that lies on the equal-tempered semitones, how
// often the held pitch moves to another note (a tune, not a drone), how often notes start, whether a narrow spectral line runs through it, and how monotonic a
// lyrics alignment is. The pitch tracker and the onset detector are aubio's (libaubio).
//
//   jb_music_stats_t st = {0};
//   jb_music_analyse(x, n, 44100, &st, &err);       // adds one song's frames to st
//   double clear = (double)st.pitched / st.loud, tuned = (double)st.in_tune / st.pitched;
//   double line = jb_music_line_db(x, n, 44100, 11025.0);   // dB over the local median
//
// Definitions (JB_MUSIC_* below):
//   Frames: hops of 512 samples (11.6 ms at 44.1 kHz), analysed by aubio's "yinfast" pitch
//   tracker (YIN; its confidence is 1 - the minimum of the cumulative mean normalised
//   difference) with a 2048-sample window. A frame is loud when its RMS is within 30 dB of the
//   song's loudest frame and above -60 dBFS. A loud frame has a clear pitch when aubio's
//   confidence is at least 0.8 and the pitch is within 60-2000 Hz; it is in tune when that
//   pitch is within 25 cents of a semitone of 12-tone equal temperament with A4 = 440 Hz
//   (by chance, for pitches spread evenly, 50 %).
//   Note changes: a held note is a run of at least JB_MUSIC_NOTE_FRAMES consecutive loud
//   frames with a clear pitch on the same semitone (the pitch rounded to the nearest one);
//   a change is a held note on another semitone than the song's previous held note. A tune
//   of eight notes in two seconds gives 7 (3.5 a second); a drone (one note held, however
//   loud or in tune) gives 0, and so does one note repeated.
//   Onsets: aubio's default ("hfc") onset detector, same window and hop, its default
//   threshold, at least 50 ms apart; the rate is onsets / seconds.
//   Line: the mean power spectrum (Hann window of 4096, hop 2048) of the song; the largest
//   power within +-20 Hz of freq over the median power of the bins within +-600 Hz outside
//   that, in dB. A steady sine at freq under noise gives tens of dB; noise or music without
//   a line at freq gives a few dB.
//   Alignment monotonicity: Spearman's rank correlation (average ranks for ties) between a
//   frame's index and the lyric position it attends to most (the argmax over characters),
//   over the frames whose attention is not all zero.
//
// Thread rules: reentrant (every call makes its own aubio objects).
#ifndef JB_MUSIC_H
#define JB_MUSIC_H

#include <stdint.h>

#include "jb_err.h"

#define JB_MUSIC_HOP 512
#define JB_MUSIC_WIN 2048
#define JB_MUSIC_LOUD_DB 30.0        // within this of the loudest frame
#define JB_MUSIC_FLOOR_DBFS (-60.0)  // and above this
#define JB_MUSIC_CONFIDENCE 0.8
#define JB_MUSIC_FMIN 60.0
#define JB_MUSIC_FMAX 2000.0
#define JB_MUSIC_TUNE_CENTS 25.0
#define JB_MUSIC_NOTE_FRAMES 4       // 46 ms at 44.1 kHz: a held note, not a glide

typedef struct {
    int64_t frames;    // analysed frames
    int64_t loud;      // loud frames
    int64_t pitched;   // loud frames with a clear pitch
    int64_t in_tune;   // of those, within JB_MUSIC_TUNE_CENTS of a semitone
    int64_t note_changes;   // held notes on another semitone than the one before
    int64_t onsets;
    double seconds;
} jb_music_stats_t;

// x: (n) mono at sr Hz, n >= JB_MUSIC_WIN. Adds the song's counts to *acc. -1 + err on a
// bad size or when aubio cannot be set up.
int jb_music_analyse(const float *x, int64_t n, int sr, jb_music_stats_t *acc, jb_err_t *err);

// x: (n), n >= 4096. The line figure at freq Hz (0 < freq < sr / 2 - 600), in dB; NAN on a
// bad size or out of memory.
double jb_music_line_db(const float *x, int64_t n, int sr, double freq);

// a, b: (n). Spearman's rank correlation; NAN when n < 2 or either has no spread.
double jb_music_spearman(const double *a, const double *b, int n);

// att: (n_frames, n_chars) attention weights (any scale, >= 0). The alignment monotonicity
// above; NAN when fewer than 2 frames attend or the attended positions do not vary.
double jb_music_alignment_rank(const double *att, int n_frames, int n_chars);

// The same frames: how far the attended position travels, (last - first + 1) / n_chars over
// the attending frames' most attended characters (*first, *last: those positions; may be
// NULL); 0 when no frame attends. A monotonic alignment that stays on the first words has
// a rank correlation near 1 and a small span: singing the lyrics needs both.
double jb_music_alignment_span(const double *att, int n_frames, int n_chars, int *first,
                               int *last);

#endif
