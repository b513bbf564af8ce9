// jb_prior.h: one level of the hierarchy, the reference's SimplePrior (jukebox/prior/prior.py):
// label conditioning, timing signal, the upsamplers' Conditioner on the level above, the
// lyrics encoder (5b_lyrics) or the joint lyrics+music sequence (1b_lyrics), the transformer,
// teacher-forced logits, lyric alignment weights, and ancestral / primed sampling.
//
//   jb_prior_t *p = jb_prior_new("prior_level_2.safetensors", &err);
//   jb_prior_sampler_t *s = jb_prior_sampler_new(p, max_batch, chunk_size, &err);
//   jb_prior_sample(s, N, y, z_cond, prime, P, 0, chunk_size, jb_prior_choose_greedy, NULL,
//                   codes, NULL, &err);
//
// Sequence positions: a window holds n_ctx music codes. The 1b_lyrics model (single
// encoder-decoder) runs its transformer over seq_len = n_tokens + n_ctx positions, the lyric
// tokens (ids 0..n_vocab-1) first, music codes shifted by n_vocab (joint vocabulary of
// seq_bins = n_vocab + bins); its logits cover the whole joint sequence.
//
// Thread rules: a jb_prior_t is immutable after _new (share it between threads); a sampler
// belongs to one thread. Ownership: the prior owns its model file (mmap) and every buffer;
// pointers it hands out live until jb_prior_destroy.
#ifndef JB_PRIOR_H
#define JB_PRIOR_H

#include <stdint.h>

#include "jb_err.h"
#include "jb_hparams.h"
#include "jb_safetensors.h"
#include "jb_transformer.h"

typedef struct jb_prior jb_prior_t;
typedef struct jb_prior_sampler jb_prior_sampler_t;

// Lyrics handling of a prior.
enum { JB_PRIOR_NO_LYRICS = 0, JB_PRIOR_LYRICS_ENCODER = 1, JB_PRIOR_LYRICS_JOINT = 2 };

typedef struct {
    int level;
    int width;
    int bins;             // music codes (l_bins)
    int n_ctx;            // music codes per window
    int n_tokens;         // lyric tokens in y (0: none)
    int n_vocab;          // lyric vocabulary (models with lyrics)
    int lyrics;           // JB_PRIOR_*
    int labels;           // y conditioning (artist, genre)
    int label_len;        // 4 + max_bow_genre_size + n_tokens (0 without labels)
    int include_time_signal;
    int x_cond;           // conditioned on the level above (upsamplers)
    int merged_decoder;   // separate x_out, conditioning not added after the transformer
    int seq_len;          // transformer positions (n_tokens + n_ctx for the joint model)
    int seq_bins;         // logits per position (n_vocab + bins for the joint model)
    int raw_to_tokens;    // raw audio samples per code of this level
    int cond_downsample;  // codes of this level per code of the level above (0: top level)
    int sample_length;    // n_ctx · raw_to_tokens
} jb_prior_info_t;

// Opens and validates the model file (kind "prior"). NULL + err naming file and tensor.
jb_prior_t *jb_prior_new(const char *path, jb_err_t *err);
// As jb_prior_new, the transformers' matrix weights held as opts says (jb_transformer.h:
// JB_WEIGHTS_STORED | F32 | F16 | BF16, packed). opts NULL: as stored, not packed.
jb_prior_t *jb_prior_new_opts(const char *path, const jb_weights_opts_t *opts, jb_err_t *err);
void jb_prior_destroy(jb_prior_t **p_p);

const jb_prior_info_t *jb_prior_info(const jb_prior_t *p);
const jb_prior_hparams_t *jb_prior_hparams(const jb_prior_t *p);
const jb_transformer_t *jb_prior_transformer(const jb_prior_t *p);
// Which attention head of which layer is the lyric alignment (hparams alignment_layer and
// alignment_head: what jb_prior_forward's attn records and a stage's ALIGN message shows), for
// choosing it after training (jukebox-eval align). A lyrics prior only; layer in [0, depth),
// head in [0, heads). 0, or -1 + err (JB_EINVAL).
int jb_prior_set_alignment(jb_prior_t *p, int layer, int head, jb_err_t *err);
// The embedding tables, for other backends (common/cuda/jb_prior.cu); float32, the prior's memory.
// x_emb: (seq_bins, width) input embedding; pos_emb: (seq_len, width); x_out: (seq_bins, width)
// output projection (x_emb itself when tied).
void jb_prior_tables(const jb_prior_t *p, const float **x_emb, const float **pos_emb,
                     const float **x_out);

