// stage.c: `jukebox-bench stage`: a prior stage's sampling serving N concurrent jobs.
//
// A model (a file, or a released configuration with random weights and --layers layers, as
// `jukebox-bench prior`) is loaded once with the chosen weights; the sampler is sized for the
// largest batch. For each N of --jobs, N one-sample jobs (own job ids, seeds, labels and, for
// an upsampler, random codes of the level above) each sample --tokens codes of a fresh
// window. N = 1 is one job served alone; N > 1 are served the way a stage does it (the stage
// loop's jb_sample_windows: every job's window in one batch while they fit --max-batch, the
// rest in the next batch). The cases run in rounds, alternating (the machine is shared), the
// best round kept. Reported: tokens/s while sampling (from each batch's first sampled token,
// i.e. after the window's conditioning and priming, to its end), ms per token and per step,
// tokens/s over whole windows, the step's bound (bench_step_bound: matrix weights read per
// step / the multi-stream read bandwidth, or the rows' FLOPs in them / the FMA peak, each the
// best of two measurements, before and after the runs) and the fraction of it reached, time
// to the first window's codes, peak RSS, CPU use (process CPU time / wall time), and the
// process CPU time of a step while sampling (on a loaded machine, with 1 thread, the
// steadiest figure).
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "jb_hparams.h"
#include "jb_matmul.h"
#include "jb_prior.h"
#include "jb_rng.h"
#include "jb_sample.h"

#define MAX_JOBS 64

static void usage(FILE *to) {
    fprintf(to,
            "usage: jukebox-bench stage [options]\n"
            "  --config NAME    upsampler_level_0 | upsampler_level_1 | prior_1b_lyrics | prior_5b |\n"
            "                   prior_5b_lyrics: random weights (default upsampler_level_0)\n"
            "  --model FILE     a prior model file instead\n"
            "  --layers L       layers of the random model (default 6; 0: full depth)\n"
            "  --weights W      stored | f32 | bf16 | f16 | int8 (default bf16)\n"
            "  --jobs LIST      concurrent one-sample jobs, e.g. 1,8 (default 1,8)\n"
            "  --tokens T       codes each job samples (default 24)\n"
            "  --max-batch B    samples in one step at most (default 16)\n"
            "  --reps N         rounds, best kept (default 3)\n"
            "  --threads N      OpenMP threads (default 2)\n"
            "  --json           one JSON object per case on stdout instead of the table\n"
            "  --tmp DIR        where the random model file goes (default /tmp)\n");
}

typedef struct {
    int jobs, batch, steps;      // steps: sampling steps timed (after each batch's first)
    double wall, first, cpu;     // seconds (best round): everything, first batch's codes, CPU
    double sampling;             // seconds from each batch's first sampled token to its end
    double sampling_cpu;         // process CPU seconds over the same spans
} result_t;

// on_step of every job: the time of the batch's first sampled token.
typedef struct {
    double t_first, cpu_first;
} step_clock_t;

static void on_step(void *user, int64_t pos) {
    step_clock_t *c = user;
    (void)pos;
    if (c->t_first < 0) c->t_first = bench_now(), c->cpu_first = bench_cpu_now();
}

