// test_jb_nn.c: the kernel bodies of jb_nn against naive double-precision loops (with guard
// values past the end of every output), and, in a CUDA build with a device, the CUDA
// launchers against the CPU ones on the same random data.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jb_nn.h"
#include "jb_test.h"
#include "jb_tensor.h"

#ifdef JB_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#define GUARD 12345.0f

static uint64_t st = 99;
static float frand(void) {
    st = st * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((st >> 40) / (double)(1 << 24)) * 2.0f - 1.0f;
}

static float *rnd(int64_t n, int64_t guard) {   // n random values then `guard` guard values
    float *p = malloc(sizeof(float) * (size_t)(n + guard));
    for (int64_t i = 0; i < n; i++) p[i] = frand();
    for (int64_t i = 0; i < guard; i++) p[n + i] = GUARD;
    return p;
}

static int guards_ok(const float *p, int64_t n, int64_t guard) {
    for (int64_t i = 0; i < guard; i++)
        if (p[n + i] != GUARD) return 0;
    return 1;
}

static double maxdiff(const float *a, const double *b, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs(a[i] - b[i]);
        if (d > m || d != d) m = d;
    }
    return m;
}

// Naive attention for one kind: q, k, v: (N, T, S) full sequences; out: (N, T, S).
static void naive_attn(double *out, const float *q, const float *k, const float *v,
                       jb_nn_attn_kind_t kind, int N, int T, int H, int hd, int E) {
    int S = H * hd, bc = kind.block_ctx;
    double *w = malloc(sizeof(double) * (size_t)(T > E ? T : E));
    for (int n = 0; n < N; n++)
        for (int i = 0; i < T; i++)
            for (int h = 0; h < H; h++) {
                int nk = kind.kind == 6 ? E : T;
                int vis[4096];
                int cnt = 0;
                for (int j = 0; j < nk; j++) {
                    int ok;
                    switch (kind.kind) {
                    case 0: ok = j <= i; break;
                    case 1: ok = j / bc == i / bc && j <= i; break;
                    case 2: ok = j % bc == i % bc && j <= i; break;
                    case 3: ok = j / bc == i / bc - 1; break;
                    case 6: ok = 1; break;
                    default: ok = j <= i && j < kind.prime_len; break;
                    }
                    if (ok) vis[cnt++] = j;
                }
                double *o = out + ((int64_t)n * T + i) * S + h * hd;
                for (int d = 0; d < hd; d++) o[d] = 0;
                if (!cnt) continue;
                const float *qi = q + ((int64_t)n * T + i) * S + h * hd;
                int KT = kind.kind == 6 ? E : T;
                double mx = -1e300, sum = 0;
                for (int c = 0; c < cnt; c++) {
                    const float *kj = k + ((int64_t)n * KT + vis[c]) * S + h * hd;
                    double s = 0;
                    for (int d = 0; d < hd; d++) s += (double)qi[d] * kj[d];
                    w[c] = s / sqrt((double)hd);
                    mx = w[c] > mx ? w[c] : mx;
                }
                for (int c = 0; c < cnt; c++) sum += (w[c] = exp(w[c] - mx));
                for (int c = 0; c < cnt; c++) {
                    const float *vj = v + ((int64_t)n * KT + vis[c]) * S + h * hd;
                    for (int d = 0; d < hd; d++) o[d] += w[c] / sum * vj[d];
                }
            }
    free(w);
}

#ifdef JB_HAVE_CUDA
static float *dev_copy(const float *h, int64_t n) {
    void *d = NULL;
    if (cudaMalloc(&d, sizeof(float) * (size_t)(n > 0 ? n : 1)) != cudaSuccess) return NULL;
    cudaMemcpy(d, h, sizeof(float) * (size_t)n, cudaMemcpyHostToDevice);
    return d;
}
static void host_copy(float *h, const float *d, int64_t n) {
    cudaMemcpy(h, d, sizeof(float) * (size_t)n, cudaMemcpyDeviceToHost);
}
static double nmse(const float *a, const float *b, int64_t n) {
    double e = 0, s = 0;
    for (int64_t i = 0; i < n; i++) {
        if (a[i] != a[i] || b[i] != b[i]) return INFINITY;
        e += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        s += (double)b[i] * b[i];
    }
    return e / (s + 1e-30);
}
#endif

