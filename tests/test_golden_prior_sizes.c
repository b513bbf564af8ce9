// test_golden_prior_sizes.c: the buffer sizes of the golden runner's `prior` checker
// (tests/golden_prior_sizes.h) on shapes the visible fixtures do not have.
//
// The defect (issue 16, item 8): one buffer sized max(logits, activations) served both, and the
// stored logits had to have that size, so a prior whose width is larger than its codebook
// (width 48, 40 codes) failed with "logits: stored shape does not match". The golden case
// tests/golden/prior_top_wide_tiny (made with the reference) has that shape end to end; this
// checks the size logic on the shapes no fixture has (joint lyrics layout, n_tokens > n_ctx).
#include <string.h>

#include "golden_prior_sizes.h"
#include "jb_test.h"

static jb_prior_info_t info(int width, int bins, int n_ctx, int n_tokens, int n_vocab) {
    jb_prior_info_t in;
    memset(&in, 0, sizeof in);
    in.width = width;
    in.bins = bins;
    in.n_ctx = n_ctx;
    in.n_tokens = n_tokens;
    in.seq_len = n_tokens + n_ctx;     // the joint (1b_lyrics) layout; n_tokens 0 otherwise
    in.seq_bins = n_vocab + bins;
    return in;
}

int main(void) {
    // width 48 > 40 codes, no lyrics: the logits are smaller than cond.x
    jb_prior_info_t a = info(48, 40, 32, 0, 0);
    golden_prior_sizes_t s = golden_prior_sizes(&a, 2);
    JB_CHECK(s.logits == 2 * 32 * 40, "width 48 > 40 codes: logits N*n_ctx*bins = 2560 (got %lld)",
             (long long)s.logits);
    JB_CHECK(s.act == 2 * 32 * 48, "width 48 > 40 codes: activations N*n_ctx*width = 3072 (got %lld)",
             (long long)s.act);
    // the usual shape: codebook larger than the width
    jb_prior_info_t b = info(32, 64, 16, 0, 0);
    s = golden_prior_sizes(&b, 3);
    JB_CHECK(s.logits == 3 * 16 * 64 && s.act == 3 * 16 * 32,
             "width 32 < 64 codes: logits %lld, activations %lld", (long long)s.logits,
             (long long)s.act);
    // joint lyrics model: seq_len and seq_bins include the lyric part
    jb_prior_info_t c = info(48, 40, 32, 8, 80);
    s = golden_prior_sizes(&c, 1);
    JB_CHECK(s.logits == 1 * 40 * 120, "joint lyrics model: logits N*(n_tokens+n_ctx)*(n_vocab+bins)");
    // a lyrics encoder with more tokens than music positions: encoder_kv is the largest
    jb_prior_info_t d = info(48, 40, 16, 24, 0);
    d.seq_len = 16, d.seq_bins = 40;
    s = golden_prior_sizes(&d, 2);
    JB_CHECK(s.act == 2 * 24 * 48, "n_tokens 24 > n_ctx 16: activations fit encoder_kv (%lld)",
             (long long)s.act);
    JB_CHECK(s.logits == 2 * 16 * 40, "  and the logits stay N*n_ctx*bins (%lld)", (long long)s.logits);
    return jb_test_summary("test_golden_prior_sizes");
}
