// jb_admit.h: a receiver's admission table: what a message may claim before its payload
// is decompressed (docs/wire.md section 3.1), so that a small message cannot make a stage
// allocate or decompress more than the job it belongs to can hold.
//
//   jb_admit_model_t m = {.sr = 44100, .levels = 3, .hop = {8, 32, 128}};
//   jb_admit_t *a = jb_admit_new(&m, &err);
//   jb_wire_decode_admit(h, hn, p, pn, codebook, jb_admit_check, a, &msg, &err);
//
// From a JOB message it learns the job's bounds: its sample count (spec n_samples) and,
// with a model (rate and hop per level), each level's length in tokens: the longer of the
// spec's total_seconds and sample_seconds, padded to the top hop, / hop(level). Then a
// CODES message of that job must lie inside them (sample0 + batch <= samples, offset +
// count <= the level's length), an ALIGN message's rows inside the samples and its tokens
// inside the level. A message of a job it does not know (no JOB seen, or the JOB forgotten)
// is held to JB_ADMIT_UNKNOWN_RAW bytes decompressed. END of the job, ERROR and CANCEL
// forget it. The table holds JB_ADMIT_JOBS jobs; past that the oldest is forgotten (its
// messages fall back to the unknown-job cap: never more memory, only a lower bound lost).
//
// Thread rules: a table belongs to one thread (the one decoding messages: a stream
// endpoint's reader, a link's I/O thread). Ownership: the table owns its entries.
#ifndef JB_ADMIT_H
#define JB_ADMIT_H

#include <stdint.h>

#include "jb_err.h"
#include "jb_wire.h"

#define JB_ADMIT_JOBS 1024
#define JB_ADMIT_UNKNOWN_RAW JB_WIRE_MAX_RAW   // bytes, a message of a job not known

typedef struct {
    int sr;                             // Hz; 0: no model (only sample counts are bounded)
    int levels;                         // levels with a hop below
    int hop[JB_WIRE_MAX_LEVEL + 1];     // audio samples per token of each level
} jb_admit_model_t;

typedef struct jb_admit jb_admit_t;

// model NULL or levels 0: no model. NULL + err (JB_ENOMEM, JB_EINVAL for a bad model).
jb_admit_t *jb_admit_new(const jb_admit_model_t *model, jb_err_t *err);
void jb_admit_destroy(jb_admit_t **self_p);

// A jb_wire_admit_fn; user is the jb_admit_t. Learns JOB, forgets at END(-1)/ERROR/CANCEL,
// bounds CODES and ALIGN. 0 / -1 + err (JB_EFORMAT naming job, level, what and the bound).
int jb_admit_check(void *user, const jb_msg_t *hdr, uint64_t raw_len, jb_err_t *err);

// Tokens a known job's level may hold, or -1 (job not known, or no model for the level).
int64_t jb_admit_level_tokens(const jb_admit_t *a, const char *job_id, int level);

#endif