int main(void) {
    const int64_t G = 16;
    // LayerNorm
    {
        int R = 37, C = 96;
        float *x = rnd((int64_t)R * C, 0), *g = rnd(C, 0), *b = rnd(C, 0), *y = rnd((int64_t)R * C, G);
        double *ref = malloc(sizeof(double) * R * C);
        for (int r = 0; r < R; r++) {
            double m = 0, v = 0;
            for (int c = 0; c < C; c++) m += x[r * C + c];
            m /= C;
            for (int c = 0; c < C; c++) v += (x[r * C + c] - m) * (x[r * C + c] - m);
            v /= C;
            for (int c = 0; c < C; c++)
                ref[r * C + c] = (x[r * C + c] - m) / sqrt(v + 1e-5) * g[c] + b[c];
        }
        jb_nn_layernorm(y, x, g, b, R, C, 1e-5f);
        double d = maxdiff(y, ref, (int64_t)R * C);
        JB_CHECK(d < 1e-5 && guards_ok(y, (int64_t)R * C, G), "layernorm: max |diff| %.3g", d);
        jb_nn_layernorm(x, x, g, b, R, C, 1e-5f);   // in place
        JB_CHECK(maxdiff(x, ref, (int64_t)R * C) < 1e-5, "layernorm in place");
        free(x), free(g), free(b), free(y), free(ref);
    }
    // quick_gelu, add, broadcast add, embedding, softmax
    {
        int64_t n = 5000;   // above the parallel threshold
        float *x = rnd(n, G), *a = rnd(n, 0), *y = rnd(n, G);
        double *ref = malloc(sizeof(double) * n);
        for (int64_t i = 0; i < n; i++) ref[i] = x[i] / (1.0 + exp(-1.702 * x[i]));
        jb_nn_quick_gelu(x, n);
        JB_CHECK(maxdiff(x, ref, n) < 1e-6 && guards_ok(x, n, G), "quick_gelu");
        // the launcher's vector path = the kernel body bit for bit, 5003 values (a tail) of
        // every magnitude (|1.702 x| >= 88: expf's special cases), infinities, zeros
        {
            int64_t m = 5003;
            float *xv = rnd(m, G), *xb = malloc(sizeof(float) * (size_t)m);
            for (int64_t i = 0; i < m; i++) xv[i] *= ldexpf(1.0f, (int)(i % 16) - 4);
            xv[1] = INFINITY, xv[2] = -INFINITY, xv[3] = 0.0f, xv[4] = -0.0f, xv[5] = -60.0f;
            memcpy(xb, xv, sizeof(float) * (size_t)m);
            jb_nn_quick_gelu(xv, m);
            for (int64_t i = 0; i < m; i++) jb_nn_quick_gelu_at(i, xb);
            int64_t bad = 0;
            for (int64_t i = 0; i < m; i++) bad += memcmp(&xv[i], &xb[i], sizeof(float)) != 0;
            JB_CHECK(bad == 0 && guards_ok(xv, m, G),
                     "quick_gelu launcher = kernel body bit for bit: %lld of %lld differ",
                     (long long)bad, (long long)m);
            free(xv), free(xb);
        }
        for (int64_t i = 0; i < n; i++) ref[i] = x[i] + a[i];   // float addition, as the kernel
        jb_nn_add(y, x, a, n);
        JB_CHECK(maxdiff(y, ref, n) == 0 && guards_ok(y, n, G), "add");
        for (int64_t i = 0; i < n; i++) ref[i] = y[i] + a[i % 40];
        jb_nn_add_bcast(y, a, n, 40);
        JB_CHECK(maxdiff(y, ref, n) == 0 && guards_ok(y, n, G), "add_bcast");
        float *table = rnd(10 * 8, 0), *e = rnd(6 * 8, G);
        int32_t ids[6] = {3, 0, 9, 9, -1, 10};
        int ok = 1;
        jb_nn_embed(e, table, ids, 6, 8, 10);
        for (int r = 0; r < 6; r++) {
            int id = ids[r] < 0 || ids[r] >= 10 ? 0 : ids[r];
            for (int c = 0; c < 8; c++) ok &= e[r * 8 + c] == table[id * 8 + c];
        }
        JB_CHECK(ok && guards_ok(e, 48, G), "embed (bad ids read row 0)");
        float *s = rnd(7 * 33, G);
        for (int i = 0; i < 33; i++) s[i] = -INFINITY;   // a row of -inf... except one
        s[5] = 1.0f;
        double *sr = malloc(sizeof(double) * 7 * 33);
        for (int r = 0; r < 7; r++) {
            double m = -INFINITY, z = 0;
            for (int j = 0; j < 33; j++) m = fmax(m, s[r * 33 + j]);
            for (int j = 0; j < 33; j++) z += exp(s[r * 33 + j] - m);
            for (int j = 0; j < 33; j++) sr[r * 33 + j] = exp(s[r * 33 + j] - m) / z;
        }
        jb_nn_softmax(s, 7, 33);
        JB_CHECK(maxdiff(s, sr, 7 * 33) < 1e-6 && guards_ok(s, 7 * 33, G) && s[5] == 1.0f,
                 "softmax");
        free(x), free(a), free(y), free(ref), free(table), free(e), free(s), free(sr);
    }
    // Attention of every kind over a full cache (cap = T) and over a ring (block kinds).
    {
        int N = 2, T = 24, H = 2, hd = 4, S = H * hd, E = 7, bc = 6;
        const int kinds[6] = {0, 1, 2, 3, 6, 7};
        for (int ki = 0; ki < 6; ki++) {
            jb_nn_attn_kind_t kd = {kinds[ki], bc, E, 10};
            int KT = kinds[ki] == 6 ? E : T;
            float *q = rnd((int64_t)N * T * S, 0), *k = rnd((int64_t)N * KT * S, 0);
            float *v = rnd((int64_t)N * KT * S, 0), *o = rnd((int64_t)N * T * S, G);
            int wcap = T > E ? T : E;
            float *w = malloc(sizeof(float) * (size_t)N * T * H * wcap);
            double *ref = malloc(sizeof(double) * N * T * S);
            naive_attn(ref, q, k, v, kd, N, T, H, hd, E);
            jb_nn_attn(o, w, q, S, k, v, kd, N, T, H, hd, KT, 0, wcap,
                       (float)(1.0 / sqrt((double)hd)));
            double d = maxdiff(o, ref, (int64_t)N * T * S);
            JB_CHECK(d < 1e-5 && guards_ok(o, (int64_t)N * T * S, G), "attn kind %d: max |diff| %.3g",
                     kinds[ki], d);
            // Queries 15..20 against a ring cache of 9 slots holding positions 12..20 (kind 1).
            if (kinds[ki] == 1) {
                int cap = 9, t0 = 15, rows = 6;
                float *kr = calloc((size_t)N * cap * S, sizeof(float));
                float *vr = calloc((size_t)N * cap * S, sizeof(float));
                for (int n = 0; n < N; n++)
                    for (int p = 12; p <= 20; p++) {
                        memcpy(kr + ((int64_t)n * cap + p % cap) * S, k + ((int64_t)n * T + p) * S, 4 * S);
                        memcpy(vr + ((int64_t)n * cap + p % cap) * S, v + ((int64_t)n * T + p) * S, 4 * S);
                    }
                float *qr = malloc(sizeof(float) * (size_t)N * rows * S);
                float *orr = malloc(sizeof(float) * (size_t)N * rows * S);
                for (int n = 0; n < N; n++)
                    memcpy(qr + (int64_t)n * rows * S, q + ((int64_t)n * T + t0) * S, 4 * (size_t)rows * S);
                jb_nn_attn(orr, w, qr, S, kr, vr, kd, N, rows, H, hd, cap, t0, wcap,
                           (float)(1.0 / sqrt((double)hd)));
                double dr = 0;
                for (int n = 0; n < N; n++)
                    for (int r = 0; r < rows * S; r++)
                        dr = fmax(dr, fabs(orr[(int64_t)n * rows * S + r] -
                                           ref[((int64_t)n * T + t0) * S + r]));
                JB_CHECK(dr < 1e-5, "attn kind 1 over a ring cache: max |diff| %.3g", dr);
                free(kr), free(vr), free(qr), free(orr);
            }
#ifdef JB_HAVE_CUDA
            int ndev = 0;
            if (cudaGetDeviceCount(&ndev) == cudaSuccess && ndev > 0) {
                float *dq = dev_copy(q, (int64_t)N * T * S), *dk = dev_copy(k, (int64_t)N * KT * S);
                float *dv = dev_copy(v, (int64_t)N * KT * S), *dout = dev_copy(o, (int64_t)N * T * S);
                float *dw = dev_copy(w, (int64_t)N * T * H * wcap);
                float *g = malloc(sizeof(float) * (size_t)N * T * S);
                int lrc = jb_nn_cuda_attn(dout, dw, dq, S, dk, dv, kd, N, T, H, hd, KT, 0, wcap,
                                          (float)(1.0 / sqrt((double)hd)));
                cudaDeviceSynchronize();
                host_copy(g, dout, (int64_t)N * T * S);
                double e = nmse(g, o, (int64_t)N * T * S);
                JB_CHECK(lrc == 0 && e < 1e-10, "CUDA attn kind %d vs CPU: nmse %.3g", kinds[ki], e);
                cudaFree(dq), cudaFree(dk), cudaFree(dv), cudaFree(dout), cudaFree(dw);
                free(g);
            } else if (ki == 0) {
                printf("  (no CUDA device: CUDA kernels not compared)\n");
            }
#endif
            free(q), free(k), free(v), free(o), free(w), free(ref);
        }
    }
    // The CPU launcher's vector path against the kernel body (jb_nn_attn_at, what the CUDA
    // kernel runs) bit for bit: head sizes with and without a tail of the eight-value
    // vectors, key counts not a multiple of eight, ring caches that wrap, the strided kind 2.
    {
        struct { int kind, hd, H, cap, t0, rows, bc; } cs[] = {
            {0, 24, 4, 1072, 0, 1072, 0},   // the top prior's priming pass (48 + 1024 keys)
            {0, 24, 4, 1072, 1071, 1, 0},   // ... and one sampled row
            {0, 8, 2, 384, 200, 13, 0},     // the upsamplers' heads
            {0, 64, 3, 300, 100, 37, 0},    // two passes of 32 values of the output
            {0, 48, 2, 200, 5, 30, 0},      // a last pass of 16
            {0, 64, 4, 300, 100, 37, 0},    // four heads: passes of 24, 24 and 16 values
            {1, 8, 4, 40, 117, 29, 24},     // four heads of 8 over a ring
            {0, 16, 8, 100, 60, 1, 0},      // one row, eight heads: two at a time
            {0, 40, 6, 100, 60, 3, 0},      // six heads: two at a time
            {0, 12, 2, 90, 0, 50, 0},       // a tail: the kernel body
            {1, 16, 2, 40, 117, 29, 24},    // a ring of 40 slots holding a block of 24
            {2, 16, 2, 300, 250, 9, 16},    // every 16th key
            {3, 24, 2, 64, 100, 11, 32},    // the previous block
            {6, 32, 2, 77, 3, 5, 0},        // encoder keys
            {7, 40, 2, 20, 10, 25, 0},      // prime keys
        };
        for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
            int N = 2, H = cs[c].H, hd = cs[c].hd, S = H * hd, cap = cs[c].cap, rows = cs[c].rows;
            jb_nn_attn_kind_t kd = {cs[c].kind, cs[c].bc, cap, 20};
            int w_cap = cs[c].t0 + rows + cap;
            float *q = rnd((int64_t)N * rows * 3 * S, 0), *k = rnd((int64_t)N * cap * S, 0);
            float *v = rnd((int64_t)N * cap * S, 0);
            // a query of zeros: scores of +0 and -0 (0 times keys of either sign)
            memset(q, 0, sizeof(float) * (size_t)S);
            int64_t no = (int64_t)N * rows * S, nw = (int64_t)N * rows * H * w_cap;
            float *o1 = calloc((size_t)no, sizeof(float)), *o2 = calloc((size_t)no, sizeof(float));
            float *w1 = calloc((size_t)nw, sizeof(float)), *w2 = calloc((size_t)nw, sizeof(float));
            float scale = 1.0f / sqrtf((float)hd);
            jb_nn_attn(o1, w1, q, 3 * S, k, v, kd, N, rows, H, hd, cap, cs[c].t0, w_cap, scale);
            for (int64_t i = 0; i < (int64_t)N * rows * H; i++)
                jb_nn_attn_at(i, o2, w2, q, 3 * S, k, v, kd, rows, H, hd, cap, cs[c].t0, w_cap,
                              scale);
            int64_t bad = 0;
            for (int64_t i = 0; i < no; i++) bad += memcmp(&o1[i], &o2[i], sizeof(float)) != 0;
            for (int64_t i = 0; i < nw; i++) bad += memcmp(&w1[i], &w2[i], sizeof(float)) != 0;
            JB_CHECK(bad == 0, "attn launcher = kernel body bit for bit: kind %d hd %d cap %d t0 %d "
                     "rows %d: %lld values differ", cs[c].kind, hd, cap, cs[c].t0, rows,
                     (long long)bad);
            free(q), free(k), free(v), free(o1), free(o2), free(w1), free(w2);
        }
    }