// The upsamplers' Conditioner, for other backends (common/cuda/jb_prior.cu): embedding of the
// level-above codes, conv k=3 (W -> cw), `stages` x (`depth` resnet blocks, then a transposed
// conv up by `stride`), LayerNorm. Weights float32 packed (k, C_in, C_out) (jb_conv.h's
// jb_conv1d layout; the transposed convs too, tap-major), the prior's memory.
// A resnet block: a += res_scale · (conv1x1(relu(conv3_d(relu(a)) + b1)) + b3).
typedef struct {
    int bins, W, cw, cm, stages, stride, depth;
    int L0;                      // positions in: n_ctx / cond_downsample (out: n_ctx)
    float res_scale;
    const float *x_emb;          // (bins, W)
    const float *w0, *b0;        // (3, W, cw), (cw)
    const float *ln_g, *ln_b;    // (W)
} jb_prior_cond_view_t;
// 0 and the view, or -1 when the prior has no conditioner.
int jb_prior_cond_view(const jb_prior_t *p, jb_prior_cond_view_t *v);
// Resnet block j of stage i: w1 (3, cw, cm), b1 (cm), w3 (1, cm, cw), b3 (cw); its dilation.
void jb_prior_cond_res(const jb_prior_t *p, int i, int j, const float **w1, const float **b1,
                       const float **w3, const float **b3, int *dilation);
// The transposed conv of stage i: wt (2·stride, cw, co), bt (co), co = W for the last stage
// else cw; kernel 2·stride, padding stride / 2.
void jb_prior_cond_up(const jb_prior_t *p, int i, const float **wt, const float **bt, int *co);

// ---- conditioning -----------------------------------------------------------

// The joint id sequence of N windows, one body for every backend and for training: the
// lyric tokens (joint 1b_lyrics model: the last n_tokens of each label row y), then the
// known codes codes[n * P + t] (t < P), offset by n_vocab in the joint model.
// seq: (N, seq_len); positions from off + P on are left as they are. 0, or -1 + err
// naming the sample and the id outside its range.
int jb_prior_fill_seq(const jb_prior_info_t *in, int32_t *seq, const int32_t *y,
                      const int32_t *codes, int P, int N, jb_err_t *err);

// The timing signal's bins, one body for inference and training: for each of the n_ctx
// positions of one label row y (total length, offset, sample length first), the bins of
// the total length, the absolute and the relative position (RangeEmbedding over
// [lo[k], hi[k]) in t_bins bins). bins: (n_ctx, 3). 0, or -1 + err naming the value that
// falls outside its range (label row `row`, for the message).
int jb_prior_time_bins(const int32_t *y, int row, int n_ctx, int t_bins, const double lo[3],
                       const double hi[3], int32_t *bins, jb_err_t *err);

// Start conditioning: artist embedding + sum of genre embeddings (ids < 0 skipped).
// y: (N, label_len); out: (N, width). Error for ids outside the tables.
int jb_prior_cond_y(const jb_prior_t *p, const int32_t *y, int N, float *out, jb_err_t *err);
// Per-position conditioning of the music positions: the timing signal (top level, from y),
// the Conditioner on z_cond (upsamplers), or zeros.
// y: (N, label_len) or NULL when unused; z_cond: (N, n_ctx / cond_downsample) or NULL;
// out: (N, n_ctx, width).
int jb_prior_cond_x(const jb_prior_t *p, const int32_t *y, const int32_t *z_cond, int N,
                    float *out, jb_err_t *err);
// Lyrics encoder (JB_PRIOR_LYRICS_ENCODER): prime_state_ln(prime_state_proj(prime_prior(tokens))).
// tokens: (N, n_tokens) ids in [0, n_vocab); out: (N, n_tokens, width).
int jb_prior_encoder_kv(const jb_prior_t *p, const int32_t *tokens, int N, float *out,
                        jb_err_t *err);

// ---- teacher forcing -----------------------------------------------------------

