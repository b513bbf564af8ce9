// bench_matmul.c: speed of jb_matmul on the released transformer shapes.
//
//   jukebox-bench_matmul [--reps N] [--packed] [--config upsampler|5b|all] [--threads 1|2|12]
//                        [--dtypes f32,bf16,f16] [--kernel c|avx2|avx512]
//
// For each configuration, weight dtype, thread count and M (rows: samples in a
// sampling step) it times one transformer layer's four products (attention
// c_attn and c_proj, MLP c_fc and c_proj), reports the weights' read rate in
// GB/s and as a fraction of the machine's read bandwidth (measured here: a
// read loop over a 512 MiB array), and estimates a full sampling step as
// depth x (one layer) + the output projection (jb_matmul_wt, 2048 bins).
// OpenBLAS's sgemm on the same f32 shapes with M rows is timed in the same run.
// Enough copies of the layer's weights are cycled through that they never sit
// in the caches. Every figure is the best of --reps runs (default 5): the
// machine is shared, the best run is the one least disturbed.
#include <cblas.h>
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jb_matmul.h"
#include "jb_tensor.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(void) {   // uniform in [-1, 1)
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 40) * (1.0 / (1 << 23)) - 1.0);
}

// Best-of-reps read bandwidth in GB/s over a 512 MiB array with nt threads.
static double read_bandwidth(int nt, int reps) {
    size_t n = (size_t)512 << 20 >> 2;
    float *a = jb_alloc(n * sizeof(float));
    if (!a) return 0;
#pragma omp parallel for num_threads(nt)
    for (size_t i = 0; i < n; i++) a[i] = (float)(i & 255);
    double best = 1e30, sink = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = now_s();
        double tot = 0;
#pragma omp parallel num_threads(nt) reduction(+ : tot)
        {
            __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
#pragma omp for schedule(static)
            for (size_t i = 0; i < n; i += 32) {
                s0 = _mm256_add_ps(s0, _mm256_load_ps(a + i));
                s1 = _mm256_add_ps(s1, _mm256_load_ps(a + i + 8));
                s2 = _mm256_add_ps(s2, _mm256_load_ps(a + i + 16));
                s3 = _mm256_add_ps(s3, _mm256_load_ps(a + i + 24));
            }
            float f[8];
            _mm256_storeu_ps(f, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
            for (int i = 0; i < 8; i++) tot += f[i];
        }
        double t = now_s() - t0;
        sink += tot;
        if (t < best) best = t;
    }
    jb_free(a);
    if (sink == 1.2345) printf(" ");
    return n * sizeof(float) / best / 1e9;
}

typedef struct {
    const char *name;
    int width, depth, n_attn, n_mlp, bins;   // n_attn: width * m_attn
} config_t;

static const config_t configs[] = {
    {"upsampler_level_0", 1920, 72, 480, 1920, 2048},
    {"prior_5b", 4800, 72, 1200, 4800, 2048},
};

typedef struct {
    int K, N;
} shape_t;

// The four products of one layer: c_attn (K -> 3 n_attn), attn c_proj, mlp c_fc, mlp c_proj.
static void layer_shapes(const config_t *c, shape_t s[4]) {
    s[0] = (shape_t){c->width, 3 * c->n_attn};
    s[1] = (shape_t){c->n_attn, c->width};
    s[2] = (shape_t){c->width, c->n_mlp};
    s[3] = (shape_t){c->n_mlp, c->width};
}

static void fill_weights(void *w, jb_dtype_t dt, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float v = frand() * 0.05f;
        if (dt == JB_F32) ((float *)w)[i] = v;
        else if (dt == JB_F16) ((uint16_t *)w)[i] = jb_f32_to_f16(v);
        else ((uint16_t *)w)[i] = jb_f32_to_bf16(v);
    }
}

// Is name one of the comma-separated items of list?
static int has_item(const char *list, const char *name) {
    size_t n = strlen(name);
    for (const char *p = list; p && *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && !strncmp(p, name, n)) return 1;
        p = e ? e + 1 : NULL;
    }
    return 0;
}

