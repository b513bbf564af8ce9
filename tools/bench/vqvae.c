// vqvae.c: `jukebox-bench vqvae`: the VQ-VAE at the real `vqvae` preset with random weights;
// seconds of compute per second of 44.1 kHz audio for encode (all levels) and for decode
// from each level's codes, at 1 and 2 threads (or --threads N), and peak memory.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "jb_hparams.h"
#include "jb_vqvae.h"

// The original (openai/jukebox on this machine, 1 thread, best case): shared/perf/reference.md.
static const double ref_encode = 0.39, ref_decode[3] = {0.18, 0.054, 0.056};

static void usage(FILE *to) {
    fprintf(to,
            "usage: jukebox-bench vqvae [--threads N] [--seconds S] [--conv METHOD]\n"
            "                           [--window SAMPLES] [--repeat R] [--level L]\n"
            "  --threads N   only N threads (default: 1, then 2)\n"
            "  --seconds S   seconds of audio to encode and decode (default 10)\n"
            "  --conv M      convolution method: im2col, direct, winograd (default), or all\n"
            "  --window W    samples per pass (default %d; longer audio is chunked)\n"
            "  --repeat R    runs per figure, the fastest is reported (default 1)\n"
            "  --level L     only encode to and decode from level L (e.g. a long song quickly)\n",
            JB_VQVAE_DEFAULT_WINDOW);
}

static uint64_t rng = 0x243F6A8885A308D3ull;
static uint32_t next_u32(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)(rng >> 32);
}

typedef struct {
    double encode[JB_MAX_LEVELS], decode[JB_MAX_LEVELS];   // wall seconds
    double encode_cpu[JB_MAX_LEVELS], decode_cpu[JB_MAX_LEVELS];   // CPU seconds, all threads
} figures_t;

static int run_once(jb_vqvae_t *vq, const float *audio, int64_t T, int32_t **codes,
                    float *out, int only_level, figures_t *f, jb_err_t *err) {
    const jb_vqvae_hparams_t *hp = jb_vqvae_hparams(vq);
    for (int L = 0; L < hp->levels; L++) {
        if (only_level >= 0 && L != only_level) continue;
        double t0 = bench_now(), c0 = bench_cpu_now();
        if (jb_vqvae_encode(vq, audio, 1, T, L, codes[L], 0, err)) return -1;
        f->encode[L] = bench_now() - t0;
        f->encode_cpu[L] = bench_cpu_now() - c0;
    }
    for (int L = 0; L < hp->levels; L++) {
        if (only_level >= 0 && L != only_level) continue;
        int64_t TL = T / hp->hop_lengths[L];
        for (int64_t i = 0; i < TL; i++) codes[L][i] = (int32_t)(next_u32() % hp->l_bins);
        double t0 = bench_now(), c0 = bench_cpu_now();
        if (jb_vqvae_decode(vq, codes[L], 1, TL, L, out, 0, err)) return -1;
        f->decode[L] = bench_now() - t0;
        f->decode_cpu[L] = bench_cpu_now() - c0;
    }
    return 0;
}

