// test_cuda_transformer.c: the device transformer (jb_transformer_cuda.h) against the CPU
// transformer (jb_transformer.h) on the transformers of the golden prior cases
// (tests/golden/prior_*/model.safetensors): the teacher-forced forward (one pass over the whole
// sequence) and one-token steps must equal the CPU's full pass within the case's golden
// tolerance (float16 weights too: the device's products widen the weights and keep float32
// activations, as the CPU's do; jb_matmul_cuda.h). With int8 weights (the CPU's int8 tiles
// uploaded) against the CPU's int8 pass, and the plan's int8 bytes. Batch invariance of the
// whole pass: sequences stepped together == each alone, bit for bit. Then memory planning:
// with a small fake device memory (emulation) the weights or the cache are refused with
// "needs X GiB, Y GiB free", and fit shrinks the batch.
// Built against the CPU emulation of CUDA by plain make; against a GPU by make CUDA=1.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "jb_prior.h"
#include "jb_safetensors.h"
#include "jb_test.h"
#include "jb_device.h"
#include "jb_transformer.h"
#include "jb_transformer_cuda.h"

#ifdef JB_CUDA_EMU
#include "jb_cuda_emu.h"
#endif

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static uint64_t st = 11;
static float frand(void) {
    st = st * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((st >> 40) / (double)(1 << 24)) * 2.0f - 1.0f;
}

typedef struct {
    const char *dir;
    double rel, abs_;   // golden tolerance of the case (case.json "tolerance")
    int block_ln;       // also check the block-cooperative LayerNorm
} case_t;

