// test_jb_optim.c: the optimiser state of a training run and its checkpoint file
// (common/train/jb_optim.h): steps, save, load into a fresh state, and the resumed run
// continuing bit for bit; the checks on a checkpoint of another run.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "jb_optim.h"
#include "jb_safetensors.h"
#include "jb_test.h"

#define NA 5
#define NB 3

typedef struct {
    float wa[NA], wb[NB], ga[NA], gb[NB];
    jb_optim_t os;
} model_t;

static int model_init(model_t *m, jb_err_t *err) {
    memset(m, 0, sizeof *m);
    for (int i = 0; i < NA; i++) m->wa[i] = 0.1f * (float)(i + 1);
    for (int i = 0; i < NB; i++) m->wb[i] = -0.2f * (float)(i + 1);
    if (jb_optim_alloc(&m->os, 2, err)) return -1;
    m->os.names[0] = "a.weight", m->os.w[0] = m->wa, m->os.g[0] = m->ga, m->os.len[0] = NA;
    m->os.names[1] = "b.bias", m->os.w[1] = m->wb, m->os.g[1] = m->gb, m->os.len[1] = NB;
    return jb_optim_make(&m->os, err);
}

// Gradient of sum((w - target)^2) with a target that depends on the step.
static double step(model_t *m, const jb_adam_hp_t *hp, int64_t pos) {
    for (int i = 0; i < NA; i++) m->ga[i] = 2 * (m->wa[i] - (float)sin((double)(pos + i)));
    for (int i = 0; i < NB; i++) m->gb[i] = 2 * (m->wb[i] - (float)cos((double)(pos * i)));
    double lr;
    int skipped;
    return jb_optim_step(&m->os, hp, pos, &lr, &skipped);
}

int main(void) {
    jb_err_t err = {0};
    char path[256];
    snprintf(path, sizeof path, "/tmp/test_jb_optim.%ld.safetensors", (long)getpid());
    jb_adam_hp_t hp = jb_adam_defaults();
    hp.lr_warmup = 2;
    jb_optim_run_t run = {"prior", 7, 4, 32};

    // 12 steps straight, and 7 + save + load into a fresh state + 5
    model_t whole, first, second;
    JB_CHECK_OK(model_init(&whole, &err), &err, "init");
    JB_CHECK_OK(model_init(&first, &err), &err, "init first");
    for (int64_t s = 0; s < 12; s++) step(&whole, &hp, s);
    for (int64_t s = 0; s < 7; s++) step(&first, &hp, s);
    JB_CHECK_OK(jb_optim_save(path, &first.os, 7, &run, &err), &err, "save at step 7");
    JB_CHECK_OK(model_init(&second, &err), &err, "init second");
    memcpy(second.wa, first.wa, sizeof first.wa);   // the weights come from the model file
    memcpy(second.wb, first.wb, sizeof first.wb);
    int64_t at = -1;
    JB_CHECK_OK(jb_optim_load(path, &second.os, &run, &at, &err), &err, "load");
    JB_CHECK(at == 7, "saved step read back (%lld)", (long long)at);
    JB_CHECK(jb_adam_t_count(second.os.adam[0]) == 7 && jb_adam_t_count(second.os.adam[1]) == 7,
             "Adam step counters restored");
    JB_CHECK(!memcmp(jb_adam_m(second.os.adam[0]), jb_adam_m(first.os.adam[0]), NA * 4) &&
                 !memcmp(jb_adam_v(second.os.adam[1]), jb_adam_v(first.os.adam[1]), NB * 4),
             "moments restored bit for bit");
    for (int64_t s = 7; s < 12; s++) step(&second, &hp, s);
    JB_CHECK(!memcmp(second.wa, whole.wa, sizeof whole.wa) &&
                 !memcmp(second.wb, whole.wb, sizeof whole.wb),
             "7 + resume + 5 steps equal 12 steps bit for bit");

    // the file as docs/train.md describes it
    jb_st_t *st = jb_st_open(path, &err);
    JB_CHECK(st != NULL, "the checkpoint opens as safetensors (%s)", err.msg);
    if (st) {
        const char *want[][2] = {{"kind", "optim"}, {"trains", "prior"}, {"step", "7"},
                                 {"adam_t", "7"},   {"seed", "7"},      {"batch", "4"},
                                 {"window", "32"},  {"data_draw", "28"}};
        for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
            const char *v = jb_st_meta(st, want[k][0]);
            JB_CHECK(v && !strcmp(v, want[k][1]), "metadata %s = %s (got %s)", want[k][0],
                     want[k][1], v ? v : "none");
        }
        const jb_st_entry_t *e = jb_st_find(st, "m.a.weight");
        JB_CHECK(e && e->dtype == JB_F32 && e->ndim == 1 && e->shape[0] == NA, "m.a.weight F32 (5)");
        e = jb_st_find(st, "v.b.bias");
        JB_CHECK(e && e->dtype == JB_F32 && e->shape[0] == NB, "v.b.bias F32 (3)");
        JB_CHECK(jb_st_count(st) == 4, "two moments per tensor, nothing else");
        jb_st_close(&st);
    }

    // another run's checkpoint
    jb_optim_run_t other = run;
    other.trains = "vqvae";
    JB_CHECK(jb_optim_load(path, &second.os, &other, &at, &err) != 0 && err.code == JB_EFORMAT &&
                 strstr(err.msg, "not the optimiser state of a vqvae run"),
             "another kind of run: JB_EFORMAT (%s)", err.msg);
    other = run;
    other.seed = 8;
    JB_CHECK(jb_optim_load(path, &second.os, &other, &at, &err) != 0 && err.code == JB_EINVAL &&
                 strstr(err.msg, "--seed 7 --batch 4 window 32"),
             "another seed: JB_EINVAL with the saved settings (%s)", err.msg);
    other = run;
    other.batch = 2;
    JB_CHECK(jb_optim_load(path, &second.os, &other, &at, &err) != 0 && err.code == JB_EINVAL,
             "another batch: JB_EINVAL");
    // another model: a tensor the file does not have
    second.os.names[1] = "c.bias";
    JB_CHECK(jb_optim_load(path, &second.os, &run, &at, &err) != 0 && strstr(err.msg, "c.bias"),
             "a tensor the checkpoint lacks is named (%s)", err.msg);
    second.os.names[1] = "b.bias";
    second.os.len[1] = NB + 1;   // (the adam is larger than needed only in this check)
    JB_CHECK(jb_optim_load(path, &second.os, &run, &at, &err) != 0, "a shape that differs is refused (%s)",
             err.msg);
    second.os.len[1] = NB;
    unlink(path);
    JB_CHECK(jb_optim_load(path, &second.os, &run, &at, &err) != 0 && err.code == JB_ENOENT &&
                 strstr(err.msg, "--resume"),
             "no checkpoint: JB_ENOENT, prefixed --resume (%s)", err.msg);

    jb_optim_free(&whole.os), jb_optim_free(&first.os), jb_optim_free(&second.os);
    JB_CHECK(whole.os.n == 0 && whole.os.adam == NULL, "free clears");
    return jb_test_summary("test_jb_optim");
}
