// test_jb_vqvae.c: chunked encode/decode equal the one-pass result (golden tiny model on
// the golden input and on a longer random input, real-shape model on a long input), the
// automatic chunking of a signal longer than max_window, and the refusals of bad calls.
// The one-pass results themselves are checked against the reference by golden_vqvae.c.
#include <math.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jb_safetensors.h"
#include "jb_tensor.h"
#include "jb_test.h"
#include "jb_vqvae.h"

static uint64_t rng = 0x853c49e6748fea9bull;
static double urand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (rng >> 11) * (1.0 / 9007199254740992.0);
}

// Audio-like input: a few drifting sines plus noise, in [-0.8, 0.8].
static float *make_audio(int N, int64_t T) {
    float *x = malloc(sizeof(float) * (size_t)(N * T));
    for (int n = 0; n < N; n++) {
        double f1 = 100 + 400 * urand(), f2 = 300 + 900 * urand();
        for (int64_t t = 0; t < T; t++) {
            double ph = 2 * M_PI * t / 44100.0;
            x[n * T + t] = (float)(0.35 * sin(f1 * ph * (1 + 1e-6 * t)) + 0.25 * sin(f2 * ph) +
                                   0.2 * (urand() - 0.5));
        }
    }
    return x;
}

// Golden tolerance rule: |a - b| <= 1e-4 |b| + 1e-5 max|b|.
static int close_golden(const float *a, const float *b, int64_t n, double *max_abs) {
    double mx = 0;
    for (int64_t i = 0; i < n; i++) mx = fmax(mx, fabs(b[i]));
    return jb_test_close(a, b, n, 1e-4, fmax(1e-5 * mx, 1e-7), max_abs, NULL);
}

static int64_t count_diff(const int32_t *a, const int32_t *b, int64_t n) {
    int64_t d = 0;
    for (int64_t i = 0; i < n; i++) d += a[i] != b[i];
    return d;
}

// Codes of a chunked encode may differ from the one-pass codes only at near-ties of the
// one-pass latents (golden margin rule: second-best minus best distance < 1e-4 times
// ‖x‖² + ‖k_best‖², in double). Returns the number of differences that are not near-ties.
static int64_t real_code_diffs(const int32_t *a, const int32_t *b, const float *lat,
                               const float *cb, int64_t n, int K, int C, int64_t *ties) {
    int64_t bad = 0;
    *ties = 0;
    for (int64_t i = 0; i < n; i++) {
        if (a[i] == b[i]) continue;
        const float *x = lat + i * C;
        double best = INFINITY, second = INFINITY, xx = 0, kb = 0;
        for (int c = 0; c < C; c++) xx += (double)x[c] * x[c];
        for (int j = 0; j < K; j++) {
            double d = 0, kk = 0;
            for (int c = 0; c < C; c++) {
                d += ((double)x[c] - cb[(int64_t)j * C + c]) * ((double)x[c] - cb[(int64_t)j * C + c]);
                kk += (double)cb[(int64_t)j * C + c] * cb[(int64_t)j * C + c];
            }
            if (d < best) second = best, best = d, kb = kk;
            else if (d < second) second = d;
        }
        if (second - best < 1e-4 * (xx + kb)) (*ties)++;
        else bad++;
    }
    return bad;
}

// Encode and decode every level in `levels` one-pass (vq_one) and in chunks (vq_chunk):
// latents within the golden tolerance, codes equal except at near-ties, decoded audio
// within the golden tolerance. st: the model file (for the codebooks).
static void compare(const char *what, const jb_st_t *st, jb_vqvae_t *vq_one,
                    jb_vqvae_t *vq_chunk, const float *x, int N, int64_t T, int64_t chunk,
                    unsigned levels) {
    const jb_vqvae_hparams_t *hp = jb_vqvae_hparams(vq_one);
    jb_err_t err = {0};
    int C = hp->emb_width, K = hp->l_bins;
    for (int L = 0; L < hp->levels; L++) {
        if (!(levels & (1u << L))) continue;
        int64_t TL = T / hp->hop_lengths[L];
        int32_t *z1 = malloc(sizeof(int32_t) * (size_t)(N * TL));
        int32_t *z2 = malloc(sizeof(int32_t) * (size_t)(N * TL));
        float *e1 = malloc(sizeof(float) * (size_t)(N * TL * C));
        float *e2 = malloc(sizeof(float) * (size_t)(N * TL * C));
        float *y1 = malloc(sizeof(float) * (size_t)(N * T));
        float *y2 = malloc(sizeof(float) * (size_t)(N * T));
        char name[64];
        snprintf(name, sizeof name, "bottleneck.level_blocks.%d.k", L);
        float *cb = jb_st_get_f32(st, name, -1, NULL, &err);
        JB_CHECK_OK(jb_vqvae_encode(vq_one, x, N, T, L, z1, 0, &err), &err, "encode one pass");
        JB_CHECK_OK(jb_vqvae_encode(vq_chunk, x, N, T, L, z2, chunk, &err), &err, "encode chunked");
        JB_CHECK_OK(jb_vqvae_encode_latents(vq_one, x, N, T, L, e1, 0, &err), &err,
                    "latents one pass");
        JB_CHECK_OK(jb_vqvae_encode_latents(vq_chunk, x, N, T, L, e2, chunk, &err), &err,
                    "latents chunked");
        double max_abs;
        int ok = close_golden(e2, e1, N * TL * C, &max_abs);
        JB_CHECK(ok, "%s level %d: chunked latents (chunk %lld, margin %lld) == one pass: "
                 "max|diff| %.3g", what, L, (long long)chunk,
                 (long long)jb_vqvae_margin(vq_chunk, L, 0), max_abs);
        int64_t ties = 0, d = count_diff(z1, z2, N * TL);
        int64_t bad = cb ? real_code_diffs(z1, z2, e1, cb, N * TL, K, C, &ties) : d;
        JB_CHECK(cb && bad == 0, "%s level %d: chunked codes == one pass except near-ties: "
                 "%lld of %lld differ (%lld near-ties)", what, L, (long long)d,
                 (long long)(N * TL), (long long)ties);
        // decode random codes (every code used)
        for (int64_t i = 0; i < N * TL; i++) z1[i] = (int32_t)(urand() * hp->l_bins);
        JB_CHECK_OK(jb_vqvae_decode(vq_one, z1, N, TL, L, y1, 0, &err), &err, "decode one pass");
        JB_CHECK_OK(jb_vqvae_decode(vq_chunk, z1, N, TL, L, y2, chunk, &err), &err,
                    "decode chunked");
        ok = close_golden(y2, y1, N * T, &max_abs);
        JB_CHECK(ok, "%s level %d: chunked decode (margin %lld) == one pass: max|diff| %.3g",
                 what, L, (long long)jb_vqvae_margin(vq_chunk, L, 1), max_abs);
        jb_free(cb);
        free(z1), free(z2), free(e1), free(e2), free(y1), free(y2);
    }
}

