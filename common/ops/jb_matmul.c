// jb_matmul.c: see jb_matmul.h.
//
// Small M (M <= JB_MATMUL_SMALL_M, a sampling step): a weight-streaming kernel.
// The N columns are split into one contiguous panel per OpenMP thread. Each
// thread walks its panel a block of KC rows of W at a time; inside the block it
// takes micro-panels of 8*V columns and, for every group of R rows of x, keeps
// the R x V accumulator vectors in registers while it runs down the KC rows.
// The first row group pulls the block from memory, the other groups find it in
// L1, so W is read from memory exactly once for all M rows. f16/bf16 weights
// are widened in registers (F16C / a 16-bit shift), accumulation is float32.
// y holds the running sums between blocks (M x panel floats, in L1/L2).
//
// Large M (priming, teacher forcing): with AVX-512 the same kernel over
// 64-column sub-panels (twice OpenBLAS's AVX2 sgemm here); otherwise BLAS
// sgemm, f16/bf16 weights widened a block of rows at a time into a scratch.
//
// Packed weights (jb_matmul_pack): tiles of 32 columns, each (K, 32)
// contiguous, so each thread reads one sequential stream; same kernel.
//
// The AVX2 + FMA + F16C kernels are the build's baseline (x86-64-v3); an
// AVX-512 variant of the same kernel is compiled with a target attribute and
// chosen at run time where the CPU has it. Without AVX2 a plain C loop does it.
#include "jb_matmul.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define JB_MM_AVX2 1
#include <immintrin.h>
#else
#define JB_MM_AVX2 0
#endif

// Rows of W per block: KC x (a micro-panel) stays in L1 while every row group
// of x passes over it (128 x 32 floats = 16 KB).
#define KC 128
// Columns of a packed tile (jb_matmul_pack).
#define JB_MM_TILE 32
// Below this many weight elements per thread an OpenMP fork costs more than it saves.
#define PAR_MIN_ELEMS (1 << 16)

static int g_kernel = -1;   // -1 not chosen yet, 0 plain C, 1 AVX2, 2 AVX-512

#if JB_MM_AVX2
// The AVX-512 kernels are compiled for these four extensions.
static int cpu_has_avx512(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
}
#endif

static int kernel_choice(void) {
    int k = __atomic_load_n(&g_kernel, __ATOMIC_RELAXED);
    if (k >= 0) return k;
    k = 0;
#if JB_MM_AVX2
    k = 1;
    const char *env = getenv("JB_MATMUL_KERNEL");   // "c", "avx2", "avx512": for tests and benches
    int has512 = cpu_has_avx512();
    if (has512) k = 2;
    if (env && !strcmp(env, "c")) k = 0;
    if (env && !strcmp(env, "avx2")) k = 1;
    if (env && !strcmp(env, "avx512") && has512) k = 2;
#endif
    __atomic_store_n(&g_kernel, k, __ATOMIC_RELAXED);
    return k;
}

int jb_matmul_set_kernel(const char *name) {
    int k;
    if (!name) {
        __atomic_store_n(&g_kernel, -1, __ATOMIC_RELAXED);
        return kernel_choice();
    }
    if (!strcmp(name, "c")) k = 0;
#if JB_MM_AVX2
    else if (!strcmp(name, "avx2")) k = 1;
    else if (!strcmp(name, "avx512")) {
        if (!cpu_has_avx512()) return -1;
        k = 2;
    }
#endif
    else return -1;
    __atomic_store_n(&g_kernel, k, __ATOMIC_RELAXED);
    return k;
}

const char *jb_matmul_kernel_name(void) {
    static const char *names[] = {"c", "avx2", "avx512"};
    return names[kernel_choice()];
}

static inline float wload1(const void *w, jb_dtype_t wdt, int64_t i) {
    if (wdt == JB_F32) return ((const float *)w)[i];
    if (wdt == JB_F16) return jb_f16_to_f32(((const uint16_t *)w)[i]);
    return jb_bf16_to_f32(((const uint16_t *)w)[i]);
}

// ---- plain C: y[:, c0:c1] += x · W[:, c0:c1] ---------------------------------
// y: (M, ldy) x: (M, K) w: (K, N)
static void panel_c(float *y, const float *x, const void *w, jb_dtype_t wdt, int M, int K, int N,
                    int c0, int c1) {
    for (int k0 = 0; k0 < K; k0 += KC) {
        int k1 = k0 + KC < K ? k0 + KC : K;
        for (int m = 0; m < M; m++) {
            float *ym = y + (int64_t)m * N;
            for (int k = k0; k < k1; k++) {
                float xv = x[(int64_t)m * K + k];
                for (int n = c0; n < c1; n++) ym[n] += xv * wload1(w, wdt, (int64_t)k * N + n);
            }
        }
    }
}

#if JB_MM_AVX2
// ---- AVX2 + FMA + F16C ------------------------------------------------------

#define AI static inline __attribute__((always_inline))

