// jb_optim.h: the optimiser state of a training run, one jb_adam_t per parameter tensor, and
// its checkpoint file (RUN/optim.safetensors, docs/train.md "Run directory").
//
//   jb_optim_t os = {0};
//   jb_optim_alloc(&os, n, &err);                       // then, per tensor i:
//   os.names[i] = ..., os.w[i] = weights, os.g[i] = gradients, os.len[i] = elements;
//   jb_optim_make(&os, &err);                           // moments 0, step counters 0
//   double lr; int skipped;
//   double gn = jb_optim_step(&os, &hp, position, &lr, &skipped);
//   jb_optim_run_t run = {"prior", seed, batch, window};
//   jb_optim_save(path, &os, step, &run, &err);         // atomically
//   jb_optim_load(path, &os, &run, &step, &err);        // exact resume
//   jb_optim_free(&os);
//
// The file: safetensors with m.<name> and v.<name> (F32, (len)) per tensor and metadata
// kind "optim", trains (what the run trains: "vqvae", "prior"), step (the schedule
// position), adam_t (the Adam step counter), seed, batch, window, data_draw (step · batch:
// the data stream's position). Loading checks trains, seed, batch and window against the
// run's (JB_EFORMAT for another kind of run, JB_EINVAL for other settings), every moment's
// name, shape and dtype, and restores moments and counters bit for bit.
// Thread rules: one thread at a time. Ownership: names, w, g are borrowed from the caller.
#ifndef JB_OPTIM_H
#define JB_OPTIM_H

#include <stdint.h>

#include "jb_adam.h"
#include "jb_err.h"

typedef struct {
    int n;                 // tensors
    jb_adam_t **adam;      // (n) one optimiser per parameter tensor
    const char **names;    // (n) borrowed
    float **w, **g;        // (n) borrowed
    int64_t *len;          // (n)
} jb_optim_t;

typedef struct {
    const char *trains;    // "vqvae", "prior"
    uint64_t seed;
    int batch;
    int64_t window;        // samples (VQ-VAE) or codes (prior) per example
} jb_optim_run_t;

// Room for n tensors (names, w, g, len zeroed for the caller to fill).
int jb_optim_alloc(jb_optim_t *s, int n, jb_err_t *err);
// The n optimisers, from len.
int jb_optim_make(jb_optim_t *s, jb_err_t *err);
void jb_optim_free(jb_optim_t *s);
// One step over every tensor: global gradient norm (returned), clip, the schedule's lr at
// position (*lr); *skipped when the reference would skip it (jb_adam_skip).
double jb_optim_step(jb_optim_t *s, const jb_adam_hp_t *hp, int64_t position, double *lr,
                     int *skipped);
int jb_optim_save(const char *path, const jb_optim_t *s, int64_t step, const jb_optim_run_t *run,
                  jb_err_t *err);
// *step: the saved schedule position. A file that does not open: the error, prefixed "--resume".
int jb_optim_load(const char *path, jb_optim_t *s, const jb_optim_run_t *run, int64_t *step,
                  jb_err_t *err);

#endif
