// jb_transformer.h: the reference's Transformer (jukebox/transformer): pre-LayerNorm blocks of
// factored attention and a quick-GELU MLP, with a key/value cache per layer.
//
//   block:  a = attn(ln_0(x));  h = x + a;  h = h + mlp(ln_1(h))
//           (res_scale: h = x + s·(a + mlp(ln_1(x + s·a))), s = 1/depth)
//   attn:   c_attn -> [q | k | v] (n_state each, heads contiguous slices) -> masked softmax
//           (scale 1/sqrt(head_dim)) -> c_proj.   kind 6 projects q only; k, v come from
//           c_enc_kv(encoder_kv).
//
// Attention kinds (attn_func) and what a query at position i sees (bc = block_ctx):
//   0 dense: j <= i                      1 block: same block, j <= i
//   2 transpose: j ≡ i (mod bc), j <= i  3 previous block: block i/bc - 1 (zero output in block 0)
//   6 encoder-decoder: all encoder rows  7 prime: j <= i and j < prime_keys
// The layer pattern of each attn_order is jb_transformer_attn_func().
//
// Every pass goes through a cache (jb_tcache_t): a pass of c tokens appends their keys and
// values at positions [pos, pos + c) and attends; the teacher-forced forward is one pass over
// the whole sequence (or several: the result does not depend on how it is cut), sampling
// is one-token passes. See docs/prior.md for what each kind caches.
//
// Thread rules: a jb_transformer_t is immutable after _new and may be shared; a jb_tcache_t
// belongs to one thread at a time. Ownership: the transformer borrows the weight memory of the
// jb_st_t it was made from (keep the file open while it lives).
#ifndef JB_TRANSFORMER_H
#define JB_TRANSFORMER_H

#include <stddef.h>
#include <stdint.h>

#include "jb_err.h"
#include "jb_matmul.h"
#include "jb_safetensors.h"
#include "jb_tensor.h"

typedef struct {
    int width;          // n_in
    int depth;
    int heads;
    int n_ctx;          // sequence length the transformer is built for
    int attn_order;
    int blocks;         // number of blocks (0: none; only attn_func 0 then)
    double m_attn;      // n_state = int(m_attn·width)
    double m_mlp;       // MLP hidden = int(m_mlp·width)
    int res_scale;      // residuals scaled by 1/depth
    int encoder_dims;   // kind 6: encoder rows (0: none)
    int prime_len;      // kind 7: the reference's prime_len (n_tokens); keys: (prime_len/blocks+1)·blocks
} jb_transformer_hp_t;

typedef struct jb_transformer jb_transformer_t;
typedef struct jb_tcache jb_tcache_t;

// attn_func of layer d for attn_order (reference table; orders 0-12). -1: unknown order.
int jb_transformer_attn_func(int attn_order, int d);

// Weights "<prefix>_attn_mods.<d>.{ln_0,attn.c_attn,attn.c_enc_kv,attn.c_proj,ln_1,mlp.c_fc,
// mlp.c_proj}" from st; matrix weights F32/F16/BF16 (used as stored), the rest widened to F32.
// NULL + err (names file and tensor) on a missing or misshapen tensor or an unsupported kind.
jb_transformer_t *jb_transformer_new(const jb_st_t *st, const char *prefix,
                                     const jb_transformer_hp_t *hp, jb_err_t *err);
void jb_transformer_destroy(jb_transformer_t **tf_p);

// How the matrix weights ("*.w" of every layer) are held in memory (jb_transformer_new_opts).
// STORED: the file's memory as stored (F32, F16 or BF16); F32/F16/BF16: a copy converted at
// load (round to nearest even), unless the file already stores that dtype. INT8: quantized at
// load with jb_matmul_pack_q8 (one scale per column and group of 64 rows; always packed,
// whatever `packed` says; the CUDA path uploads these int8 tiles and scales as they are, and the
// weights as stored otherwise: a device transformer needs packed 0 or INT8).
enum {
    JB_WEIGHTS_STORED = 0,
    JB_WEIGHTS_F32 = 1,
    JB_WEIGHTS_F16 = 2,
    JB_WEIGHTS_BF16 = 3,
    JB_WEIGHTS_INT8 = 4
};
typedef struct {
    int weights;   // JB_WEIGHTS_*
    int packed;    // 1: repack every matrix with jb_matmul_pack (a private copy; see docs/bench.md)
} jb_weights_opts_t;
// "stored", "f32", "f16", "bf16", "int8" -> JB_WEIGHTS_*; -1 for anything else.
int jb_weights_parse(const char *name);
const char *jb_weights_name(int weights);
// As jb_transformer_new with opts (NULL: stored, not packed).
jb_transformer_t *jb_transformer_new_opts(const jb_st_t *st, const char *prefix,
                                          const jb_transformer_hp_t *hp,
                                          const jb_weights_opts_t *opts, jb_err_t *err);