AI __m256 widen8(const void *w, jb_dtype_t wdt, int64_t i) {
    if (wdt == JB_F32) return _mm256_loadu_ps((const float *)w + i);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + i));
    if (wdt == JB_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

// R rows x V vectors of accumulators: y (R rows, stride ldy, 8V columns) +=
// x (R rows, stride ldx)[0:kb] · w[0:kb, 0:8V] (row stride ldw elements).
// pf: when not NULL, the rows of a block to pull into L1 meanwhile (stride
// pfld bytes, pfb bytes a row): the block this thread reads next.
AI void ukern_avx2(int R, int V, jb_dtype_t wdt, float *y, int64_t ldy, const float *x,
                   int64_t ldx, const void *w, int64_t ldw, int kb, const char *pf,
                   int64_t pfld, int pfb) {
    __m256 acc[6][8];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
        for (int v = 0; v < V; v++) acc[r][v] = _mm256_loadu_ps(y + r * ldy + 8 * v);
    // One chain of FMAs per accumulator, in k order, for any R: a row's result must not
    // depend on how many rows share the call (batch invariance; test_jb_matmul). One row
    // still has 2-4 independent chains (V), enough at the weight stream's rate.
    int k = 0;
    for (; k < kb; k++) {
        if (pf) {
            const char *p = pf + k * pfld;
            for (int b = 0; b < pfb; b += 64) _mm_prefetch(p + b, _MM_HINT_T0);
        }
        // V widened weights, then one broadcast x at a time: 6 x 2 accumulators
        // + 2 weights + 1 x fit the 16 registers.
        __m256 wv[8];
#pragma GCC unroll 8
        for (int v = 0; v < V; v++) wv[v] = widen8(w, wdt, (int64_t)k * ldw + 8 * v);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            __m256 xb = _mm256_broadcast_ss(x + r * ldx + k);
#pragma GCC unroll 8
            for (int v = 0; v < V; v++) acc[r][v] = _mm256_fmadd_ps(xb, wv[v], acc[r][v]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
        for (int v = 0; v < V; v++) _mm256_storeu_ps(y + r * ldy + 8 * v, acc[r][v]);
}

// All M rows of y (stride ldy) over one block of W: wb (kb rows, stride ldw
// elements, 8V columns); x: rows of stride ldx from the block's first k.
// The first row group prefetches pf (see ukern_avx2).
AI void mpanel_avx2(int V, int RM, jb_dtype_t wdt, float *y, int64_t ldy, const float *x,
                    int64_t ldx, const void *wb, int64_t ldw, int kb, int M, const char *pf,
                    int64_t pfld, int pfb) {
    int m = 0;
    for (; m + RM <= M; m += RM)
        ukern_avx2(RM, V, wdt, y + m * ldy, ldy, x + m * ldx, ldx, wb, ldw, kb, m ? NULL : pf,
                   pfld, pfb);
    switch (M - m) {
#define CASE(RR)                                                                          \
    case RR:                                                                              \
        ukern_avx2(RR, V, wdt, y + m * ldy, ldy, x + m * ldx, ldx, wb, ldw, kb, m ? NULL : pf, \
                   pfld, pfb);                                                            \
        break;
        CASE(1) CASE(2) CASE(3) CASE(4) CASE(5)
#undef CASE
    default: break;
    }
}

// Micro-panel widths: few rows are bound by the weight stream, so one row
// group of 32 columns (4 or 8 accumulators); more rows are bound by the FMAs,
// so groups of 6 rows x 16 columns (12 accumulators) share each widened vector.
#define MP_WIDE(M) ((M) <= 2 ? 32 : 16)

// Unpacked W (K, N): y[:, c0:c1] += x · W[:, c0:c1]; c1 - c0 a multiple of 8.
// Blocks of KC rows outer, micro-panels inner; each micro-panel prefetches the
// one two places after it (wrapping into the next block of rows).
AI void panel_avx2_t(jb_dtype_t wdt, float *y, const float *x, const void *w, int M, int K,
                     int N, int c0, int c1) {
    const int64_t es = wdt == JB_F32 ? 4 : 2;
    const int mw = MP_WIDE(M);
    const int c1w = c0 + (c1 - c0) / mw * mw;   // end of the full-width micro-panels
    for (int k0 = 0; k0 < K; k0 += KC) {
        int kb = K - k0 < KC ? K - k0 : KC;
        for (int j = c0; j < c1; j += j < c1w ? mw : 8) {
            const char *wb = (const char *)w + ((int64_t)k0 * N + j) * es;
            int pj = j + 2 * mw, pk = k0;
            if (pj >= c1w) {
                pj = c0 + (pj - c1w);
                pk += KC;
            }
            const char *pf = pk < K ? (const char *)w + ((int64_t)pk * N + pj) * es : NULL;
            float *yj = y + j;
            if (j >= c1w) mpanel_avx2(1, 6, wdt, yj, N, x + k0, K, wb, N, kb, M, pf, N * es, 8 * es);
            else if (mw == 32) mpanel_avx2(4, 2, wdt, yj, N, x + k0, K, wb, N, kb, M, pf, N * es, 32 * es);
            else mpanel_avx2(2, 6, wdt, yj, N, x + k0, K, wb, N, kb, M, pf, N * es, 16 * es);
        }
    }
}

static void panel_avx2(float *y, const float *x, const void *w, jb_dtype_t wdt, int M, int K,
                       int N, int c0, int c1) {
    if (wdt == JB_F32) panel_avx2_t(JB_F32, y, x, w, M, K, N, c0, c1);
    else if (wdt == JB_F16) panel_avx2_t(JB_F16, y, x, w, M, K, N, c0, c1);
    else panel_avx2_t(JB_BF16, y, x, w, M, K, N, c0, c1);
}

// Packed W (tiles of JB_MM_TILE columns, each (K, TILE) contiguous):
// y (M rows, stride ldy, TILE columns) += x · tile. Purely sequential reads;
// the prefetch runs PF_AHEAD(wdt) bytes ahead of the stream: 2 KiB for 16-bit weights
// (one row, 2 threads, on 2 MiB pages: 8-15 % faster than 8 KiB, which the f32 and int8
// tiles keep: there the distance made no difference; docs/bench.md).
#define PF_AHEAD(wdt) ((wdt) == JB_F16 || (wdt) == JB_BF16 ? 2048 : 8192)

// More than 2 rows: the rows taken in groups of 6 over each half of a tile (12
// accumulators); a rest of 1-2 rows goes over all 32 columns instead (4 chains a row: over
// a half it had 2 and waited on the FMA latency). Returns the rows of the groups of 6.
// One chain per accumulator whatever the grouping: a row's bits do not depend on it.
static inline int rows_in_sixes(int M) {
    int rest = M % 6;
    return rest && rest <= 2 ? M - rest : M;
}
#define PF_AHEAD_512 8192   // the AVX-512 kernel: not measured with a shorter distance
AI void tile_avx2_t(jb_dtype_t wdt, float *y, int64_t ldy, const float *x, const void *tile,
                    int M, int K) {
    const int64_t es = wdt == JB_F32 ? 4 : 2;
    for (int k0 = 0; k0 < K; k0 += KC) {
        int kb = K - k0 < KC ? K - k0 : KC;
        const char *wb = (const char *)tile + (int64_t)k0 * JB_MM_TILE * es;
        if (M <= 2) {
            mpanel_avx2(4, 2, wdt, y, ldy, x + k0, K, wb, JB_MM_TILE, kb, M, wb + PF_AHEAD(wdt),
                        JB_MM_TILE * es, JB_MM_TILE * es);
        } else {
            int m6 = rows_in_sixes(M);
            mpanel_avx2(2, 6, wdt, y, ldy, x + k0, K, wb, JB_MM_TILE, kb, m6, wb + PF_AHEAD(wdt),
                        JB_MM_TILE * es, JB_MM_TILE * es);
            mpanel_avx2(2, 6, wdt, y + 16, ldy, x + k0, K, wb + 16 * es, JB_MM_TILE, kb, m6, NULL,
                        0, 0);
            if (m6 < M)
                mpanel_avx2(4, 2, wdt, y + m6 * ldy, ldy, x + k0 + (int64_t)m6 * K, K, wb,
                            JB_MM_TILE, kb, M - m6, NULL, 0, 0);
        }
    }
}

// One row over two whole tiles at once (64 columns, 8 accumulators, two streams of weights
// each prefetched): the same chain per column as tile_avx2_t (y loaded at each block of KC,
// then one FMA a k in order), so the same bits.
AI void tile_pair_avx2_t(jb_dtype_t wdt, float *y, const float *x, const char *ta,
                         const char *tb, int K) {
    const int64_t es = wdt == JB_F32 ? 4 : 2, T = JB_MM_TILE;
    for (int k0 = 0; k0 < K; k0 += KC) {
        int kb = K - k0 < KC ? K - k0 : KC;
        const char *wa = ta + (int64_t)k0 * T * es, *wb = tb + (int64_t)k0 * T * es;
        __m256 acc[8];
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++)
            acc[v] = _mm256_loadu_ps(y + 8 * v), acc[4 + v] = _mm256_loadu_ps(y + T + 8 * v);
        for (int k = 0; k < kb; k++) {
            for (int b = 0; b < T * es; b += 64) {
                _mm_prefetch(wa + PF_AHEAD(wdt) + k * T * es + b, _MM_HINT_T0);
                _mm_prefetch(wb + PF_AHEAD(wdt) + k * T * es + b, _MM_HINT_T0);
            }
            __m256 xb = _mm256_broadcast_ss(x + k0 + k);
#pragma GCC unroll 4
            for (int v = 0; v < 4; v++) {
                acc[v] = _mm256_fmadd_ps(xb, widen8(wa, wdt, (int64_t)k * T + 8 * v), acc[v]);
                acc[4 + v] =
                    _mm256_fmadd_ps(xb, widen8(wb, wdt, (int64_t)k * T + 8 * v), acc[4 + v]);
            }
        }
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++) {
            _mm256_storeu_ps(y + 8 * v, acc[v]);
            _mm256_storeu_ps(y + T + 8 * v, acc[4 + v]);
        }
    }
}

static void tile_pair_avx2(float *y, const float *x, const char *ta, const char *tb,
                           jb_dtype_t wdt, int K) {
    if (wdt == JB_F32) tile_pair_avx2_t(JB_F32, y, x, ta, tb, K);
    else if (wdt == JB_F16) tile_pair_avx2_t(JB_F16, y, x, ta, tb, K);
    else tile_pair_avx2_t(JB_BF16, y, x, ta, tb, K);
}

static void tile_avx2(float *y, int64_t ldy, const float *x, const void *tile, jb_dtype_t wdt,
                      int M, int K) {
    if (wdt == JB_F32) tile_avx2_t(JB_F32, y, ldy, x, tile, M, K);
    else if (wdt == JB_F16) tile_avx2_t(JB_F16, y, ldy, x, tile, M, K);
    else tile_avx2_t(JB_BF16, y, ldy, x, tile, M, K);
}

// ---- AVX-512 (run-time choice): 16 columns a vector, 32 registers -------------

#define T512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
#define AI512 static inline __attribute__((always_inline)) T512

AI512 __m512 widen16(const void *w, jb_dtype_t wdt, int64_t i) {
    if (wdt == JB_F32) return _mm512_loadu_ps((const float *)w + i);
    __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)w + i));
    if (wdt == JB_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// As ukern_avx2 with 16-column vectors; up to 12 rows x 2 vectors.
AI512 void ukern_avx512(int R, int V, jb_dtype_t wdt, float *y, int64_t ldy, const float *x,
                        int64_t ldx, const void *w, int64_t ldw, int kb, const char *pf,
                        int64_t pfld, int pfb) {
    __m512 acc[12][2];
#pragma GCC unroll 12
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int v = 0; v < V; v++) acc[r][v] = _mm512_loadu_ps(y + r * ldy + 16 * v);
    // One chain per accumulator in k order for any R (batch invariance, as ukern_avx2).
    int k = 0;
    for (; k < kb; k++) {
        if (pf) {
            const char *p = pf + k * pfld;
            for (int b = 0; b < pfb; b += 64) _mm_prefetch(p + b, _MM_HINT_T0);
        }
        __m512 wv[2];
#pragma GCC unroll 2
        for (int v = 0; v < V; v++) wv[v] = widen16(w, wdt, (int64_t)k * ldw + 16 * v);
#pragma GCC unroll 12
        for (int r = 0; r < R; r++) {
            __m512 xb = _mm512_set1_ps(x[r * ldx + k]);
#pragma GCC unroll 2
            for (int v = 0; v < V; v++) acc[r][v] = _mm512_fmadd_ps(xb, wv[v], acc[r][v]);
        }
    }
#pragma GCC unroll 12
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int v = 0; v < V; v++) _mm512_storeu_ps(y + r * ldy + 16 * v, acc[r][v]);
}