int main(int argc, char **argv) {
    int reps = 5, cfg_mask = 1, thr_mask = 3, packed = 0;
    const char *dtypes = "f32,bf16,f16";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--packed")) packed = 1;
        else if (!strcmp(argv[i], "--config") && i + 1 < argc) {
            const char *v = argv[++i];
            cfg_mask = !strcmp(v, "all") ? 3 : !strcmp(v, "5b") ? 2 : 1;
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            const char *v = argv[++i];
            thr_mask = !strcmp(v, "1") ? 1 : !strcmp(v, "2") ? 2 : 3;
        } else if (!strcmp(argv[i], "--dtypes") && i + 1 < argc) {
            dtypes = argv[++i];
        } else if (!strcmp(argv[i], "--kernel") && i + 1 < argc) {
            if (jb_matmul_set_kernel(argv[++i]) < 0) {
                fprintf(stderr, "bench_matmul: kernel %s not available\n", argv[i]);
                return 64;
            }
        } else {
            fprintf(stderr,
                    "usage: %s [--reps N] [--packed] [--config upsampler|5b|all] [--threads 1|2|12] "
                    "[--dtypes f32,bf16,f16] [--kernel c|avx2|avx512]\n",
                    argv[0]);
            return 64;
        }
    }
    if (reps < 1) reps = 1;
    printf("kernel %s, best of %d runs\n", jb_matmul_kernel_name(), reps);
    double bw[3] = {0};
    for (int t = 1; t <= 2; t++)
        if (thr_mask & t) {
            bw[t] = read_bandwidth(t, reps);
            printf("machine read bandwidth, %d thread%s: %.1f GB/s\n", t, t > 1 ? "s" : "", bw[t]);
        }
    static const int Ms[] = {1, 4, 16};
    for (int ci = 0; ci < 2; ci++) {
        if (!(cfg_mask & (1 << ci))) continue;
        const config_t *c = &configs[ci];
        shape_t sh[4];
        layer_shapes(c, sh);
        size_t layer_elems = 0, maxK = 0, maxN = 0;
        for (int i = 0; i < 4; i++) {
            layer_elems += (size_t)sh[i].K * sh[i].N;
            if ((size_t)sh[i].K > maxK) maxK = sh[i].K;
            if ((size_t)sh[i].N > maxN) maxN = sh[i].N;
        }
        if (maxK < (size_t)c->width) maxK = (size_t)c->width;
        if (maxN < (size_t)c->bins) maxN = (size_t)c->bins;
        float *x = jb_alloc(sizeof(float) * 16 * maxK);
        float *y = jb_alloc(sizeof(float) * 16 * maxN);
        float *emb = jb_alloc(sizeof(float) * (size_t)c->bins * c->width);
        for (size_t i = 0; i < 16 * maxK; i++) x[i] = frand();
        fill_weights(emb, JB_F32, (size_t)c->bins * c->width);
        printf("\n%s: width %d, depth %d; per layer K x N: %dx%d %dx%d %dx%d %dx%d "
               "(%.1f M weights)\n",
               c->name, c->width, c->depth, sh[0].K, sh[0].N, sh[1].K, sh[1].N, sh[2].K, sh[2].N,
               sh[3].K, sh[3].N, layer_elems / 1e6);
        printf("%-6s %-4s %3s %-12s %9s %8s %7s %12s %9s\n", "dtype", "thr", "M", "kernel",
               "ms/layer", "GB/s", "%bw", "ms/step(est)", "bound ms");
        for (int di = 0; di < 4; di++) {
            // di 3: OpenBLAS sgemm on f32 weights, the comparison
            jb_dtype_t dt = di == 0 || di == 3 ? JB_F32 : di == 1 ? JB_BF16 : JB_F16;
            const char *dname = di == 0 || di == 3 ? "f32" : di == 1 ? "bf16" : "f16";
            if (!has_item(dtypes, dname)) continue;
            size_t es = jb_dtype_size(dt);
            size_t layer_bytes = layer_elems * es;
            // Cycle through copies: at least 256 MB of weights, past every cache.
            int copies = (int)(((size_t)256 << 20) / layer_bytes) + 1;
            void *w = jb_alloc(layer_bytes * copies);
            if (!w) {
                printf("%-6s: no memory for %d copies of the layer\n", dname, copies);
                continue;
            }
            fill_weights(w, dt, layer_elems * copies);
            // the same weights packed (jb_matmul_pack), when asked for
            jb_matmul_packed_t **pk = NULL;
            if (packed && di != 3) {
                pk = calloc((size_t)copies * 4, sizeof(*pk));
                const char *p = w;
                for (int i = 0; pk && i < copies * 4; i++) {
                    pk[i] = jb_matmul_pack(p, dt, sh[i % 4].K, sh[i % 4].N, NULL);
                    p += (size_t)sh[i % 4].K * sh[i % 4].N * es;
                }
            }
            for (int t = 1; t <= 2; t++) {
                if (!(thr_mask & t)) continue;
                omp_set_num_threads(t);
                openblas_set_num_threads(t);
                // the output projection, 2048 bins x width, f32 (tied to the embedding)
                double tout[17];
                for (int mi = 0; mi < 3; mi++) {
                    int M = Ms[mi];
                    double best = 1e30;
                    for (int r = 0; r < reps; r++) {
                        double t0 = now_s();
                        jb_matmul_wt(y, x, emb, M, c->width, c->bins);
                        double dtm = now_s() - t0;
                        if (dtm < best) best = dtm;
                    }
                    tout[M] = best;
                }
                char kname[32];
                snprintf(kname, sizeof kname, "%s%s", jb_matmul_kernel_name(), pk ? "-packed" : "");
                for (int mi = 0; mi < 3; mi++) {
                    int M = Ms[mi];
                    double best = 1e30;
                    for (int r = 0; r < reps; r++) {
                        double t0 = now_s();
                        const char *p = w;
                        for (int cp = 0; cp < copies; cp++)
                            for (int i = 0; i < 4; i++) {
                                if (di == 3)
                                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M,
                                                sh[i].N, sh[i].K, 1.0f, x, sh[i].K,
                                                (const float *)p, sh[i].N, 0.0f, y, sh[i].N);
                                else if (pk)
                                    jb_matmul_packed(y, x, pk[cp * 4 + i], NULL, M);
                                else
                                    jb_matmul(y, x, p, dt, NULL, M, sh[i].K, sh[i].N);
                                p += (size_t)sh[i].K * sh[i].N * es;
                            }
                        double dtm = (now_s() - t0) / copies;
                        if (dtm < best) best = dtm;
                    }
                    double gbs = layer_bytes / best / 1e9;
                    double step = best * c->depth + tout[M];
                    double bound = (layer_bytes * c->depth + (double)c->bins * c->width * 4) /
                                   (bw[t] * 1e9);
                    printf("%-6s %-4d %3d %-12s %9.3f %8.1f %6.0f%% %12.1f %9.1f\n", dname, t, M,
                           di == 3 ? "openblas" : kname, best * 1e3, gbs,
                           bw[t] > 0 ? 100 * gbs / bw[t] : 0, step * 1e3, bound * 1e3);
                    fflush(stdout);
                }
            }
            if (pk)
                for (int i = 0; i < copies * 4; i++) jb_matmul_packed_destroy(&pk[i]);
            free(pk);
            jb_free(w);
        }
        jb_free(x);
        jb_free(y);
        jb_free(emb);
    }
    return 0;
}
