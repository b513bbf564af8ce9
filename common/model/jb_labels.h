// jb_labels.h: artist/genre ids, the lyric-token window and the label vector of the
// reference (jukebox/data/artist_genre_processor.py, jukebox/data/labels.py,
// jukebox/utils/sample_utils.py get_starts).
//
//   v2 (5b, 5b_lyrics, upsamplers): artist id = table[norm(artist)], genre ids =
//      [table[w] for w in norm(genre).split('_')], norm = lower-case, every char
//      outside [a-z0-9] -> '_', runs of '_' collapsed, leading/trailing '_' stripped.
//   v3 (1b_lyrics): artist id = table[artist.lower()], genre ids = [table[genre.lower()]].
//   A name (or genre word) that is not in the table gives id 0 ("unknown") after a
//   WARN log line that names the nearest known names (edit distance), as the
//   reference prints a notice and uses 0. (The reference raises KeyError on an
//   unknown genre word; we use 0 and warn, like artists.)
//
//   label y = [total_length, offset, sample_length, artist_id,
//              genre ids padded with -1 to max_genre_words, lyric window (n_tokens)]
//
// Vocabularies live in the model file's __metadata__ as "artists" and "genres":
// JSON objects {"name": id, ...} with the names exactly as the reference's table
// loader keys them (lower-cased; several names may share an id). See docs/labels.md.
//
// Thread rules: a vocabulary is immutable after loading; share it read-only.
// Ownership: _new/_load return objects freed with jb_labels_vocab_destroy; strings and
// arrays returned as "new" are malloc'd and freed by the caller with free().
#ifndef JB_LABELS_H
#define JB_LABELS_H

#include <stddef.h>
#include <stdint.h>

#include "jb_err.h"
#include "jb_safetensors.h"
#include "jb_text.h"

typedef struct jb_labels_vocab jb_labels_vocab_t;   // opaque: name -> id

// From a JSON object text {"name": id, ...} (ids: integers >= 0). what names the
// source in errors ("model.safetensors: metadata 'artists'"). NULL + err on bad JSON,
// a non-integer or negative id, or out of memory.
jb_labels_vocab_t *jb_labels_vocab_from_json(const char *json_text, const char *what,
                                             jb_err_t *err);
// From an opened model file's __metadata__[key] (key "artists" or "genres"). NULL + err
// naming the file and key when it is missing (JB_EFORMAT) or malformed.
jb_labels_vocab_t *jb_labels_vocab_from_model(const jb_st_t *st, const char *key, jb_err_t *err);
// From the reference's id table file: lines "name;id", name lower-cased as Python's
// str.lower(), surrounding whitespace of the line stripped, a later line for the same
// name wins (a dict). Blank lines are skipped; any other line without exactly one ';'
// or with a bad id is an error naming the file and line.
jb_labels_vocab_t *jb_labels_vocab_load_ids(const char *path, jb_err_t *err);
void jb_labels_vocab_destroy(jb_labels_vocab_t **vocab_p);

int jb_labels_vocab_count(const jb_labels_vocab_t *vocab);
// Largest id (0 for an empty table); an embedding needs max_id + 1 rows.
int jb_labels_vocab_max_id(const jb_labels_vocab_t *vocab);
// 1 and *id when name (exact bytes) is present, else 0 (and *id untouched).
int jb_labels_vocab_find(const jb_labels_vocab_t *vocab, const char *name, int32_t *id);
// i-th entry in byte order of names, i in [0, count); borrowed name.
void jb_labels_vocab_at(const jb_labels_vocab_t *vocab, int i, const char **name, int32_t *id);
// The reference's reverse lookup (get_artist / get_genre of one id): every name with
// this id, sorted, joined with '_' ("beatles_the_beatles"). New string ("" when no name
// has the id), or NULL + err.
char *jb_labels_vocab_name(const jb_labels_vocab_t *vocab, int32_t id, jb_err_t *err);
// The JSON object text for __metadata__ (keys sorted). New string, or NULL + err.
char *jb_labels_vocab_to_json(const jb_labels_vocab_t *vocab, jb_err_t *err);
// Up to max names nearest to key by Levenshtein distance over bytes (ties: name
// order). Borrowed names into names[]; returns how many.
int jb_labels_vocab_nearest(const jb_labels_vocab_t *vocab, const char *key, const char **names,
                            int max);

// v2 norm(name). New string, or NULL + err (out of memory).
char *jb_labels_norm(const char *name, jb_err_t *err);

// Artist id (0 if absent, after a WARN naming the nearest known names). what: context
// for the log line ("job 7f3a"), may be NULL. -1 + err only for out of memory.
int jb_labels_artist_id(const jb_labels_vocab_t *artists, jb_text_vocab_t version,
                        const char *artist, const char *what, int32_t *id, jb_err_t *err);
// Genre ids: ids: (max) receives *n ids (unknown words: 0 and a WARN). -1 + err
// (JB_EINVAL) when there are more than max words (the reference asserts), or out of
// memory.
int jb_labels_genre_ids(const jb_labels_vocab_t *genres, jb_text_vocab_t version,
                        const char *genre, const char *what, int32_t *ids, int max, int *n,
                        jb_err_t *err);

