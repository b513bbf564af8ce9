// jb_transformer_cuda.h: the transformer of jb_transformer.h on a CUDA device.
//
// Design: a separate device object mirroring the CPU one, made from it.
//   jb_transformer_cuda_t   the weights uploaded once, each matrix in its stored dtype
//                           (F32, F16 or BF16), vectors in F32, in one device allocation.
//   jb_tcache_cuda_t        the key/value caches (same layout as jb_tcache_t: per layer
//                           (N, cap, S)), the activations x (N, max_chunk, width) and all
//                           working memory of a pass, in one device allocation.
// A pass is the CPU pass (jb_transformer_forward) step for step: LayerNorm, softmax-attention,
// quick-GELU, residuals and the key/value scatter are one-thread-per-index kernels (the JB_HD
// bodies of jb_nn.h and this module's .cu); products go to jb_matmul_cuda (jb_matmul_cuda.h):
// weights widened to float32 in registers, float32 activations and accumulation, as the CPU's,
// and batch-invariant — a sequence's results do not depend on the other sequences of the
// batch nor on their number, so jobs sampled together get the codes they get alone.
// Each cache has its own stream; a one-token pass (a sampling step) is one CUDA graph launch
// (see jb_tcache_cuda_use_graph). Nothing crosses to the host during a pass; x stays on the
// device between passes (jb_tcache_cuda_x); _forward_host is the convenience that copies x in
// and out.
//
// Memory planning: jb_transformer_cuda_plan gives the bytes of the weights and of one sequence's
// cache + working memory; _new and jb_tcache_cuda_new compare them with cudaMemGetInfo before
// allocating and refuse with "needs X GiB, Y GiB free", or (fit) shrink the batch to what fits.
//
// Built from common/cuda/jb_transformer.cu with nvcc (make CUDA=1, in libjukebox.a) or against
// the CPU emulation of CUDA (plain make, build/libjukebox-emu.a).
// Thread rules: as jb_transformer.h; one device per process (the current one).
// Ownership: jb_transformer_cuda_t borrows the CPU transformer only while _new runs.
#ifndef JB_TRANSFORMER_CUDA_H
#define JB_TRANSFORMER_CUDA_H

#include <stddef.h>

#include "jb_err.h"
#include "jb_tensor.h"
#include "jb_transformer.h"

typedef struct jb_transformer_cuda jb_transformer_cuda_t;
typedef struct jb_tcache_cuda jb_tcache_cuda_t;

typedef struct {
    size_t weights;      // bytes of all weights on the device
    size_t per_sample;   // bytes of one sequence: key/value cache + activations + working memory
    size_t kv_per_sample;// of which the key/value cache
    size_t per_sample_kv_f16;   // per_sample with a float16 key/value cache
    size_t fixed;        // bytes of a cache independent of the batch (alignment slack)
} jb_transformer_cuda_plan_t;

// The device bytes for passes of at most max_chunk tokens.
void jb_transformer_cuda_plan(const jb_transformer_t *tf, int max_chunk,
                              jb_transformer_cuda_plan_t *plan);

// Upload the weights of tf. NULL + err: JB_ENOMEM "... needs X GiB, Y GiB free" when they do not
// fit in the free device memory, or a CUDA error.
jb_transformer_cuda_t *jb_transformer_cuda_new(const jb_transformer_t *tf, jb_err_t *err);
void jb_transformer_cuda_destroy(jb_transformer_cuda_t **dt_p);

// A device cache for n_batch sequences and passes of at most max_chunk tokens. When the memory
// for n_batch does not fit: fit != 0 takes the largest batch that does (>= 1), fit == 0 refuses;
// either way JB_ENOMEM "needs X GiB, Y GiB free" when not even one sequence fits.
jb_tcache_cuda_t *jb_tcache_cuda_new(jb_transformer_cuda_t *dt, int n_batch, int max_chunk,
                                     int fit, jb_err_t *err);
// The same with the key/value cache in kv_dtype: JB_F32 (as _new) or JB_F16 (half the cache
// memory and the cache traffic of a step; keys and values rounded to float16 as they are
// stored, the attention sums in float32 — results differ from the f32 cache by that rounding).
jb_tcache_cuda_t *jb_tcache_cuda_new_kv(jb_transformer_cuda_t *dt, int n_batch, int max_chunk,
                                        int fit, jb_dtype_t kv_dtype, jb_err_t *err);
void jb_tcache_cuda_destroy(jb_tcache_cuda_t **c_p);
int jb_tcache_cuda_batch(const jb_tcache_cuda_t *c);   // sequences allocated
int jb_tcache_cuda_pos(const jb_tcache_cuda_t *c);
// Back to position 0 (keeps the encoder keys/values).
int jb_tcache_cuda_reset(jb_tcache_cuda_t *c, jb_err_t *err);
// One-token passes run as one CUDA graph (default on): captured at the first such pass (and
// again when the active batch changes), replayed for every later one; positions are read from
// device memory, so the same graph serves every position. Off: launched kernel by kernel.
void jb_tcache_cuda_use_graph(jb_tcache_cuda_t *c, int on);
// LayerNorm by the block-cooperative kernel (jb_nn_cuda_layernorm_block: a block of 256
// threads per row, shared-memory reductions) instead of one thread per row (default off: the
// one-thread kernel is the configuration the golden runs use; the block kernel is what a
// batch-1 step wants on a GPU — a row of 4800 values is one thread's serial work otherwise —
// and is tested against the CPU under the emulation; its speed only a GPU can show).
void jb_tcache_cuda_use_block_ln(jb_tcache_cuda_t *c, int on);
// Graph captures and replays so far.
void jb_tcache_cuda_graph_stats(const jb_tcache_cuda_t *c, long *captures, long *replays);
int jb_tcache_cuda_set_batch(jb_tcache_cuda_t *c, int n, jb_err_t *err);
// The device buffer x: (n, max_chunk, width) floats; a pass of c tokens uses (n, c, width).
float *jb_tcache_cuda_x(jb_tcache_cuda_t *c);
// The cache's stream (a cudaStream_t): work on x before/after a pass goes on it.
void *jb_tcache_cuda_stream(jb_tcache_cuda_t *c);
// Keys/values of every kind-6 layer. encoder_kv: host (n, encoder_dims, width), n active.
int jb_tcache_cuda_set_encoder(jb_tcache_cuda_t *c, const float *encoder_kv, jb_err_t *err);

// One pass over positions [pos, pos + c) on jb_tcache_cuda_x, in place (as jb_transformer_forward).
int jb_transformer_cuda_forward(jb_transformer_cuda_t *dt, jb_tcache_cuda_t *c, int n_tok,
                                jb_err_t *err);
// The same with x: host (n, c, width), copied in, replaced by the outputs.
int jb_transformer_cuda_forward_host(jb_transformer_cuda_t *dt, jb_tcache_cuda_t *c, float *x,
                                     int n_tok, jb_err_t *err);

#endif
