// prior.c: `jukebox-bench prior`: one-token sampling steps of the released prior configurations
// with random weights.
//
// Per configuration a temporary model file of random values (shapes from jb_expect_prior on
// the preset's hyper-parameters, depth reduced to --layers when asked or when the weights and
// key/value caches would not fit in --mem-gib) is written and loaded with each weights option
// (jb_prior_new_opts). Per (weights, packed, batch, position) the sampler is set up as if
// `position` tokens had been sampled (jb_prior_sampler_bench_setup: random keys/values in the
// caches, no priming), then full sampling steps are timed (embedding, transformer pass, output
// projection, temperature sampling): best of --reps; with --packed both the packed and
// unpacked models run side by side, steps alternating, so that both see the same load. With
// L < depth layers the step is extrapolated: t_out + (t_step - t_out) · depth / L, t_out the
// output projection and sampling timed alone. Bytes of weights read per step and the machine's
// read bandwidth measured in the same run (bench_read_bandwidth: several streams per thread
// with software prefetch, the most a weight-streaming kernel can get) give the bound of one
// row; the rows' FLOPs and the FMA peak (bench_fma_peak_gflops) that of many; the longer is
// the step's bound, and the table gives the fraction of it reached.
#include <jansson.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "jb_expect.h"
#include "jb_hparams.h"
#include "jb_matmul.h"
#include "jb_prior.h"
#include "jb_safetensors.h"
#include "jb_sampling.h"

static const char *const configs[] = {"upsampler_level_0", "upsampler_level_1", "prior_1b_lyrics",
                                      "prior_5b", "prior_5b_lyrics", NULL};

// The bound: the multi-stream read bandwidth (bench_read_bandwidth); the plain read loop
// is printed beside it.
static double machine_bandwidth(int reps, int threads, const char *when) {
    bench_bw_t b = bench_read_bandwidth(reps);
    printf("read bandwidth %s (512 MiB, %d thread%s, best of %d): plain loop %.1f GB/s, "
           "%d stream%s/thread + prefetch %d B: %.1f GB/s\n", when, threads,
           threads == 1 ? "" : "s", reps, b.plain, b.streams, b.streams == 1 ? "" : "s",
           b.prefetch, b.multi);
    return b.multi;
}

// Temperature sampling (temp 1), one counter-based stream per row.
typedef struct {
    jb_sampling_params_t sp;
    jb_rng_stream_t streams[16];
    void *scratch;
} chooser_t;

static int choose_temp(void *user, float *logits, int N, int n_bins, int pos, int32_t *out,
                       jb_err_t *err) {
    chooser_t *c = user;
    return jb_sampling_rows(logits, N, n_bins, &c->sp, c->streams, (uint64_t)pos, out, c->scratch,
                            err);
}

static uint64_t rng_state = 0x1234567u;
static float urand(void) {
    rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) * (1.0 / (1 << 23)) - 1.0);
}

// Writes a random model of this configuration with `layers` layers to path. Every tensor of
// one size class shares one random buffer (the writer borrows data), LayerNorm gains are 1.
int bench_write_random_prior(const char *path, json_t *hp, jb_err_t *err) {
    jb_expect_t *ex = jb_expect_prior(hp, err);
    if (!ex) return -1;
    int64_t maxn = 0;
    for (int i = 0; i < ex->n; i++) {
        int64_t n = 1;
        for (int d = 0; d < ex->t[i].ndim; d++) n *= ex->t[i].shape[d];
        if (n > maxn) maxn = n;
    }
    int rc = -1;
    float *rnd = jb_alloc(sizeof(float) * (size_t)maxn), *ones = jb_alloc(sizeof(float) * (size_t)maxn);
    jb_st_writer_t *w = jb_st_writer_new(err);
    char *text = json_dumps(hp, JSON_COMPACT | JSON_SORT_KEYS);
    if (!rnd || !ones || !w || !text) {
        if (w) jb_err_set(err, JB_ENOMEM, "out of memory (random model)");
        goto done;
    }
    for (int64_t i = 0; i < maxn; i++) rnd[i] = 0.02f * urand(), ones[i] = 1.0f;
    if (jb_st_writer_meta(w, "kind", "prior", err) || jb_st_writer_meta(w, "hparams", text, err))
        goto done;
    for (int i = 0; i < ex->n; i++) {
        const jb_expect_tensor_t *t = &ex->t[i];
        size_t L = strlen(t->name);
        int gain = L > 7 && !strcmp(t->name + L - 7, ".weight") &&
                   (strstr(t->name, "ln") != NULL) && t->ndim == 1;
        if (jb_st_writer_add(w, t->name, JB_F32, t->ndim, t->shape, gain ? ones : rnd, err))
            goto done;
    }
    rc = jb_st_writer_write(w, path, NULL, NULL, err);
done:
    free(text);
    jb_st_writer_destroy(&w);
    jb_free(rnd);
    jb_free(ones);
    jb_expect_destroy(&ex);
    return rc;
}

