// jb_nn.c: CPU launchers of the kernel bodies in jb_nn.h (OpenMP loops).
#include "jb_nn.h"

#include <immintrin.h>
#include <omp.h>

#include "jb_vexpf.h"

void jb_nn_layernorm(float *out, const float *x, const float *g, const float *b, int64_t rows,
                     int C, float eps) {
    // Rows are long (C = width): parallel from ~17 rows of 1920 (a priming chunk of 32:
    // 60 -> 30 us with spinning threads, 48 with sleeping ones). At 4-8 rows sleeping
    // threads cost more to wake than they save (8 rows: 15 us alone, 21 parallel).
    int64_t n_ = rows;
    _Pragma("omp parallel for schedule(static) if (rows >= 2 && rows * C >= 32768)")
    for (int64_t i = 0; i < n_; i++) jb_nn_layernorm_at(i, out, x, g, b, C, eps);
}

// jb_nn_quick_gelu_at eight values at a time: the same operations (a product, a negation, the
// C library's expf through jb_vexpf8, a sum, a quotient, a product), so the same floats.
void jb_nn_quick_gelu(float *x, int64_t n) {
    if (!jb_vexpf_exact()) {
        JB_CPU_LAUNCH(n, jb_nn_quick_gelu_at, x);
        return;
    }
    int64_t blocks = n / 8;
    _Pragma("omp parallel for schedule(static) if (n >= JB_CPU_PAR_MIN)")
    for (int64_t b = 0; b < blocks; b++) {
        __m256 v = _mm256_loadu_ps(x + 8 * b);
        __m256 z = _mm256_mul_ps(_mm256_set1_ps(1.702f), v);
        __m256 e = jb_vexpf8(_mm256_xor_ps(z, _mm256_set1_ps(-0.0f)));
        __m256 sg = _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_add_ps(_mm256_set1_ps(1.0f), e));
        _mm256_storeu_ps(x + 8 * b, _mm256_mul_ps(v, sg));
    }
    for (int64_t i = blocks * 8; i < n; i++) jb_nn_quick_gelu_at(i, x);
}

void jb_nn_add(float *y, const float *a, const float *b, int64_t n) {
    JB_CPU_LAUNCH(n, jb_nn_add_at, y, a, b);
}

void jb_nn_add_bcast(float *y, const float *a, int64_t n, int64_t period) {
    JB_CPU_LAUNCH(n, jb_nn_add_bcast_at, y, a, period);
}

void jb_nn_embed(float *out, const float *table, const int32_t *ids, int64_t rows, int C, int V) {
    JB_CPU_LAUNCH(rows * C, jb_nn_embed_at, out, table, ids, C, V);
}

void jb_nn_softmax(float *x, int64_t rows, int n) {
    int64_t n_ = rows;
    _Pragma("omp parallel for schedule(static) if (rows * n >= 65536)")
    for (int64_t i = 0; i < n_; i++) jb_nn_softmax_at(i, x, n);
}

// ---- attention over a float32 cache, eight keys at a time ----------------------------------
// jb_nn_attn_kv_at's floats, operation for operation (the build does not contract a*b+c, and
// IEEE sums of the same operands in the same association are the same bits), laid out for
// AVX2: the scores of eight keys at once, each key's eight partial sums reduced by the same
// pairwise tree with horizontal adds, and the weighted sum of the values with the output
// kept in registers, four heads side by side. Key slots are walked without a division per
// key. The body's per-key loop, run as the launcher, took 41 % of all of `make demo`'s
// samples, nearly all in the top prior (1072 keys of 24 values a head: the division, the
// horizontal sum and the output's loads and stores per key); docs/bench.md has the figures.

// Rows of keys e, e+1, ..., e+n-1 (slot of key e: *slot; advanced past them)
static inline __attribute__((always_inline)) void key_rows(const float **p, const float *base,
                                                           int *slot, int n, int step, int cap,
                                                           int S) {
    if (step == 1 && *slot + n <= cap) {   // consecutive rows (most blocks)
#pragma GCC unroll 8
        for (int j = 0; j < n; j++) p[j] = base + (int64_t)(*slot + j) * S;
        *slot += n;
        if (*slot == cap) *slot = 0;
        return;
    }
    for (int j = 0; j < n; j++) {
        p[j] = base + (int64_t)*slot * S;
        *slot += step;
        if (*slot >= cap) *slot %= cap;
    }
}

// a[0..7] of one key reduced as jb_nn_kv_dot does: ((a0+a1)+(a2+a3)) + ((a4+a5)+(a6+a7))
static inline float lane_tree(__m256 a) {
    __m256 t = _mm256_hadd_ps(a, a);   // a0+a1, a2+a3 | a4+a5, a6+a7
    t = _mm256_hadd_ps(t, t);          // (a0+a1)+(a2+a3) | (a4+a5)+(a6+a7)
    return _mm_cvtss_f32(_mm_add_ss(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1)));
}