static void run_case(const case_t *cs) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s/model.safetensors",
             getenv("GOLDEN") ? getenv("GOLDEN") : "tests/golden", cs->dir);
    jb_err_t err = {0};
    jb_prior_t *p = jb_prior_new(path, &err);
    JB_CHECK(p != NULL, "%s: open (%s)", cs->dir, err.msg);
    if (!p) return;
    const jb_transformer_t *tf = jb_prior_transformer(p);
    const jb_transformer_hp_t *hp = jb_transformer_hp(tf);
    int N = 2, T = hp->n_ctx, W = hp->width, E = hp->encoder_dims;
    size_t nx = (size_t)N * T * W;
    float *x0 = malloc(sizeof(float) * nx), *ref = malloc(sizeof(float) * nx);
    float *got = malloc(sizeof(float) * nx);
    float *enc = E > 0 ? malloc(sizeof(float) * (size_t)N * E * W) : NULL;
    for (size_t i = 0; i < nx; i++) x0[i] = frand();
    for (int64_t i = 0; E > 0 && i < (int64_t)N * E * W; i++) enc[i] = frand();

    // CPU: one pass over the whole sequence.
    jb_tcache_t *cc = jb_tcache_new(tf, N, T, &err);
    memcpy(ref, x0, sizeof(float) * nx);
    int ok = cc && (!E || jb_tcache_set_encoder(cc, enc, &err) == 0) &&
             jb_transformer_forward(tf, cc, ref, T, NULL, &err) == 0;
    JB_CHECK(ok, "%s: CPU forward (%s)", cs->dir, err.msg);

    jb_transformer_cuda_t *dt = jb_transformer_cuda_new(tf, &err);
    JB_CHECK(dt != NULL, "%s: weights to the device (%s)", cs->dir, err.msg);
    double rel = cs->rel, abs_ = cs->abs_;
    if (dt && ok) {
        // Teacher-forced forward: one pass.
        jb_tcache_cuda_t *dc = jb_tcache_cuda_new(dt, N, T, 0, &err);
        JB_CHECK(dc != NULL, "%s: device cache (%s)", cs->dir, err.msg);
        memcpy(got, x0, sizeof(float) * nx);
        int fok = dc && (!E || jb_tcache_cuda_set_encoder(dc, enc, &err) == 0) &&
                  jb_transformer_cuda_forward_host(dt, dc, got, T, &err) == 0;
        JB_CHECK(fok, "%s: device forward (%s)", cs->dir, err.msg);
        if (fok) {
            double ma, mr;
            JB_CHECK(jb_test_close(got, ref, (long)nx, rel, abs_, &ma, &mr),
                     "%s: device forward vs CPU (rel %g abs %g): max abs %.3g", cs->dir, rel, abs_,
                     ma);
            int k6 = 0, k7 = 0;
            for (int d = 0; d < hp->depth; d++) {
                int k = jb_transformer_layer_kind(tf, d);
                k6 += k == 6, k7 += k == 7;
            }
            printf("%s: forward (%d, %d, %d), %d layers (%d enc-dec, %d prime): max abs diff "
                   "%.3g, max rel %.3g\n", cs->dir, N, T, W, hp->depth, k6, k7, ma, mr);
        }
        JB_CHECK(dc && jb_transformer_cuda_forward_host(dt, dc, got, 1, &err) == -1 &&
                     err.code == JB_EINVAL,
                 "%s: a pass past n_ctx refused (%s)", cs->dir, err.msg);
        jb_tcache_cuda_destroy(&dc);

        // Sampling: one-token steps (cache for passes of 1 token: the windowed layouts), as one
        // CUDA graph per step (captured once, replayed) and launched kernel by kernel.
        for (int graph = 1; graph >= 0; graph--) {
            dc = jb_tcache_cuda_new(dt, N, 1, 0, &err);
            JB_CHECK(dc != NULL, "%s: step cache (%s)", cs->dir, err.msg);
            if (!dc) break;
            jb_tcache_cuda_use_graph(dc, graph);
            int sok = !E || jb_tcache_cuda_set_encoder(dc, enc, &err) == 0;
            float *row = malloc(sizeof(float) * (size_t)N * W);
            double worst = 0, t_ms = now_ms();
            int close = 1;
            for (int t = 0; sok && t < T; t++) {
                for (int b = 0; b < N; b++)
                    memcpy(row + (size_t)b * W, x0 + ((size_t)b * T + t) * W, sizeof(float) * W);
                sok = jb_transformer_cuda_forward_host(dt, dc, row, 1, &err) == 0;
                for (int b = 0; sok && b < N; b++) {
                    double ma;
                    close &= jb_test_close(row + (size_t)b * W, ref + ((size_t)b * T + t) * W, W,
                                           rel, abs_, &ma, NULL);
                    if (ma > worst) worst = ma;
                }
            }
            t_ms = now_ms() - t_ms;
            const char *how = graph ? "graph" : "kernel by kernel";
            JB_CHECK(sok, "%s: device steps, %s (%s)", cs->dir, how, err.msg);
            JB_CHECK(sok && close, "%s: %d one-token steps (%s) vs CPU full pass: max abs %.3g",
                     cs->dir, T, how, worst);
            long cap = -1, rep = -1;
            jb_tcache_cuda_graph_stats(dc, &cap, &rep);
            JB_CHECK(graph ? (cap == 1 && rep == T) : (cap == 0 && rep == 0),
                     "%s: %s: %ld captures, %ld replays", cs->dir, how, cap, rep);
            printf("%s: %d steps (%s): max abs diff %.3g\n", cs->dir, T, how, worst);
            if (getenv("JB_CUDA_TIMING"))   // make test-gpu: wall time incl. the copies of x
                printf("%s: %.3f ms per step (%s, batch %d, with host copies)\n", cs->dir,
                       t_ms / T, how, N);
            if (graph && sok) {   // after a reset the same graph serves position 0 again
                for (int b = 0; b < N; b++)
                    memcpy(row + (size_t)b * W, x0 + (size_t)b * T * W, sizeof(float) * W);
                double ma = 1e30;
                int rok = jb_tcache_cuda_reset(dc, &err) == 0 &&
                          jb_transformer_cuda_forward_host(dt, dc, row, 1, &err) == 0 &&
                          jb_test_close(row, ref, W, rel, abs_, &ma, NULL);
                jb_tcache_cuda_graph_stats(dc, &cap, &rep);
                JB_CHECK(rok && cap == 1 && rep == T + 1,
                         "%s: after reset, position 0 by the same graph (max abs %.3g, %s)",
                         cs->dir, ma, err.msg);
            }
            free(row);
            jb_tcache_cuda_destroy(&dc);
        }

        // A float16 key/value cache: one-token steps (graph) and the teacher-forced pass against
        // the CPU's float32 pass. Keys and values are rounded to float16 (rel 2^-11) as they are
        // stored; through the depth that stays within 1e-2 abs of activations of scale ~1-10.
        for (int steps = 1; steps >= 0; steps--) {
            err = (jb_err_t){0};
            jb_tcache_cuda_t *hc = jb_tcache_cuda_new_kv(dt, N, steps ? 1 : T, 0, JB_F16, &err);
            JB_CHECK(hc != NULL, "%s: f16 key/value cache (%s)", cs->dir, err.msg);
            if (!hc) break;
            int hok = !E || jb_tcache_cuda_set_encoder(hc, enc, &err) == 0;
            double worst = 0;
            int close = 1;
            float *row = malloc(sizeof(float) * nx);
            if (steps) {
                for (int t = 0; hok && t < T; t++) {
                    for (int b = 0; b < N; b++)
                        memcpy(row + (size_t)b * W, x0 + ((size_t)b * T + t) * W,
                               sizeof(float) * W);
                    hok = jb_transformer_cuda_forward_host(dt, hc, row, 1, &err) == 0;
                    for (int b = 0; hok && b < N; b++) {
                        double ma;
                        close &= jb_test_close(row + (size_t)b * W,
                                               ref + ((size_t)b * T + t) * W, W, 1e-2, 1e-2,
                                               &ma, NULL);
                        if (ma > worst) worst = ma;
                    }
                }
            } else {
                memcpy(row, x0, sizeof(float) * nx);
                hok = hok && jb_transformer_cuda_forward_host(dt, hc, row, T, &err) == 0;
                close = hok && jb_test_close(row, ref, (long)nx, 1e-2, 1e-2, &worst, NULL);
            }
            const char *how = steps ? "one-token steps" : "forward";
            JB_CHECK(hok && close, "%s: f16 key/value cache, %s vs CPU f32: max abs %.3g "
                     "(tolerance 1e-2 abs + 1e-2 rel; %s)", cs->dir, how, worst, err.msg);
            // the rounding shows (the f16 path ran), unlike the f32 cache's
            JB_CHECK(worst > 1e-6, "%s: f16 cache %s differs from f32 (max abs %.3g)", cs->dir,
                     how, worst);
            printf("%s: f16 key/value cache, %s: max abs diff %.3g vs the CPU\n", cs->dir, how,
                   worst);
            free(row);
            jb_tcache_cuda_destroy(&hc);
        }

        // LayerNorm by the block-cooperative kernel (one coroutine per thread under the
        // emulation, so only the first positions): a 12-token pass, then 12 one-token steps as
        // graphs, against the CPU's full pass (causal: its first positions are the same).
        if (cs->block_ln) {
            int P = T < 12 ? T : 12;
            float *row = malloc(sizeof(float) * nx);
            double worst = 0, ma = 0;
            int close = 1;
            jb_tcache_cuda_t *bc = jb_tcache_cuda_new(dt, N, P, 0, &err);
            int bok = bc != NULL;
            if (bc) {
                jb_tcache_cuda_use_block_ln(bc, 1);
                bok = !E || jb_tcache_cuda_set_encoder(bc, enc, &err) == 0;
                for (int b = 0; b < N; b++)
                    memcpy(row + (size_t)b * P * W, x0 + (size_t)b * T * W, sizeof(float) * P * W);
                bok = bok && jb_transformer_cuda_forward_host(dt, bc, row, P, &err) == 0;
                for (int b = 0; bok && b < N; b++) {
                    close &= jb_test_close(row + (size_t)b * P * W, ref + (size_t)b * T * W,
                                           (long)P * W, rel, abs_, &ma, NULL);
                    if (ma > worst) worst = ma;
                }
                jb_tcache_cuda_destroy(&bc);
            }
            JB_CHECK(bok && close, "%s: block LayerNorm, %d-token pass vs CPU: max abs %.3g (%s)",
                     cs->dir, P, worst, err.msg);
            worst = 0, close = 1;
            bc = jb_tcache_cuda_new(dt, N, 1, 0, &err);
            bok = bc != NULL;
            if (bc) {
                jb_tcache_cuda_use_block_ln(bc, 1);
                bok = !E || jb_tcache_cuda_set_encoder(bc, enc, &err) == 0;
                for (int t = 0; bok && t < P; t++) {
                    for (int b = 0; b < N; b++)
                        memcpy(row + (size_t)b * W, x0 + ((size_t)b * T + t) * W,
                               sizeof(float) * W);
                    bok = jb_transformer_cuda_forward_host(dt, bc, row, 1, &err) == 0;
                    for (int b = 0; bok && b < N; b++) {
                        close &= jb_test_close(row + (size_t)b * W,
                                               ref + ((size_t)b * T + t) * W, W, rel, abs_,
                                               &ma, NULL);
                        if (ma > worst) worst = ma;
                    }
                }
                long cap = -1, rep = -1;
                jb_tcache_cuda_graph_stats(bc, &cap, &rep);
                JB_CHECK(cap == 1 && rep == P, "%s: block LayerNorm steps as one graph (%ld "
                         "captures, %ld replays)", cs->dir, cap, rep);
                jb_tcache_cuda_destroy(&bc);
            }
            JB_CHECK(bok && close, "%s: block LayerNorm, %d one-token steps (graph) vs CPU: max "
                     "abs %.3g (%s)", cs->dir, P, worst, err.msg);
            printf("%s: block LayerNorm: max abs diff %.3g vs the CPU\n", cs->dir, worst);
            free(row);
        }

        // Memory planning.
        jb_transformer_cuda_plan_t plan;
        jb_transformer_cuda_plan(tf, T, &plan);
        JB_CHECK(plan.per_sample_kv_f16 == plan.per_sample - plan.kv_per_sample / 2,
                 "%s: plan: an f16 key/value cache halves the cache (%zu of %zu B per sequence)",
                 cs->dir, plan.per_sample_kv_f16, plan.per_sample);
        JB_CHECK(plan.weights > 0 && plan.per_sample > plan.kv_per_sample && plan.kv_per_sample > 0,
                 "%s: plan: weights %zu B, %zu B per sequence (%zu B KV)", cs->dir, plan.weights,
                 plan.per_sample, plan.kv_per_sample);
#ifdef JB_CUDA_EMU
        // Fake device memory: the weights already held + room for 2.5 sequences.
        size_t old = jb_cuda_emu_set_mem(jb_cuda_emu_used() + plan.fixed + plan.per_sample * 5 / 2);
        dc = jb_tcache_cuda_new(dt, 8, T, 0, &err);
        JB_CHECK(!dc && err.code == JB_ENOMEM && strstr(err.msg, "needs") &&
                     strstr(err.msg, "GiB free"),
                 "%s: batch 8 in room for 2.5 refused: %s", cs->dir, err.msg);
        dc = jb_tcache_cuda_new(dt, 8, T, 1, &err);
        JB_CHECK(dc && jb_tcache_cuda_batch(dc) == 2, "%s: fit gives batch 2 (%d)", cs->dir,
                 dc ? jb_tcache_cuda_batch(dc) : -1);
        jb_tcache_cuda_destroy(&dc);
        jb_cuda_emu_set_mem(jb_cuda_emu_used() + plan.weights / 2);
        jb_transformer_cuda_t *dt2 = jb_transformer_cuda_new(tf, &err);
        JB_CHECK(!dt2 && err.code == JB_ENOMEM && strstr(err.msg, "needs") &&
                     strstr(err.msg, "GiB free"),
                 "%s: weights in half their size refused: %s", cs->dir, err.msg);
        jb_cuda_emu_set_mem(old);
#endif
    }
    jb_transformer_cuda_destroy(&dt);
    jb_tcache_destroy(&cc);
    jb_prior_destroy(&p);
    free(x0), free(ref), free(got), free(enc);
}

