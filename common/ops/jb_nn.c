// jb_nn.c: CPU launchers of the kernel bodies in jb_nn.h (OpenMP loops).
#include "jb_nn.h"

void jb_nn_layernorm(float *out, const float *x, const float *g, const float *b, int64_t rows,
                     int C, float eps) {
    // Rows are long (C = width): parallel from ~17 rows of 1920 (a priming chunk of 32:
    // 60 -> 30 us with spinning threads, 48 with sleeping ones). At 4-8 rows sleeping
    // threads cost more to wake than they save (8 rows: 15 us alone, 21 parallel).
    int64_t n_ = rows;
    _Pragma("omp parallel for schedule(static) if (rows >= 2 && rows * C >= 32768)")
    for (int64_t i = 0; i < n_; i++) jb_nn_layernorm_at(i, out, x, g, b, C, eps);
}

void jb_nn_quick_gelu(float *x, int64_t n) { JB_CPU_LAUNCH(n, jb_nn_quick_gelu_at, x); }

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

void jb_nn_attn(float *out, float *w, const float *q, int q_stride, const float *kc,
                const float *vc, jb_nn_attn_kind_t kind, int N, int rows, int H, int hd, int cap,
                int t0, int w_cap, float scale) {
    // One index is a whole (row, head) dot-product sweep over up to w_cap keys:
    // parallel as soon as there are a few of them and enough keys.
    int64_t n_ = (int64_t)N * rows * H;
    _Pragma("omp parallel for schedule(dynamic, 1) if (n_ >= 2 && n_ * w_cap * hd >= 65536)")
    for (int64_t i = 0; i < n_; i++)
        jb_nn_attn_at(i, out, w, q, q_stride, kc, vc, kind, rows, H, hd, cap, t0, w_cap, scale);
}