// As mpanel_avx2: row groups of RM (<= 12).
AI512 void mpanel_avx512(int V, int RM, jb_dtype_t wdt, float *y, int64_t ldy, const float *x,
                         int64_t ldx, const void *wb, int64_t ldw, int kb, int M, const char *pf,
                         int64_t pfld, int pfb) {
    int m = 0;
    for (; m + RM <= M; m += RM)
        ukern_avx512(RM, V, wdt, y + m * ldy, ldy, x + m * ldx, ldx, wb, ldw, kb, m ? NULL : pf,
                     pfld, pfb);
    switch (M - m) {
#define CASE(RR)                                                                            \
    case RR:                                                                                \
        ukern_avx512(RR, V, wdt, y + m * ldy, ldy, x + m * ldx, ldx, wb, ldw, kb,           \
                     m ? NULL : pf, pfld, pfb);                                             \
        break;
        CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8) CASE(9) CASE(10)
        CASE(11)
#undef CASE
    default: break;
    }
}

// Rows per group: as many as the 32 registers allow beside the weights; few
// rows are bound by the weight stream anyway.
#define RM512 8

// Unpacked W, as panel_avx2_t: micro-panels of 32 columns, then 16, then 8.
AI512 void panel_avx512_t(jb_dtype_t wdt, float *y, const float *x, const void *w, int M, int K,
                          int N, int c0, int c1) {
    const int64_t es = wdt == JB_F32 ? 4 : 2;
    const int c1w = c0 + (c1 - c0) / 32 * 32;
    for (int k0 = 0; k0 < K; k0 += KC) {
        int kb = K - k0 < KC ? K - k0 : KC;
        for (int j = c0; j < c1;) {
            int step = j < c1w ? 32 : c1 - j >= 16 ? 16 : 8;
            const char *wb = (const char *)w + ((int64_t)k0 * N + j) * es;
            int pj = j + 64, pk = k0;
            if (pj >= c1w) {
                pj = c0 + (pj - c1w);
                pk += KC;
            }
            const char *pf = pk < K ? (const char *)w + ((int64_t)pk * N + pj) * es : NULL;
            float *yj = y + j;
            if (step == 32)
                mpanel_avx512(2, RM512, wdt, yj, N, x + k0, K, wb, N, kb, M, pf, N * es, 32 * es);
            else if (step == 16)
                mpanel_avx512(1, RM512, wdt, yj, N, x + k0, K, wb, N, kb, M, pf, N * es, 16 * es);
            else
                mpanel_avx2(1, 6, wdt, yj, N, x + k0, K, wb, N, kb, M, pf, N * es, 8 * es);
            j += step;
        }
    }
}

T512 static void panel_avx512(float *y, const float *x, const void *w, jb_dtype_t wdt, int M,
                              int K, int N, int c0, int c1) {
    if (wdt == JB_F32) panel_avx512_t(JB_F32, y, x, w, M, K, N, c0, c1);
    else if (wdt == JB_F16) panel_avx512_t(JB_F16, y, x, w, M, K, N, c0, c1);
    else panel_avx512_t(JB_BF16, y, x, w, M, K, N, c0, c1);
}

// Packed tile, as tile_avx2_t.
AI512 void tile_avx512_t(jb_dtype_t wdt, float *y, int64_t ldy, const float *x, const void *tile,
                         int M, int K) {
    const int64_t es = wdt == JB_F32 ? 4 : 2;
    for (int k0 = 0; k0 < K; k0 += KC) {
        int kb = K - k0 < KC ? K - k0 : KC;
        const char *wb = (const char *)tile + (int64_t)k0 * JB_MM_TILE * es;
        mpanel_avx512(2, RM512, wdt, y, ldy, x + k0, K, wb, JB_MM_TILE, kb, M, wb + PF_AHEAD_512,
                      JB_MM_TILE * es, JB_MM_TILE * es);
    }
}

T512 static void tile_avx512(float *y, int64_t ldy, const float *x, const void *tile,
                             jb_dtype_t wdt, int M, int K) {
    if (wdt == JB_F32) tile_avx512_t(JB_F32, y, ldy, x, tile, M, K);
    else if (wdt == JB_F16) tile_avx512_t(JB_F16, y, ldy, x, tile, M, K);
    else tile_avx512_t(JB_BF16, y, ldy, x, tile, M, K);
}
#endif

// Columns c0..c1 of y (M rows) += x · W.
static void panel(int kern, float *y, const float *x, const void *w, jb_dtype_t wdt, int M,
                  int K, int N, int c0, int c1) {
#if JB_MM_AVX2
    if (kern >= 1) {
        int cv = c0 + (c1 - c0) / 8 * 8;
        if (kern == 2) panel_avx512(y, x, w, wdt, M, K, N, c0, cv);
        else panel_avx2(y, x, w, wdt, M, K, N, c0, cv);
        if (cv < c1) panel_c(y, x, w, wdt, M, K, N, cv, c1);
        return;
    }
#endif
    panel_c(y, x, w, wdt, M, K, N, c0, c1);
}

#if JB_MM_AVX2
// Rows of x a block of stream_tiled (a multiple of 6, the AVX2 row group): x's block of KC
// columns (48 KB) stays in L2 while the tiles' micro-panels pass over it.
#define STREAM_ROWS 96