// Batch invariance of the whole device pass of tf: three sequences stepped together (graph), and
// each alone in a cache of batch 1, give bit-identical outputs at every step; also a
// teacher-forced pass of the three against each alone.
static void check_invariance(const char *dir, const char *wn, const jb_transformer_t *tf) {
    jb_err_t err = {0};
    jb_transformer_cuda_t *dt = tf ? jb_transformer_cuda_new(tf, &err) : NULL;
    JB_CHECK(dt != NULL, "%s %s: invariance setup (%s)", dir, wn, err.msg);
    if (!dt) return;
    const jb_transformer_hp_t *hp = jb_transformer_hp(tf);
    int B = 3, T = hp->n_ctx < 24 ? hp->n_ctx : 24, W = hp->width, E = hp->encoder_dims;
    size_t nx = (size_t)B * T * W;
    float *x0 = malloc(sizeof(float) * nx), *all = malloc(sizeof(float) * nx);
    float *one = malloc(sizeof(float) * (size_t)T * W);
    float *enc = E > 0 ? malloc(sizeof(float) * (size_t)B * E * W) : NULL;
    for (size_t i = 0; i < nx; i++) x0[i] = frand();
    for (int64_t i = 0; E > 0 && i < (int64_t)B * E * W; i++) enc[i] = frand();
    long steps_differ = 0, fwd_differ = 0;
    int ok = 1;
    for (int steps = 1; ok && steps >= 0; steps--) {
        // together: (B, T, W) outputs in `all`
        jb_tcache_cuda_t *c = jb_tcache_cuda_new(dt, B, steps ? 1 : T, 0, &err);
        ok = c && (!E || jb_tcache_cuda_set_encoder(c, enc, &err) == 0);
        memcpy(all, x0, sizeof(float) * nx);
        float *row = malloc(sizeof(float) * (size_t)B * W);
        for (int t = 0; ok && steps && t < T; t++) {
            for (int b = 0; b < B; b++)
                memcpy(row + (size_t)b * W, x0 + ((size_t)b * T + t) * W, sizeof(float) * W);
            ok = jb_transformer_cuda_forward_host(dt, c, row, 1, &err) == 0;
            for (int b = 0; b < B; b++)
                memcpy(all + ((size_t)b * T + t) * W, row + (size_t)b * W, sizeof(float) * W);
        }
        if (ok && !steps) ok = jb_transformer_cuda_forward_host(dt, c, all, T, &err) == 0;
        free(row);
        jb_tcache_cuda_destroy(&c);
        // each alone
        for (int b = 0; ok && b < B; b++) {
            c = jb_tcache_cuda_new(dt, 1, steps ? 1 : T, 0, &err);
            ok = c && (!E || jb_tcache_cuda_set_encoder(c, enc + (size_t)b * E * W, &err) == 0);
            memcpy(one, x0 + (size_t)b * T * W, sizeof(float) * (size_t)T * W);
            for (int t = 0; ok && steps && t < T; t++)
                ok = jb_transformer_cuda_forward_host(dt, c, one + (size_t)t * W, 1, &err) == 0;
            if (ok && !steps) ok = jb_transformer_cuda_forward_host(dt, c, one, T, &err) == 0;
            for (int t = 0; ok && t < T; t++)
                if (memcmp(one + (size_t)t * W, all + ((size_t)b * T + t) * W,
                           sizeof(float) * W))
                    *(steps ? &steps_differ : &fwd_differ) += 1;
            jb_tcache_cuda_destroy(&c);
        }
    }
    JB_CHECK(ok && steps_differ == 0 && fwd_differ == 0, "%s %s: 3 sequences together vs each "
             "alone, bit for bit: %d one-token steps (%ld of %d outputs differ), a %d-token pass "
             "(%ld differ) (%s)", dir, wn, T, steps_differ, B * T, T, fwd_differ, err.msg);
    jb_transformer_cuda_destroy(&dt);
    free(x0), free(all), free(one), free(enc);
}

