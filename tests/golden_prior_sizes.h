// golden_prior_sizes.h: the buffers the `prior` checker (tests/golden_prior.c) needs for N
// windows of one prior level, kept apart so that tests/test_golden_prior_sizes.c can check
// the shape logic on shapes no fixture has.
//
// The activations (cond.y (N, width), cond.x (N, n_ctx, width), encoder_kv
// (N, n_tokens, width)) and the logits (N, seq_len, seq_bins) are separate buffers: a prior
// whose width is larger than its codebook (width 48, 40 codes) has more activations than
// logits, and the stored logits must have exactly the logits' size.
#ifndef GOLDEN_PRIOR_SIZES_H
#define GOLDEN_PRIOR_SIZES_H

#include <stdint.h>

#include "jb_prior.h"

typedef struct {
    int64_t act;      // floats of the largest activation: max of N·W, N·n_ctx·W, N·n_tokens·W
    int64_t logits;   // floats of the logits: N·seq_len·seq_bins
} golden_prior_sizes_t;

static inline golden_prior_sizes_t golden_prior_sizes(const jb_prior_info_t *in, int N) {
    golden_prior_sizes_t s;
    int64_t rows = in->n_ctx > in->n_tokens ? in->n_ctx : in->n_tokens;
    if (rows < 1) rows = 1;
    s.act = (int64_t)N * rows * in->width;
    s.logits = (int64_t)N * in->seq_len * in->seq_bins;
    return s;
}

#endif
