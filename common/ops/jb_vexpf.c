// jb_vexpf.c: see jb_vexpf.h. The constants are glibc's (sysdeps/ieee754/flt-32, the
// exp2f/expf data with a table of 2^5 entries); the table is 2^(i/32) rounded to double,
// stored minus i << 47 so that adding k << 47 to entry k mod 32 gives 2^(k/32).
#include "jb_vexpf.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#define VEXPF_N 32
static const double inv_ln2_n = 0x1.71547652b82fep+5;   // 32 / ln 2
static const double shift = 0x1.8p+52;                  // rounds to an integer in the add
static const double c0 = 0x1.c6af84b912394p-20, c1 = 0x1.ebfce50fac4f3p-13,
                    c2 = 0x1.62e42ff0c52d6p-6;          // the cubic of 2^(r/32), scaled

static uint64_t tab[VEXPF_N];
static int exact;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static inline __m256d exp_half(__m256d xd) {
    const __m256d k_mul = _mm256_set1_pd(inv_ln2_n), k_shift = _mm256_set1_pd(shift);
    __m256d kd = _mm256_fmadd_pd(k_mul, xd, k_shift);   // k + shift, k rounded to nearest
    __m256i ki = _mm256_castpd_si256(kd);
    kd = _mm256_sub_pd(kd, k_shift);
    __m256d r = _mm256_fmsub_pd(k_mul, xd, kd);         // x·32/ln2 - k
    __m256i idx = _mm256_and_si256(ki, _mm256_set1_epi64x(VEXPF_N - 1));
    __m256i t = _mm256_i64gather_epi64((const long long *)tab, idx, 8);
    __m256d s = _mm256_castsi256_pd(_mm256_add_epi64(t, _mm256_slli_epi64(ki, 47)));
    __m256d z = _mm256_fmadd_pd(r, _mm256_set1_pd(c0), _mm256_set1_pd(c1));
    __m256d r2 = _mm256_mul_pd(r, r);
    __m256d y = _mm256_fmadd_pd(r, _mm256_set1_pd(c2), _mm256_set1_pd(1.0));
    y = _mm256_fmadd_pd(z, r2, y);
    return _mm256_mul_pd(y, s);
}

__m256 jb_vexpf8(__m256 x) {
    // |x| >= 88 (top bits 0x42b or more), infinities and NaN: glibc's special cases
    __m256i ax = _mm256_and_si256(_mm256_castps_si256(x), _mm256_set1_epi32(0x7fffffff));
    __m256i big = _mm256_cmpgt_epi32(ax, _mm256_set1_epi32(0x42afffff));
    if (!_mm256_testz_si256(big, big)) {
        float v[8];
        _mm256_storeu_ps(v, x);
        for (int j = 0; j < 8; j++) v[j] = expf(v[j]);
        return _mm256_loadu_ps(v);
    }
    __m128 lo = _mm256_cvtpd_ps(exp_half(_mm256_cvtps_pd(_mm256_castps256_ps128(x))));
    __m128 hi = _mm256_cvtpd_ps(exp_half(_mm256_cvtps_pd(_mm256_extractf128_ps(x, 1))));
    return _mm256_set_m128(hi, lo);
}

static int same_bits(float a, float b) { return memcmp(&a, &b, sizeof a) == 0; }

static void check_once(void) {
    for (int i = 0; i < VEXPF_N; i++) {
        double v = exp2((double)i / VEXPF_N);
        uint64_t b;
        memcpy(&b, &v, sizeof b);
        tab[i] = b - ((uint64_t)i << 47);
    }
    // A sweep of every exponent and sign (a prime stride through the bit patterns), the
    // inputs of a softmax (-30..0, densely), and the edges of the special cases.
    static const float edges[] = {0.0f, -0.0f, 1.0f, -1.0f, 88.0f, -88.0f, 87.99999f, -87.99999f,
                                  88.72283f, 88.72284f, -103.27893f, -103.97208f, -110.0f,
                                  1e-30f, -1e-30f, INFINITY, -INFINITY, NAN};
    int ok = 1;
    float in[8], out[8];
    int n = 0;
    uint32_t b = 0;
    for (int64_t step = 0; ok && step < 70000 + (int64_t)(sizeof edges / sizeof edges[0]); step++) {
        if (step < (int64_t)(sizeof edges / sizeof edges[0])) {
            in[n] = edges[step];
        } else if (step < 40000) {
            b += 107377;   // through all 2^32 patterns in ~40000 steps
            memcpy(&in[n], &b, sizeof b);
        } else {
            in[n] = -30.0f * (float)(step - 40000) / 30000.0f;
        }
        if (++n == 8) {
            _mm256_storeu_ps(out, jb_vexpf8(_mm256_loadu_ps(in)));
            for (int j = 0; j < 8; j++)
                if (!same_bits(out[j], expf(in[j])) && !(isnan(out[j]) && isnan(in[j]))) ok = 0;
            n = 0;
        }
    }
    exact = ok;
}

int jb_vexpf_exact(void) {
    pthread_once(&once, check_once);
    return exact;
}

void jb_vexpf_shifted(float *out, const float *in, float m, int64_t n) {
    int64_t i = 0;
    if (jb_vexpf_exact()) {
        __m256 mv = _mm256_set1_ps(m);
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(out + i, jb_vexpf8(_mm256_sub_ps(_mm256_loadu_ps(in + i), mv)));
    }
    for (; i < n; i++) out[i] = expf(in[i] - m);
}

void jb_vexpf_scaled(float *out, const float *in, float a, int64_t n) {
    int64_t i = 0;
    if (jb_vexpf_exact()) {
        __m256 av = _mm256_set1_ps(a);
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(out + i, jb_vexpf8(_mm256_mul_ps(av, _mm256_loadu_ps(in + i))));
    }
    for (; i < n; i++) out[i] = expf(a * in[i]);
}