// The same on a golden prior's transformer, weights as stored or INT8.
static void run_invariance(const case_t *cs, int weights) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s/model.safetensors",
             getenv("GOLDEN") ? getenv("GOLDEN") : "tests/golden", cs->dir);
    jb_err_t err = {0};
    jb_weights_opts_t wo = {weights, 0};
    jb_prior_t *p = jb_prior_new_opts(path, &wo, &err);
    JB_CHECK(p != NULL, "%s: open (%s)", cs->dir, err.msg);
    if (p) check_invariance(cs->dir, jb_weights_name(weights), jb_prior_transformer(p));
    jb_prior_destroy(&p);
}

// A transformer wide enough for every slice count of jb_matmul_cuda (the golden priors' widths,
// 32-64, take one slice): width 640, 2 layers, random weights written to a file; invariance as
// above (stored f32 and int8) and the device's steps against the CPU's full pass.
static void run_wide(void) {
    jb_transformer_hp_t hp = {.width = 640, .depth = 2, .heads = 4, .n_ctx = 12,
                              .attn_order = 0, .blocks = 0, .m_attn = 0.25, .m_mlp = 1.0};
    int W = hp.width, S = W / 4, M = W;
    char path[128];
    snprintf(path, sizeof path, "/tmp/test_cuda_transformer.%d.safetensors", (int)getpid());
    jb_err_t err = {0};
    jb_st_writer_t *wr = jb_st_writer_new(&err);
    static float *bufs[32];
    int nb = 0, ok = wr != NULL;
    for (int d = 0; ok && d < hp.depth; d++) {
        static const char *names[] = {"ln_0.weight", "ln_0.bias", "attn.c_attn.w", "attn.c_attn.b",
                                      "attn.c_proj.w", "attn.c_proj.b", "ln_1.weight",
                                      "ln_1.bias", "mlp.c_fc.w", "mlp.c_fc.b", "mlp.c_proj.w",
                                      "mlp.c_proj.b"};
        int64_t shp[12][2] = {{W, 0}, {W, 0}, {W, 3 * S}, {3 * S, 0}, {S, W}, {W, 0},
                              {W, 0}, {W, 0}, {W, M}, {M, 0}, {M, W}, {W, 0}};
        for (int i = 0; ok && i < 12; i++) {
            int nd = shp[i][1] ? 2 : 1;
            int64_t n = shp[i][0] * (nd == 2 ? shp[i][1] : 1);
            float *v = bufs[nb++] = malloc(sizeof(float) * (size_t)n);
            int gain = i == 0 || i == 6;   // LayerNorm gains around 1
            for (int64_t j = 0; j < n; j++)
                v[j] = gain ? 1.0f + 0.2f * frand() : (nd == 2 ? 0.05f : 0.1f) * frand();
            char nm[128];
            snprintf(nm, sizeof nm, "t._attn_mods.%d.%s", d, names[i]);
            ok = jb_st_writer_add(wr, nm, JB_F32, nd, shp[i], v, &err) == 0;
        }
    }
    ok = ok && jb_st_writer_write(wr, path, NULL, NULL, &err) == 0;
    jb_st_writer_destroy(&wr);
    for (int i = 0; i < nb; i++) free(bufs[i]);
    jb_st_t *st = ok ? jb_st_open(path, &err) : NULL;
    JB_CHECK(st != NULL, "wide transformer: written and opened (%s)", err.msg);
    for (int weights = JB_WEIGHTS_STORED; st && weights <= JB_WEIGHTS_INT8;
         weights += JB_WEIGHTS_INT8) {
        jb_weights_opts_t wo = {weights, 0};
        jb_transformer_t *tf = jb_transformer_new_opts(st, "t.", &hp, &wo, &err);
        JB_CHECK(tf != NULL, "wide transformer %s (%s)", jb_weights_name(weights), err.msg);
        if (!tf) continue;
        check_invariance("wide (640)", jb_weights_name(weights), tf);
        // the device's one-token steps against the CPU's full pass (golden tolerance)
        int N = 2, T = hp.n_ctx;
        size_t nx = (size_t)N * T * W;
        float *x0 = malloc(sizeof(float) * nx), *ref = malloc(sizeof(float) * nx);
        float *row = malloc(sizeof(float) * (size_t)N * W);
        for (size_t i = 0; i < nx; i++) x0[i] = ref[i] = frand();
        jb_tcache_t *cc = jb_tcache_new(tf, N, T, &err);
        jb_transformer_cuda_t *dt = jb_transformer_cuda_new(tf, &err);
        jb_tcache_cuda_t *dc = dt ? jb_tcache_cuda_new(dt, N, 1, 0, &err) : NULL;
        int sok = cc && dc && jb_transformer_forward(tf, cc, ref, T, NULL, &err) == 0, close = 1;
        double worst = 0;
        for (int t = 0; sok && t < T; t++) {
            for (int b = 0; b < N; b++)
                memcpy(row + (size_t)b * W, x0 + ((size_t)b * T + t) * W, sizeof(float) * W);
            sok = jb_transformer_cuda_forward_host(dt, dc, row, 1, &err) == 0;
            for (int b = 0; sok && b < N; b++) {
                double ma;
                close &= jb_test_close(row + (size_t)b * W, ref + ((size_t)b * T + t) * W, W,
                                       1e-4, 2e-4, &ma, NULL);
                if (ma > worst) worst = ma;
            }
        }
        JB_CHECK(sok && close, "wide (640) %s: %d device steps vs the CPU's pass: max abs %.3g "
                 "(%s)", jb_weights_name(weights), T, worst, err.msg);
        printf("wide (640) %s: device steps vs the CPU: max abs diff %.3g\n",
               jb_weights_name(weights), worst);
        jb_tcache_cuda_destroy(&dc);
        jb_transformer_cuda_destroy(&dt);
        jb_tcache_destroy(&cc);
        jb_transformer_destroy(&tf);
        free(x0), free(ref), free(row);
    }
    jb_st_close(&st);
    remove(path);
}