// Logits of the whole window: z: (N, n_ctx) codes; z_cond: (N, n_ctx / cond_downsample) or
// NULL; y: (N, label_len) or NULL; logits: (N, seq_len, seq_bins).
// attn (lyric models, may be NULL): (N, n_ctx, n_tokens) softmax weights of layer
// alignment_layer, head alignment_head, music queries x lyric keys.
int jb_prior_forward(const jb_prior_t *p, const int32_t *z, const int32_t *z_cond,
                     const int32_t *y, int N, float *logits, float *attn, jb_err_t *err);

// ---- sampling -------------------------------------------------------------------

// Picks one token per sequence from logits: (N, n_bins), which it may modify; pos is the
// music position being sampled (0..n_ctx-1; for the joint model the lyric part is never
// sampled). out: (N). Returns 0 or -1 (+ err).
typedef int (*jb_prior_choose_fn)(void *user, float *logits, int N, int n_bins, int pos,
                                  int32_t *out, jb_err_t *err);
// Argmax (top_k = 1), lowest index on ties. user unused.
int jb_prior_choose_greedy(void *user, float *logits, int N, int n_bins, int pos, int32_t *out,
                           jb_err_t *err);

// State for up to max_batch sequences and priming passes of up to max_chunk tokens; all
// memory of sampling is allocated here. NULL + err.
jb_prior_sampler_t *jb_prior_sampler_new(const jb_prior_t *p, int max_batch, int max_chunk,
                                         jb_err_t *err);
void jb_prior_sampler_destroy(jb_prior_sampler_t **s_p);
const jb_prior_t *jb_prior_sampler_prior(const jb_prior_sampler_t *s);
int jb_prior_sampler_max_batch(const jb_prior_sampler_t *s);

// Samples one window of N sequences (N <= max_batch): codes [0, P) are the prime (fed through
// the transformer in passes of chunk_size tokens, the last shorter; chunk_size <= 0: the
// sampler's max_chunk), then positions P..n_fill-1 are drawn one at a time with choose
// (n_fill <= 0: n_ctx; less is the reference's sample_tokens, a window shorter than n_ctx).
// The joint model feeds back the joint id it drew and stores clamp(id - n_vocab, 0).
// y: (N, label_len) or NULL; z_cond: (N, n_ctx / cond_downsample) or NULL;
// prime: (N, P) or NULL with P = 0; out: (N, n_fill) (its first P codes are the prime).
// n_clamped (may be NULL): joint model only, lyric ids drawn at music positions.
int jb_prior_sample(jb_prior_sampler_t *s, int N, const int32_t *y, const int32_t *z_cond,
                    const int32_t *prime, int P, int n_fill, int chunk_size,
                    jb_prior_choose_fn choose, void *user, int32_t *out, int *n_clamped,
                    jb_err_t *err);

// ---- benchmarks ---------------------------------------------------------------------

// Prepares the sampler as if a window of N sequences had been sampled up to sequence position
// pos (1 <= pos < seq_len) without running the transformer: random codes/lyric ids before pos,
// zero conditioning, the key/value caches filled with random values (jb_tcache_fill_random).
int jb_prior_sampler_bench_setup(jb_prior_sampler_t *s, int N, int pos, uint64_t seed,
                                 jb_err_t *err);
// One sampling step of the sequences set up above: input embedding, the transformer pass of
// one token, the output projection, choose; appends the token and advances. out: (N).
int jb_prior_sampler_step(jb_prior_sampler_t *s, jb_prior_choose_fn choose, void *user,
                          int32_t *out, jb_err_t *err);
// Another backend for a sampler's windows (jb_prior_cuda_attach: the GPU): once set, every
// jb_prior_sample call on s (after its batch check) is fn(impl, N, y, ...) with the same
// arguments and contract. fn NULL: back to the CPU. impl is borrowed.
typedef int (*jb_prior_sample_backend_fn)(void *impl, int N, const int32_t *y,
                                          const int32_t *z_cond, const int32_t *prime, int P,
                                          int n_fill, int chunk_size, jb_prior_choose_fn choose,
                                          void *user, int32_t *out, int *n_clamped,
                                          jb_err_t *err);
void jb_prior_sampler_set_backend(jb_prior_sampler_t *s, jb_prior_sample_backend_fn fn,
                                  void *impl);
// The impl given to jb_prior_sampler_set_backend, or NULL (the CPU), for its owner to free.
void *jb_prior_sampler_backend(const jb_prior_sampler_t *s);

#endif
