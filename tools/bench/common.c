// common.c: helpers shared by the jukebox-bench subcommands.
#include <cblas.h>
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "jb_matmul.h"
#include "jb_tensor.h"

double bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

double bench_cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

double bench_peak_rss_mib(void) {
    // VmHWM, which bench_peak_rss_reset can reset (getrusage's maximum cannot).
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %ld kB", &kib) == 1) break;
    if (f) fclose(f);
    if (kib >= 0) return kib / 1024.0;
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return -1;
    return ru.ru_maxrss / 1024.0;   // KiB on Linux
}

void bench_peak_rss_reset(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");   // "5": the peak RSS from now (Linux 4.0)
    if (f) {
        fputs("5", f);
        fclose(f);
    }
}

void bench_set_threads(int n) {
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

void bench_machine(char *buf, size_t size, int stages) {
    char model[256] = "unknown CPU", line[512];
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        while (fgets(line, sizeof line, f))
            if (!strncmp(line, "model name", 10)) {
                char *c = strchr(line, ':');
                if (c) {
                    snprintf(model, sizeof model, "%s", c + 2);
                    model[strcspn(model, "\n")] = 0;
                }
                break;
            }
        fclose(f);
    }
    char wait[96];
    (stages ? bench_stage_wait_policy : bench_wait_policy)(wait, sizeof wait);
    snprintf(buf, size, "%s, %ld online CPUs, OpenBLAS %s; OpenMP threads wait: %s", model,
             sysconf(_SC_NPROCESSORS_ONLN), openblas_get_config(), wait);
}

// How idle OpenMP threads wait, as libgomp read it from the environment at load: at one row
// a 2-thread step's products take 25-50 % longer when they sleep between them (docs/bench.md).
void bench_wait_policy(char *buf, size_t size) {
    const char *wp = getenv("OMP_WAIT_POLICY"), *sc = getenv("GOMP_SPINCOUNT");
    if (sc) snprintf(buf, size, "spin %s then sleep (GOMP_SPINCOUNT)", sc);
    else if (wp) snprintf(buf, size, "%s (OMP_WAIT_POLICY)", wp);
    else snprintf(buf, size, "libgomp default (spin ~300000, then sleep)");
}

// The same for the stage executables this process starts with its environment: without
// OMP_WAIT_POLICY or GOMP_SPINCOUNT they run PASSIVE (jb_threads.c sets it at start-up).
void bench_stage_wait_policy(char *buf, size_t size) {
    if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT")) bench_wait_policy(buf, size);
    else snprintf(buf, size, "PASSIVE (the stages' default; OMP_WAIT_POLICY not set)");
}

// One pass over a (n bytes, 4 KiB aligned): every thread reads its contiguous share as S
// streams (S equal parts read in lock step, one 64-byte line of each per iteration), with a
// software prefetch pf bytes ahead of each (0: none). Seconds.
static double read_pass(const char *a, size_t n, int S, int pf, double *sink) {
    double t0 = bench_now(), tot = 0;
#pragma omp parallel reduction(+ : tot)
    {
        int nt = omp_get_num_threads(), t = omp_get_thread_num();
        size_t per = n / (size_t)nt / 4096 * 4096, len = per / (size_t)S / 64 * 64;
        const char *base = a + per * (size_t)t;
        __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
        for (size_t i = 0; i < len; i += 64)
            for (int j = 0; j < S; j++) {
                const char *p = base + (size_t)j * len + i;
                if (pf) _mm_prefetch(p + pf, _MM_HINT_T0);
                s0 = _mm256_add_ps(s0, _mm256_load_ps((const float *)p));
                s1 = _mm256_add_ps(s1, _mm256_load_ps((const float *)(p + 32)));
            }
        float f[8];
        _mm256_storeu_ps(f, _mm256_add_ps(s0, s1));
        for (int i = 0; i < 8; i++) tot += f[i];
    }
    *sink += tot;
    return bench_now() - t0;
}