// Many rows, unpacked W: columns c0.. of y (M rows) += x · W, 64 columns at a time copied
// into two packed tiles (scratch: K x 64 weights) and taken by blocks of STREAM_ROWS rows.
// The unpacked panels read W's KC x 16 micro-panels with a stride of N elements: at N = 1024
// f32 (4 KiB) every row of a micro-panel falls in the same L1 set and they evict each other
// (80 against 139 GFLOP/s at N = 1000, M = 2048, K = 1024). The same chain of FMAs per
// element in k order as the panels: the same bits. Returns the first column not done (the
// last < 64 go through the panels).
static int stream_tiled(float *y, const float *x, const void *w, jb_dtype_t wdt, int M, int K,
                        int N, int c0, int c1, char *scratch) {
    const int64_t es = wdt == JB_F32 ? 4 : 2, T = JB_MM_TILE;
    int j = c0;
    for (; j + 2 * T <= c1; j += 2 * T) {
        for (int h = 0; h < 2; h++)
            for (int64_t k = 0; k < K; k++)
                memcpy(scratch + ((int64_t)h * K + k) * T * es,
                       (const char *)w + (k * N + j + h * T) * es, (size_t)(T * es));
        for (int m0 = 0; m0 < M; m0 += STREAM_ROWS) {
            int mb = M - m0 < STREAM_ROWS ? M - m0 : STREAM_ROWS;
            for (int h = 0; h < 2; h++)
                tile_avx2(y + (int64_t)m0 * N + j + h * T, N, x + (int64_t)m0 * K,
                          scratch + (int64_t)h * K * T * es, wdt, mb, K);
        }
    }
    return j;
}
#endif

// Any M: every thread takes a panel of columns (a multiple of 8 wide, the last one also the
// odd tail), initialises its part of y, then accumulates; many rows with AVX2 through
// stream_tiled.
static void matmul_stream(float *y, const float *x, const void *w, jb_dtype_t wdt,
                          const float *bias, int init, int M, int K, int N) {
    int kern = kernel_choice();
    int nvec = N / 8;
    int par = (int64_t)K * N >= 2 * PAR_MIN_ELEMS && nvec >= 2;
    // Many rows with AVX2: a scratch of two packed tiles a thread (stream_tiled); without
    // it (no memory) the unpacked panels do the same work, slower.
    size_t tile_bytes = (size_t)K * 2 * JB_MM_TILE * (wdt == JB_F32 ? 4 : 2);
    char *tiles = NULL;
#if JB_MM_AVX2
    if (kern == 1 && M > JB_MATMUL_SMALL_M) tiles = jb_alloc(tile_bytes * (size_t)omp_get_max_threads());
#endif
#pragma omp parallel if (par)
    {
        int nt = 1, t = 0;
#ifdef _OPENMP
        nt = omp_get_num_threads();
        t = omp_get_thread_num();
#endif
        int c0 = (int)((int64_t)nvec * t / nt) * 8;
        int c1 = t == nt - 1 ? N : (int)((int64_t)nvec * (t + 1) / nt) * 8;
        if (c1 > c0) {
            if (init)
                for (int m = 0; m < M; m++) {
                    float *ym = y + (int64_t)m * N;
                    if (bias) memcpy(ym + c0, bias + c0, sizeof(float) * (size_t)(c1 - c0));
                    else memset(ym + c0, 0, sizeof(float) * (size_t)(c1 - c0));
                }
            // Many rows: sub-panels of 64 columns, so that the block of W that
            // every group of rows passes over stays in L1 and the sub-panel of y
            // in L2; W is still read from memory once.
            int sub = M <= JB_MATMUL_SMALL_M ? c1 - c0 : 64;
            int j = c0;
#if JB_MM_AVX2
            if (kern == 1 && M > JB_MATMUL_SMALL_M && tiles)
                j = stream_tiled(y, x, w, wdt, M, K, N, c0, c1, tiles + (int64_t)t * tile_bytes);
#endif
            for (; j < c1; j += sub)
                panel(kern, y, x, w, wdt, M, K, N, j, c1 - j < sub ? c1 : j + sub);
        }
    }
    jb_free(tiles);
}

// Large M goes through the streaming kernels too (AVX2: stream_tiled; AVX-512: 64-column
// sub-panels), so that a row's result never depends on M: priming several jobs' windows
// together gives each job the bits it gets alone. (BLAS sgemm is only the fallback of the
// plain C kernel.)
static int stream_large(void) { return kernel_choice() >= 1; }

// ---- large M: BLAS ----------------------------------------------------------

static void widen_rows(float *dst, const void *w, jb_dtype_t wdt, int64_t k0, int64_t rows,
                       int64_t N) {
    const uint16_t *h = (const uint16_t *)w + k0 * N;
    int64_t n = rows * N;
#pragma omp parallel for schedule(static) if (n >= 4 * PAR_MIN_ELEMS)
    for (int64_t i0 = 0; i0 < n; i0 += 4096) {
        int64_t i1 = i0 + 4096 < n ? i0 + 4096 : n;
        int64_t i = i0;
#if JB_MM_AVX2
        if (wdt == JB_F16)
            for (; i + 8 <= i1; i += 8) _mm256_storeu_ps(dst + i, widen8(h, JB_F16, i));
        else
            for (; i + 8 <= i1; i += 8) _mm256_storeu_ps(dst + i, widen8(h, JB_BF16, i));
#endif
        for (; i < i1; i++) dst[i] = wdt == JB_F16 ? jb_f16_to_f32(h[i]) : jb_bf16_to_f32(h[i]);
    }
}

static void matmul_large(float *y, const float *x, const void *w, jb_dtype_t wdt, int M, int K,
                         int N, float beta) {
    if (K <= 0) {   // y = beta·y: BLAS need not handle an empty sum
        if (beta == 0.0f) memset(y, 0, sizeof(float) * (size_t)M * (size_t)N);
        return;
    }
    if (wdt == JB_F32) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, x, K,
                    (const float *)w, N, beta, y, N);
        return;
    }
    // 256 rows of W at a time: the scratch stays ~2 MB for N = 1920.
    const int64_t KB = 256;
    float *tmp = malloc(sizeof(float) * (size_t)(K < KB ? K : KB) * (size_t)N);
    if (!tmp) {   // no memory for the scratch: the streaming kernel needs none
        if (beta == 0.0f) memset(y, 0, sizeof(float) * (size_t)M * (size_t)N);
        for (int m0 = 0; m0 < M; m0 += JB_MATMUL_SMALL_M) {
            int mb = M - m0 < JB_MATMUL_SMALL_M ? M - m0 : JB_MATMUL_SMALL_M;
            matmul_stream(y + (int64_t)m0 * N, x + (int64_t)m0 * K, w, wdt, NULL, 0, mb, K, N);
        }
        return;
    }
    for (int64_t k0 = 0; k0 < K; k0 += KB) {
        int64_t kb = K - k0 < KB ? K - k0 : KB;
        widen_rows(tmp, w, wdt, k0, kb, N);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, (int)kb, 1.0f, x + k0, K,
                    tmp, N, k0 == 0 ? beta : 1.0f, y, N);
    }
    free(tmp);
}

// ---- packed weights -----------------------------------------------------------

struct jb_matmul_packed {
    jb_dtype_t wdt;   // F32, F16, BF16, or I8 (jb_matmul_pack_q8)
    int K, N, ntiles;
    void *data;       // (ntiles, K, JB_MM_TILE) in wdt; columns past N are zero
    float *scales;    // I8 only: (ntiles, ceil(K / JB_MATMUL_Q8_GROUP), JB_MM_TILE)
};

// Bytes of one packed tile's weights.
static size_t tile_bytes(const jb_matmul_packed_t *p) {
    return (size_t)p->K * JB_MM_TILE * jb_dtype_size(p->wdt);
}