// get_relevant_lyric_tokens. full: (n_full) tokens; tokens, indices: (n_tokens) out
// (indices may be NULL). Shorter lyrics are left-padded with token 0 / index -1;
// otherwise midpoint = (int)(n_full * (offset + duration / 2.0) / total_length),
// clamped to [n_tokens/2, n_full - n_tokens/2], window [midpoint - n_tokens/2,
// midpoint + n_tokens/2). -1 + err (JB_EINVAL) when n_full >= n_tokens and offset is
// outside [0, total_length) (the reference asserts), or n_tokens is odd and the
// window would not have n_tokens entries.
int jb_labels_lyric_window(const int32_t *full, int n_full, int n_tokens, int64_t total_length,
                           int64_t offset, int64_t duration, int32_t *tokens, int32_t *indices,
                           jb_err_t *err);

// The same window as the reference computes it while sampling (Labeller.set_y_lyric_tokens
// from SimplePrior.get_y): there total_length, offset and duration are int64 tensor
// elements, so the midpoint is computed in float32, op by op:
//     mid = (int)((float)n_full * ((float)offset + (float)duration / 2.0f) / (float)total_length)
// which differs from the double form for about 1 in 30000 windows (a midpoint just
// under an integer). Same arguments and errors as jb_labels_lyric_window.
int jb_labels_lyric_window_f32(const int32_t *full, int n_full, int n_tokens,
                               int64_t total_length, int64_t offset, int64_t duration,
                               int32_t *tokens, int32_t *indices, jb_err_t *err);

// get_starts(total_length, n_ctx, hop_length): window starts. starts: (max) receives
// *n starts; -1 + err when hop_length <= 0, n_ctx <= 0, or more than max starts.
// jb_labels_n_starts gives the count to size starts (0 when total_length < n_ctx).
int64_t jb_labels_n_starts(int64_t total_length, int64_t n_ctx, int64_t hop_length);
int jb_labels_starts(int64_t total_length, int64_t n_ctx, int64_t hop_length, int64_t *starts,
                     int64_t max, int64_t *n, jb_err_t *err);

// Labeller settings of one prior (from its hparams).
typedef struct {
    jb_text_vocab_t version;          // JB_TEXT_V2 or JB_TEXT_V3 (labels_v3)
    int max_genre_words;              // max_bow_genre_size
    int n_tokens;                     // lyric window length (0: no lyrics)
    int64_t sample_length;            // in raw audio samples (n_ctx * raw_to_tokens)
    const jb_labels_vocab_t *artists; // borrowed
    const jb_labels_vocab_t *genres;  // borrowed
} jb_labeller_t;

// Length of y: 4 + max_genre_words + n_tokens.
int jb_labeller_label_len(const jb_labeller_t *lb);

// Labeller.get_label(artist, genre, lyrics, total_length, offset).
// y: (4 + max_genre_words + n_tokens) out. *full_tokens_p (may be NULL) receives the
// new array of all *n_full lyric tokens (the caller frees), which later windows of
// the same song need (jb_labels_lyric_window). lyrics: UTF-8 (NUL-terminated).
int jb_labeller_get_label(const jb_labeller_t *lb, const char *artist, const char *genre,
                          const char *lyrics, int64_t total_length, int64_t offset,
                          const char *what, int64_t *y, int32_t **full_tokens_p, int *n_full,
                          jb_err_t *err);

// SimplePrior.get_y(labels, start) for one sample: y_base: (label_len) from get_label;
// y: (label_len) out = y_base with y[2] = sample_length, y[1] += start * raw_to_tokens,
// and the lyric window for that offset (float32 midpoint, as the reference while
// sampling). full: (n_full) the sample's lyric tokens; indices: (n_tokens) or NULL,
// the lyric index of each window token (-1 for padding; for the alignment page).
int jb_labeller_window_y(const jb_labeller_t *lb, const int64_t *y_base, const int32_t *full,
                         int n_full, int64_t start, int64_t raw_to_tokens, int64_t *y,
                         int32_t *indices, jb_err_t *err);

// ---- a stage's labels for one job ---------------------------------------------------

// What a job asks for at one level (a job spec's fields; jb_job.h).
typedef struct {
    const char *id;                   // job id, for messages
    int level;                        // the stage's level, for messages and the summary
    const char *artist, *genre;       // names ("" = unknown)
    const char *lyrics;               // UTF-8 or NULL
    int artist_id;                    // >= 0: this id wins over the name
    const int *genre_ids;             // (n_genre_ids); n_genre_ids > 0: win over the names
    int n_genre_ids;
    int64_t total_length;             // the song's length in raw audio samples
    int n_samples;                    // rows of y (each the same)
} jb_labels_job_t;

// What jb_labeller_build made. Owns every pointer (jb_labels_built_free).
typedef struct {
    int32_t *y;            // (n_samples, label_len) base labels, NULL when label_len is 0
    int32_t *full_tokens;  // (n_full) lyric tokens of the song (n_tokens > 0), else NULL
    int n_full;
    char *used_json;       // what was used, compact JSON: {"artist_id","genre_ids","lyrics",
                           // "lyric_tokens","lyrics_dropped","level"} (a stage's END text)
    char dropped[128];     // characters of the lyrics outside the vocabulary (each once)
    size_t n_dropped;      // how many characters were dropped (0: none)
} jb_labels_built_t;

// The labels of a job for a prior whose labels are label_len long (0: none; lb then
// unused beyond its version): Labeller.get_label with the job's explicit ids over the
// names, every sample's row the same, and a summary of what was used. A vocabulary of
// lb that is NULL looks nothing up (names give 0, "unknown": the job must give ids).
// 0, or -1 + err naming the job and level (*out then freed).
int jb_labeller_build(const jb_labeller_t *lb, int label_len, const jb_labels_job_t *job,
                      jb_labels_built_t *out, jb_err_t *err);
void jb_labels_built_free(jb_labels_built_t *b);

#endif