// Runs J one-sample jobs of `tokens` codes each, in batches of up to maxb jobs (one batch
// at a time, as the stage loop does). Fills wall, first (the first batch's codes), cpu.
static int run_jobs(jb_prior_sampler_t *s, const jb_prior_info_t *in, int J, int tokens,
                    int maxb, int round, result_t *res, jb_err_t *err) {
    int T = in->n_ctx, L = in->label_len > 0 ? in->label_len : 1;
    int above = in->x_cond ? T / in->cond_downsample : 0;
    jb_sample_opts_t o[MAX_JOBS];
    jb_sample_part_t parts[MAX_JOBS];
    int have[MAX_JOBS];
    char id[64];
    step_clock_t clock = {-1, 0};
    int32_t *zs = calloc((size_t)J * T, sizeof(int32_t));
    int32_t *za = above ? malloc(sizeof(int32_t) * (size_t)J * above) : NULL;
    int32_t *y = calloc((size_t)J * L, sizeof(int32_t));
    if (!zs || !y || (above && !za)) {
        free(zs), free(za), free(y);
        return jb_err_set(err, JB_ENOMEM, "out of memory");
    }
    for (int j = 0; j < J; j++) {
        snprintf(id, sizeof id, "bench-%d-%d", round, j);
        o[j] = (jb_sample_opts_t){.sampling = jb_sampling_default_params(), .chunk_size = 32,
                                  .max_batch_size = 1, .hop_length = T / 2,
                                  .seed = (uint64_t)j, .job_hash = jb_rng_hash_job(id),
                                  .on_step = on_step, .on_step_user = &clock};
        for (int i = 0; i < above; i++) za[(int64_t)j * above + i] = (int32_t)((i * 7 + j) % in->bins);
        if (in->labels || in->lyrics) {
            int32_t *yj = y + (int64_t)j * L;
            yj[0] = T * in->raw_to_tokens * 4;   // total length: the window is its start
            for (int i = 4; i < L; i++) yj[i] = -1;   // no genre slots, no lyrics
            if (in->n_tokens > 0)
                for (int i = L - in->n_tokens; i < L; i++) yj[i] = 0;
        }
        have[j] = 0;
        parts[j] = (jb_sample_part_t){&o[j], 1, (jb_sample_window_t){0, tokens},
                                      zs + (int64_t)j * T, T, &have[j],
                                      above ? za + (int64_t)j * above : NULL, above,
                                      (in->labels || in->lyrics) ? y + (int64_t)j * L : NULL,
                                      NULL};
    }
    double t0 = bench_now(), c0 = bench_cpu_now(), first = -1;
    int rc = 0;
    for (int j0 = 0; j0 < J && !rc; j0 += maxb) {
        int n = J - j0 < maxb ? J - j0 : maxb;
        clock.t_first = -1;
        rc = jb_sample_windows(s, parts + j0, n, err);
        double t = bench_now();
        if (first < 0) first = t - t0;
        if (clock.t_first > 0) {
            res->sampling += t - clock.t_first;
            res->sampling_cpu += bench_cpu_now() - clock.cpu_first;
        }
        res->steps += tokens - 1;   // the first step's end starts the clock
    }
    res->wall = bench_now() - t0;
    res->cpu = bench_cpu_now() - c0;
    res->first = first;
    free(zs), free(za), free(y);
    return rc;
}