// Int8 tile t's weights and its scales (ceil(K / JB_MATMUL_Q8_GROUP) groups x TILE).
static const int8_t *q8_tile(const jb_matmul_packed_t *p, int t, const float **sc) {
    const int ng = (p->K + JB_MATMUL_Q8_GROUP - 1) / JB_MATMUL_Q8_GROUP;
    *sc = p->scales + (size_t)t * ng * JB_MM_TILE;
    return (const int8_t *)p->data + (size_t)t * tile_bytes(p);
}

jb_matmul_packed_t *jb_matmul_pack(const void *w, jb_dtype_t wdt, int K, int N, jb_err_t *err) {
    if (wdt != JB_F32 && wdt != JB_F16 && wdt != JB_BF16) {
        jb_err_set(err, JB_EINVAL, "jb_matmul_pack: dtype %s is not F32, F16 or BF16",
                   jb_dtype_name(wdt));
        return NULL;
    }
    if (K <= 0 || N <= 0) {
        jb_err_set(err, JB_EINVAL, "jb_matmul_pack: bad shape (%d, %d)", K, N);
        return NULL;
    }
    jb_matmul_packed_t *p = calloc(1, sizeof(*p));
    if (!p) goto fail;
    p->wdt = wdt;
    p->K = K;
    p->N = N;
    p->ntiles = (N + JB_MM_TILE - 1) / JB_MM_TILE;
    size_t es = jb_dtype_size(wdt);
    p->data = jb_calloc((size_t)p->ntiles * (size_t)K * JB_MM_TILE * es);
    if (!p->data) goto fail;
#pragma omp parallel for schedule(static)
    for (int t = 0; t < p->ntiles; t++) {
        int c0 = t * JB_MM_TILE, nc = N - c0 < JB_MM_TILE ? N - c0 : JB_MM_TILE;
        char *dst = (char *)p->data + (size_t)t * K * JB_MM_TILE * es;
        for (int k = 0; k < K; k++)
            memcpy(dst + (size_t)k * JB_MM_TILE * es, (const char *)w + ((size_t)k * N + c0) * es,
                   (size_t)nc * es);
    }
    return p;
fail:
    jb_err_set(err, JB_ENOMEM, "jb_matmul_pack: no memory for (%d, %d) %s", K, N,
               jb_dtype_name(wdt));
    if (p) jb_free(p->data);
    free(p);
    return NULL;
}

jb_matmul_packed_t *jb_matmul_pack_q8(const void *w, jb_dtype_t wdt, int K, int N,
                                      jb_err_t *err) {
    if (wdt != JB_F32 && wdt != JB_F16 && wdt != JB_BF16) {
        jb_err_set(err, JB_EINVAL, "jb_matmul_pack_q8: dtype %s is not F32, F16 or BF16",
                   jb_dtype_name(wdt));
        return NULL;
    }
    if (K <= 0 || N <= 0) {
        jb_err_set(err, JB_EINVAL, "jb_matmul_pack_q8: bad shape (%d, %d)", K, N);
        return NULL;
    }
    jb_matmul_packed_t *p = calloc(1, sizeof(*p));
    if (!p) goto fail;
    p->wdt = JB_I8;
    p->K = K;
    p->N = N;
    p->ntiles = (N + JB_MM_TILE - 1) / JB_MM_TILE;
    const int G = JB_MATMUL_Q8_GROUP, ng = (K + G - 1) / G;
    p->data = jb_calloc((size_t)p->ntiles * (size_t)K * JB_MM_TILE);
    p->scales = jb_calloc(sizeof(float) * (size_t)p->ntiles * (size_t)ng * JB_MM_TILE);
    if (!p->data || !p->scales) goto fail;
    // Symmetric: scale = max |w| / 127 over the group's G rows of a column, q = round(w / scale).
#pragma omp parallel for schedule(static)
    for (int t = 0; t < p->ntiles; t++) {
        int c0 = t * JB_MM_TILE, nc = N - c0 < JB_MM_TILE ? N - c0 : JB_MM_TILE;
        int8_t *dst = (int8_t *)p->data + (size_t)t * K * JB_MM_TILE;
        float *sc = p->scales + (size_t)t * ng * JB_MM_TILE;
        for (int g = 0; g < ng; g++) {
            int k0 = g * G, k1 = k0 + G < K ? k0 + G : K;
            for (int n = 0; n < nc; n++) {
                float amax = 0;
                for (int k = k0; k < k1; k++) {
                    float v = fabsf(wload1(w, wdt, (int64_t)k * N + c0 + n));
                    if (v > amax) amax = v;
                }
                float s = amax / 127.0f, inv = amax > 0 ? 127.0f / amax : 0.0f;
                sc[g * JB_MM_TILE + n] = s;
                for (int k = k0; k < k1; k++) {
                    float q = nearbyintf(wload1(w, wdt, (int64_t)k * N + c0 + n) * inv);
                    dst[(size_t)k * JB_MM_TILE + n] = (int8_t)(q > 127 ? 127 : q < -127 ? -127 : q);
                }
            }
        }
    }
    return p;
fail:
    jb_err_set(err, JB_ENOMEM, "jb_matmul_pack_q8: no memory for (%d, %d)", K, N);
    if (p) {
        jb_free(p->data);
        jb_free(p->scales);
    }
    free(p);
    return NULL;
}

void jb_matmul_packed_destroy(jb_matmul_packed_t **p_p) {
    if (!p_p || !*p_p) return;
    jb_free((*p_p)->data);
    jb_free((*p_p)->scales);
    free(*p_p);
    *p_p = NULL;
}

size_t jb_matmul_packed_bytes(const jb_matmul_packed_t *p) {
    size_t b = (size_t)p->ntiles * tile_bytes(p);
    if (p->wdt == JB_I8)
        b += sizeof(float) * (size_t)p->ntiles *
             (size_t)((p->K + JB_MATMUL_Q8_GROUP - 1) / JB_MATMUL_Q8_GROUP) * JB_MM_TILE;
    return b;
}

jb_dtype_t jb_matmul_packed_dtype(const jb_matmul_packed_t *p) { return p->wdt; }

_Static_assert(JB_MM_TILE == JB_MATMUL_TILE, "the public tile width is the kernels'");

void jb_matmul_packed_arrays(const jb_matmul_packed_t *p, const void **data, size_t *data_bytes,
                             const float **scales, size_t *scale_bytes) {
    *data = p->data;
    *data_bytes = (size_t)p->ntiles * tile_bytes(p);
    *scales = p->scales;
    *scale_bytes = jb_matmul_packed_bytes(p) - *data_bytes;
}

// ---- int8 tiles (jb_matmul_pack_q8) ------------------------------------------
// Per group of G = JB_MATMUL_Q8_GROUP rows of k and per column: sum = Σ_k x_k·q_kn from zero
// in k order (float32), then y_n += s_n·sum (one fused multiply-add). Each row of x goes
// through exactly these operations whatever M and whatever the rows around it, so a row's
// result does not depend on the batch (on the kernel in use only).

// y (M rows, stride ldy, nc columns) += x · tile; tile: (K, TILE) int8, sc: (ng, TILE).
static void tile_q8_c(float *y, int64_t ldy, const float *x, const int8_t *tile, const float *sc,
                      int M, int K, int nc) {
    const int G = JB_MATMUL_Q8_GROUP;
    for (int k0 = 0; k0 < K; k0 += G) {
        int k1 = k0 + G < K ? k0 + G : K;
        const float *s = sc + (k0 / G) * JB_MM_TILE;
        for (int m = 0; m < M; m++)
            for (int n = 0; n < nc; n++) {
                float acc = 0;
                for (int k = k0; k < k1; k++)
                    acc += x[(int64_t)m * K + k] * (float)tile[(int64_t)k * JB_MM_TILE + n];
                y[m * ldy + n] = fmaf(acc, s[n], y[m * ldy + n]);
            }
    }
}

