// jb_adam.h: the reference's optimiser as train.py drives it: jukebox.utils.fp16.FusedAdam
// (its pure-PyTorch adam_step), gradient-norm clipping by scaling, and the LambdaLR schedule.
//
//   jb_adam_t *opt = jb_adam_new(n, &err);                  // m, v = 0; step counter 0
//   double gn = jb_adam_grad_norm(g, n);
//   if (!jb_adam_skip(&hp, gn))
//       jb_adam_step(opt, &hp, w, g, jb_adam_lr(&hp, position), jb_adam_clip_scale(&hp, gn));
//   position++;
//
// Per element, with the step counter t starting at 1 for a fresh optimiser (independent of
// the schedule position):
//   g = grad / scale;  m = b1·m + (1 − b1)·g;  v = b2·v + (1 − b2)·g²
//   step_size = lr · sqrt(1 − b2^t) / (1 − b1^t)
//   p = p − step_size · (m / (sqrt(v) + eps) + weight_decay · p)
// i.e. eps is added to the un-corrected sqrt(v) and weight decay joins the update, scaled by
// the bias-corrected step size (neither L2 in the gradient nor AdamW's lr·wd·p).
// Schedule λ(s) = lr_scale · lr_gamma^floor(s / lr_decay) · min(1, s / lr_warmup), or with
// lr_use_linear_decay lr_scale · min(1, s / lr_warmup) · max(0, 1 − max(0, s −
// lr_start_linear_decay) / lr_decay); lr_t = lr · λ(position). A fresh run starts at position
// 0, so its first update has lr 0 (only m and v move).
//
// Thread rules: one thread at a time per optimiser. Ownership: owns its moments (float32).
#ifndef JB_ADAM_H
#define JB_ADAM_H

#include <stdint.h>

#include "jb_err.h"

typedef struct {
    double lr, beta1, beta2, eps, weight_decay;
    double clip;               // max gradient norm (scale = max(1, gn / clip))
    double ignore_grad_norm;   // > 0: skip a step whose gn exceeds it
    double lr_warmup, lr_decay, lr_gamma, lr_scale;
    int lr_use_linear_decay;
    double lr_start_linear_decay;
} jb_adam_hp_t;

typedef struct jb_adam jb_adam_t;

// The reference's defaults (hparams.py): lr 3e-4, betas (0.9, 0.999), eps 1e-8, wd 0,
// clip 1, lr_warmup 100, lr_decay 1e10, lr_gamma 1, lr_scale 1, no linear decay.
jb_adam_hp_t jb_adam_defaults(void);

// Moments for n parameters, zero; step counter 0. NULL + err.
jb_adam_t *jb_adam_new(int64_t n, jb_err_t *err);
void jb_adam_destroy(jb_adam_t **a_p);
int64_t jb_adam_t_count(const jb_adam_t *a);
// m, v: (n) moments (for checkpoints: read or restore them).
float *jb_adam_m(jb_adam_t *a);
float *jb_adam_v(jb_adam_t *a);
void jb_adam_set_t(jb_adam_t *a, int64_t t);

// lr · λ(position)
double jb_adam_lr(const jb_adam_hp_t *hp, int64_t position);
// sqrt(Σ g²) accumulated in double. g: (n)
double jb_adam_grad_norm(const float *g, int64_t n);
// max(1, gn / clip)
double jb_adam_clip_scale(const jb_adam_hp_t *hp, double gn);
// 1 when gn > ignore_grad_norm > 0 (the reference then does not step).
int jb_adam_skip(const jb_adam_hp_t *hp, double gn);
// One update of p: (n) from g: (n) with this step's lr and gradient divisor; t += 1 first.
void jb_adam_step(jb_adam_t *a, const jb_adam_hp_t *hp, float *p, const float *g, double lr,
                  double scale);

#endif
