// jb_sampling.h: the reference's logit filters and the token draw, per row of logits.
//
// Reference: ConditionalAutoregressive2D.sample (jukebox/prior/autoregressive.py):
//     x = logits / temp
//     x = filter_logits(x, top_k, top_p)          (jukebox/transformer/ops.py)
//     token = Categorical(logits=x).sample()
//
//   top-k: threshold = the k-th largest value (duplicates counted, torch.topk); every
//          logit < threshold becomes -inf, so values tied with the threshold all stay.
//          k > bins acts as k = bins; k <= 0 is off.
//   top-p: sort descending, p = softmax of the sorted values, c = cumulative sum; a
//          token is removed when the cumulative sum *before* it exceeds top_p (the
//          reference's shift right by one), so the first token always stays. c is
//          accumulated in float64 and rounded to float32 before the comparison with
//          (float)top_p, as torch compares a float32 tensor with a Python scalar. Ties
//          sort by lower index first (torch.sort does not promise an order for ties).
//          top_p <= 0 is off. The reference refuses top-k and top-p together; so does
//          jb_sampling_params_check.
//   greedy: argmax, lowest index on ties (torch.argmax returns the first maximum).
//          top_k == 1 is also served by argmax: without ties it is the same token
//          the reference samples (with ties the reference picks one of them at random).
//   draw:  inverse CDF in float64: w_i = exp(l_i - max), target = u * sum(w), the
//          first i whose running sum exceeds target; u is one jb_rng_uniform_f64 at
//          (stream, position, draw 0). -inf logits have w = 0 and are never drawn.
//
// The per-row draw and argmax are JB_HD static inline (common/jb_kernels.h); the sorting
// filters are CPU functions. Nothing here allocates: the caller passes scratch of
// jb_sampling_scratch_bytes(bins) once.
// Thread rules: no state; reentrant. Scratch belongs to one thread.
#ifndef JB_SAMPLING_H
#define JB_SAMPLING_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "jb_err.h"
#include "jb_kernels.h"
#include "jb_rng.h"

typedef struct {
    float temp;     // > 0: logits are divided by it (1: unchanged)
    int top_k;      // 0: off
    float top_p;    // 0: off; in (0, 1]
    int greedy;     // 1: argmax, no random draw
} jb_sampling_params_t;

// temp 1, no filters, not greedy.
jb_sampling_params_t jb_sampling_default_params(void);
// 0, or -1 + err (JB_EINVAL) for temp <= 0 or not finite, top_k < 0, top_p outside
// [0, 1], or top_k and top_p both set.
int jb_sampling_params_check(const jb_sampling_params_t *p, jb_err_t *err);

// Bytes of scratch the filters need for rows of this many bins.
size_t jb_sampling_scratch_bytes(int bins);

// logits: (bins), in place. Return the number of entries left finite.
void jb_sampling_temperature(float *logits, int bins, float temp);
int jb_sampling_top_k(float *logits, int bins, int k, void *scratch);
int jb_sampling_top_p(float *logits, int bins, float top_p, void *scratch);

// argmax of logits: (bins); lowest index among equal maxima; NaN entries are skipped;
// -1 when bins <= 0 or every entry is NaN.
JB_HD static inline int32_t jb_sampling_argmax(const float *logits, int bins) {
    int32_t best = -1;
    for (int i = 0; i < bins; i++)
        if (logits[i] == logits[i] && (best < 0 || logits[i] > logits[best]))
            best = i;
    return best;
}

// Inverse-CDF draw from softmax(logits), logits: (bins), u in [0, 1). -1 when no entry
// is finite.
JB_HD static inline int32_t jb_sampling_draw(const float *logits, int bins, double u) {
    int32_t top = jb_sampling_argmax(logits, bins);
    if (top < 0 || (isinf(logits[top]) && logits[top] < 0))
        return -1;
    double m = (double)logits[top], total = 0.0;
    for (int i = 0; i < bins; i++)
        if (logits[i] == logits[i])          // exp(-inf) = 0; NaN skipped
            total += exp((double)logits[i] - m);
    double target = u * total, cum = 0.0;
    int32_t last = top;
    for (int i = 0; i < bins; i++) {
        if (logits[i] != logits[i])
            continue;
        double w = exp((double)logits[i] - m);
        if (w > 0.0)
            last = i;
        cum += w;
        if (target < cum && w > 0.0)
            return i;
    }
    return last;    // target rounded up to the total: the last token with weight
}

// One row: temperature, filters, then argmax (greedy or top_k == 1) or the draw at
// (stream, position). logits: (bins), modified. scratch: jb_sampling_scratch_bytes(bins).
// Returns the token, or -1 when the row has a NaN or no finite logit.
int32_t jb_sampling_row(float *logits, int bins, const jb_sampling_params_t *p,
                        jb_rng_stream_t stream, uint64_t position, void *scratch);

// N rows: logits: (N, bins), modified; streams: (N) (one per row: the row's sample);
// out: (N). -1 + err (JB_EINVAL) naming the row and position on a bad row or params.
int jb_sampling_rows(float *logits, int N, int bins, const jb_sampling_params_t *p,
                     const jb_rng_stream_t *streams, uint64_t position, int32_t *out,
                     void *scratch, jb_err_t *err);

#endif