int bench_vqvae(int argc, char **argv) {
    int only_threads = 0, repeat = 1, only_level = -1, conv = JB_VQVAE_DEFAULT_METHOD;   // 3: all
    double seconds = 10;
    int64_t window = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--threads") && v) {
            if (bench_parse_int(v, 1, 4096, &only_threads)) only_threads = -1;   // refused below
            i++;
        } else if (!strcmp(a, "--seconds") && v) {
            char *end;
            seconds = strtod(v, &end), i++;
            if (end == v || *end || !(seconds <= 3600)) seconds = -1;
        } else if (!strcmp(a, "--window") && v) {
            int w;
            window = bench_parse_int(v, 0, INT32_MAX, &w) ? -1 : w;
            i++;
        } else if (!strcmp(a, "--level") && v) {
            if (bench_parse_int(v, 0, JB_MAX_LEVELS - 1, &only_level)) only_level = -1;
            i++;
            if (only_level < 0) conv = -1;
        } else if (!strcmp(a, "--repeat") && v) {
            if (bench_parse_int(v, 1, 100000, &repeat)) repeat = -1;
            i++;
        } else if (!strcmp(a, "--conv") && v) {
            conv = !strcmp(v, "im2col")     ? JB_VQVAE_IM2COL
                   : !strcmp(v, "direct")   ? JB_VQVAE_DIRECT
                   : !strcmp(v, "winograd") ? JB_VQVAE_WINOGRAD
                   : !strcmp(v, "all")      ? 3
                                            : -1;
            i++;
        } else {
            conv = -1;
        }
        if (conv < 0 || only_threads < 0 || seconds <= 0 || repeat < 1 || window < 0) {
            fprintf(stderr, "jukebox-bench vqvae: bad option '%s'\n", a);
            usage(stderr);
            return 64;
        }
    }
    jb_err_t err = {0};
    json_t *js = jb_hparams_preset("vqvae", &err);
    jb_vqvae_hparams_t hp;
    if (!js || jb_vqvae_hparams_parse(js, &hp, &err)) {
        fprintf(stderr, "jukebox-bench vqvae: %s\n", err.msg);
        json_decref(js);
        return 70;
    }
    json_decref(js);
    if (only_level >= hp.levels) {
        fprintf(stderr, "jukebox-bench vqvae: --level %d: the model has %d levels\n", only_level,
                hp.levels);
        return 64;
    }
    jb_vqvae_t *vq = jb_vqvae_new_random(&hp, 1, window, &err);
    if (!vq) {
        fprintf(stderr, "jukebox-bench vqvae: %s\n", err.msg);
        return 70;
    }
    int64_t top = hp.hop_lengths[hp.levels - 1];
    int64_t T = (int64_t)(seconds * hp.sr) / top * top;
    if (T < top) T = top;
    double secs = (double)T / hp.sr;
    float *audio = malloc(sizeof(float) * T), *out = malloc(sizeof(float) * T);
    int32_t *codes[JB_MAX_LEVELS] = {0};
    for (int L = 0; L < hp.levels; L++) codes[L] = malloc(sizeof(int32_t) * (T / hp.hop_lengths[L]));
    // a chord with a little noise, in [-0.5, 0.5]
    for (int64_t t = 0; t < T; t++) {
        double ph = 2 * 3.141592653589793 * t / hp.sr;
        audio[t] = (float)(0.2 * sin(220 * ph) + 0.15 * sin(277.2 * ph) + 0.1 * sin(329.6 * ph) +
                           0.05 * ((next_u32() >> 8) / 16777216.0 - 0.5));
    }
    char machine[512];
    bench_machine(machine, sizeof machine, 0);
    printf("jukebox-bench vqvae: preset 'vqvae' (levels %d, width %d, depth %d, emb %d, "
           "l_bins %d, multipliers %d,%d,%d), random weights\n",
           hp.levels, hp.width, hp.depth, hp.emb_width, hp.l_bins, hp.multipliers[0],
           hp.multipliers[1], hp.multipliers[2]);
    printf("machine: %s\n", machine);
    printf("audio: %.2f s at %d Hz (%lld samples); window %lld samples, margins enc/dec L0 "
           "%lld/%lld; weights %.1f MiB, activations %.1f MiB\n",
           secs, hp.sr, (long long)T, (long long)jb_vqvae_max_window(vq),
           (long long)jb_vqvae_margin(vq, 0, 0), (long long)jb_vqvae_margin(vq, 0, 1),
           jb_vqvae_weight_bytes(vq) / 1048576.0, jb_vqvae_act_bytes(vq) / 1048576.0);
    printf("figures: seconds of compute per second of audio (lower is better); 'x orig' = "
           "the original's 1-thread best case / ours\n\n");
    printf("%-8s %-7s %8s %8s %8s %8s %8s | %7s %7s %7s %7s\n", "conv", "threads", "enc-all",
           "enc-L0", "dec-L0", "dec-L1", "dec-L2", "x orig", "x orig", "x orig", "x orig");
    printf("%-8s %-7s %8s %8s %8s %8s %8s | %7s %7s %7s %7s\n", "", "", "", "", "", "", "", "enc",
           "dec-L0", "dec-L1", "dec-L2");
    printf("('cpu': CPU seconds of all threads per second of audio; on a busy machine the 1-thread\n"
           " 'cpu' row is the better estimate of the wall time on an idle one)\n");
    int rc = 0;
    static const char *const names[3] = {"im2col", "direct", "winograd"};
    for (int m = 0; m < 3 && !rc; m++) {
        if (conv != 3 && conv != m) continue;
        if (jb_vqvae_set_method(vq, m, &err)) {
            fprintf(stderr, "jukebox-bench vqvae: %s\n", err.msg);
            rc = 70;
            break;
        }
        // 1 and 2 threads, or only the --threads asked (any count)
        for (int ti = 0; ti < (only_threads ? 1 : 2) && !rc; ti++) {
            int n = only_threads ? only_threads : ti + 1;
            bench_set_threads(n);
            figures_t best, f;
            memset(&best, 0, sizeof best);
            memset(&f, 0, sizeof f);
            for (int r = 0; r < repeat; r++) {
                if (run_once(vq, audio, T, codes, out, only_level, &f, &err)) {
                    fprintf(stderr, "jukebox-bench vqvae: %s\n", err.msg);
                    rc = 70;
                    break;
                }
                for (int L = 0; L < hp.levels; L++) {
                    if (r == 0 || f.encode[L] < best.encode[L])
                        best.encode[L] = f.encode[L], best.encode_cpu[L] = f.encode_cpu[L];
                    if (r == 0 || f.decode[L] < best.decode[L])
                        best.decode[L] = f.decode[L], best.decode_cpu[L] = f.decode_cpu[L];
                }
            }
            if (rc) break;
            double enc = 0, enc_cpu = 0;
            for (int L = 0; L < hp.levels; L++) enc += best.encode[L], enc_cpu += best.encode_cpu[L];
            // --level L: 'enc-all' is the encode of level L alone (no ratio), other levels '-'
            double wall[5] = {enc, best.encode[0], best.decode[0], best.decode[1], best.decode[2]};
            double cpu[5] = {enc_cpu, best.encode_cpu[0], best.decode_cpu[0], best.decode_cpu[1],
                             best.decode_cpu[2]};
            int shown[5] = {1, only_level <= 0, only_level <= 0,
                            only_level < 0 || only_level == 1, only_level < 0 || only_level == 2};
            double ref[4] = {only_level < 0 ? ref_encode : 0, ref_decode[0], ref_decode[1],
                             ref_decode[2]};
            char line[512];
            int k = snprintf(line, sizeof line, "%-9s %-2d %-4s", names[m], n, "wall");
            for (int c = 0; c < 5; c++)
                k += shown[c] ? snprintf(line + k, sizeof line - k, " %8.4f", wall[c] / secs)
                              : snprintf(line + k, sizeof line - k, " %8s", "-");
            k += snprintf(line + k, sizeof line - k, " |");
            for (int c = 0; c < 4; c++) {
                int col = c == 0 ? 0 : c + 1;
                if (shown[col] && ref[c] > 0 && wall[col] > 0)
                    k += snprintf(line + k, sizeof line - k, " %6.1fx", ref[c] / (wall[col] / secs));
                else
                    k += snprintf(line + k, sizeof line - k, " %7s", "-");
            }
            printf("%s\n", line);
            k = snprintf(line, sizeof line, "%-9s %-2s %-4s", "", "", "cpu");
            for (int c = 0; c < 5; c++)
                k += shown[c] ? snprintf(line + k, sizeof line - k, " %8.4f", cpu[c] / secs)
                              : snprintf(line + k, sizeof line - k, " %8s", "-");
            printf("%s |\n", line);
            fflush(stdout);
        }
    }
    printf("\npeak memory (RSS): %.1f MiB\n", bench_peak_rss_mib());
    for (int L = 0; L < hp.levels; L++) free(codes[L]);
    free(audio), free(out);
    jb_vqvae_destroy(&vq);
    return rc;
}
