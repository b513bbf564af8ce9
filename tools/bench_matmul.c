// bench_matmul.c: speed of jb_matmul on the released transformer shapes.
//
//   jukebox-bench_matmul [--reps N] [--large] [--layout plain|packed|both] [--config upsampler|5b|all]
//                        [--threads 1|2|12] [--dtypes f32,bf16,f16,int8] [--kernel c|avx2|avx512]
//
// For each configuration, weight dtype, thread count and M (rows: samples in a
// sampling step) it times one transformer layer's four products (attention
// c_attn and c_proj, MLP c_fc and c_proj), reports the weights' read rate in
// GB/s and as a fraction of the machine's read bandwidth (measured here as jukebox-bench
// measures it: the best of several prefetched streams a thread), and estimates a full step as
// depth x (one layer) + the output projection (jb_matmul_wt, 2048 bins).
// OpenBLAS's sgemm on the same f32 shapes with M rows is timed in the same run.
// Enough copies of the layer's weights are cycled through that they never sit
// in the caches. The machine is shared: every figure is the best of --reps
// rounds (default 7), each round running every case once (and the bandwidth
// loop), so that a busy spell of the neighbours does not spoil one case.
// --large adds products of LARGE_M rows (priming), reported in GFLOP/s.
#include <cblas.h>
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "bench/bench.h"
#include "jb_matmul.h"
#include "jb_tensor.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(void) {   // uniform in [-1, 1)
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 40) * (1.0 / (1 << 23)) - 1.0);
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

static void usage(FILE *f) {
    fprintf(f,
"usage: jukebox-bench_matmul [--reps N] [--large] [--layout plain|packed|both]\n"
"                            [--config upsampler|5b|all] [--threads 1|2|12]\n"
"                            [--dtypes f32,bf16,f16,int8] [--kernel c|avx2|avx512]\n"
"\n"
"Speed of jb_matmul on the released transformer shapes. For each configuration, weight\n"
"dtype, thread count and M (rows: samples in a sampling step) it times one transformer\n"
"layer's four products (attention c_attn and c_proj, MLP c_fc and c_proj), reports the\n"
"weights' read rate in GB/s and as a fraction of the machine's read bandwidth (measured\n"
"as jukebox-bench measures it), and estimates a full step as depth x (one layer) + the\n"
"output projection. OpenBLAS's sgemm on the same f32 shapes is timed in the same run.\n"
"\n"
"  --reps N          rounds, each running every case once; every figure is the best\n"
"                    of them (default 7)\n"
"  --large           also products of 256 rows (priming), in GFLOP/s\n"
"  --layout L        plain, packed or both (default both)\n"
"  --config C        upsampler (upsampler_level_0; the default), 5b (prior_5b) or all\n"
"  --threads T       1, 2 or 12 (both; the default)\n"
"  --dtypes LIST     weight dtypes, comma-separated (default f32,bf16,f16,int8)\n"
"  --kernel K        c, avx2 or avx512 (default: the best this CPU has)\n"
"  -h, --help        this text\n"
"\n"
"exit codes: 0 done; 64 bad usage (an unknown option, a bad or missing value).\n");
}

// Index of v among the n names, or -1.
static int choice(const char *v, const char *const *names, int n) {
    for (int i = 0; i < n; i++)
        if (!strcmp(v, names[i])) return i;
    return -1;
}

// One measured case: what runs, and the best time over the rounds.
typedef struct {
    int kind;   // 0 jb_matmul, 1 jb_matmul_packed, 2 OpenBLAS sgemm (f32), 3 output projection
    int di, t, M;
    double best;
} meas_t;

#define LARGE_M 256

// int8: jb_matmul_pack_q8 of f32 weights (packed layout only).
#define NDT 4
static const jb_dtype_t DT[NDT] = {JB_F32, JB_BF16, JB_F16, JB_I8};
static const char *DN[NDT] = {"f32", "bf16", "f16", "int8"};