// For each of G heads g (values hd apart in a cache row): o_g[0 .. 8·nv) = the sum over keys
// e in order of w_g[e] v_e (G and nv constants where it is called: G·nv accumulators in
// registers; the G heads' chains of additions interleave).
static inline __attribute__((always_inline)) void weighted_sum(float *o, float *const *w,
                                                               const float *vb, int hd, int lo,
                                                               int nk, int step, int cap,
                                                               int S, const int G, const int nv) {
    __m256 acc[4][4];
#pragma GCC unroll 4
    for (int g = 0; g < G; g++)
#pragma GCC unroll 4
        for (int c = 0; c < nv; c++) acc[g][c] = _mm256_setzero_ps();
    int slot = lo % cap;
    for (int e = 0; e < nk; e++) {
        const float *vr;
        key_rows(&vr, vb, &slot, 1, step, cap, S);
#pragma GCC unroll 4
        for (int g = 0; g < G; g++) {
            __m256 pe = _mm256_set1_ps(w[g][e]);
#pragma GCC unroll 4
            for (int c = 0; c < nv; c++)
                acc[g][c] = _mm256_add_ps(acc[g][c],
                                          _mm256_mul_ps(pe, _mm256_loadu_ps(vr + g * hd + 8 * c)));
        }
    }
#pragma GCC unroll 4
    for (int g = 0; g < G; g++)
#pragma GCC unroll 4
        for (int c = 0; c < nv; c++) _mm256_storeu_ps(o + g * hd + 8 * c, acc[g][c]);
}

// wr[0 .. nk) = scale · q · k_e, the keys from slot lo % cap on, step apart
static void scores(float *wr, const float *qr, const float *kb, int hd, int lo, int nk, int step,
                   int cap, int S, float scale) {
    const float *p[8];
    int slot = lo % cap, e = 0;
    for (; e + 8 <= nk; e += 8) {
        key_rows(p, kb, &slot, 8, step, cap, S);
        __m256 a[8];
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) a[j] = _mm256_setzero_ps();
        for (int d = 0; d < hd; d += 8) {
            __m256 qv = _mm256_loadu_ps(qr + d);
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++)
                a[j] = _mm256_add_ps(a[j], _mm256_mul_ps(qv, _mm256_loadu_ps(p[j] + d)));
        }
        // the tree of eight keys at once: hadd pairs lanes (2j, 2j+1) of its two operands
        __m256 u = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
        __m256 v = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
        __m256 sc = _mm256_add_ps(_mm256_permute2f128_ps(u, v, 0x20),
                                  _mm256_permute2f128_ps(u, v, 0x31));
        _mm256_storeu_ps(wr + e, _mm256_mul_ps(sc, _mm256_set1_ps(scale)));
    }
    for (; e < nk; e++) {
        key_rows(p, kb, &slot, 1, step, cap, S);
        __m256 a = _mm256_setzero_ps();
        for (int d = 0; d < hd; d += 8)
            a = _mm256_add_ps(a, _mm256_mul_ps(_mm256_loadu_ps(qr + d), _mm256_loadu_ps(p[0] + d)));
        wr[e] = lane_tree(a) * scale;
    }
}

// wr[0 .. nk) = exp(wr - max), unnormalized
static void exp_shifted(float *wr, int nk) {
    // The maximum as the body finds it (m = s > m ? s : m: NaN scores skipped). max_ps(s, m)
    // is m when s is NaN or s == m; lanes may keep a -0 where the body keeps a +0 or the
    // reverse, and exp(s - m) is the same for both.
    __m256 mv8 = _mm256_set1_ps(-INFINITY);
    int e = 0;
    for (; e + 8 <= nk; e += 8) mv8 = _mm256_max_ps(_mm256_loadu_ps(wr + e), mv8);
    float ml[8];
    _mm256_storeu_ps(ml, mv8);
    float m = -INFINITY;
    for (int j = 0; j < 8; j++) m = ml[j] > m ? ml[j] : m;
    for (; e < nk; e++) m = wr[e] > m ? wr[e] : m;
    jb_vexpf_shifted(wr, wr, m, nk);
}