bench_bw_t bench_read_bandwidth(int reps) {
    bench_bw_t r = {0};
    size_t n = (size_t)512 << 20;
    // jb_alloc, as the weights: on 2 MiB pages where the kernel gives them (the bound is
    // what a weight stream can get, TLB included).
    char *a = jb_alloc(n);
    if (!a) return r;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i += 4096) memset(a + i, 1, 4096);
    static const int streams[] = {1, 2, 4, 8}, pfs[] = {0, 1024, 4096};
    double sink = 0, best_plain = 1e30;
    for (int rep = 0; rep < reps; rep++) {   // rounds of every case, so that all see the load
        double t = read_pass(a, n, 1, 0, &sink);
        if (t < best_plain) best_plain = t;
        for (int si = 0; si < 4; si++)
            for (int pi = 0; pi < 3; pi++) {
                double gbs = (double)n / read_pass(a, n, streams[si], pfs[pi], &sink) / 1e9;
                if (gbs > r.multi) r.multi = gbs, r.streams = streams[si], r.prefetch = pfs[pi];
            }
    }
    r.plain = (double)n / best_plain / 1e9;
    if (r.plain > r.multi) r.multi = r.plain, r.streams = 1, r.prefetch = 0;
    if (sink == 1.2345) fputc(' ', stderr);   // keeps the loads
    jb_free(a);
    return r;
}

// One thread's FMAs: 12 independent chains of n multiply-adds each (more chains than FMA
// latency x FMA pipes on the CPUs we meet, so the pipes, not a chain, set the pace).
// Returns the FLOPs done (2 a lane).
#define FMA_CHAINS 12
static double fma_chains_avx2(long n, float *sink) {
    __m256 acc[FMA_CHAINS], a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
    for (int j = 0; j < FMA_CHAINS; j++) acc[j] = _mm256_set1_ps((float)j);
    for (long i = 0; i < n; i++)
#pragma GCC unroll 12
        for (int j = 0; j < FMA_CHAINS; j++) acc[j] = _mm256_fmadd_ps(acc[j], a, b);
    for (int j = 1; j < FMA_CHAINS; j++) acc[0] = _mm256_add_ps(acc[0], acc[j]);
    *sink += _mm256_cvtss_f32(acc[0]);
    return 2.0 * 8 * FMA_CHAINS * (double)n;
}

__attribute__((target("avx512f"))) static double fma_chains_avx512(long n, float *sink) {
    __m512 acc[FMA_CHAINS], a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
    for (int j = 0; j < FMA_CHAINS; j++) acc[j] = _mm512_set1_ps((float)j);
    for (long i = 0; i < n; i++)
#pragma GCC unroll 12
        for (int j = 0; j < FMA_CHAINS; j++) acc[j] = _mm512_fmadd_ps(acc[j], a, b);
    for (int j = 1; j < FMA_CHAINS; j++) acc[0] = _mm512_add_ps(acc[0], acc[j]);
    *sink += _mm512_reduce_add_ps(acc[0]);
    return 2.0 * 16 * FMA_CHAINS * (double)n;
}

bench_bound_t bench_step_bound(double bytes, double gbs, double flops, double gflops) {
    bench_bound_t b = {bytes / (gbs * 1e9), flops / (gflops * 1e9), 0, "bw"};
    b.bound = b.mem >= b.fma ? b.mem : (b.by = "FMA", b.fma);
    return b;
}

double bench_fma_peak_gflops(int reps) {
    // The vectors of the matrix kernel jb_matmul chose (a product's rate cannot beat them).
    int wide = !strcmp(jb_matmul_kernel_name(), "avx512");
    double best = 0;
    float sink = 0;
    for (int rep = 0; rep < reps; rep++) {
        double flops = 0, t0 = bench_now();
#pragma omp parallel reduction(+ : flops)
        {
            float s = 0;
            // ~40 M FMAs a thread: 10-30 ms, long enough against the fork and the clock.
            flops += wide ? fma_chains_avx512(1700000, &s) : fma_chains_avx2(3400000, &s);
#pragma omp atomic
            sink += s;
        }
        double g = flops / (bench_now() - t0) / 1e9;
        if (g > best) best = g;
    }
    if (sink == 1.2345f) fputc(' ', stderr);   // keeps the chains
    return best;
}

const char *bench_json_text(const char *s, char *buf, size_t size) {
    size_t n = 0;
    for (; *s && n + 7 < size; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') buf[n++] = '\\', buf[n++] = (char)c;
        else if (c < 0x20) n += (size_t)snprintf(buf + n, size - n, "\\u%04x", c);
        else buf[n++] = (char)c;
    }
    buf[n] = 0;
    return buf;
}

int bench_parse_int(const char *s, long lo, long hi, int *out) {
    char *end;
    long x = strtol(s, &end, 10);
    if (end == s || *end || x < lo || x > hi) return -1;
    *out = (int)x;
    return 0;
}
