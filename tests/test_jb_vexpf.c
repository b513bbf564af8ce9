// test_jb_vexpf.c: jb_vexpf8 gives the C library's expf bit for bit (glibc 2.28 and later:
// the algorithm it copies), on a sweep through all 2^32 inputs (every 61st pattern: every
// exponent, sign, NaN payload and the special cases), and densely over a softmax's inputs.
// Once checked exhaustively (all 2^32 inputs, 0 differ; jb_vexpf.h).
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "jb_test.h"
#include "jb_vexpf.h"

static int64_t differ(const float *in, int n) {   // n a multiple of 8
    int64_t bad = 0;
    float out[8];
    for (int i = 0; i < n; i += 8) {
        _mm256_storeu_ps(out, jb_vexpf8(_mm256_loadu_ps(in + i)));
        for (int j = 0; j < 8; j++) {
            float r = expf(in[i + j]);
            if (memcmp(&r, &out[j], sizeof r) != 0 && !(isnan(r) && isnan(out[j]))) {
                if (bad < 3) printf("  expf(%a): vector %a, libm %a\n", in[i + j], out[j], r);
                bad++;
            }
        }
    }
    return bad;
}

int main(void) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 28))
    JB_CHECK(jb_vexpf_exact(), "the vector expf matches this glibc's expf (its own check)");
#else
    if (!jb_vexpf_exact()) JB_SKIP("not glibc 2.28+: the vector expf is not used");
#endif
    if (jb_vexpf_exact()) {
        static float in[1 << 16];
        int64_t bad = 0, n = 0;
        int k = 0;
        int stride = getenv("JB_TEST_VALGRIND") ? 65521 : 61;
        for (uint64_t b = 0; b <= 0xffffffffull; b += (uint64_t)stride) {
            uint32_t u = (uint32_t)b;
            memcpy(&in[k++], &u, sizeof u);
            if (k == 1 << 16) bad += differ(in, k), n += k, k = 0;
        }
        k -= k % 8;
        bad += differ(in, k), n += k;
        JB_CHECK(bad == 0, "expf of %lld bit patterns through all of them: %lld differ",
                 (long long)n, (long long)bad);
        // the inputs of a softmax, x - max <= 0: every 7th float in [-32, 0]
        float lo = -32.0f;
        uint32_t ulo, u0 = 0x80000000u;
        memcpy(&ulo, &lo, sizeof lo);
        bad = 0, n = 0, k = 0;
        uint32_t step = getenv("JB_TEST_VALGRIND") ? 70001 : 7;
        for (uint32_t u = u0; u <= ulo; u += step) {
            memcpy(&in[k++], &u, sizeof u);
            if (k == 1 << 16) bad += differ(in, k), n += k, k = 0;
        }
        k -= k % 8;
        bad += differ(in, k), n += k;
        JB_CHECK(bad == 0, "expf of %lld inputs in [-32, 0]: %lld differ", (long long)n,
                 (long long)bad);
    }
    return jb_test_summary("test_jb_vexpf");
}
