// jb_expect.h: the tensors a model must have, computed from its hyper-parameters.
//
// Names, shapes and accepted dtypes of every entry of the reference module's
// state_dict(), in state_dict order, for the VQ-VAE (vqvae.py, encdec.py,
// resnet.py, bottleneck.py) and for one prior level (prior.py SimplePrior:
// conditioner_blocks, y_emb, prime_prior / prime_state_proj / prime_state_ln /
// prime_x_out, prior; transformer.py, factored_attention.py, conditioners.py).
// The converter checks checkpoints against it; the loaders may too.
//
// Dtypes: every tensor must be a float tensor, F32, F16, BF16 or F64: the
// reference's load_state_dict copies any of them into its (F32, or F16 with
// fp16_params) parameters, and the released 5B top priors store their Conv1D
// weights ("*.w") as F16. Integer and bool tensors are refused.
//
// Thread rules: reentrant; a jb_expect_t is immutable once built.
#ifndef JB_EXPECT_H
#define JB_EXPECT_H

#include <jansson.h>
#include <stdint.h>

#include "jb_err.h"
#include "jb_tensor.h"

typedef struct {
    char name[128];
    int ndim;
    int64_t shape[4];
    unsigned dtypes;   // bit (1u << jb_dtype_t) for each accepted dtype
} jb_expect_tensor_t;

typedef struct {
    jb_expect_tensor_t *t;   // n entries, state_dict order
    int n, cap;
    int64_t n_params;        // total elements
} jb_expect_t;

// From the complete hyper-parameter dictionary (jb_hparams.h). NULL + err
// (JB_EFORMAT naming the bad key, JB_ENOMEM).
jb_expect_t *jb_expect_vqvae(const json_t *hp, jb_err_t *err);
// A prior's dictionary, with its VQ-VAE's under "vqvae".
jb_expect_t *jb_expect_prior(const json_t *hp, jb_err_t *err);
void jb_expect_destroy(jb_expect_t **e_p);

// Index of name, or -1.
int jb_expect_find(const jb_expect_t *e, const char *name);
// Does this tensor match entry i? Returns 0, or -1 with a message naming the tensor
// ("tensor 'x': shape [3, 4], expected [4, 3]" / "... dtype F16, expected F32").
int jb_expect_check(const jb_expect_t *e, int i, jb_dtype_t dt, int ndim, const int64_t *shape,
                    jb_err_t *err);

#endif
