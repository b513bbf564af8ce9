// jb_sample.h: the reference's sample_level flow (jukebox/sample.py): one level of a song
// sampled in windows of n_ctx codes.
//
//   total >= n_ctx: windows at get_starts(total, n_ctx, hop) (jb_labels_starts); each window
//     takes the codes already present in [start, start + n_ctx) as its prime, samples the
//     rest and appends them (sample_single_window).
//   total < n_ctx: one partial window (sample_partial_window): with `have` codes present,
//     `total` more codes are sampled, so the level ends with have + total codes.
// Per window: labels get offset += start · raw_to_tokens, sample_length = n_ctx ·
// raw_to_tokens and the lyric window of that offset (jb_labels_lyric_window); an upsampler
// takes z_cond = codes of the level above in [start, end) / cond_downsample. Items are run
// in batches of max_batch_size.
//
// Random draws: item i draws with the stream jb_rng_stream(seed, job_hash, sample_ids[i],
// level) at its absolute code position, so a sample's codes do not depend on its batch.
//
// Thread rules: one call per sampler at a time. Ownership: every pointer is borrowed.
#ifndef JB_SAMPLE_H
#define JB_SAMPLE_H

#include <stdint.h>

#include "jb_err.h"
#include "jb_prior.h"
#include "jb_sampling.h"

typedef struct {
    jb_sampling_params_t sampling;   // temperature, top-k, top-p, greedy
    int chunk_size;                  // priming pass length (<= 0: the sampler's max_chunk)
    int max_batch_size;              // <= the sampler's max_batch
    int hop_length;                  // window hop in codes: int(hop_fraction · n_ctx)
    uint64_t seed, job_hash;         // random streams (jb_rng.h)
    const uint32_t *sample_ids;      // (n_samples) index of each item in its job; NULL: 0..n-1
    // Called after every sampled position (may be NULL): progress, service watchdog.
    // pos: absolute code position just sampled.
    void (*on_step)(void *user, int64_t pos);
    void *on_step_user;
} jb_sample_opts_t;

// Lyrics of one item: the full token list (jb_text), or NULL / 0 for none.
typedef struct {
    const int32_t *tokens;
    int n;
} jb_sample_lyrics_t;

// The sampler a stage samples with: up to max_batch sequences and priming passes of up to
// max_chunk tokens (jb_prior_sampler_new); cuda: its windows run on the current CUDA
// device (jb_prior_cuda_attach; JB_EUNAVAIL in a build without CUDA), whose state the
// sampler then owns. The one place that knows whether this build has CUDA. NULL + err.
jb_prior_sampler_t *jb_sample_sampler_new(const jb_prior_t *p, int max_batch, int max_chunk,
                                          int cuda, jb_err_t *err);
// Frees a sampler of jb_sample_sampler_new, its device state too; sets *s_p NULL. Accepts NULL.
void jb_sample_sampler_destroy(jb_prior_sampler_t **s_p);

// Samples one level. zs: (n_samples, zs_stride) codes of this level, the first `have` of
// every item present; on success *out_len codes are present (total, or have + total for a
// partial window). zs_above: (n_samples, above_stride) codes of the level above (upsamplers)
// or NULL. y: (n_samples, label_len) base label vectors (offset of the item's start) or NULL
// for a prior without labels; lyrics: (n_samples) or NULL.
// Errors name level, window start and item.
int jb_sample_level(jb_prior_sampler_t *s, const jb_sample_opts_t *o, int n_samples, int total,
                    int32_t *zs, int zs_stride, int have, const int32_t *zs_above,
                    int above_stride, const int32_t *y, const jb_sample_lyrics_t *lyrics,
                    int *out_len, jb_err_t *err);

// Lyric alignment of a song (the reference's align.py get_alignment), for a prior with lyrics:
// windows at 0, hop, 2·hop, ... while start < total - n_ctx + hop (each must fit: start +
// n_ctx <= total); per window the attention weights of alignment_layer/head between the music
// codes and the window's lyric tokens (jb_prior_forward), placed at the lyric positions the
// window covers; earlier windows overwrite later ones where they overlap.
// zs: (n_samples, zs_stride) top-level codes, total of them; y: (n_samples, label_len) base
// labels; lyrics: (n_samples); out[i]: (total, lyrics[i].n) per item, zero-filled first.
int jb_sample_alignment(const jb_prior_t *p, int n_samples, int total, const int32_t *zs,
                        int zs_stride, const int32_t *y, const jb_sample_lyrics_t *lyrics,
                        int hop_length, float *const *out, jb_err_t *err);