// A comma-separated list of 1..max whole numbers in [lo, hi]: the count, or -1.
static int parse_list(const char *s, int *v, int max, long lo, long hi) {
    int n = 0;
    for (const char *p = s;;) {
        char *end;
        long x = strtol(p, &end, 10);
        if (end == p || x < lo || x > hi || n == max || (*end && *end != ',')) return -1;
        v[n++] = (int)x;
        if (!*end) return n;
        p = end + 1;
    }
}

static void usage(FILE *to) {
    fprintf(to,
            "usage: jukebox-bench prior [options]\n"
            "  --config NAME     upsampler_level_0 | upsampler_level_1 | prior_1b_lyrics | prior_5b |\n"
            "                    prior_5b_lyrics | all (default all)\n"
            "  --layers L        layers to build (0: full depth, or what fits in --mem-gib; default 0;\n"
            "                    the 5b configurations default to 8). Fewer than the depth: the step\n"
            "                    is extrapolated per layer, and the output says so\n"
            "  --weights LIST    f32,bf16,f16,int8 (default f32,bf16 and f16 for the 5b configurations)\n"
            "  --packed MODE     0 | 1 | both: jb_matmul_pack'ed weights (default both)\n"
            "  --batch LIST      default 1,4\n"
            "  --pos LIST        context positions (default 1000,8000; capped at seq_len - 2)\n"
            "  --reps N          timed steps per case, best reported (default 5)\n"
            "  --threads N       OpenMP threads (default 2)\n"
            "  --mem-gib G       weights + caches budget that decides the depth (default 6)\n"
            "  --tmp DIR         where the random model files go (default /tmp)\n"
            "exit codes: 0 done; 64 bad usage (an unknown option, configuration or weights\n"
            "option, a bad value); 1 a model file could not be written or loaded\n");
}

typedef struct {
    const char *config;
    int layers, depth, weights, packed, batch, pos;
    double step, wbytes;   // seconds, bytes of weights a step
    double row_flops;      // multiply-adds x 2 of one row in those weights
} row_t;
#define MAX_ROWS 256
static row_t rows[MAX_ROWS];
static int nrows;

// bw: GB/s, peak: GFLOP/s (bench_step_bound).
static void print_row(const row_t *r, double bw, double peak) {
    double gbs = r->wbytes / r->step / 1e9;
    bench_bound_t bd = bench_step_bound(r->wbytes, bw, r->batch * r->row_flops, peak);
    printf("%-18s %3d/%-2d %-5s %3d %5d %5d %9.1f %8.1f %9.0f %8.1f %8.1f %4s %5.0f%%\n",
           r->config, r->layers, r->depth, jb_weights_name(r->weights), r->packed, r->batch,
           r->pos, 1e3 * r->step, r->batch / r->step, r->wbytes / 1e6, gbs, 1e3 * bd.bound,
           bd.by, 100 * bd.bound / r->step);
    fflush(stdout);
}

static const char *header = "%-18s %6s %-5s %3s %5s %5s %9s %8s %9s %8s %8s %4s %6s\n";

