// jb_trainer.h: the reusable parts of jukebox-train: a data set of audio files with an
// optional labels file, deterministic random windows, the reference's bandwidth of a data
// set, artist/genre vocabularies from the labels, a fresh prior model file from
// hyper-parameters, a CSV of metrics per step and a plot of its curves as a PNG.
//
//   jb_trainer_data_t *d = jb_trainer_data_load("data/synth", 44100, &err);
//   jb_trainer_data_window(d, seed, draw, T, x, &item, &offset);   // x: (T)
//   jb_trainer_bandwidth(d, T, seed, &l1, &l2, &spec, &err);
//   jb_trainer_csv_t *c = jb_trainer_csv_open("run/metrics.csv", names, n, resume_step, &err);
//   jb_trainer_csv_row(c, step, values, &err);
//   jb_trainer_plot("run/metrics.csv", "run/metrics.png", NULL, 0, &err);
//
// Data layout: DIR/audio/<name>.<ext> (or, without DIR/audio, the audio files of DIR itself),
// every format libsndfile reads, mixed down to mono and resampled to the model's rate; the
// optional DIR/labels.jsonl has one JSON object a line with "file" (relative to DIR) or "id"
// (file name without extension), "artist", "genre", "lyrics". Items are sorted by file name so
// a data set reads the same on every machine.
//
// Thread rules: a loaded data set is immutable (share it read-only); the CSV writer belongs to
// one thread. Ownership: _load/_open return objects freed by their _destroy/_close; strings
// inside items belong to the data set.
#ifndef JB_TRAINER_H
#define JB_TRAINER_H

#include <jansson.h>
#include <stdint.h>

#include "jb_err.h"
#include "jb_labels.h"

typedef struct {
    char *path;        // audio file
    char *id;          // file name without directory and extension
    char *artist;      // NULL without a label line
    char *genre;       // NULL without a label line
    char *lyrics;      // NULL without a label line
    float *x;          // (n) mono samples at the data set's rate
    int64_t n;
} jb_trainer_item_t;

typedef struct {
    jb_trainer_item_t *items;   // (n_items), sorted by path
    int n_items;
    int sr;
    int labelled;               // items with a label line
    int64_t total;              // samples of all items
} jb_trainer_data_t;

// Reads every audio file of DIR/audio (or DIR) at sr Hz, and DIR/labels.jsonl when present.
// Errors: JB_ENOENT (no directory, no audio file), JB_EFORMAT (a bad label line, named by
// file and line; a label line naming no audio file), audio decoding errors.
jb_trainer_data_t *jb_trainer_data_load(const char *dir, int sr, jb_err_t *err);
void jb_trainer_data_destroy(jb_trainer_data_t **d_p);

// Window number `draw` of T samples, a pure function of (seed, draw): an item chosen with
// probability proportional to its length, a start uniform in [0, n - T] (items shorter than
// T: start 0, zero padded). x: (T) written; item, offset (may be NULL) receive where it is.
void jb_trainer_data_window(const jb_trainer_data_t *d, uint64_t seed, uint64_t draw, int64_t T,
                            float *x, int *item, int64_t *offset);

// The reference's calculate_bandwidth over n_windows windows of T samples (draws 0..n-1 of
// a stream of seed): l1 = mean |x|, l2 = var x, spec = mean over windows of the Frobenius
// norm of |STFT| (n_fft 1024, hop 256, window 1024, as hps.n_fft/hop_length/window_size).
int jb_trainer_bandwidth(const jb_trainer_data_t *d, int64_t T, int n_windows, uint64_t seed,
                         double *l1, double *l2, double *spec, jb_err_t *err);