// Bytes of matrix weights one pass reads (every layer's c_attn, c_proj, c_fc, c_proj; not
// c_enc_kv, which only jb_tcache_set_encoder reads).
size_t jb_transformer_step_weight_bytes(const jb_transformer_t *tf);
// The same matrices' weights (K·N each): a pass of R rows does 2·R·this FLOPs in them.
int64_t jb_transformer_step_weight_params(const jb_transformer_t *tf);

const jb_transformer_hp_t *jb_transformer_hp(const jb_transformer_t *tf);
int jb_transformer_n_state(const jb_transformer_t *tf);
int jb_transformer_layer_kind(const jb_transformer_t *tf, int d);
// Key positions seen through a kind 7 layer: (prime_len / blocks + 1) · blocks.
int jb_transformer_prime_keys(const jb_transformer_t *tf);

// Read-only view of one layer's weights, for other backends (common/cuda/jb_transformer.cu).
// Pointers are the transformer's (valid while it lives). w: (K, N) in dt, or NULL when only the
// packed copy is held (packed, INT8); pk: the packed copy or NULL; b: (N) float32 or NULL.
typedef struct {
    const void *w;
    jb_dtype_t dt;
    const float *b;
    int K, N;
    const jb_matmul_packed_t *pk;
} jb_transformer_lin_t;
typedef struct {
    int kind;                                    // attn_func
    const float *ln0_g, *ln0_b, *ln1_g, *ln1_b;  // (width)
    jb_transformer_lin_t c_attn;    // (width, 3·S); kind 6: (width, S)
    jb_transformer_lin_t c_enc_kv;  // kind 6 only: (width, 2·S); else w == NULL
    jb_transformer_lin_t c_proj;    // (S, width)
    jb_transformer_lin_t fc;        // (width, n_mlp)
    jb_transformer_lin_t mlp_proj;  // (n_mlp, width)
} jb_transformer_layer_t;
// Layer d (0 <= d < depth) into *out; -1 when d is out of range.
int jb_transformer_layer(const jb_transformer_t *tf, int d, jb_transformer_layer_t *out);
int jb_transformer_block_ctx(const jb_transformer_t *tf);
int jb_transformer_n_mlp(const jb_transformer_t *tf);
// Key slots layer d keeps per sequence for passes of at most max_chunk tokens, and the most keys
// one query of layer d sees (the softmax row length): the cache layout every backend shares.
int jb_transformer_cache_cap(const jb_transformer_t *tf, int d, int max_chunk);
int jb_transformer_keys_max(const jb_transformer_t *tf, int d);

// A cache for n_batch sequences and passes of at most max_chunk tokens; all working memory of
// a pass is allocated here, so passes never allocate. NULL + err.
jb_tcache_t *jb_tcache_new(const jb_transformer_t *tf, int n_batch, int max_chunk, jb_err_t *err);
void jb_tcache_destroy(jb_tcache_t **c_p);
// Back to position 0 (keeps the encoder keys/values).
void jb_tcache_reset(jb_tcache_t *c);
int jb_tcache_pos(const jb_tcache_t *c);
// Sequences in use (jb_tcache_set_batch).
int jb_tcache_batch(const jb_tcache_t *c);
// Use the first n sequences (1 <= n <= n_batch) from now on; x and encoder_kv then hold n rows.
int jb_tcache_set_batch(jb_tcache_t *c, int n, jb_err_t *err);
// Bytes held by the key/value caches (not the scratch).
size_t jb_tcache_kv_bytes(const jb_tcache_t *c);
// Benchmarks only: mark the cache as holding n positions (0 <= n < n_ctx) of every active
// sequence, keys/values random in [-1, 1) from seed, so that the next pass attends over n keys
// as it would after priming n tokens. Also fills the encoder keys/values of kind-6 layers.
int jb_tcache_fill_random(jb_tcache_t *c, int n, uint64_t seed, jb_err_t *err);
// Keys/values of every kind-6 layer from encoder_kv: (n, encoder_dims, width), n active sequences.
int jb_tcache_set_encoder(jb_tcache_t *c, const float *encoder_kv, jb_err_t *err);

// Softmax weights of one layer/head to copy out during a pass:
// out: (n, out_rows, n_keys) for the n active sequences; row r is query position out_t0 + r, column j key position j
// (j < n_keys; entries of keys the query does not see are left as they are: zero them first).
typedef struct {
    int layer, head;
    float *out;
    int out_t0, out_rows, n_keys;
} jb_attn_record_t;

// One pass: x: (n, c, width) for the n active sequences (jb_tcache_set_batch; n_batch by
// default), the inputs of positions [pos, pos + c), replaced by the outputs. Allocates nothing. 1 <= c <= max_chunk, pos + c <= n_ctx. rec may be NULL.
int jb_transformer_forward(const jb_transformer_t *tf, jb_tcache_t *cache, float *x, int c,
                           const jb_attn_record_t *rec, jb_err_t *err);

#endif