int bench_prior(int argc, char **argv) {
    const char *config = "all", *tmpdir = "/tmp", *wlist = NULL;
    int layers_opt = -1, reps = 5, threads = 2, batches[4] = {1, 4}, nb = 2, pos[4] = {1000, 8000},
        np = 2, packed_lo = 0, packed_hi = 1;
    double mem_gib = 6;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (!v) {
            fprintf(stderr, "jukebox-bench prior: '%s' needs a value or is unknown\n", a);
            usage(stderr);
            return 64;
        }
        i++;
        // Every value checked whole: a typo is refused (64), not measured as something else.
        int bad = 0;
        char *end = NULL;
        if (!strcmp(a, "--config")) config = v;
        else if (!strcmp(a, "--layers")) bad = bench_parse_int(v, 0, 100000, &layers_opt);
        else if (!strcmp(a, "--weights")) wlist = v;
        else if (!strcmp(a, "--packed")) {
            if (!strcmp(v, "both")) packed_lo = 0, packed_hi = 1;
            else if (!strcmp(v, "0") || !strcmp(v, "1")) packed_lo = packed_hi = v[0] - '0';
            else bad = 1;
        } else if (!strcmp(a, "--batch")) bad = (nb = parse_list(v, batches, 4, 1, 16)) < 0;
        else if (!strcmp(a, "--pos")) bad = (np = parse_list(v, pos, 4, 0, 1 << 20)) < 0;
        else if (!strcmp(a, "--reps")) bad = bench_parse_int(v, 1, 100000, &reps);
        else if (!strcmp(a, "--threads")) bad = bench_parse_int(v, 1, 4096, &threads);
        else if (!strcmp(a, "--mem-gib")) {
            mem_gib = strtod(v, &end);
            bad = end == v || *end || !(mem_gib > 0);
        } else if (!strcmp(a, "--tmp")) tmpdir = v;
        else {
            fprintf(stderr, "jukebox-bench prior: unknown option '%s'\n", a);
            usage(stderr);
            return 64;
        }
        if (bad) {
            fprintf(stderr, "jukebox-bench prior: %s %s: bad value (see --help)\n", a, v);
            return 64;
        }
    }
    int known = !strcmp(config, "all");
    for (int ci = 0; configs[ci]; ci++) known |= !strcmp(config, configs[ci]);
    if (!known) {
        fprintf(stderr, "jukebox-bench prior: --config %s: unknown (upsampler_level_0, "
                "upsampler_level_1, prior_1b_lyrics, prior_5b, prior_5b_lyrics, all)\n", config);
        return 64;
    }
    if (wlist) {   // stored is a model file's own dtype: these random models have none
        char buf[64];
        snprintf(buf, sizeof buf, "%s", wlist);
        for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ","))
            if (jb_weights_parse(tok) <= 0) {
                fprintf(stderr, "jukebox-bench prior: --weights %s: a list of f32, bf16, f16, "
                        "int8\n", wlist);
                return 64;
            }
    }
    bench_set_threads(threads);
    char mach[512];
    bench_machine(mach, sizeof mach, 0);
    double la[3] = {0};
    if (getloadavg(la, 3) < 0) la[0] = la[1] = la[2] = -1;
    printf("machine: %s\nthreads: %d, matmul kernel: %s, load average at start: %.2f %.2f %.2f\n",
           mach, threads, jb_matmul_kernel_name(), la[0], la[1], la[2]);
    double bw = machine_bandwidth(5, threads, "at start");
    double peak = bench_fma_peak_gflops(3);
    printf("FMA peak at start (%d thread%s, %s): %.1f GFLOP/s\n", threads, threads == 1 ? "" : "s",
           jb_matmul_kernel_name(), peak);
    printf("\n");
    printf(header, "config", "layers", "wts", "pk", "batch", "pos", "ms/step", "tok/s", "MB/step",
           "GB/s", "bound ms", "by", "of bnd");

    int rc = 0;
    for (int ci = 0; configs[ci]; ci++) {
        if (strcmp(config, "all") && strcmp(config, configs[ci])) continue;
        jb_err_t err;
        if (ci > 0) {   // the machine is shared: keep the best bandwidth seen
            double b = machine_bandwidth(3, threads, configs[ci]);
            if (b > bw) bw = b;
        }
        json_t *hp = jb_hparams_preset(configs[ci], &err);
        if (!hp) {
            fprintf(stderr, "jukebox-bench prior: %s\n", err.msg);
            return 1;
        }
        int is5b = !strncmp(configs[ci], "prior_5b", 8);
        int depth = (int)json_integer_value(json_object_get(hp, "prior_depth"));
        if (!depth) depth = (int)json_integer_value(json_object_get(hp, "depth"));
        const char *dkey = json_object_get(hp, "prior_depth") ? "prior_depth" : "depth";
        int width = (int)json_integer_value(json_object_get(hp, json_object_get(hp, "prior_width") ? "prior_width" : "width"));
        int L = layers_opt > 0 ? layers_opt : is5b && layers_opt < 0 ? 8 : depth;
        if (L > depth) L = depth;
        // Fit weights (f32 at load: the largest) + the caches of the largest batch.
        int maxb = 1;
        for (int b = 0; b < nb; b++) if (batches[b] > maxb) maxb = batches[b];
        double per_layer_w = 4.0 * width * width * 12.5;   // ~12.5·width² weights a layer
        double per_layer_kv = 2.0 * 4.0 * maxb * 8192.0 * width / 3.0 * 1.5;   // rough
        while (layers_opt <= 0 && L > 3 && L * (per_layer_w + per_layer_kv) > mem_gib * (1 << 30))
            L -= 3;
        json_object_set_new(hp, dkey, json_integer(L));
        json_t *al = json_object_get(hp, "alignment_layer");
        if (al && json_integer_value(al) >= L) json_object_set_new(hp, "alignment_layer", json_integer(L - 1));
        char path[512];
        snprintf(path, sizeof path, "%s/jb_bench_prior_%s_%d.safetensors", tmpdir, configs[ci],
                 (int)getpid());
        double t0 = bench_now();
        if (bench_write_random_prior(path, hp, &err)) {
            fprintf(stderr, "jukebox-bench prior: %s: %s\n", configs[ci], err.msg);
            json_decref(hp);
            rc = 1;
            continue;
        }
        json_decref(hp);
        fprintf(stderr, "%s: random model of %d/%d layers written in %.1f s\n", configs[ci], L, depth,
                bench_now() - t0);
        int wts[3], nw = 0;
        if (wlist) {
            char buf[64];
            snprintf(buf, sizeof buf, "%s", wlist);
            for (char *tok = strtok(buf, ","); tok && nw < 3; tok = strtok(NULL, ","))
                if (jb_weights_parse(tok) > 0) wts[nw++] = jb_weights_parse(tok);
        } else {
            wts[nw++] = JB_WEIGHTS_F32, wts[nw++] = JB_WEIGHTS_BF16;
            if (is5b) wts[nw++] = JB_WEIGHTS_F16;
        }
        for (int wi = 0; wi < nw; wi++) {
            // The packed and unpacked models run side by side, their steps alternating, so
            // that both see the same load of the shared machine.
            jb_prior_t *pr[2] = {NULL, NULL};
            int ok = 1;
            for (int pk = packed_lo; pk <= packed_hi; pk++) {
                jb_weights_opts_t wo = {wts[wi], pk};
                t0 = bench_now();
                if (!(pr[pk] = jb_prior_new_opts(path, &wo, &err))) {
                    fprintf(stderr, "jukebox-bench prior: %s\n", err.msg);
                    ok = 0;
                    break;
                }
                fprintf(stderr, "  loaded (%s%s) in %.1f s\n", jb_weights_name(wts[wi]),
                        pk ? ", packed" : "", bench_now() - t0);
            }
            if (!ok) {
                jb_prior_destroy(&pr[0]);
                jb_prior_destroy(&pr[1]);
                rc = 1;
                continue;
            }
            const jb_prior_info_t *in = jb_prior_info(pr[packed_lo]);
            double wbytes_L =
                (double)jb_transformer_step_weight_bytes(jb_prior_transformer(pr[packed_lo]));
            double out_bytes = 4.0 * in->seq_bins * in->width;
            double wbytes = wbytes_L * depth / L + out_bytes;
            double row_flops = 2.0 * ((double)jb_transformer_step_weight_params(
                                          jb_prior_transformer(pr[packed_lo])) * depth / L +
                                      (double)in->seq_bins * in->width);
            chooser_t ch = {.sp = jb_sampling_default_params()};
            ch.scratch = jb_alloc(jb_sampling_scratch_bytes(in->seq_bins));
            for (int i = 0; i < 16; i++) ch.streams[i] = jb_rng_stream(1, 2, (uint32_t)i, 0);
            for (int bi = 0; bi < nb; bi++) {
                int B = batches[bi];
                jb_prior_sampler_t *s[2] = {NULL, NULL};
                for (int pk = packed_lo; pk <= packed_hi; pk++)
                    if (!(s[pk] = jb_prior_sampler_new(pr[pk], B, 1, &err))) ok = 0;
                if (!ok) {
                    fprintf(stderr, "jukebox-bench prior: %s\n", err.msg);
                    jb_prior_sampler_destroy(&s[0]);
                    jb_prior_sampler_destroy(&s[1]);
                    rc = 1;
                    break;
                }
                // Output projection + sampling alone, for the extrapolation.
                float *x = jb_alloc(sizeof(float) * (size_t)B * in->width);
                float *lg = jb_alloc(sizeof(float) * (size_t)B * in->seq_bins);
                float *emb = jb_alloc(sizeof(float) * (size_t)in->seq_bins * in->width);
                int32_t out[16];
                for (int64_t i = 0; i < (int64_t)B * in->width; i++) x[i] = urand();
                for (int64_t i = 0; i < (int64_t)in->seq_bins * in->width; i++) emb[i] = 0.02f * urand();
                double t_out = 1e30;
                for (int r = 0; r < reps + 1; r++) {
                    double a = bench_now();
                    jb_matmul_wt(lg, x, emb, B, in->width, in->seq_bins);
                    choose_temp(&ch, lg, B, in->seq_bins, 0, out, &err);
                    double t = bench_now() - a;
                    if (r && t < t_out) t_out = t;
                }
                for (int pi = 0; pi < np; pi++) {
                    int P = pos[pi] < in->seq_len - 2 - reps ? pos[pi] : in->seq_len - 2 - reps;
                    double best[2] = {1e30, 1e30};
                    for (int pk = packed_lo; pk <= packed_hi; pk++)
                        if (jb_prior_sampler_bench_setup(s[pk], B, P, 7, &err)) ok = 0;
                    for (int r = 0; ok && r < reps + 1; r++)   // the first: warm-up
                        for (int pk = packed_lo; ok && pk <= packed_hi; pk++) {
                            double a = bench_now();
                            if (jb_prior_sampler_step(s[pk], choose_temp, &ch, out, &err)) ok = 0;
                            double t = bench_now() - a;
                            if (r && t < best[pk]) best[pk] = t;
                        }
                    if (!ok) {
                        fprintf(stderr, "jukebox-bench prior: %s\n", err.msg);
                        rc = 1;
                        break;
                    }
                    for (int pk = packed_lo; pk <= packed_hi; pk++) {
                        double step = L < depth ? t_out + (best[pk] - t_out) * depth / L : best[pk];
                        if (nrows < MAX_ROWS) {
                            rows[nrows++] = (row_t){configs[ci], L, depth, wts[wi], pk, B, P,
                                                    step, wbytes, row_flops};
                            print_row(&rows[nrows - 1], bw, peak);
                        }
                    }
                }
                jb_free(x);
                jb_free(lg);
                jb_free(emb);
                jb_prior_sampler_destroy(&s[0]);
                jb_prior_sampler_destroy(&s[1]);
                if (!ok) break;
            }
            jb_free(ch.scratch);
            jb_prior_destroy(&pr[0]);
            jb_prior_destroy(&pr[1]);
        }
        unlink(path);
    }
    printf("\n");
    double b = machine_bandwidth(5, threads, "at end");
    if (b > bw) bw = b;
    double pk_end = bench_fma_peak_gflops(3);
    if (pk_end > peak) peak = pk_end;
    printf("FMA peak at end: %.1f GFLOP/s\n"
           "best multi-stream read bandwidth of the run (%d threads): %.1f GB/s, best FMA peak "
           "%.1f GFLOP/s; the table again against them:\n", pk_end, threads, bw, peak);
    printf(header, "config", "layers", "wts", "pk", "batch", "pos", "ms/step", "tok/s", "MB/step",
           "GB/s", "bound ms", "by", "of bnd");
    for (int i = 0; i < nrows; i++) print_row(&rows[i], bw, peak);
    if (getloadavg(la, 3) < 0) la[0] = la[1] = la[2] = -1;
    printf("\nload average at end: %.2f %.2f %.2f\n"
           "layers L/D with L < D: the step is extrapolated to D layers as t_out + (t_step - t_out)·D/L\n"
           "(t_out: output projection + sampling timed alone). MB/step: transformer matrix weights\n"
           "(D layers) + output projection (f32). bound: the longer of MB/step / multi-stream read\n"
           "bandwidth (by bw) and batch x 2 FLOPs a weight / FMA peak (by FMA).\n",
           la[0], la[1], la[2]);
    return rc;
}
