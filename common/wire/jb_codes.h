// jb_codes.h: the codes of one job, every level, every sample — what stages
// accumulate from the messages they receive, and what a codes file holds.
//
// Levels are numbered as in the reference: 0 = bottom (hop 8), 1 = middle
// (hop 32), 2 = top (hop 128). For each level the store keeps the codes present
// so far as (n_samples, len) with len growing as windows arrive; codes of a
// level arrive in order (a message's offset must equal len, or restate codes
// already present with the same values — a resent window after a retry).
// Order is kept per sample: a message may cover a subset of the samples
// (sample0, batch), so each sample has its own length; len[l] is the minimum.
//
// A codes file (what `jukebox continue` / `upsample` read) is the frame stream
// of jb_wire: JOB (the spec that made the codes), then per level CODES from
// offset 0 and END(level), then END(-1). jb_codes_save writes exactly that;
// jb_codes_load accepts any frame stream that carries one job's codes in order
// and ends with that job's END(-1) (so a file cut at a frame boundary is
// refused too). Levels are saved top first (levels-1 .. 0), as the job stream
// of docs/wire.md sends them; END(level) carries offset = the level's length
// (when every sample has the same) and batch = n_samples, END(-1) the sample
// rate and audio length, so an empty level round-trips as well.
//
// Thread rules: a store belongs to one thread. Ownership: the store owns its
// arrays; pointers from jb_codes_level() are valid until the next put or free.
#ifndef JB_CODES_H
#define JB_CODES_H

#include <stdint.h>

#include "jb_err.h"
#include "jb_wire.h"

#define JB_CODES_MAX_LEVELS 8
#define JB_CODES_MAX_SAMPLES 65536

typedef struct {
    char job_id[JB_WIRE_JOB_ID_MAX + 1];
    char *spec;                          // job spec JSON text (owned) or NULL
    int levels;                          // levels held (3 for Jukebox)
    int n_samples;
    int64_t codebook;                    // every code < codebook (-1: unknown, codes >= 0)
    int64_t sample_rate;                 // Hz (0: unknown)
    int64_t audio_len;                   // true audio length in samples (0: unknown)
    int64_t len[JB_CODES_MAX_LEVELS];    // tokens present per level (minimum over samples)
    int64_t cap[JB_CODES_MAX_LEVELS];
    int32_t *codes[JB_CODES_MAX_LEVELS]; // (n_samples, cap[l]) row-major
    int complete[JB_CODES_MAX_LEVELS];   // END(level) seen. Informative: puts are still
                                         // accepted after it (a stage extends the level
                                         // whose prefix its upstream END closed).
    int64_t *slen[JB_CODES_MAX_LEVELS];  // (n_samples) tokens present per sample, or NULL
                                         // while the level is empty
    int ended;                           // END(-1) seen
} jb_codes_t;

// Empty store. job_id: a valid wire job id; levels 1..JB_CODES_MAX_LEVELS;
// n_samples 1..JB_CODES_MAX_SAMPLES; codebook 1..JB_WIRE_MAX_CODEBOOK or -1
// (unknown: the first message carrying one sets it). 0 / -1 (JB_EINVAL).
int jb_codes_init(jb_codes_t *c, const char *job_id, int levels, int n_samples, int64_t codebook,
                  jb_err_t *err);
// Frees the arrays and the spec; the struct is zeroed. Accepts a zeroed struct.
void jb_codes_free(jb_codes_t *c);

// Adds codes of one level: rows [sample0, sample0 + batch) of samples, tokens
// [offset, offset + count). A message may also restate tokens already present
// (they must be equal). Tokens must arrive in order per sample. codes: (batch,
// count) row-major, each in [0, codebook). The store is unchanged on failure.
// 0 / -1 + err naming job, level, sample and offset (JB_EFORMAT: out of order,
// a restated token that differs, a code out of range; JB_EINVAL: level or rows
// out of range; JB_ENOMEM).
int jb_codes_put(jb_codes_t *c, int level, int64_t offset, int sample0, int64_t batch,
                 int64_t count, const int32_t *codes, jb_err_t *err);

// More samples (rows) for a store whose sample count was not known when it was made
// (a stream without a job message: wire.md 8.4). The new samples hold no tokens, so
// the level lengths (minimum over samples) drop to 0 until they arrive. n_samples at
// most JB_CODES_MAX_SAMPLES; not fewer than now (no-op). 0 / -1 + err (JB_EINVAL,
// JB_ENOMEM; the store is unchanged on failure).
int jb_codes_grow_samples(jb_codes_t *c, int n_samples, jb_err_t *err);

// Tokens present at a level for every sample (the minimum over samples); 0 for
// a level out of range.
int64_t jb_codes_len(const jb_codes_t *c, int level);
// Tokens present at a level for one sample; 0 when out of range.
int64_t jb_codes_sample_len(const jb_codes_t *c, int level, int sample);
// Row pointer of one sample at one level (jb_codes_sample_len tokens), and the
// row stride (= cap[level]). NULL while the level is empty or out of range.
const int32_t *jb_codes_row(const jb_codes_t *c, int level, int sample);
int64_t jb_codes_stride(const jb_codes_t *c, int level);

// Keeps only the given samples, in the given order (the --pick of continue and
// upsample); n_pick >= 1, an index may repeat. The store is unchanged on
// failure. 0 / -1 (an index out of range names it).
int jb_codes_pick(jb_codes_t *c, const int *pick, int n_pick, jb_err_t *err);

// Applies one received message of this job (CODES / END / JOB); other types
// and other jobs are ignored (returns 0). 0 / -1 + err.
//   JOB:   keeps a copy of the spec (a second JOB must carry the same spec).
//   CODES: jb_codes_put of its rows (sample0 absent = 0); refused after END(level)
//          of its level (the level is complete: docs/wire.md 8.2).
//   END(level): complete[level] = 1; its offset, when present, must equal
//          every sample's length, and its batch n_samples; a second END of the level
//          is refused. END(-1): ended = 1.
//   On JOB / CODES / END, codebook (when present) must equal the store's (set
//   when the store's is unknown: codes from another model are refused); rate
//   and audio_len (when present) replace the store's.
int jb_codes_apply(jb_codes_t *c, const jb_msg_t *msg, jb_err_t *err);

// Writes the codes file (atomically: PATH.tmp.PID.N in the same directory,
// fsync, rename, fsync of the directory; nothing is left behind on failure).
// 0 / -1 + err (JB_EIO naming the file).
int jb_codes_save(const jb_codes_t *c, const char *path, jb_err_t *err);
// Reads a codes file ("-": stdin, read to its end; a pipe works too) into a
// new store (jb_codes_init'ed here: levels = highest
// level seen + 1, n_samples from the END batch / codes rows, codebook from the
// messages, or -1). 0 / -1 + err naming the file and the byte offset of the
// frame at fault (JB_ENOENT missing file; JB_EFORMAT not a codes file, a
// truncated or corrupt frame, codes out of order, a file holding several jobs
// or none, two END of one level, no END(-1), an ERROR message for the job).
// *c is zeroed on failure.
int jb_codes_load(jb_codes_t *c, const char *path, jb_err_t *err);

#endif