int main(int argc, char **argv) {
    int reps = 7, cfg_mask = 1, thr_mask = 3, layouts = 3, large = 0;
    const char *dtypes = "f32,bf16,f16,int8";
    // Every value is checked: a typo is refused (exit 64), not measured as something else.
    static const char *const layout_n[] = {"plain", "packed", "both"},
                             *config_n[] = {"upsampler", "5b", "all"},
                             *thr_n[] = {"1", "2", "12"};
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = !strcmp(o, "--reps") || !strcmp(o, "--layout") || !strcmp(o, "--config") ||
                    !strcmp(o, "--threads") || !strcmp(o, "--dtypes") || !strcmp(o, "--kernel");
        if (!strcmp(o, "-h") || !strcmp(o, "--help")) {
            usage(stdout);
            return 0;
        }
        if (takes && !v) {
            fprintf(stderr, "jukebox-bench_matmul: %s needs a value (see --help)\n", o);
            return EX_USAGE;
        }
        if (takes) i++;
        int k = 0;
        if (!strcmp(o, "--reps")) {
            char *end;
            long n = strtol(v, &end, 10);
            if (end == v || *end || n < 1 || n > 100000) {
                fprintf(stderr, "jukebox-bench_matmul: --reps %s: expected a count from 1 to "
                        "100000\n", v);
                return EX_USAGE;
            }
            reps = (int)n;
        } else if (!strcmp(o, "--large")) {
            large = 1;
        } else if (!strcmp(o, "--layout") && (k = choice(v, layout_n, 3)) >= 0) {
            layouts = k + 1;
        } else if (!strcmp(o, "--config") && (k = choice(v, config_n, 3)) >= 0) {
            cfg_mask = k + 1;
        } else if (!strcmp(o, "--threads") && (k = choice(v, thr_n, 3)) >= 0) {
            thr_mask = k + 1;
        } else if (!strcmp(o, "--dtypes")) {
            int n = 0, bad = 0;   // every item one of DN, and at least one
            for (const char *p = v; *p;) {
                size_t len = strcspn(p, ",");
                int known = 0;
                for (int di = 0; di < NDT; di++)
                    known |= strlen(DN[di]) == len && !strncmp(p, DN[di], len);
                bad |= !known;
                n++;
                p += len + (p[len] == ',');
            }
            if (bad || n < 1) {
                fprintf(stderr, "jukebox-bench_matmul: --dtypes %s: expected a comma-separated "
                        "list of f32, bf16, f16, int8\n", v);
                return EX_USAGE;
            }
            dtypes = v;
        } else if (!strcmp(o, "--kernel")) {
            if (jb_matmul_set_kernel(v) < 0) {
                fprintf(stderr, "jukebox-bench_matmul: --kernel %s: not available (c, avx2, "
                        "avx512 where the CPU has it)\n", v);
                return EX_USAGE;
            }
        } else if (takes) {
            fprintf(stderr, "jukebox-bench_matmul: %s %s: expected %s\n", o, v,
                    !strcmp(o, "--layout")   ? "plain, packed or both"
                    : !strcmp(o, "--config") ? "upsampler, 5b or all"
                                             : "1, 2 or 12");
            return EX_USAGE;
        } else {
            fprintf(stderr, "jukebox-bench_matmul: unknown option '%s'\n", o);
            usage(stderr);
            return EX_USAGE;
        }
    }
    double bw[3] = {0}, bw_plain[3] = {0};   // the bound uses bw (multi-stream)
    static const int Ms[] = {1, 4, 8, 16};
    printf("kernel %s; every figure the best of %d rounds (each round runs every case once)\n",
           jb_matmul_kernel_name(), reps);
    // Sleeping threads make one row 25-50 % slower on 2 threads (docs/bench.md): say which.
    const char *wp = getenv("OMP_WAIT_POLICY"), *sc = getenv("GOMP_SPINCOUNT");
    printf("OpenMP threads wait: OMP_WAIT_POLICY=%s GOMP_SPINCOUNT=%s\n", wp ? wp : "(unset)",
           sc ? sc : "(unset)");

    for (int ci = 0; ci < 2; ci++) {
        if (!(cfg_mask & (1 << ci))) continue;
        const config_t *c = &configs[ci];
        shape_t sh[4];
        layer_shapes(c, sh);
        size_t layer_elems = 0, maxK = c->width, maxN = c->bins;
        for (int i = 0; i < 4; i++) {
            layer_elems += (size_t)sh[i].K * sh[i].N;
            if ((size_t)sh[i].K > maxK) maxK = sh[i].K;
            if ((size_t)sh[i].N > maxN) maxN = sh[i].N;
        }
        float *x = jb_alloc(sizeof(float) * LARGE_M * maxK);
        float *y = jb_alloc(sizeof(float) * LARGE_M * maxN);
        for (size_t i = 0; i < LARGE_M * maxK; i++) x[i] = frand();
        // Copies of the weights (>= 256 MB of each kind) are cycled through so
        // that every product reads its weights from memory, as in a real step.
        size_t emb_elems = (size_t)c->bins * c->width;
        int ecopies = (int)(((size_t)256 << 20) / (emb_elems * 4)) + 1;
        float *emb = jb_alloc(sizeof(float) * emb_elems * ecopies);
        if (emb) fill_weights(emb, JB_F32, emb_elems * ecopies);
        void *w[NDT] = {0};
        int copies[NDT] = {0};
        jb_matmul_packed_t **pk[NDT] = {0};
        double pk_bytes[NDT] = {0};   // bytes of one layer's packed weights (int8: + scales)
        for (int di = 0; di < NDT; di++) {
            if (!has_item(dtypes, DN[di])) continue;
            if (DT[di] == JB_I8) {   // one f32 layer, quantized into every copy
                copies[di] = (int)(((size_t)256 << 20) / layer_elems) + 1;
                w[di] = jb_alloc(layer_elems * 4);
                pk[di] = calloc((size_t)copies[di] * 4, sizeof(**pk));
                if (!w[di] || !pk[di]) continue;
                fill_weights(w[di], JB_F32, layer_elems);
                for (int i = 0; i < copies[di] * 4; i++) {
                    const float *p = w[di];
                    for (int j = 0; j < i % 4; j++) p += (size_t)sh[j].K * sh[j].N;
                    pk[di][i] = jb_matmul_pack_q8(p, JB_F32, sh[i % 4].K, sh[i % 4].N, NULL);
                    if (i < 4) pk_bytes[di] += (double)jb_matmul_packed_bytes(pk[di][i]);
                }
                continue;
            }
            size_t es = jb_dtype_size(DT[di]);
            copies[di] = (int)(((size_t)256 << 20) / (layer_elems * es)) + 1;
            w[di] = jb_alloc(layer_elems * es * copies[di]);
            if (!w[di]) {
                printf("%s: no memory for %d copies of a layer\n", DN[di], copies[di]);
                continue;
            }
            fill_weights(w[di], DT[di], layer_elems * copies[di]);
            if (layouts & 2) {
                pk[di] = calloc((size_t)copies[di] * 4, sizeof(**pk));
                const char *p = w[di];
                for (int i = 0; pk[di] && i < copies[di] * 4; i++) {
                    pk[di][i] = jb_matmul_pack(p, DT[di], sh[i % 4].K, sh[i % 4].N, NULL);
                    p += (size_t)sh[i % 4].K * sh[i % 4].N * es;
                }
            }
        }
        // The cases.
        meas_t ms[256];
        int nm = 0;
        for (int t = 1; t <= 2; t++) {
            if (!(thr_mask & t)) continue;
            for (int mi = 0; mi < 3; mi++) {
                if (emb) ms[nm++] = (meas_t){3, 0, t, Ms[mi], 1e30};
                if (w[0]) ms[nm++] = (meas_t){2, 0, t, Ms[mi], 1e30};
                for (int di = 0; di < NDT; di++) {
                    if (!w[di]) continue;
                    if ((layouts & 1) && DT[di] != JB_I8) ms[nm++] = (meas_t){0, di, t, Ms[mi], 1e30};
                    if (pk[di]) ms[nm++] = (meas_t){1, di, t, Ms[mi], 1e30};
                }
            }
            // priming / teacher forcing: 256 rows, bound by arithmetic (one copy is enough)
            if (large) {
                if (w[0]) ms[nm++] = (meas_t){2, 0, t, LARGE_M, 1e30};
                for (int di = 0; di < NDT; di++) {
                    if (!w[di]) continue;
                    if ((layouts & 1) && DT[di] != JB_I8) ms[nm++] = (meas_t){0, di, t, LARGE_M, 1e30};
                    if (pk[di]) ms[nm++] = (meas_t){1, di, t, LARGE_M, 1e30};
                }
            }
        }
        for (int r = 0; r < reps; r++) {
            for (int t = 1; t <= 2; t++) {
                if (!(thr_mask & t)) continue;
                bench_set_threads(t);
                bench_bw_t b = bench_read_bandwidth(1);
                if (b.plain > bw_plain[t]) bw_plain[t] = b.plain;
                if (b.multi > bw[t]) bw[t] = b.multi;
            }
            for (int i = 0; i < nm; i++) {
                meas_t *m = &ms[i];
                omp_set_num_threads(m->t);
                openblas_set_num_threads(m->t);
                double t0 = bench_now(), dtm;
                if (m->kind == 3) {
                    for (int cp = 0; cp < ecopies; cp++)
                        jb_matmul_wt(y, x, emb + cp * emb_elems, m->M, c->width, c->bins);
                    dtm = (bench_now() - t0) / ecopies;
                } else {
                    size_t es = jb_dtype_size(DT[m->di]);
                    const char *p = w[m->di];
                    int ncp = m->M == LARGE_M ? 1 : copies[m->di];
                    for (int cp = 0; cp < ncp; cp++)
                        for (int j = 0; j < 4; j++) {
                            if (m->kind == 2)
                                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m->M,
                                            sh[j].N, sh[j].K, 1.0f, x, sh[j].K,
                                            (const float *)p, sh[j].N, 0.0f, y, sh[j].N);
                            else if (m->kind == 1)
                                jb_matmul_packed(y, x, pk[m->di][cp * 4 + j], NULL, m->M);
                            else
                                jb_matmul(y, x, p, DT[m->di], NULL, m->M, sh[j].K, sh[j].N);
                            p += (size_t)sh[j].K * sh[j].N * es;
                        }
                    dtm = (bench_now() - t0) / ncp;
                }
                if (dtm < m->best) m->best = dtm;
            }
        }
        // Report.
        printf("\n%s: width %d, depth %d; a layer's K x N: %dx%d %dx%d %dx%d %dx%d "
               "(%.2f M weights); output projection %d x %d f32\n",
               c->name, c->width, c->depth, sh[0].K, sh[0].N, sh[1].K, sh[1].N, sh[2].K, sh[2].N,
               sh[3].K, sh[3].N, layer_elems / 1e6, c->bins, c->width);
        for (int t = 1; t <= 2; t++)
            if (thr_mask & t)
                printf("machine read bandwidth, %d thread%s: plain loop %.1f GB/s, multi-stream "
                       "+ prefetch %.1f GB/s (the bound)\n", t, t > 1 ? "s" : "", bw_plain[t], bw[t]);
        printf("%-5s %3s %3s %-15s %9s %7s %5s %13s %9s\n", "dtype", "thr", "M", "kernel",
               "ms/layer", "GB/s", "%bw", "ms/step(est)", "bound ms");
        for (int i = 0; i < nm; i++) {
            const meas_t *m = &ms[i];
            if (m->kind == 3) {
                printf("%-5s %3d %3d %-15s %9.3f %7.1f %4.0f%%  (output projection, x·Wᵀ)\n",
                       "f32", m->t, m->M, jb_matmul_kernel_name(), m->best * 1e3,
                       emb_elems * 4 / m->best / 1e9, 100 * emb_elems * 4 / m->best / 1e9 / bw[m->t]);
                continue;
            }
            if (m->M == LARGE_M) {
                char kname[32];
                snprintf(kname, sizeof kname, "%s",
                         m->kind == 2 ? "openblas-sgemm" : m->kind == 1 ? "packed" : "jb_matmul");
                printf("%-5s %3d %3d %-15s %9.3f %7s %5s  %.1f GFLOP/s\n", DN[m->di], m->t, m->M,
                       kname, m->best * 1e3, "", "", 2.0 * m->M * layer_elems / m->best / 1e9);
                continue;
            }
            double tout = 0;   // the output projection at the same M and threads
            for (int j = 0; j < nm; j++)
                if (ms[j].kind == 3 && ms[j].t == m->t && ms[j].M == m->M) tout = ms[j].best;
            double bytes = m->kind == 1 && pk_bytes[m->di] > 0
                               ? pk_bytes[m->di]
                               : (double)layer_elems * jb_dtype_size(DT[m->di]);
            double gbs = bytes / m->best / 1e9;
            double step = m->best * c->depth + tout;
            double bound = (bytes * c->depth + emb_elems * 4.0) / (bw[m->t] * 1e9);
            char kname[32];
            snprintf(kname, sizeof kname, "%s", m->kind == 2 ? "openblas-sgemm" : jb_matmul_kernel_name());
            if (m->kind == 1) strcat(kname, "-packed");
            printf("%-5s %3d %3d %-15s %9.3f %7.1f %4.0f%% %13.1f %9.1f\n", DN[m->di], m->t, m->M,
                   kname, m->best * 1e3, gbs, 100 * gbs / bw[m->t], step * 1e3, bound * 1e3);
        }
        fflush(stdout);
        for (int di = 0; di < NDT; di++) {
            if (pk[di])
                for (int i = 0; i < copies[di] * 4; i++) jb_matmul_packed_destroy(&pk[di][i]);
            free(pk[di]);
            jb_free(w[di]);
        }
        jb_free(x);
        jb_free(y);
        jb_free(emb);
    }
    return 0;
}