// Artist and genre vocabularies of the labels, keyed as the labeller of that version looks
// names up (jb_labels_artist_id / _genre_ids): v2 (JB_TEXT_V2) normalises (jb_labels_norm)
// and splits genres into words at '_', one id per word; v3 lower-cases (Python's str.lower)
// and keeps a genre whole. Ids from 1 in order of the sorted keys, 0 left for "unknown";
// empty names get no entry. JSON object texts {"name": id} (new strings, free()).
// *n_artists / *n_genres: the tables' rows (max id + 1).
int jb_trainer_vocabs(const jb_trainer_data_t *d, jb_text_vocab_t version, char **artists_json,
                      char **genres_json, int *n_artists, int *n_genres, jb_err_t *err);

// The label vector of one training window, as the reference's data set makes it
// (FilesAudioDataset.get_song_chunk → Labeller.get_label):
//   y = [total_length, offset, sample_length, artist, genre ids padded with -1 to
//        max_genre_words, the n_tokens lyric tokens of this window]
// with the window picked from the song's full_tokens by get_relevant_lyric_tokens(full,
// n_tokens, total_length, offset, sample_length) in double precision
// (jb_labels_lyric_window; lyrics shorter than n_tokens are left-padded with 0).
// y: (4 + max_genre_words + n_tokens) out; genres: (n_genres) ids, n_genres <= max_genre_words;
// full: (n_full) tokens (may be NULL when n_full is 0). Lengths in samples. -1 + err
// (JB_EINVAL) for values outside int32, too many genres, or an offset outside
// [0, total_length) with lyrics of n_tokens or more.
int jb_trainer_label(int64_t total_length, int64_t offset, int64_t sample_length, int32_t artist,
                     const int32_t *genres, int n_genres, int max_genre_words,
                     const int32_t *full, int n_full, int n_tokens, int32_t *y, jb_err_t *err);

// A fresh prior model file of the hyper-parameters hp (a complete prior dictionary with its
// "vqvae" entry) at path, written atomically: every tensor jb_train_prior_new loads, named as
// the reference, initialised as the reference (linear and embedding weights N(0, 0.02 ·
// init_scale), position embeddings N(0, 0.01), LayerNorm 1/0, biases 0, the Conditioner's
// convolutions as PyTorch's default), from a counter-based stream of seed. meta_keys/values:
// extra __metadata__ pairs (the "artists"/"genres" vocabularies), n_meta of them.
// Lyrics priors (use_tokens, with labels): the joint sequence (single_enc_dec: x_emb of
// n_vocab + l_bins rows, pos_emb of n_tokens + n_ctx) or the separate lyrics encoder
// (prime_prior.* of prime_width, scaled by prime_init_scale; prime_state_proj, prime_state_ln,
// prime_x_out; c_enc_kv in the layers of attn_func 6).
int jb_trainer_prior_init(const json_t *hp, uint64_t seed, const char *path,
                          const char *const *meta_keys, const char *const *meta_values,
                          int n_meta, jb_err_t *err);

// CSV of metrics: "step,<names...>" then one row a step. resume_step >= 0 keeps the rows of
// an existing file up to that step (a resumed run appends after them), < 0 starts anew.
typedef struct jb_trainer_csv jb_trainer_csv_t;
jb_trainer_csv_t *jb_trainer_csv_open(const char *path, const char *const *names, int n,
                                      int64_t resume_step, jb_err_t *err);
// values: (n) as given to _open. Flushed at each row.
int jb_trainer_csv_row(jb_trainer_csv_t *c, int64_t step, const double *values, jb_err_t *err);
void jb_trainer_csv_close(jb_trainer_csv_t **c_p);

// Plot of a metrics CSV: one panel a column (at most 8, the first ones), the curve of each
// column against the step, stacked top to bottom in the CSV's column order, each panel
// scaled to its own range (min at the bottom edge, max at the top), dotted gridlines at
// quarters; no text (the CSV has the numbers). Grayscale PNG (jb_png_write_gray).
// which: names of the columns to plot (at most 8), or NULL for the first ones; a name that is
// not in the CSV is skipped.
int jb_trainer_plot(const char *csv_path, const char *png_path, const char *const *which,
                    int n_which, jb_err_t *err);

#endif