#ifdef JB_HAVE_CUDA
    {
        int ndev = 0;
        if (cudaGetDeviceCount(&ndev) == cudaSuccess && ndev > 0) {
            int R = 64, C = 128;
            int64_t n = (int64_t)R * C;
            float *x = rnd(n, 0), *g = rnd(C, 0), *b = rnd(C, 0), *cpu = rnd(n, 0), *gpu = rnd(n, 0);
            float *dx = dev_copy(x, n), *dg = dev_copy(g, C), *db = dev_copy(b, C), *dy = dev_copy(x, n);
            jb_nn_layernorm(cpu, x, g, b, R, C, 1e-5f);
            JB_CHECK(jb_nn_cuda_layernorm(dy, dx, dg, db, R, C, 1e-5f) == 0, "CUDA layernorm launch");
            host_copy(gpu, dy, n);
            JB_CHECK(nmse(gpu, cpu, n) < 1e-12, "CUDA layernorm vs CPU");
            memcpy(cpu, x, sizeof(float) * (size_t)n);
            jb_nn_quick_gelu(cpu, n);
            jb_nn_cuda_quick_gelu(dx, n);
            host_copy(gpu, dx, n);
            JB_CHECK(nmse(gpu, cpu, n) < 1e-12, "CUDA quick_gelu vs CPU");
            jb_nn_softmax(cpu, R, C);
            jb_nn_cuda_softmax(dx, R, C);
            host_copy(gpu, dx, n);
            JB_CHECK(nmse(gpu, cpu, n) < 1e-12, "CUDA softmax vs CPU");
            cudaFree(dx), cudaFree(dg), cudaFree(db), cudaFree(dy);
            free(x), free(g), free(b), free(cpu), free(gpu);
        }
    }
#endif
    return jb_test_summary("test_jb_nn");
}