#if JB_MM_AVX2
AI __m256 widen_q8(const int8_t *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}

// R rows x V vectors: y (stride ldy, 8V columns) += sc · (x (stride ldx)[0:kb] · w[0:kb, 0:8V])
// with w int8 rows of TILE bytes. pf: prefetch this stream meanwhile (one line per two rows).
AI void ukern_q8_avx2(int R, int V, float *y, int64_t ldy, const float *x, int64_t ldx,
                      const int8_t *w, const float *sc, int kb, const char *pf) {
    __m256 acc[6][4];
#pragma GCC unroll 6
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int v = 0; v < V; v++) acc[r][v] = _mm256_setzero_ps();
    for (int k = 0; k < kb; k++) {
        if (pf && !(k & 1)) _mm_prefetch(pf + k * JB_MM_TILE, _MM_HINT_T0);
        __m256 wv[4];
#pragma GCC unroll 4
        for (int v = 0; v < V; v++) wv[v] = widen_q8(w + k * JB_MM_TILE + 8 * v);
#pragma GCC unroll 6
        for (int r = 0; r < R; r++) {
            __m256 xb = _mm256_broadcast_ss(x + r * ldx + k);
#pragma GCC unroll 4
            for (int v = 0; v < V; v++) acc[r][v] = _mm256_fmadd_ps(xb, wv[v], acc[r][v]);
        }
    }
#pragma GCC unroll 6
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int v = 0; v < V; v++) {
            float *yp = y + r * ldy + 8 * v;
            _mm256_storeu_ps(yp, _mm256_fmadd_ps(acc[r][v], _mm256_loadu_ps(sc + 8 * v),
                                                 _mm256_loadu_ps(yp)));
        }
}

// All M rows over one group of a tile: rows 2 at a time over 32 columns (few rows: the
// weight stream binds), or 6 at a time over each half of 16 columns (12 accumulators).
static void group_q8_avx2(float *y, int64_t ldy, const float *x, int64_t ldx, const int8_t *w,
                          const float *sc, int kb, int M, const char *pf) {
    if (M <= 2) {
        if (M == 2) ukern_q8_avx2(2, 4, y, ldy, x, ldx, w, sc, kb, pf);
        else ukern_q8_avx2(1, 4, y, ldy, x, ldx, w, sc, kb, pf);
        return;
    }
    int m6 = rows_in_sixes(M);
    for (int h = 0; h < 2; h++)
        for (int m = 0; m < m6; m += 6) {
            const char *p = h == 0 && m == 0 ? pf : NULL;
            float *ym = y + m * ldy + 16 * h;
            const float *xm = x + m * ldx;
            const int8_t *wh = w + 16 * h;
            switch (m6 - m < 6 ? m6 - m : 6) {
#define CASE(RR)                                                             \
    case RR: ukern_q8_avx2(RR, 2, ym, ldy, xm, ldx, wh, sc + 16 * h, kb, p); break;
                CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6)
#undef CASE
            default: break;
            }
        }
    float *yr = y + m6 * ldy;
    const float *xr = x + m6 * ldx;
    if (M - m6 == 2) ukern_q8_avx2(2, 4, yr, ldy, xr, ldx, w, sc, kb, NULL);
    else if (M - m6 == 1) ukern_q8_avx2(1, 4, yr, ldy, xr, ldx, w, sc, kb, NULL);
}

static void tile_q8_avx2(float *y, int64_t ldy, const float *x, const int8_t *tile,
                         const float *sc, int M, int K) {
    const int G = JB_MATMUL_Q8_GROUP;
    for (int k0 = 0; k0 < K; k0 += G) {
        int kb = K - k0 < G ? K - k0 : G;
        const int8_t *wb = tile + (int64_t)k0 * JB_MM_TILE;
        group_q8_avx2(y, ldy, x + k0, K, wb, sc + (k0 / G) * JB_MM_TILE, kb, M,
                      (const char *)wb + PF_AHEAD(JB_I8));
    }
}

// One row over two whole tiles at once (64 columns, 8 accumulators): with one tile's 4
// chains of FMAs a core waits on their latency (4 cycles) and reads int8 at ~8 bytes a
// cycle; 8 chains keep both FMA pipes busy. The same operations per column as
// tile_q8_avx2, so the same bits.
static void tile_q8_pair_avx2(float *y, const float *x, const int8_t *ta, const int8_t *tb,
                              const float *sa, const float *sb, int K) {
    const int G = JB_MATMUL_Q8_GROUP;
    for (int k0 = 0; k0 < K; k0 += G) {
        int kb = K - k0 < G ? K - k0 : G;
        const int8_t *wa = ta + (int64_t)k0 * JB_MM_TILE, *wb = tb + (int64_t)k0 * JB_MM_TILE;
        const float *ca = sa + (k0 / G) * JB_MM_TILE, *cb = sb + (k0 / G) * JB_MM_TILE;
        const char *pa = (const char *)wa + PF_AHEAD(JB_I8);
        const char *pb = (const char *)wb + PF_AHEAD(JB_I8);
        __m256 acc[8];
#pragma GCC unroll 8
        for (int v = 0; v < 8; v++) acc[v] = _mm256_setzero_ps();
        for (int k = 0; k < kb; k++) {
            if (!(k & 1)) {
                _mm_prefetch(pa + k * JB_MM_TILE, _MM_HINT_T0);
                _mm_prefetch(pb + k * JB_MM_TILE, _MM_HINT_T0);
            }
            __m256 xb = _mm256_broadcast_ss(x + k0 + k);
#pragma GCC unroll 4
            for (int v = 0; v < 4; v++) {
                const int64_t o = (int64_t)k * JB_MM_TILE + 8 * v;
                acc[v] = _mm256_fmadd_ps(xb, widen_q8(wa + o), acc[v]);
                acc[4 + v] = _mm256_fmadd_ps(xb, widen_q8(wb + o), acc[4 + v]);
            }
        }
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++) {
            float *ya = y + 8 * v, *yb = y + JB_MM_TILE + 8 * v;
            __m256 sa8 = _mm256_loadu_ps(ca + 8 * v), sb8 = _mm256_loadu_ps(cb + 8 * v);
            _mm256_storeu_ps(ya, _mm256_fmadd_ps(acc[v], sa8, _mm256_loadu_ps(ya)));
            _mm256_storeu_ps(yb, _mm256_fmadd_ps(acc[4 + v], sb8, _mm256_loadu_ps(yb)));
        }
    }
}
#endif

// y (M rows, stride ldy, nc <= TILE columns) += x · int8 tile t.
static void tile_q8_any(int kern, float *y, int64_t ldy, const float *x,
                        const jb_matmul_packed_t *p, int t, int M, int nc) {
    const float *sc;
    const int8_t *tile = q8_tile(p, t, &sc);
#if JB_MM_AVX2
    if (kern >= 1) {   // AVX-512 machines too: the AVX2 kernel (no VNNI kernel yet)
        if (nc == JB_MM_TILE) {
            tile_q8_avx2(y, ldy, x, tile, sc, M, p->K);
            return;
        }
        float tmp[16 * JB_MM_TILE];   // the last, partial tile: as in tile_any
        for (int m0 = 0; m0 < M; m0 += 16) {
            int mb = M - m0 < 16 ? M - m0 : 16;
            float *ym = y + m0 * ldy;
            for (int m = 0; m < mb; m++) {
                memcpy(tmp + m * JB_MM_TILE, ym + m * ldy, sizeof(float) * nc);
                memset(tmp + m * JB_MM_TILE + nc, 0, sizeof(float) * (JB_MM_TILE - nc));
            }
            tile_q8_avx2(tmp, JB_MM_TILE, x + (int64_t)m0 * p->K, tile, sc, mb, p->K);
            for (int m = 0; m < mb; m++) memcpy(ym + m * ldy, tmp + m * JB_MM_TILE, sizeof(float) * nc);
        }
        return;
    }
#endif
    tile_q8_c(y, ldy, x, tile, sc, M, p->K, nc);
}