int main(void) {
    jb_err_t err = {0};
    jb_st_t *st = jb_st_open("tests/golden/vqvae_tiny/model.safetensors", &err);
    jb_st_t *io = st ? jb_st_open("tests/golden/vqvae_tiny/io.safetensors", &err) : NULL;
    JB_CHECK(io != NULL, "open tiny fixtures (%s)", err.msg);
    if (!io) return jb_test_summary("test_jb_vqvae");

    // 1. the golden input (N=2, T=2048), chunks of 256 samples with their margins
    int64_t shape[3] = {2, 2048, 1};
    float *xg = jb_st_get_f32(io, "x", 3, shape, &err);
    jb_vqvae_t *one = jb_vqvae_new(st, 1 << 17, &err);
    jb_vqvae_t *small = jb_vqvae_new(st, 8192, &err);
    JB_CHECK(xg && one && small, "tiny model loads (%s)", err.msg);
    if (!xg || !one || !small) return jb_test_summary("test_jb_vqvae");
    compare("tiny/golden x", st, one, one, xg, 2, 2048, 256, 7);
    compare("tiny/golden x", st, one, one, xg, 2, 2048, 128, 1);

    // 2. a longer random input (3 s): fixed chunks, and automatic chunking because the
    //    signal is longer than the 8192-sample window of `small`
    int64_t T = 1 << 17;
    float *xr = make_audio(1, T);
    compare("tiny/random 3 s", st, one, one, xr, 1, T, 4096, 7);
    compare("tiny/random 3 s auto", st, one, small, xr, 1, T, 0, 7);

    // 3. refusals
    int32_t codes[64];
    JB_CHECK(jb_vqvae_encode(one, xr, 1, 1000, 2, codes, 0, &err) < 0 && err.code == JB_EINVAL,
             "T not a multiple of the hop is refused: %s", err.msg);
    JB_CHECK(jb_vqvae_encode(one, xr, 1, 4096, 3, codes, 0, &err) < 0, "level 3 of 3 refused: %s",
             err.msg);
    JB_CHECK(jb_vqvae_encode(one, xr, 1, 8192, 0, codes, 100, &err) < 0,
             "chunk not a multiple of the hop refused: %s", err.msg);
    JB_CHECK(jb_vqvae_encode(small, xr, 1, 1 << 16, 0, codes, 1 << 15, &err) < 0,
             "chunk + margins beyond max_window refused: %s", err.msg);
    for (int i = 0; i < 64; i++) codes[i] = i % 32;
    codes[17] = 32;
    float out[64 * 128];
    JB_CHECK(jb_vqvae_decode(one, codes, 1, 64, 2, out, 0, &err) < 0 && err.code == JB_EFORMAT &&
                 strstr(err.msg, "position 17"),
             "code out of range refused with its position: %s", err.msg);
    codes[17] = -1;
    JB_CHECK(jb_vqvae_decode(one, codes, 1, 64, 2, out, 0, &err) < 0, "negative code refused");
    JB_CHECK(jb_vqvae_new(st, 64, &err) == NULL, "max_window below the top hop refused: %s",
             err.msg);
    jb_vqvae_destroy(&one);
    jb_vqvae_destroy(&small);
    jb_vqvae_destroy(&one);   // twice is fine
    JB_CHECK(one == NULL, "destroy nulls the pointer");

    // 4. the real-shape model on 4.5 s: chunks of 1.5 s with margins of ~1 s per side
    jb_err_clear(&err);
    jb_st_t *rs = jb_st_open("tests/golden/vqvae_real_shape/model.safetensors", &err);
    jb_vqvae_t *big = rs ? jb_vqvae_new(rs, 1 << 18, &err) : NULL;
    JB_CHECK(big != NULL, "real-shape model loads (%s)", err.msg);
    if (big) {
        T = 3 << 16;
        float *xl = make_audio(1, T);
        compare("real-shape/random 4.5 s", rs, big, big, xl, 1, T, 1 << 16, 5);
        free(xl);
    }
    jb_vqvae_destroy(&big);
    jb_st_close(&rs);

    free(xr);
    jb_free(xg);
    jb_st_close(&io);
    jb_st_close(&st);
    return jb_test_summary("test_jb_vqvae");
}