// One item's alignment (full: (total, cols), from jb_sample_alignment) in rows of `group`
// codes, as a stage's ALIGN message and the page show it: out[r * cols + c] is the mean
// weight of lyric position c over the codes of row r (the last row may be shorter);
// *rows = ceil(total / group). out: (ceil(total / group), cols).
void jb_sample_alignment_rows(const float *full, int64_t total, int cols, int group,
                              double *out, int64_t *rows);


// ---- window by window (streaming stages) ----------------------------------------

// One window of jb_sample_level: [start, start + n_ctx), sampled up to start + fill codes.
typedef struct {
    int64_t start;
    int fill;
} jb_sample_window_t;

// The windows jb_sample_level runs for a level of `total` codes with `have` present, in
// order. *windows: new array (caller frees) of *n windows (0 when nothing is left to
// sample). 0 / -1 + err.
int jb_sample_plan(const jb_prior_info_t *in, int total, int have, int hop_length,
                   jb_sample_window_t **windows, int *n, jb_err_t *err);

// The windows that bring a level from `have` codes to `length` codes (a streaming
// stage's job: the song's length at this level). The same as jb_sample_plan except for
// a level shorter than one window, where jb_sample_plan's `total` counts the codes to
// add: here only what the song still lacks is sampled, so a primed short song ends at
// `length`, not have + length. *n = 0 when have >= length.
int jb_sample_plan_to(const jb_prior_info_t *in, int length, int have, int hop_length,
                      jb_sample_window_t **windows, int *n, jb_err_t *err);

// Codes of the level above that window w conditions on: [0, need) must be present.
// 0 for a level without conditioning.
int64_t jb_sample_window_needs(const jb_prior_info_t *in, jb_sample_window_t w);

// Runs one window (sample_single_window): the arguments are those of jb_sample_level;
// *have is updated. Allocates its scratch per call (a window takes seconds).
int jb_sample_window(jb_prior_sampler_t *s, const jb_sample_opts_t *o, int n_samples,
                     jb_sample_window_t w, int32_t *zs, int zs_stride, int *have,
                     const int32_t *zs_above, int above_stride, const int32_t *y,
                     const jb_sample_lyrics_t *lyrics, jb_err_t *err);

// ---- several jobs in one batch (a stage serving many jobs) ----------------------------

// One job's window in a batch of several (jb_sample_windows): the arguments of
// jb_sample_window, borrowed. o: this job's sampling settings, seed, job hash, sample ids,
// on_step (o->max_batch_size is not used: the batch is the call's).
typedef struct {
    const jb_sample_opts_t *o;
    int n_samples;
    jb_sample_window_t win;
    int32_t *zs;                 // (n_samples, zs_stride)
    int zs_stride;
    int *have;                   // updated on success
    const int32_t *zs_above;     // (n_samples, above_stride) or NULL
    int above_stride;
    const int32_t *y;            // (n_samples, label_len) or NULL
    const jb_sample_lyrics_t *lyrics;   // (n_samples) or NULL
} jb_sample_part_t;

// Codes of window w already present when a job has `have` codes: the prime length of its
// window. Windows can share a batch when their prime lengths and fills are equal.
int jb_sample_window_prime(const jb_prior_info_t *in, jb_sample_window_t w, int have);

// Samples the windows of n_parts jobs as one batch: their rows (sum of n_samples <= the
// sampler's max_batch) advance together, each at its own window start, with its own labels,
// conditioning, sampling settings and random streams. Every part needs the same prime length
// (jb_sample_window_prime), fill and chunk_size, and codes to sample (fill > prime). Each
// job's codes are byte-identical to what jb_sample_window gives it alone: the products are
// batch-invariant (docs/matmul.md) and each row draws from its own stream at its own absolute
// positions. 0, or -1 + err naming the part (no part's `have` changes then).
int jb_sample_windows(jb_prior_sampler_t *s, const jb_sample_part_t *parts, int n_parts,
                      jb_err_t *err);

#endif
