// jb_codes.h: the codes of one job, every level, every sample — what stages
// accumulate from the messages they receive, and what a codes file holds.
//
// Levels are numbered as in the reference: 0 = bottom (hop 8), 1 = middle
// (hop 32), 2 = top (hop 128). For each level the store keeps the codes present
// so far as (n_samples, len) with len growing as windows arrive; codes of a
// level arrive in order (a message's offset must equal len, or restate codes
// already present with the same values — a resent window after a retry).
//
// A codes file (what `jukebox continue` / `upsample` read) is the frame stream
// of jb_wire: JOB (the spec that made the codes), then per level CODES from
// offset 0 and END(level), then END(-1). jb_codes_save writes exactly that;
// jb_codes_load accepts any frame stream that carries one job's codes in order.
//
// Thread rules: a store belongs to one thread. Ownership: the store owns its
// arrays; pointers from jb_codes_level() are valid until the next put or free.
#ifndef JB_CODES_H
#define JB_CODES_H

#include <stdint.h>

#include "jb_err.h"
#include "jb_wire.h"

#define JB_CODES_MAX_LEVELS 8

typedef struct {
    char job_id[JB_WIRE_JOB_ID_MAX + 1];
    char *spec;                          // job spec JSON text (owned) or NULL
    int levels;                          // levels held (3 for Jukebox)
    int n_samples;
    int64_t codebook;                    // every code < codebook
    int64_t sample_rate;                 // Hz (0: unknown)
    int64_t audio_len;                   // true audio length in samples (0: unknown)
    int64_t len[JB_CODES_MAX_LEVELS];    // tokens present per level
    int64_t cap[JB_CODES_MAX_LEVELS];
    int32_t *codes[JB_CODES_MAX_LEVELS]; // (n_samples, cap[l]) row-major
    int complete[JB_CODES_MAX_LEVELS];   // END(level) seen
} jb_codes_t;

// Empty store. 0 / -1.
int jb_codes_init(jb_codes_t *c, const char *job_id, int levels, int n_samples, int64_t codebook,
                  jb_err_t *err);
// Frees the arrays and the spec; the struct is zeroed. Accepts a zeroed struct.
void jb_codes_free(jb_codes_t *c);

// Adds codes of one level: rows [sample0, sample0 + batch) of samples, tokens
// [offset, offset + count). A message may also restate tokens already present
// (they must be equal). Tokens must arrive in order per sample. 0 / -1 + err
// naming job, level and offset.
int jb_codes_put(jb_codes_t *c, int level, int64_t offset, int sample0, int64_t batch,
                 int64_t count, const int32_t *codes, jb_err_t *err);

// Tokens present at a level for every sample (the minimum over samples).
int64_t jb_codes_len(const jb_codes_t *c, int level);
// Row pointer of one sample at one level (len tokens), and the row stride.
const int32_t *jb_codes_row(const jb_codes_t *c, int level, int sample);
int64_t jb_codes_stride(const jb_codes_t *c, int level);

// Keeps only the given samples, in the given order (the --pick of continue and
// upsample). 0 / -1 (an index out of range names it).
int jb_codes_pick(jb_codes_t *c, const int *pick, int n_pick, jb_err_t *err);

// Applies one received message of this job (CODES / END / JOB); other types
// and other jobs are ignored (returns 0). 0 / -1 + err.
int jb_codes_apply(jb_codes_t *c, const jb_msg_t *msg, jb_err_t *err);

// Writes the codes file (atomically: temporary name, then rename). 0 / -1.
int jb_codes_save(const jb_codes_t *c, const char *path, jb_err_t *err);
// Reads a codes file into a new store (jb_codes_init'ed here). 0 / -1 + err
// (missing file, not a codes file, a file holding several jobs).
int jb_codes_load(jb_codes_t *c, const char *path, jb_err_t *err);

#endif