// Bytes of a layer's matrix as int8 tiles + scales (the CPU's packed copy) and its bias.
static size_t q8_bytes(const jb_transformer_lin_t *l, int *n_allocs) {
    if (!l->pk) return 0;
    *n_allocs += 2 + (l->b != NULL);
    return jb_matmul_packed_bytes(l->pk) + (l->b ? sizeof(float) * (size_t)l->N : 0);
}

// int8 weights (JB_WEIGHTS_INT8): the device uploads the CPU's int8 tiles and scales as they
// are; its teacher-forced forward and one-token steps (graph) against the CPU's int8 full pass,
// at the case's golden tolerance; the plan counts int8's bytes, and the upload allocates
// exactly what the plan says.
static void run_int8(const case_t *cs) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s/model.safetensors",
             getenv("GOLDEN") ? getenv("GOLDEN") : "tests/golden", cs->dir);
    jb_err_t err = {0};
    jb_weights_opts_t wo = {JB_WEIGHTS_INT8, 0};
    jb_prior_t *p = jb_prior_new_opts(path, &wo, &err), *pf = jb_prior_new(path, &err);
    JB_CHECK(p && pf, "%s int8: open (%s)", cs->dir, err.msg);
    if (!p || !pf) {
        jb_prior_destroy(&p), jb_prior_destroy(&pf);
        return;
    }
    const jb_transformer_t *tf = jb_prior_transformer(p);
    const jb_transformer_hp_t *hp = jb_transformer_hp(tf);
    int N = 2, T = hp->n_ctx, W = hp->width, E = hp->encoder_dims;
    size_t nx = (size_t)N * T * W;
    float *x0 = malloc(sizeof(float) * nx), *ref = malloc(sizeof(float) * nx);
    float *got = malloc(sizeof(float) * nx), *row = malloc(sizeof(float) * (size_t)N * W);
    float *enc = E > 0 ? malloc(sizeof(float) * (size_t)N * E * W) : NULL;
    for (size_t i = 0; i < nx; i++) x0[i] = frand();
    for (int64_t i = 0; E > 0 && i < (int64_t)N * E * W; i++) enc[i] = frand();
    jb_tcache_t *cc = jb_tcache_new(tf, N, T, &err);
    memcpy(ref, x0, sizeof(float) * nx);
    int ok = cc && (!E || jb_tcache_set_encoder(cc, enc, &err) == 0) &&
             jb_transformer_forward(tf, cc, ref, T, NULL, &err) == 0;
    JB_CHECK(ok, "%s int8: CPU forward (%s)", cs->dir, err.msg);
    // The plan: int8 tiles + scales + biases + 4 LayerNorm vectors a layer, each aligned.
    jb_transformer_cuda_plan_t p8, pf32;
    jb_transformer_cuda_plan(tf, 1, &p8);
    jb_transformer_cuda_plan(jb_prior_transformer(pf), 1, &pf32);
    size_t want = 0;
    int allocs = 0;
    for (int d = 0; d < hp->depth; d++) {
        jb_transformer_layer_t L;
        jb_transformer_layer(tf, d, &L);
        want += 4 * sizeof(float) * (size_t)W + q8_bytes(&L.c_attn, &allocs) +
                q8_bytes(&L.c_enc_kv, &allocs) + q8_bytes(&L.c_proj, &allocs) +
                q8_bytes(&L.fc, &allocs) + q8_bytes(&L.mlp_proj, &allocs);
        allocs += 4;
    }
    JB_CHECK(p8.weights >= want && p8.weights < want + 256 * (size_t)allocs &&
                 p8.weights < pf32.weights,
             "%s int8: plan counts int8 bytes: %zu B (tiles + scales + vectors %zu B, %d aligned "
             "slots; as stored %zu B)", cs->dir, p8.weights, want, allocs, pf32.weights);