// Heads h0 .. h0+G-1 of (batch n, query row r), i0 = (n·rows + r)·H + h0: the kernel body's
// work for each, the heads side by side where one head's work would wait on its own sums.
static inline __attribute__((always_inline)) void attn_f32_heads(
    int64_t i0, float *out, float *w, const float *q, int q_stride, const float *kc,
    const float *vc, jb_nn_attn_kind_t kind, int rows, int H, int hd, int cap, int t0,
    int w_cap, float scale, const int G) {
    jb_nn_attn_item_t it = jb_nn_attn_item(i0, &kind, rows, H, t0);
    int h0 = it.h, nk = it.nk, lo = it.lo, step = it.step;
    int64_t nr = it.nr, n = it.n;
    int S = H * hd;
    if (nk == 0 || hd % 8 != 0) {   // no keys, or a tail the vectors do not cover
        for (int g = 0; g < G; g++)
            jb_nn_attn_at(i0 + g, out, w, q, q_stride, kc, vc, kind, rows, H, hd, cap, t0,
                          w_cap, scale);
        return;
    }
    float *o = out + nr * S + h0 * hd;
    int64_t base = n * (int64_t)cap * S + h0 * hd;
    float *wr[4];
    for (int g = 0; g < G; g++) {
        wr[g] = w + (i0 + g) * w_cap;
        scores(wr[g], q + nr * q_stride + (h0 + g) * hd, kc + base + g * hd, hd, lo, nk, step,
               cap, S, scale);
        exp_shifted(wr[g], nk);
    }
    // the softmax's sums in key order, as the body adds them (a chain of additions a head)
    float sum[4] = {0, 0, 0, 0};
    for (int e = 0; e < nk; e++)
#pragma GCC unroll 4
        for (int g = 0; g < G; g++) sum[g] += wr[g][e];
    for (int g = 0; g < G; g++) {
        __m256 sv = _mm256_set1_ps(sum[g]);
        int e = 0;
        for (; e + 8 <= nk; e += 8)
            _mm256_storeu_ps(wr[g] + e, _mm256_div_ps(_mm256_loadu_ps(wr[g] + e), sv));
        for (; e < nk; e++) wr[g][e] = wr[g][e] / sum[g];
    }
    // o = the sum over keys in order of p_e v_e: at most 12 accumulators of 8 values
    const float *vb = vc + base;
    int d0 = 0;
    if (G == 4) {
        for (; d0 + 24 <= hd; d0 += 24)
            weighted_sum(o + d0, wr, vb + d0, hd, lo, nk, step, cap, S, G, 3);
        switch ((hd - d0) / 8) {
        case 2: weighted_sum(o + d0, wr, vb + d0, hd, lo, nk, step, cap, S, G, 2); break;
        case 1: weighted_sum(o + d0, wr, vb + d0, hd, lo, nk, step, cap, S, G, 1); break;
        default: break;
        }
    } else {
        for (; d0 + 32 <= hd; d0 += 32)
            weighted_sum(o + d0, wr, vb + d0, hd, lo, nk, step, cap, S, G, 4);
        switch ((hd - d0) / 8) {
        case 3: weighted_sum(o + d0, wr, vb + d0, hd, lo, nk, step, cap, S, G, 3); break;
        case 2: weighted_sum(o + d0, wr, vb + d0, hd, lo, nk, step, cap, S, G, 2); break;
        case 1: weighted_sum(o + d0, wr, vb + d0, hd, lo, nk, step, cap, S, G, 1); break;
        default: break;
        }
    }
}

void jb_nn_attn(float *out, float *w, const float *q, int q_stride, const float *kc,
                const float *vc, jb_nn_attn_kind_t kind, int N, int rows, int H, int hd, int cap,
                int t0, int w_cap, float scale) {
    // One index is G heads of a (batch, row): whole dot-product sweeps over up to w_cap keys,
    // parallel as soon as there are a few of them and enough keys.
    // (Four heads at once unless that leaves a thread without work: one sampled row.)
    int G = H % 4 == 0 ? 4 : H % 2 == 0 ? 2 : 1;
    while (G > 1 && (int64_t)N * rows * (H / G) < omp_get_max_threads()) G /= 2;
    int64_t n_ = (int64_t)N * rows * (H / G);
    _Pragma("omp parallel for schedule(dynamic, 1) if (n_ >= 2 && n_ * G * w_cap * hd >= 65536)")
    for (int64_t i = 0; i < n_; i++) {
        if (G == 4)
            attn_f32_heads(i * 4, out, w, q, q_stride, kc, vc, kind, rows, H, hd, cap, t0, w_cap,
                           scale, 4);
        else if (G == 2)
            attn_f32_heads(i * 2, out, w, q, q_stride, kc, vc, kind, rows, H, hd, cap, t0, w_cap,
                           scale, 2);
        else
            attn_f32_heads(i, out, w, q, q_stride, kc, vc, kind, rows, H, hd, cap, t0, w_cap,
                           scale, 1);
    }
}