// y (M rows, stride ldy, nc <= TILE columns) += x · tile t.
static void tile_any(int kern, float *y, int64_t ldy, const float *x,
                     const jb_matmul_packed_t *p, int t, int M, int nc) {
    if (p->wdt == JB_I8) {
        tile_q8_any(kern, y, ldy, x, p, t, M, nc);
        return;
    }
    const char *tile = (const char *)p->data + (size_t)t * tile_bytes(p);
#if JB_MM_AVX2
    if (kern >= 1) {
        if (nc == JB_MM_TILE) {
            if (kern == 2) tile_avx512(y, ldy, x, tile, p->wdt, M, p->K);
            else tile_avx2(y, ldy, x, tile, p->wdt, M, p->K);
        } else {   // the last, partial tile: through a full-width scratch, 16 rows at a time
            float tmp[16 * JB_MM_TILE];
            for (int m0 = 0; m0 < M; m0 += 16) {
                int mb = M - m0 < 16 ? M - m0 : 16;
                float *ym = y + m0 * ldy;
                for (int m = 0; m < mb; m++) {
                    memcpy(tmp + m * JB_MM_TILE, ym + m * ldy, sizeof(float) * nc);
                    memset(tmp + m * JB_MM_TILE + nc, 0, sizeof(float) * (JB_MM_TILE - nc));
                }
                const float *xm = x + (int64_t)m0 * p->K;
                if (kern == 2) tile_avx512(tmp, JB_MM_TILE, xm, tile, p->wdt, mb, p->K);
                else tile_avx2(tmp, JB_MM_TILE, xm, tile, p->wdt, mb, p->K);
                for (int m = 0; m < mb; m++)
                    memcpy(ym + m * ldy, tmp + m * JB_MM_TILE, sizeof(float) * nc);
            }
        }
        return;
    }
#endif
    for (int k0 = 0; k0 < p->K; k0 += KC) {
        int k1 = k0 + KC < p->K ? k0 + KC : p->K;
        for (int m = 0; m < M; m++)
            for (int k = k0; k < k1; k++) {
                float xv = x[(int64_t)m * p->K + k];
                for (int n = 0; n < nc; n++)
                    y[m * ldy + n] += xv * wload1(tile, p->wdt, (int64_t)k * JB_MM_TILE + n);
            }
    }
}

static void packed_small(float *y, const float *x, const jb_matmul_packed_t *p,
                         const float *bias, int init, int M) {
    int kern = kernel_choice();
    int K = p->K, N = p->N, nt_ = p->ntiles;
    int par = (int64_t)K * N >= 2 * PAR_MIN_ELEMS && nt_ >= 2;
#pragma omp parallel if (par)
    {
        int nt = 1, th = 0;
#ifdef _OPENMP
        nt = omp_get_num_threads();
        th = omp_get_thread_num();
#endif
        int t0 = (int)((int64_t)nt_ * th / nt), t1 = (int)((int64_t)nt_ * (th + 1) / nt);
        int c0 = t0 * JB_MM_TILE, c1 = t1 * JB_MM_TILE < N ? t1 * JB_MM_TILE : N;
        if (init && c1 > c0)
            for (int m = 0; m < M; m++) {
                float *ym = y + (int64_t)m * N;
                if (bias) memcpy(ym + c0, bias + c0, sizeof(float) * (size_t)(c1 - c0));
                else memset(ym + c0, 0, sizeof(float) * (size_t)(c1 - c0));
            }
        int t = t0;
#if JB_MM_AVX2
        if (M == 1 && p->wdt == JB_I8 && kern >= 1) {   // whole tiles two at a time
            for (; t + 1 < t1 && (t + 2) * JB_MM_TILE <= N; t += 2) {
                const float *sa, *sb;
                const int8_t *ta = q8_tile(p, t, &sa), *tb = q8_tile(p, t + 1, &sb);
                tile_q8_pair_avx2(y + t * JB_MM_TILE, x, ta, tb, sa, sb, K);
            }
        }
        // 16-bit and f32 weights, one row: two tiles at once too, for two prefetched streams
        // (one thread, a bf16 1920 x 1920 from memory: 0.37-0.39 -> 0.33 ms).
        if (M == 1 && p->wdt != JB_I8 && kern == 1) {
            for (; t + 1 < t1 && (t + 2) * JB_MM_TILE <= N; t += 2) {
                const char *ta = (const char *)p->data + (size_t)t * tile_bytes(p);
                tile_pair_avx2(y + t * JB_MM_TILE, x, ta, ta + tile_bytes(p), p->wdt, K);
            }
        }
#endif
        for (; t < t1; t++) {
            int c = t * JB_MM_TILE, nc = N - c < JB_MM_TILE ? N - c : JB_MM_TILE;
            tile_any(kern, y + c, N, x, p, t, M, nc);
        }
    }
}

// Large M on packed weights: widen a group of tiles into a row-major f32
// scratch (K, 8 tiles) and hand it to sgemm.
static void packed_large(float *y, const float *x, const jb_matmul_packed_t *p, float beta,
                         int M) {
    const int G = 8, K = p->K, N = p->N;
    float *tmp = malloc(sizeof(float) * (size_t)K * G * JB_MM_TILE);
    if (!tmp) {   // no scratch: the streaming kernel, 16 rows at a time
        if (beta == 0.0f) memset(y, 0, sizeof(float) * (size_t)M * (size_t)N);
        for (int m0 = 0; m0 < M; m0 += JB_MATMUL_SMALL_M) {
            int mb = M - m0 < JB_MATMUL_SMALL_M ? M - m0 : JB_MATMUL_SMALL_M;
            packed_small(y + (int64_t)m0 * N, x + (int64_t)m0 * K, p, NULL, 0, mb);
        }
        return;
    }
    size_t es = jb_dtype_size(p->wdt);
    const int QG = JB_MATMUL_Q8_GROUP, ng = (K + QG - 1) / QG;
    for (int t0 = 0; t0 < p->ntiles; t0 += G) {
        int g = p->ntiles - t0 < G ? p->ntiles - t0 : G;
        int ld = g * JB_MM_TILE;
#pragma omp parallel for schedule(static) if ((int64_t)K * ld >= 4 * PAR_MIN_ELEMS)
        for (int k = 0; k < K; k++)
            for (int i = 0; i < g; i++) {
                const char *src = (const char *)p->data +
                                  ((size_t)(t0 + i) * K + k) * JB_MM_TILE * es;
                if (p->wdt == JB_I8) {
                    const float *sc = p->scales + ((size_t)(t0 + i) * ng + k / QG) * JB_MM_TILE;
                    for (int n = 0; n < JB_MM_TILE; n++)
                        tmp[(size_t)k * ld + i * JB_MM_TILE + n] = sc[n] * (float)((const int8_t *)src)[n];
                } else {
                    for (int n = 0; n < JB_MM_TILE; n++)
                        tmp[(size_t)k * ld + i * JB_MM_TILE + n] = wload1(src, p->wdt, n);
                }
            }
        int c0 = t0 * JB_MM_TILE, nc = N - c0 < ld ? N - c0 : ld;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, nc, K, 1.0f, x, K, tmp, ld,
                    beta, y + c0, N);
    }
    free(tmp);
}