#ifdef JB_CUDA_EMU
    size_t used0 = jb_cuda_emu_used();
#endif
    jb_transformer_cuda_t *dt = jb_transformer_cuda_new(tf, &err);
    JB_CHECK(dt != NULL, "%s int8: weights to the device (%s)", cs->dir, err.msg);
#ifdef JB_CUDA_EMU
    JB_CHECK(!dt || jb_cuda_emu_used() - used0 == p8.weights, "%s int8: uploaded %zu B, the "
             "plan %zu B", cs->dir, jb_cuda_emu_used() - used0, p8.weights);
#endif
    double wf = 1e30, ws = 0;
    if (dt && ok) {
        jb_tcache_cuda_t *dc = jb_tcache_cuda_new(dt, N, T, 0, &err);
        memcpy(got, x0, sizeof(float) * nx);
        int fok = dc && (!E || jb_tcache_cuda_set_encoder(dc, enc, &err) == 0) &&
                  jb_transformer_cuda_forward_host(dt, dc, got, T, &err) == 0;
        JB_CHECK(fok && jb_test_close(got, ref, (long)nx, cs->rel, cs->abs_, &wf, NULL),
                 "%s int8: device forward vs CPU int8 forward: max abs %.3g (%s)", cs->dir,
                 fok ? wf : -1.0, err.msg);
        jb_tcache_cuda_destroy(&dc);
        dc = jb_tcache_cuda_new(dt, N, 1, 0, &err);
        int sok = dc && (!E || jb_tcache_cuda_set_encoder(dc, enc, &err) == 0), close = 1;
        for (int t = 0; sok && t < T; t++) {
            for (int b = 0; b < N; b++)
                memcpy(row + (size_t)b * W, x0 + ((size_t)b * T + t) * W, sizeof(float) * W);
            sok = jb_transformer_cuda_forward_host(dt, dc, row, 1, &err) == 0;
            for (int b = 0; sok && b < N; b++) {
                double ma;
                close &= jb_test_close(row + (size_t)b * W, ref + ((size_t)b * T + t) * W, W,
                                       cs->rel, cs->abs_, &ma, NULL);
                if (ma > ws) ws = ma;
            }
        }
        JB_CHECK(sok && close, "%s int8: %d one-token steps (graph) vs CPU int8 full pass: max "
                 "abs %.3g (%s)", cs->dir, T, ws, err.msg);
        jb_tcache_cuda_destroy(&dc);
        printf("%s int8: weights %.1f KiB on the device (as stored %.1f KiB); forward max abs "
               "diff %.3g, steps %.3g vs the CPU int8 pass\n", cs->dir, p8.weights / 1024.0,
               pf32.weights / 1024.0, wf, ws);
    }
    jb_transformer_cuda_destroy(&dt);
    jb_tcache_destroy(&cc);
    jb_prior_destroy(&p), jb_prior_destroy(&pf);
    free(x0), free(ref), free(got), free(row), free(enc);
}