int bench_stage(int argc, char **argv) {
    const char *config = "upsampler_level_0", *model = NULL, *tmpdir = "/tmp", *wname = "bf16";
    int layers = 6, tokens = 24, maxb = 16, reps = 3, threads = 2, json = 0;
    int jobs[8] = {1, 8}, nj = 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--json")) {
            json = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "jukebox-bench stage: '%s' needs a value or is unknown\n", a);
            usage(stderr);
            return 64;
        }
        i++;
        char *end = NULL;
        if (!strcmp(a, "--config")) config = v;
        else if (!strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--weights")) wname = v;
        else if (!strcmp(a, "--tmp")) tmpdir = v;
        else if (!strcmp(a, "--jobs")) {
            nj = 0;
            for (const char *p = v; *p;) {
                if (nj == 8) {   // best[] holds 8 cases: more would be dropped unsaid
                    fprintf(stderr, "jukebox-bench stage: --jobs %s: at most 8 cases\n", v);
                    return 64;
                }
                long n = strtol(p, &end, 10);
                if (end == p || n < 1 || n > MAX_JOBS) {
                    fprintf(stderr, "jukebox-bench stage: --jobs %s: counts in [1, %d]\n", v,
                            MAX_JOBS);
                    return 64;
                }
                jobs[nj++] = (int)n;
                p = *end == ',' ? end + 1 : end;
                if (*end && *end != ',') nj = 0, p = "";
            }
            if (!nj) {
                fprintf(stderr, "jukebox-bench stage: --jobs %s: a comma-separated list\n", v);
                return 64;
            }
        } else {
            long n = strtol(v, &end, 10);
            int *dst = !strcmp(a, "--layers")      ? &layers
                       : !strcmp(a, "--tokens")    ? &tokens
                       : !strcmp(a, "--max-batch") ? &maxb
                       : !strcmp(a, "--reps")      ? &reps
                       : !strcmp(a, "--threads")   ? &threads
                                                   : NULL;
            if (!dst) {
                fprintf(stderr, "jukebox-bench stage: unknown option '%s'\n", a);
                usage(stderr);
                return 64;
            }
            if (!*v || *end || n < (dst == &layers ? 0 : 1) || n > 1000000) {
                fprintf(stderr, "jukebox-bench stage: %s %s: expected a number\n", a, v);
                return 64;
            }
            *dst = (int)n;
        }
    }
    int weights = jb_weights_parse(wname);
    if (weights < 0) {
        fprintf(stderr, "jukebox-bench stage: --weights %s: stored, f32, bf16, f16 or int8\n",
                wname);
        return 64;
    }
    if (maxb > 64) maxb = 64;
    bench_set_threads(threads);
    jb_err_t err = {0};
    char path[512] = "";
    int depth = 0, L = 0;
    if (!model) {
        json_t *hp = jb_hparams_preset(config, &err);
        if (!hp || !json_object_get(hp, "vqvae")) {   // a stage runs a prior, not the VQ-VAE
            fprintf(stderr, "jukebox-bench stage: --config %s: %s (upsampler_level_0, "
                    "upsampler_level_1, prior_5b, prior_5b_lyrics, prior_1b_lyrics)\n", config,
                    hp ? "not a prior" : "unknown");
            json_decref(hp);
            return 64;
        }
        const char *dkey = json_object_get(hp, "prior_depth") ? "prior_depth" : "depth";
        depth = (int)json_integer_value(json_object_get(hp, dkey));
        L = layers > 0 && layers < depth ? layers : depth;
        json_object_set_new(hp, dkey, json_integer(L));
        json_t *al = json_object_get(hp, "alignment_layer");
        if (al && json_integer_value(al) >= L)
            json_object_set_new(hp, "alignment_layer", json_integer(L - 1));
        snprintf(path, sizeof path, "%s/jb_bench_stage_%s_%d.safetensors", tmpdir, config,
                 (int)getpid());
        int rc = bench_write_random_prior(path, hp, &err);
        json_decref(hp);
        if (rc) {
            fprintf(stderr, "jukebox-bench stage: %s\n", err.msg);
            unlink(path);
            return 1;
        }
        model = path;
    } else {
        config = model;
    }
    jb_weights_opts_t wo = {weights, 1};
    jb_prior_t *p = jb_prior_new_opts(model, &wo, &err);
    if (path[0]) unlink(path);
    if (!p) {   // a missing file 66, a file that is not a prior 65, as the stages say it
        fprintf(stderr, "jukebox-bench stage: %s\n", err.msg);
        return jb_err_exit_code(err.code);
    }
    const jb_prior_info_t *in = jb_prior_info(p);
    if (!depth) depth = L = jb_transformer_hp(jb_prior_transformer(p))->depth;
    if (tokens > in->n_ctx) tokens = in->n_ctx;
    if (tokens < 2) tokens = 2;
    int maxjobs = 1;
    for (int i = 0; i < nj; i++) maxjobs = jobs[i] > maxjobs ? jobs[i] : maxjobs;
    int sb = maxjobs < maxb ? maxjobs : maxb;
    jb_prior_sampler_t *s = jb_prior_sampler_new(p, sb, 32, &err);
    if (!s) {
        fprintf(stderr, "jukebox-bench stage: %s\n", err.msg);
        jb_prior_destroy(&p);
        return 1;
    }
    double la[3] = {-1, -1, -1};
    getloadavg(la, 3);
    bench_bw_t bw = bench_read_bandwidth(3);
    double peak = bench_fma_peak_gflops(3);
    bench_peak_rss_reset();   // peak_rss_mib: the stage's memory (operations.md "Sizing")
    // Matrix weights a step reads (L layers) + the f32 output projection, and the FLOPs a
    // row of the step does in them.
    double wbytes = (double)jb_transformer_step_weight_bytes(jb_prior_transformer(p)) +
                    4.0 * in->seq_bins * in->width;
    double row_flops = 2.0 * ((double)jb_transformer_step_weight_params(jb_prior_transformer(p)) +
                              (double)in->seq_bins * in->width);
    if (!json) {
        char mach[512];
        bench_machine(mach, sizeof mach, 0);
        printf("machine: %s\nthreads %d, load average at start %.2f %.2f %.2f\n"
               "read bandwidth at start: plain loop %.1f GB/s, %d streams/thread + prefetch %d "
               "B: %.1f GB/s\nFMA peak at start: %.1f GFLOP/s (%d threads, %s)\n"
               "%s, %d of %d layers, weights %s: %.0f MB and %.1f MFLOP a row a step; %d tokens "
               "a job, batches of up to %d jobs, best of %d rounds\n",
               mach, threads, la[0], la[1], la[2], bw.plain, bw.streams, bw.prefetch, bw.multi,
               peak, threads, jb_matmul_kernel_name(), config, L, depth, wname, wbytes / 1e6,
               row_flops / 1e6, tokens, sb, reps);
    }
    result_t best[8];
    for (int i = 0; i < nj; i++)
        best[i] = (result_t){jobs[i], jobs[i] < sb ? jobs[i] : sb, 0, 1e30, 0, 0, 1e30, 0};
    int rc = 0;
    for (int r = 0; r < reps + 1 && !rc; r++)   // round 0 warms up
        for (int i = 0; i < nj && !rc; i++) {
            result_t res = {jobs[i], best[i].batch, 0, 0, 0, 0, 0, 0};
            if (run_jobs(s, in, jobs[i], tokens, sb, r, &res, &err)) {
                fprintf(stderr, "jukebox-bench stage: %d jobs: %s\n", jobs[i], err.msg);
                rc = 1;
            } else if (r > 0 && res.sampling < best[i].sampling) {
                best[i] = res;
            }
        }
    double rss = bench_peak_rss_mib();
    // The machine's bandwidth moves with its neighbours' traffic: the bound is the best of
    // the two measurements, before and after the runs (as `jukebox-bench prior`).
    bench_bw_t bw_end = bench_read_bandwidth(3);
    if (!json)
        printf("read bandwidth at end: plain loop %.1f GB/s, %d streams/thread + prefetch %d B: "
               "%.1f GB/s; the bound: the best of the two, %.1f GB/s\n", bw_end.plain,
               bw_end.streams, bw_end.prefetch, bw_end.multi,
               bw_end.multi > bw.multi ? bw_end.multi : bw.multi);
    if (bw_end.multi > bw.multi) bw = bw_end;
    double peak_end = bench_fma_peak_gflops(3);
    if (!json)
        printf("FMA peak at end: %.1f GFLOP/s; the bound: the best of the two, %.1f GFLOP/s\n",
               peak_end, peak_end > peak ? peak_end : peak);
    if (peak_end > peak) peak = peak_end;
    if (!json)
        printf("\n%5s %5s %10s %9s %9s %9s %5s %7s %10s %10s %8s %6s %9s\n", "jobs", "batch",
               "tokens/s", "ms/token", "ms/step", "bound ms", "by", "of bnd", "1st out s",
               "wall tok/s", "RSS MiB", "CPU", "CPU ms/st");
    double bound_tps[8] = {0};   // tokens/s at each case's bound
    for (int i = 0; i < nj && !rc; i++) {
        const result_t *b = &best[i];
        // While sampling (after each window's setup: conditioning, priming): rows per step.
        double ms_step = 1e3 * b->sampling / b->steps;
        double tps = (double)b->jobs * (tokens - 1) / b->sampling;
        double wall_tps = (double)b->jobs * tokens / b->wall;
        bench_bound_t bd = bench_step_bound(wbytes, bw.multi, b->batch * row_flops, peak);
        double bound = 1e3 * bd.bound;   // ms
        bound_tps[i] = 1e3 * b->batch / bound;
        char cfg_j[1024], wait_j[256], wait[96];
        bench_json_text(config, cfg_j, sizeof cfg_j);
        bench_wait_policy(wait, sizeof wait);
        bench_json_text(wait, wait_j, sizeof wait_j);
        if (json)
            printf("{\"name\":\"stage\",\"config\":\"%s\",\"layers\":%d,\"depth\":%d,"
                   "\"weights\":\"%s\",\"threads\":%d,\"batch\":%d,\"jobs\":%d,"
                   "\"tokens_per_s\":%.6g,\"ms_per_token\":%.6g,\"ms_per_step\":%.6g,"
                   "\"bound_ms\":%.6g,\"fraction_of_bound\":%.6g,\"memory_bound_ms\":%.6g,"
                   "\"compute_bound_ms\":%.6g,\"peak_rss_mib\":%.1f,"
                   "\"first_output_s\":%.6g,\"wall_tokens_per_s\":%.6g,\"cpu_use\":%.2f,"
                   "\"cpu_ms_per_step\":%.6g,\"bandwidth_gbs\":%.6g,\"peak_gflops\":%.6g,"
                   "\"load_avg\":%.2f,\"bound_tokens_per_s\":%.6g,\"omp_wait\":\"%s\"}\n",
                   cfg_j, L, depth, wname, threads, b->batch, b->jobs, tps, 1e3 / tps,
                   ms_step, bound, bound / ms_step, 1e3 * bd.mem, 1e3 * bd.fma, rss, b->first,
                   wall_tps, b->cpu / b->wall, 1e3 * b->sampling_cpu / b->steps, bw.multi, peak,
                   la[0], bound_tps[i], wait_j);
        else
            printf("%5d %5d %10.1f %9.2f %9.1f %9.2f %5s %6.0f%% %10.2f %10.1f %8.0f %6.2f "
                   "%9.1f\n",
                   b->jobs, b->batch, tps, 1e3 / tps, ms_step, bound, bd.by,
                   100 * bound / ms_step, b->first, wall_tps, rss, b->cpu / b->wall,
                   1e3 * b->sampling_cpu / b->steps);
    }
    if (!json && nj > 1 && !rc)
        printf("\n%d jobs vs %d: %.2fx the tokens/s while sampling, %.2fx over whole windows, "
               "%.2fx by CPU time a step;\nthe bounds allow at most %.2fx on this machine "
               "(bound ms: the weights' bytes / the bandwidth, or\nthe rows' FLOPs / the FMA "
               "peak, whichever is longer: the \"by\" column)\n"
               "(tokens/s, ms/step: from each batch's first sampled token to its end; wall tok/s:\n"
               "whole windows, their conditioning and priming included)\n",
               jobs[nj - 1], jobs[0],
               (jobs[nj - 1] / best[nj - 1].sampling) / (jobs[0] / best[0].sampling),
               (jobs[nj - 1] / best[nj - 1].wall) / (jobs[0] / best[0].wall),
               (best[nj - 1].batch * best[0].sampling_cpu / best[0].steps) /
                   (best[0].batch * best[nj - 1].sampling_cpu / best[nj - 1].steps),
               bound_tps[nj - 1] / bound_tps[0]);
    if (!json) {
        getloadavg(la, 3);
        printf("load average at end: %.2f %.2f %.2f\n", la[0], la[1], la[2]);
    }
    jb_prior_sampler_destroy(&s);
    jb_prior_destroy(&p);
    return rc;
}