// packed_small over blocks of JB_MATMUL_SMALL_M rows (AVX-512: any M in one pass).
static void packed_stream(float *y, const float *x, const jb_matmul_packed_t *p,
                          const float *bias, int init, int M) {
    if (M <= JB_MATMUL_SMALL_M || kernel_choice() == 2) {
        packed_small(y, x, p, bias, init, M);
        return;
    }
    for (int m0 = 0; m0 < M; m0 += JB_MATMUL_SMALL_M) {
        int mb = M - m0 < JB_MATMUL_SMALL_M ? M - m0 : JB_MATMUL_SMALL_M;
        packed_small(y + (int64_t)m0 * p->N, x + (int64_t)m0 * p->K, p, bias, init, mb);
    }
}

void jb_matmul_packed(float *y, const float *x, const jb_matmul_packed_t *w, const float *bias,
                      int M) {
    if (M <= 0) return;
    if (M <= JB_MATMUL_SMALL_M || stream_large()) {
        packed_stream(y, x, w, bias, 1, M);
        return;
    }
    if (bias) {
        for (int m = 0; m < M; m++)
            memcpy(y + (int64_t)m * w->N, bias, sizeof(float) * (size_t)w->N);
        packed_large(y, x, w, 1.0f, M);
    } else {
        packed_large(y, x, w, 0.0f, M);
    }
}

void jb_matmul_packed_acc(float *y, const float *x, const jb_matmul_packed_t *w, int M) {
    if (M <= 0) return;
    if (M <= JB_MATMUL_SMALL_M || stream_large()) packed_stream(y, x, w, NULL, 0, M);
    else packed_large(y, x, w, 1.0f, M);
}

// ---- API --------------------------------------------------------------------

void jb_matmul(float *y, const float *x, const void *w, jb_dtype_t wdt, const float *bias,
               int M, int K, int N) {
    if (M <= 0 || N <= 0) return;
    if (M <= JB_MATMUL_SMALL_M || stream_large()) {
        matmul_stream(y, x, w, wdt, bias, 1, M, K, N);
        return;
    }
    if (bias) {
        for (int m = 0; m < M; m++) memcpy(y + (int64_t)m * N, bias, sizeof(float) * (size_t)N);
        matmul_large(y, x, w, wdt, M, K, N, 1.0f);
    } else {
        matmul_large(y, x, w, wdt, M, K, N, 0.0f);
    }
}

void jb_matmul_acc(float *y, const float *x, const void *w, jb_dtype_t wdt, int M, int K, int N) {
    if (M <= 0 || N <= 0) return;
    if (M <= JB_MATMUL_SMALL_M || stream_large()) matmul_stream(y, x, w, wdt, NULL, 0, M, K, N);
    else matmul_large(y, x, w, wdt, M, K, N, 1.0f);
}

// ---- y = x·Wᵀ, small M: each row of W (K contiguous floats) is read once and
// dotted with every row of x (x stays in L1/L2). Rows of W 4 at a time, rows of
// x 2 at a time: 8 accumulators.

#if JB_MM_AVX2
AI float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// y[0:R, 0:NR] (stride N) = x[0:R] · w[0:NR]ᵀ, R <= 4 rows of x, NR <= 4 rows of w (stride
// K), at most 12 sums.
AI void wt_block_avx2(int R, int NR, float *y, int N, const float *x, const float *w, int K) {
    __m256 acc[4][4];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int i = 0; i < NR; i++) acc[r][i] = _mm256_setzero_ps();
    int k = 0;
    for (; k + 8 <= K; k += 8) {
        __m256 wv[4];
#pragma GCC unroll 4
        for (int i = 0; i < NR; i++) wv[i] = _mm256_loadu_ps(w + (int64_t)i * K + k);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            __m256 xv = _mm256_loadu_ps(x + (int64_t)r * K + k);
#pragma GCC unroll 4
            for (int i = 0; i < NR; i++) acc[r][i] = _mm256_fmadd_ps(xv, wv[i], acc[r][i]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int i = 0; i < NR; i++) {
            float s = hsum8(acc[r][i]);
            for (int kk = k; kk < K; kk++) s += x[(int64_t)r * K + kk] * w[(int64_t)i * K + kk];
            y[(int64_t)r * N + i] = s;
        }
}
#endif

static void wt_rows(int kern, float *y, const float *x, const float *w, int M, int K, int N,
                    int n0, int n1) {
#if JB_MM_AVX2
    if (kern >= 1) {
        int n = n0;
        // 4 rows of x x 3 of W (12 accumulators; 7 loads for 12 FMAs where 2 x 4 has 6 for 8):
        // the output projection of a many-job step. Each (row, column) is still one 8-lane
        // sum in k order, so the grouping does not change its bits.
        if (M >= 4) {
            int m4 = M / 4 * 4;
            for (; n + 3 <= n1; n += 3) {
                const float *wn = w + (int64_t)n * K;
                for (int m = 0; m < m4; m += 4)
                    wt_block_avx2(4, 3, y + (int64_t)m * N + n, N, x + (int64_t)m * K, wn, K);
                for (int m = m4; m < M; m++)
                    wt_block_avx2(1, 3, y + (int64_t)m * N + n, N, x + (int64_t)m * K, wn, K);
            }
        }
        for (; n + 4 <= n1; n += 4) {
            const float *wn = w + (int64_t)n * K;
            int m = 0;
            for (; m + 2 <= M; m += 2)
                wt_block_avx2(2, 4, y + (int64_t)m * N + n, N, x + (int64_t)m * K, wn, K);
            if (m < M) wt_block_avx2(1, 4, y + (int64_t)m * N + n, N, x + (int64_t)m * K, wn, K);
        }
        for (; n < n1; n++) {
            const float *wn = w + (int64_t)n * K;
            for (int m = 0; m < M; m++)
                wt_block_avx2(1, 1, y + (int64_t)m * N + n, N, x + (int64_t)m * K, wn, K);
        }
        return;
    }
#endif
    for (int n = n0; n < n1; n++)
        for (int m = 0; m < M; m++) {
            float s = 0;
            for (int k = 0; k < K; k++) s += x[(int64_t)m * K + k] * w[(int64_t)n * K + k];
            y[(int64_t)m * N + n] = s;
        }
}

void jb_matmul_wt(float *y, const float *x, const float *w, int M, int K, int N) {
    if (M <= 0 || N <= 0) return;
    int kern = kernel_choice();
    if (M > JB_MATMUL_SMALL_M && K > 0) {
        if (kern == 0) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x, K, w, K, 0.0f,
                        y, N);
            return;
        }
        // Blocks of rows through the kernel below: a row's result does not depend on M.
        for (int m0 = 0; m0 < M; m0 += JB_MATMUL_SMALL_M) {
            int mb = M - m0 < JB_MATMUL_SMALL_M ? M - m0 : JB_MATMUL_SMALL_M;
            jb_matmul_wt(y + (int64_t)m0 * N, x + (int64_t)m0 * K, w, mb, K, N);
        }
        return;
    }
    int par = (int64_t)K * N >= 2 * PAR_MIN_ELEMS && N >= 8;
#pragma omp parallel if (par)
    {
        int nt = 1, t = 0;
#ifdef _OPENMP
        nt = omp_get_num_threads();
        t = omp_get_thread_num();
#endif
        // blocks of 4 rows of W per thread
        int nb = (N + 3) / 4;
        int n0 = (int)((int64_t)nb * t / nt) * 4, n1 = (int)((int64_t)nb * (t + 1) / nt) * 4;
        if (n1 > N) n1 = N;
        if (n0 < n1) wt_rows(kern, y, x, w, M, K, N, n0, n1);
    }
}