int main(void) {
#ifndef JB_CUDA_EMU
    {   // a real CUDA build: the device must be there (make test-gpu)
        jb_device_t dev;
        jb_err_t derr = {0};
        int dok = jb_device_parse("cuda", &dev, &derr) == 0 && jb_device_open(&dev, &derr) == 0;
        JB_CHECK(dok, "CUDA device: %s", derr.msg);
        if (!dok) return jb_test_summary("test_cuda_transformer");
        printf("device: %s, %.1f GiB free\n", dev.name, (double)dev.mem_free / (1 << 30));
    }
#endif
    static const case_t cases[] = {
        {"prior_top_5b_tiny", 1e-4, 2e-4, 1},
        {"prior_top_5b_fp16w", 1e-4, 1e-4, 0},
        {"prior_top_5b_lyrics_tiny", 1e-4, 2e-4, 0},
        {"prior_top_1b_lyrics_tiny", 1e-4, 2e-4, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i]);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_int8(&cases[i]);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        run_invariance(&cases[i], JB_WEIGHTS_STORED);
        run_invariance(&cases[i], JB_WEIGHTS_INT8);
    }
    run_wide();
#ifdef JB_CUDA_EMU
    JB_CHECK(jb_cuda_emu_used() == 0, "every device allocation freed (%zu bytes left)",
             jb_cuda_emu_used());
#endif
    return jb_test_summary("test_cuda_transformer");
}
