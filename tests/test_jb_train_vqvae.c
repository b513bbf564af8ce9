// test_jb_train_vqvae.c: finite-difference and independent-reference checks of the VQ-VAE
// training code:
//   * jb_cg_conv / jb_cg_convt forward against jb_conv (the inference convolutions, checked
//     by the vqvae goldens), with dilation, stride and padding;
//   * their backward (dx, dw, db) against central differences of the scalar <out, R>;
//   * the residual block's backward against central differences;
//   * jb_stft_forward against a naive DFT written from the torch.stft definition, and
//     jb_stft_backward as its exact adjoint;
//   * the full step's gradient for decoder parameters (the losses, the STFT magnitude and
//     spectral-convergence backward, l1/l2/linf/lmix) against central differences of the
//     loss (encoder gradients go through the straight-through estimator, which is not a
//     derivative of the loss: the golden case checks those);
//   * EMA update and dead-code revival: k_sum/k_elem follow the formula, dead codes are
//     replaced, deterministically for a seed.
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "jb_conv.h"
#include "jb_conv_grad.h"
#include "jb_stft.h"
#include "jb_safetensors.h"
#include "jb_tensor.h"
#include "jb_test.h"
#include "jb_train_vqvae.h"
#include "jb_vqvae.h"

static uint64_t rng = 0x243f6a8885a308d3ull;
static float frand(void) {   // uniform in [-1, 1)
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 40) * (1.0 / 8388608.0)) - 1.0f;
}
static float *rand_buf(int64_t n, float scale) {
    float *b = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) b[i] = scale * frand();
    return b;
}
static double dot(const float *a, const float *b, int64_t n) {
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}
static double maxabs(const float *a, int64_t n) {
    double m = 0.0;
    for (int64_t i = 0; i < n; i++) m = fabs(a[i]) > m ? fabs(a[i]) : m;
    return m;
}

// ---- conv and transposed conv ------------------------------------------------------------

typedef struct { int64_t T; int C, OC, k, s, p, d, transposed; } geo_t;

static int64_t out_len(const geo_t *g) {
    return g->transposed ? jb_convt1d_out_len(g->T, g->k, g->s, g->p)
                         : jb_conv1d_out_len(g->T, g->k, g->s, g->p, g->d);
}

static void fwd(const geo_t *g, float *out, const float *x, const float *w, const float *b,
                float *ws) {
    if (g->transposed) jb_cg_convt_forward(out, x, g->T, g->C, w, b, g->OC, g->k, g->s, g->p, ws);
    else jb_cg_conv_forward(out, x, g->T, g->C, w, b, g->OC, g->k, g->s, g->p, g->d, ws);
}

// <conv(x; w, b), R> in double
static double probe(const geo_t *g, const float *x, const float *w, const float *b,
                    const float *R, float *out, float *ws) {
    fwd(g, out, x, w, b, ws);
    return dot(out, R, out_len(g) * g->OC);
}

static void check_conv(const geo_t *g) {
    int64_t To = out_len(g);
    int64_t nx = g->T * g->C, nw = (int64_t)g->C * g->OC * g->k, no = To * g->OC;
    float *x = rand_buf(nx, 1.0f), *w = rand_buf(nw, 0.5f), *b = rand_buf(g->OC, 0.5f);
    float *R = rand_buf(no, 1.0f), *out = malloc(sizeof(float) * no), *ref = malloc(sizeof(float) * no);
    size_t nws = g->transposed ? jb_cg_convt_ws_floats(g->T, g->OC, g->k)
                               : jb_cg_conv_ws_floats(To, g->C, g->k);
    size_t nws2 = g->transposed ? jb_convt1d_ws_floats(g->T, g->C, g->OC, g->k, g->s, 0)
                                : jb_conv1d_ws_floats(g->T, g->C, g->k, g->s, g->p, g->d, 0);
    float *ws = malloc(sizeof(float) * (nws + nws2 + 1)), *wp = malloc(sizeof(float) * nw);
    const char *kind = g->transposed ? "convT" : "conv";
    // forward against the inference implementation
    fwd(g, out, x, w, b, ws);
    if (g->transposed) {
        jb_convt1d_pack(wp, w, g->C, g->OC, g->k);
        jb_convt1d(ref, x, g->T, g->C, wp, b, g->OC, g->k, g->s, g->p, 0, ws);
    } else {
        jb_conv1d_pack(wp, w, g->OC, g->C, g->k);
        jb_conv1d(ref, x, g->T, g->C, wp, b, g->OC, g->k, g->s, g->p, g->d, 0, ws);
    }
    double ma, mr;
    int ok = jb_test_close(out, ref, (long)no, 1e-5, 1e-5, &ma, &mr);
    JB_CHECK(ok, "%s T%lld C%d OC%d k%d s%d p%d d%d: forward = jb_conv (max_abs %.2g)", kind,
             (long long)g->T, g->C, g->OC, g->k, g->s, g->p, g->d, ma);
    // backward against central differences (the probe is linear in x and in w: exact up
    // to rounding for any step)
    float *dx = malloc(sizeof(float) * nx), *dw = calloc(nw, sizeof(float)), *db = calloc(g->OC, sizeof(float));
    if (g->transposed)
        jb_cg_convt_backward(dx, dw, db, R, x, g->T, g->C, w, g->OC, g->k, g->s, g->p, ws);
    else
        jb_cg_conv_backward(dx, dw, db, R, x, g->T, g->C, w, g->OC, g->k, g->s, g->p, g->d, ws);
    const float h = 0.25f;
    struct { float *v, *g; int64_t n; const char *name; } set[3] = {
        {x, dx, nx, "dx"}, {w, dw, nw, "dw"}, {b, db, g->OC, "db"}};
    for (int si = 0; si < 3; si++) {
        double worst = 0.0, scale = maxabs(set[si].g, set[si].n) + 1e-6;
        for (int64_t i = 0; i < set[si].n; i++) {
            float keep = set[si].v[i];
            set[si].v[i] = keep + h;
            double lp = probe(g, x, w, b, R, out, ws);
            set[si].v[i] = keep - h;
            double lm = probe(g, x, w, b, R, out, ws);
            set[si].v[i] = keep;
            double fd = (lp - lm) / (2.0 * h), e = fabs(fd - set[si].g[i]) / scale;
            worst = e > worst ? e : worst;
        }
        JB_CHECK(worst < 1e-4, "%s k%d s%d p%d d%d: %s matches finite differences (worst %.2g)",
                 kind, g->k, g->s, g->p, g->d, set[si].name, worst);
    }
    free(x), free(w), free(b), free(R), free(out), free(ref), free(ws), free(wp);
    free(dx), free(dw), free(db);
}

// ---- residual block --------------------------------------------------------------------------

static double res_probe(int64_t T, int C, int S, int d, const float *x, const float *w3,
                        const float *b3, const float *w1, const float *b1, const float *R,
                        float *y, float *a, float *ws) {
    jb_cg_res_forward(y, a, x, T, C, S, w3, b3, w1, b1, d, ws);
    return dot(y, R, T * C);
}

static void check_res(int64_t T, int C, int S, int d) {
    float *x = rand_buf(T * C, 1.0f), *w3 = rand_buf((int64_t)S * C * 3, 0.5f);
    float *b3 = rand_buf(S, 0.3f), *w1 = rand_buf((int64_t)C * S, 0.5f), *b1 = rand_buf(C, 0.3f);
    float *R = rand_buf(T * C, 1.0f), *y = malloc(sizeof(float) * T * C);
    float *a = malloc(sizeof(float) * T * S), *ws = malloc(sizeof(float) * jb_cg_res_ws_floats(T, C, S));
    float *dx = malloc(sizeof(float) * T * C), *dw3 = calloc((size_t)S * C * 3, sizeof(float));
    float *db3 = calloc(S, sizeof(float)), *dw1 = calloc((size_t)C * S, sizeof(float));
    float *db1 = calloc(C, sizeof(float));
    res_probe(T, C, S, d, x, w3, b3, w1, b1, R, y, a, ws);
    jb_cg_res_backward(dx, dw3, db3, dw1, db1, R, x, a, T, C, S, w3, w1, d, ws);
    const float h = 1e-3f;
    struct { float *v, *g; int64_t n; const char *name; } set[5] = {
        {x, dx, T * C, "dx"}, {w3, dw3, (int64_t)S * C * 3, "dw3"}, {b3, db3, S, "db3"},
        {w1, dw1, (int64_t)C * S, "dw1"}, {b1, db1, C, "db1"}};
    for (int si = 0; si < 5; si++) {
        double worst = 0.0, scale = maxabs(set[si].g, set[si].n) + 1e-6;
        int64_t skipped = 0;
        for (int64_t i = 0; i < set[si].n; i++) {
            double fd[2];
            for (int q = 0; q < 2; q++) {   // steps h and h/4
                float keep = set[si].v[i], hh = q ? h / 4 : h;
                set[si].v[i] = keep + hh;
                double lp = res_probe(T, C, S, d, x, w3, b3, w1, b1, R, y, a, ws);
                set[si].v[i] = keep - hh;
                double lm = res_probe(T, C, S, d, x, w3, b3, w1, b1, R, y, a, ws);
                set[si].v[i] = keep;
                fd[q] = (lp - lm) / (2.0 * hh);
            }
            // a ReLU kink inside the step makes the two differ: skip that element
            if (fabs(fd[0] - fd[1]) > 1e-2 * scale) {
                skipped++;
                continue;
            }
            double e = fabs(fd[0] - set[si].g[i]) / scale;
            worst = e > worst ? e : worst;
        }
        JB_CHECK(worst < 1e-2 && skipped * 10 <= set[si].n,
                 "res block C%d S%d d%d: %s matches finite differences (worst %.2g, %lld at kinks)",
                 C, S, d, set[si].name, worst, (long long)skipped);
    }
    free(x), free(w3), free(b3), free(w1), free(b1), free(R), free(y), free(a), free(ws);
    free(dx), free(dw3), free(db3), free(dw1), free(db1);
}

// ---- STFT ---------------------------------------------------------------------------------------

// torch.stft written out: periodic Hann(w) centred in n_fft, reflect padding n_fft/2.
static void naive_stft(double *re, double *im, const float *x, int64_t T, int n_fft, int hop,
                       int win) {
    int F = (int)(1 + T / hop), B = n_fft / 2 + 1, left = (n_fft - win) / 2;
    for (int f = 0; f < F; f++)
        for (int k = 0; k < B; k++) {
            double sr = 0.0, si = 0.0;
            for (int n = 0; n < n_fft; n++) {
                double wv = (n >= left && n < left + win)
                                ? 0.5 - 0.5 * cos(2.0 * M_PI * (n - left) / win) : 0.0;
                int64_t j = (int64_t)f * hop + n - n_fft / 2;
                if (j < 0) j = -j;
                if (j >= T) j = 2 * (T - 1) - j;
                sr += x[j] * wv * cos(2.0 * M_PI * k * n / n_fft);
                si -= x[j] * wv * sin(2.0 * M_PI * k * n / n_fft);
            }
            re[f * B + k] = sr, im[f * B + k] = si;
        }
}

static void check_stft(int n_fft, int hop, int win, int64_t T) {
    jb_err_t err = {0};
    jb_stft_t *st = jb_stft_new(n_fft, hop, win, T, &err);
    JB_CHECK(st != NULL, "stft plan %d/%d/%d T%lld (%s)", n_fft, hop, win, (long long)T, err.msg);
    if (!st) return;
    int F = jb_stft_frames(st), B = jb_stft_bins(st);
    JB_CHECK(F == 1 + T / hop && B == n_fft / 2 + 1, "stft shape F%d B%d", F, B);
    float *x = rand_buf(T, 1.0f);
    double *spec = malloc(sizeof(double) * F * 2 * B), *re = malloc(sizeof(double) * F * B);
    double *im = malloc(sizeof(double) * F * B);
    jb_stft_forward(st, spec, x);
    naive_stft(re, im, x, T, n_fft, hop, win);
    double worst = 0.0, big = 0.0;
    for (int f = 0; f < F; f++)
        for (int k = 0; k < B; k++) {
            double e1 = fabs(spec[f * 2 * B + k] - re[f * B + k]);
            double e2 = fabs(spec[f * 2 * B + B + k] - im[f * B + k]);
            worst = fmax(worst, fmax(e1, e2));
            big = fmax(big, fmax(fabs(re[f * B + k]), fabs(im[f * B + k])));
        }
    JB_CHECK(worst < 1e-9 * big + 1e-9, "stft %d/%d/%d = naive DFT (max err %.2g of %.2g)", n_fft,
             hop, win, worst, big);
    // adjoint: <S x, D> = <x, S^T D>
    double *D = malloc(sizeof(double) * F * 2 * B), lhs = 0.0, rhs = 0.0;
    for (int i = 0; i < F * 2 * B; i++) D[i] = frand(), lhs += D[i] * spec[i];
    float *dx = calloc(T, sizeof(float));
    jb_stft_backward(st, dx, D);
    for (int64_t i = 0; i < T; i++) rhs += (double)dx[i] * x[i];
    JB_CHECK(fabs(lhs - rhs) < 1e-5 * (fabs(lhs) + 1.0), "stft %d/%d/%d backward is the adjoint (%.8g vs %.8g)",
             n_fft, hop, win, lhs, rhs);
    free(x), free(spec), free(re), free(im), free(D), free(dx);
    jb_stft_destroy(&st);
    JB_CHECK(st == NULL, "stft destroy nulls");
    JB_CHECK(jb_stft_new(64, 16, 64, 32, &err) == NULL, "stft refuses reflect pad >= T (%s)", err.msg);
}

// ---- the whole step --------------------------------------------------------------------------------

typedef struct {
    jb_train_vqvae_t *tv;
    int levels, K, E;
    float *k[2], *ks[2], *ke[2];   // codebook state to restore before every evaluation
    const float *x;
} model_t;

static void restore(model_t *m) {
    for (int L = 0; L < m->levels; L++) jb_train_vqvae_set_ema(m->tv, L, m->k[L], m->ks[L], m->ke[L], NULL);
}

static double eval_loss(model_t *m) {
    jb_tvq_result_t res;
    restore(m);
    jb_train_vqvae_step(m->tv, m->x, &res, NULL);
    return res.loss;
}

static jb_train_vqvae_t *tiny_model(jb_vqvae_loss_hparams_t *lh, int N, int64_t T, model_t *m,
                                    jb_vqvae_hparams_t *hp) {
    memset(hp, 0, sizeof *hp);
    hp->levels = 2;
    hp->downs_t[0] = 1, hp->downs_t[1] = 1;
    hp->strides_t[0] = 2, hp->strides_t[1] = 4;
    hp->emb_width = 4, hp->l_bins = 8, hp->width = 4, hp->depth = 2, hp->m_conv = 1.0;
    hp->dilation_growth_rate = 3, hp->multipliers[0] = 2, hp->multipliers[1] = 1;
    hp->reverse_decoder_dilation = 1, hp->sr = 44100;
    hp->downsamples[0] = 2, hp->downsamples[1] = 4, hp->hop_lengths[0] = 2, hp->hop_lengths[1] = 8;
    jb_err_t err = {0};
    jb_train_vqvae_t *tv = jb_train_vqvae_new(hp, lh, N, T, 7, &err);
    JB_CHECK(tv != NULL, "tiny model (%s)", err.msg);
    if (!tv) return NULL;
    for (int i = 0; i < jb_train_vqvae_n_params(tv); i++) {
        jb_tvq_param_t p = jb_train_vqvae_param(tv, i);
        int64_t fan = p.ndim == 3 ? (p.shape[1] * p.shape[2]) : 4;
        for (int64_t j = 0; j < p.n; j++) p.w[j] = frand() / sqrtf((float)fan);
    }
    m->tv = tv, m->levels = 2, m->K = hp->l_bins, m->E = hp->emb_width;
    for (int L = 0; L < 2; L++) {
        m->k[L] = rand_buf((int64_t)m->K * m->E, 0.5f);
        m->ke[L] = malloc(sizeof(float) * m->K);
        m->ks[L] = malloc(sizeof(float) * m->K * m->E);
        for (int j = 0; j < m->K; j++) {
            m->ke[L][j] = 2.0f + 0.1f * j;
            for (int c = 0; c < m->E; c++) m->ks[L][j * m->E + c] = m->k[L][j * m->E + c] * m->ke[L][j];
        }
    }
    return tv;
}

static void free_model(model_t *m) {
    for (int L = 0; L < 2; L++) free(m->k[L]), free(m->ks[L]), free(m->ke[L]);
    jb_train_vqvae_destroy(&m->tv);
}

static void check_step_fd(const char *what, jb_vqvae_loss_hparams_t *lh) {
    int N = 2;
    int64_t T = 1152;   // > 1024: the fixed spectral STFT pads 1024 by reflection
    model_t m = {0};
    jb_vqvae_hparams_t hp;
    if (!tiny_model(lh, N, T, &m, &hp)) return;
    float *x = rand_buf(N * T, 0.5f);
    for (int64_t t = 0; t < N * T; t++) x[t] += 0.3f * sinf(0.05f * (float)(t % T));
    m.x = x;
    jb_tvq_result_t res;
    restore(&m);
    jb_err_t err = {0};
    JB_CHECK_OK(jb_train_vqvae_step(m.tv, x, &res, &err), &err, "step");
    JB_CHECK(isfinite(res.loss) && res.loss > 0, "%s: loss %.6g", what, res.loss);
    // keep the analytic gradients
    int np = jb_train_vqvae_n_params(m.tv);
    size_t tot = 0;
    for (int i = 0; i < np; i++) tot += (size_t)jb_train_vqvae_param(m.tv, i).n;
    float *G = malloc(sizeof(float) * tot);
    size_t off = 0;
    for (int i = 0; i < np; i++) {
        jb_tvq_param_t p = jb_train_vqvae_param(m.tv, i);
        memcpy(G + off, p.g, sizeof(float) * p.n);
        off += p.n;
    }
    // a few elements of every decoder parameter of both levels
    double worst = 0.0;
    int checked = 0, skipped = 0;
    const double h = 2e-3;
    off = 0;
    for (int i = 0; i < np; i++) {
        jb_tvq_param_t p = jb_train_vqvae_param(m.tv, i);
        if (!strncmp(p.name, "decoders.", 9)) {
            double scale = maxabs(G + off, p.n) + 1e-3;
            int64_t j = (int64_t)(((uint64_t)(7919 + i * 31)) % (uint64_t)p.n);
            double fd[2];
            for (int q = 0; q < 2; q++) {   // steps h and h/2
                float keep = p.w[j], hh = (float)(q ? h / 2 : h);
                p.w[j] = keep + hh;
                double lp = eval_loss(&m);
                p.w[j] = keep - hh;
                double lm = eval_loss(&m);
                p.w[j] = keep;
                fd[q] = (lp - lm) / (2.0 * hh);
            }
            // a kink inside the step (ReLU, |.|, the linf top-k set, a code switch) makes the
            // two differ: skip that element
            if (fabs(fd[0] - fd[1]) > 5e-3 * scale) {
                skipped++;
            } else {
                double e = fabs(fd[1] - G[off + j]) / scale;
                if (e > worst) worst = e;
                checked++;
            }
        }
        off += p.n;
    }
    JB_CHECK(worst < 1e-2 && skipped * 4 <= checked,
             "%s: %d decoder gradient elements match finite differences (worst %.3g of max|grad|, "
             "%d skipped at kinks)", what, checked, worst, skipped);
    free(G), free(x);
    free_model(&m);
}

static jb_vqvae_loss_hparams_t base_loss(void) {
    jb_vqvae_loss_hparams_t lh = {0};
    lh.l_mu = 0.99, lh.commit = 0.02, lh.spectral = 0.5, lh.multispectral = 1.0;
    lh.loss_fn = JB_TVQ_LOSS_LMIX, lh.linf_k = 64;
    lh.lmix_l1 = 0.3, lh.lmix_l2 = 1.0, lh.lmix_linf = 0.02;
    lh.revival_threshold = 1.0, lh.use_nonrelative_specloss = 1;
    lh.n_multispec = 2;
    lh.ms_n_fft[0] = 256, lh.ms_hop[0] = 64, lh.ms_win[0] = 160;
    lh.ms_n_fft[1] = 128, lh.ms_hop[1] = 30, lh.ms_win[1] = 100;
    lh.bw_l1 = 0.1, lh.bw_l2 = 0.02, lh.bw_spec = 30.0;
    return lh;
}

// EMA state after one step follows k_sum = mu k_sum + (1-mu) s, k_elem = mu k_elem + (1-mu) n;
// dead codes (k_elem below the threshold) are replaced and counted; same seed, same draws.
static void check_revival(void) {
    float *k1 = NULL;
    for (int run = 0; run < 2; run++) {
        jb_vqvae_loss_hparams_t lh = base_loss();
        lh.revival_threshold = 2.0;   // k_elem_in 2.0 + 0.1 j: after mu, unused codes fall below
        int N = 1;
        int64_t T = 1152;
        model_t m = {0};
        jb_vqvae_hparams_t hp;
        rng = 0x5eed5eedull;   // the same weights, codebook and input in both runs
        if (!tiny_model(&lh, N, T, &m, &hp)) return;
        float *x = rand_buf(N * T, 0.5f);
        jb_tvq_result_t res;
        m.x = x;
        restore(&m);
        jb_train_vqvae_step(m.tv, x, &res, NULL);
        int K = m.K, E = m.E;
        const float *k, *ks, *ke;
        jb_train_vqvae_codebook(m.tv, 1, &k, &ks, &ke);
        if (run == 0) {
            int ok_elem = 1, ok_sum = 1, dead = 0, alive_ok = 1, changed = 1;
            int64_t R = T / hp.hop_lengths[1];
            double cnt[8] = {0};
            for (int64_t r = 0; r < R; r++) cnt[res.zs[1][r]] += 1.0;
            for (int j = 0; j < K; j++) {
                double want = 0.99 * m.ke[1][j] + 0.01 * cnt[j];
                if (fabs(ke[j] - want) > 1e-5) ok_elem = 0;
                if (cnt[j] == 0)   // no rows: k_sum only decays
                    for (int c = 0; c < E; c++)
                        if (fabsf(ks[j * E + c] - 0.99f * m.ks[1][j * E + c]) > 1e-5f) ok_sum = 0;
                if (ke[j] < 2.0f) {
                    dead++;
                    int same = 1;
                    for (int c = 0; c < E; c++) same &= k[j * E + c] == m.k[1][j * E + c];
                    if (same) changed = 0;
                } else {
                    for (int c = 0; c < E; c++)
                        if (fabsf(k[j * E + c] - ks[j * E + c] / ke[j]) > 1e-6f) alive_ok = 0;
                }
            }
            JB_CHECK(ok_elem, "k_elem = mu k_elem + (1 - mu) counts");
            JB_CHECK(ok_sum, "k_sum of unused codes decays by mu (not reset by revival)");
            JB_CHECK(dead > 0 && res.revived[1] == dead, "dead codes revived: %d of %d",
                     res.revived[1], dead);
            JB_CHECK(changed, "every revived code was replaced");
            JB_CHECK(alive_ok, "live codes: k = k_sum / k_elem");
            JB_CHECK(res.usage < K, "usage metric counts live codes (%.2f)", res.usage);
            k1 = malloc(sizeof(float) * K * E);
            memcpy(k1, k, sizeof(float) * K * E);
        } else {
            JB_CHECK(!memcmp(k1, k, sizeof(float) * K * E), "revival is deterministic for a seed");
        }
        free(x);
        free_model(&m);
    }
    free(k1);
}

// The training forward at the real VQ-VAE shape (width 32, depth 4, emb 64, l_bins 2048)
// against the inference golden vqvae_real_shape: codes zs.L (near-ties excepted) and, where
// the codes agree, every level's decoder output x_out.L.
static void check_real_shape(void) {
    const char *dir = "tests/golden/vqvae_real_shape";
    char path[256];
    jb_err_t err = {0};
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    jb_st_t *model = jb_st_open(path, &err);
    snprintf(path, sizeof path, "%s/io.safetensors", dir);
    jb_st_t *io = model ? jb_st_open(path, &err) : NULL;
    JB_CHECK(io != NULL, "open %s (%s)", dir, err.msg);
    if (!io) {
        jb_st_close(&model);
        return;
    }
    json_error_t je;
    json_t *hj = json_loads(jb_st_meta(model, "hparams"), 0, &je);
    jb_vqvae_hparams_t hp;
    JB_CHECK_OK(hj ? jb_vqvae_hparams_parse(hj, &hp, &err) : -1, &err, "hparams");
    json_decref(hj);
    const jb_st_entry_t *xe = jb_st_get(io, "x", -1, NULL, &err);
    float *x = jb_st_get_f32(io, "x", -1, NULL, &err);
    int N = (int)xe->shape[0];
    int64_t T = xe->shape[1];
    jb_vqvae_loss_hparams_t lh = base_loss();
    lh.n_multispec = 1, lh.ms_n_fft[0] = 2048, lh.ms_hop[0] = 240, lh.ms_win[0] = 1200;
    jb_train_vqvae_t *tv = jb_train_vqvae_new(&hp, &lh, N, T, 1, &err);
    JB_CHECK(tv && !jb_train_vqvae_load(tv, model, &err), "real-shape model (%s)", err.msg);
    jb_tvq_result_t res;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    clock_t c0 = clock();
    JB_CHECK_OK(tv ? jb_train_vqvae_step(tv, x, &res, &err) : -1, &err, "real-shape step");
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("  real-shape step (N %d, T %lld, %d parameter tensors): %.2f s wall, %.2f s CPU\n", N,
           (long long)T, tv ? jb_train_vqvae_n_params(tv) : 0,
           (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec),
           (double)(clock() - c0) / CLOCKS_PER_SEC);
    for (int L = 0; tv && L < hp.levels; L++) {
        char nz[32], nm[32], nd[32], nx[32];
        snprintf(nz, sizeof nz, "zs.%d", L), snprintf(nm, sizeof nm, "margin.%d", L);
        snprintf(nd, sizeof nd, "dist_scale.%d", L), snprintf(nx, sizeof nx, "x_out.%d", L);
        int32_t *zs = jb_st_get_i32(io, nz, -1, NULL, &err);
        float *mg = jb_st_get_f32(io, nm, -1, NULL, &err), *ds = jb_st_get_f32(io, nd, -1, NULL, &err);
        float *xo = jb_st_get_f32(io, nx, -1, NULL, &err);
        int64_t TL = T / hp.hop_lengths[L], bad = 0, differ = 0;
        for (int64_t i = 0; i < N * TL; i++)
            if (res.zs[L][i] != zs[i]) {
                differ++;
                if (!(mg[i] < 1e-4f * ds[i])) bad++;
            }
        JB_CHECK(bad == 0, "real shape level %d: codes = reference (%lld near-ties differ)", L,
                 (long long)differ);
        if (differ == 0) {
            double ma, mr, big = maxabs(xo, N * T);
            int ok = jb_test_close(res.x_outs[L], xo, (long)(N * T), 1e-4, 1e-5 * big, &ma, &mr);
            JB_CHECK(ok, "real shape level %d: decoder output = reference x_out (max_abs %.2g of %.2g)",
                     L, ma, big);
        }
        jb_free(zs), jb_free(mg), jb_free(ds), jb_free(xo);
    }
    jb_free(x);
    jb_train_vqvae_destroy(&tv);
    jb_st_close(&io);
    jb_st_close(&model);
}

// A fresh model (init_random, init_codebooks), a step, save; then the saved file loads in
// the inference VQ-VAE (jb_vqvae) and in a second trainer: the inference encode equals the
// next step's codes, its decode the next step's decoder outputs, and the trainer's state
// round-trips.
static void check_fresh_and_save(void) {
    jb_vqvae_loss_hparams_t lh = base_loss();
    int N = 2;
    int64_t T = 1152;
    model_t m = {0};
    jb_vqvae_hparams_t hp;
    if (!tiny_model(&lh, N, T, &m, &hp)) return;
    jb_err_t err = {0};
    jb_train_vqvae_t *tv = m.tv;
    jb_train_vqvae_init_random(tv, 42);
    jb_tvq_param_t p0 = jb_train_vqvae_param(tv, 0);   // encoders.0...model.0.0.weight [8, 1, 4]
    double bound = 1.0 / sqrt((double)(p0.shape[1] * p0.shape[2]));
    JB_CHECK(maxabs(p0.w, p0.n) <= bound && maxabs(p0.w, p0.n) > 0.5 * bound,
             "init_random: within +-1/sqrt(fan_in) (%.3g of %.3g)", maxabs(p0.w, p0.n), bound);
    float *x = rand_buf(N * T, 0.5f);
    JB_CHECK_OK(jb_train_vqvae_init_codebooks(tv, x, &err), &err, "init_codebooks");
    int K = hp.l_bins, E = hp.emb_width, init_ok = 1, distinct = 1;
    for (int L = 0; L < hp.levels; L++) {
        const float *k, *ks, *ke;
        jb_train_vqvae_codebook(tv, L, &k, &ks, &ke);
        init_ok &= !memcmp(k, ks, sizeof(float) * K * E);
        for (int j = 0; j < K; j++) {
            init_ok &= ke[j] == 1.0f;
            for (int i = 0; i < j; i++) distinct &= memcmp(k + j * E, k + i * E, sizeof(float) * E) != 0;
        }
    }
    JB_CHECK(init_ok, "init_codebooks: k_sum = k, k_elem = 1");
    JB_CHECK(distinct, "init_codebooks: distinct rows of the batch");
    jb_tvq_result_t res;
    JB_CHECK_OK(jb_train_vqvae_step(tv, x, &res, &err), &err, "fresh step");
    char path[128];
    snprintf(path, sizeof path, "/tmp/test_jb_train_vqvae.%d.safetensors", (int)getpid());
    JB_CHECK_OK(jb_train_vqvae_save(tv, path, NULL, &err), &err, "save");
    JB_CHECK_OK(jb_train_vqvae_step(tv, x, &res, &err), &err, "second step");
    jb_st_t *st = jb_st_open(path, &err);
    JB_CHECK(st != NULL, "reopen saved model (%s)", err.msg);
    jb_vqvae_t *vq = st ? jb_vqvae_new(st, 0, &err) : NULL;
    JB_CHECK(vq != NULL, "inference VQ-VAE loads the saved file (%s)", err.msg);
    for (int L = 0; vq && L < hp.levels; L++) {
        int64_t TL = T / hp.hop_lengths[L];
        int32_t *z = malloc(sizeof(int32_t) * N * TL);
        float *out = malloc(sizeof(float) * N * T);
        JB_CHECK_OK(jb_vqvae_encode(vq, x, N, T, L, z, 0, &err), &err, "encode");
        int64_t diff = 0;
        for (int64_t i = 0; i < N * TL; i++) diff += z[i] != res.zs[L][i];
        JB_CHECK(diff == 0, "level %d: inference encode = training codes (%lld differ)", L,
                 (long long)diff);
        JB_CHECK_OK(jb_vqvae_decode(vq, res.zs[L], N, TL, L, out, 0, &err), &err, "decode");
        double ma, mr;
        int ok = jb_test_close(out, res.x_outs[L], (long)(N * T), 1e-4, 1e-5 * maxabs(out, N * T),
                               &ma, &mr);
        JB_CHECK(ok, "level %d: inference decode = training decoder output (max_abs %.2g)", L, ma);
        free(z), free(out);
    }
    jb_vqvae_destroy(&vq);
    // a second trainer restores weights and EMA state
    jb_train_vqvae_t *tv2 = jb_train_vqvae_new(&hp, &lh, N, T, 7, &err);
    JB_CHECK(tv2 && st && !jb_train_vqvae_load(tv2, st, &err), "trainer loads the saved file (%s)",
             err.msg);
    if (tv2) {
        // tv has taken one more step since the save: compare against a reload of tv's saved
        // state by stepping tv2 once and checking it reproduces tv's second step
        jb_tvq_result_t r2;
        JB_CHECK_OK(jb_train_vqvae_step(tv2, x, &r2, &err), &err, "reloaded step");
        JB_CHECK(fabs(r2.loss - res.loss) <= 1e-6 * fabs(res.loss),
                 "reloaded trainer reproduces the step (%.9g vs %.9g)", r2.loss, res.loss);
        const float *ka, *kb;
        jb_train_vqvae_codebook(tv, 0, &ka, NULL, NULL);
        jb_train_vqvae_codebook(tv2, 0, &kb, NULL, NULL);
        JB_CHECK(!memcmp(ka, kb, sizeof(float) * K * E), "reloaded EMA state gives the same update");
    }
    jb_train_vqvae_destroy(&tv2);
    jb_st_close(&st);
    remove(path);
    free(x);
    free_model(&m);
}


// Tied upsampling (jb_train_vqvae_tie_upsampling): the decoder of a constant code sequence
// gives a constant output away from the ends (no steady line at sr / stride multiples), where
// the untied decoder of the same weights gives a periodic ripple; the tied taps' gradients
// are equal, so an update keeps them tied.
static double const_code_ripple(int tie, int L, int *taps_tied) {
    jb_vqvae_loss_hparams_t lh = base_loss();
    int N = 1;
    int64_t T = 1152;
    model_t m = {0};
    jb_vqvae_hparams_t hp;
    if (!tiny_model(&lh, N, T, &m, &hp)) return -1.0;
    jb_err_t err = {0};
    jb_train_vqvae_t *tv = m.tv;
    jb_train_vqvae_init_random(tv, 42);
    float *x = rand_buf(N * T, 0.5f);
    JB_CHECK_OK(jb_train_vqvae_init_codebooks(tv, x, &err), &err, "init_codebooks");
    if (tie) JB_CHECK(jb_train_vqvae_tie_upsampling(tv) == 3, "three transposed convolutions tied (level 0: 1, level 1: 2)");
    jb_tvq_result_t res;
    JB_CHECK_OK(jb_train_vqvae_step(tv, x, &res, &err), &err, "step");
    *taps_tied = 1;
    int n_convt = 0;
    for (int i = 0; i < jb_train_vqvae_n_params(tv); i++) {   // a plain SGD update
        jb_tvq_param_t p = jb_train_vqvae_param(tv, i);
        for (int64_t j = 0; j < p.n; j++) p.w[j] -= 0.05f * p.g[j];
        // decoder ConvTranspose1d weights: (C, OC, k) with k = 2 * stride (4 and 8 here)
        if (p.ndim == 3 && strstr(p.name, "decoders") && (p.shape[2] == 4 || p.shape[2] == 8) &&
            strstr(p.name, "weight") && !strstr(p.name, "resblocks")) {
            int k = (int)p.shape[2], s = k / 2;
            n_convt++;
            for (int64_t r = 0; r < p.shape[0] * p.shape[1]; r++)
                for (int j = 0; j < k; j++) {
                    *taps_tied &= p.w[r * k + j] == p.w[r * k + j / s * s];
                    *taps_tied &= p.g[r * k + j] == p.g[r * k + j / s * s];
                }
        }
    }
    JB_CHECK(n_convt == 3, "found the 3 transposed convolutions' weights (%d)", n_convt);
    char path[128];
    snprintf(path, sizeof path, "/tmp/test_jb_train_vqvae_tie.%d.safetensors", (int)getpid());
    JB_CHECK_OK(jb_train_vqvae_save(tv, path, NULL, &err), &err, "save");
    jb_st_t *st = jb_st_open(path, &err);
    jb_vqvae_t *vq = st ? jb_vqvae_new(st, 0, &err) : NULL;
    JB_CHECK(vq != NULL, "tied model loads (%s)", err.msg);
    double ripple = -1.0;
    if (vq) {
        int64_t TL = T / hp.hop_lengths[L];
        int32_t *z = malloc(sizeof(int32_t) * TL);
        float *out = malloc(sizeof(float) * T);
        for (int64_t i = 0; i < TL; i++) z[i] = 3;
        JB_CHECK_OK(jb_vqvae_decode(vq, z, 1, TL, L, out, 0, &err), &err, "decode");
        double lo = 1e30, hi = -1e30;
        for (int64_t t = T / 4; t < 3 * T / 4; t++) lo = fmin(lo, out[t]), hi = fmax(hi, out[t]);
        ripple = (hi - lo) / fmax(maxabs(out, T), 1e-30);
        free(z), free(out);
    }
    jb_vqvae_destroy(&vq);
    jb_st_close(&st);
    remove(path);
    free(x);
    free_model(&m);
    return ripple;
}

// Decoder-only training (jb_train_vqvae_freeze_encoders): after steps and plain SGD updates
// the encoders' weights and every codebook (with its EMA state) are unchanged, so are the
// codes of the same input, and the decoders have moved.
static void check_freeze_encoders(void) {
    jb_vqvae_loss_hparams_t lh = base_loss();
    int N = 2;
    int64_t T = 1152;
    model_t m = {0};
    jb_vqvae_hparams_t hp;
    if (!tiny_model(&lh, N, T, &m, &hp)) return;
    jb_err_t err = {0};
    jb_train_vqvae_t *tv = m.tv;
    jb_train_vqvae_init_random(tv, 5);
    float *x = rand_buf(N * T, 0.5f);
    JB_CHECK_OK(jb_train_vqvae_init_codebooks(tv, x, &err), &err, "init_codebooks");
    jb_tvq_result_t res;
    JB_CHECK_OK(jb_train_vqvae_step(tv, x, &res, &err), &err, "unfrozen step");
    int K = hp.l_bins, E = hp.emb_width, np = jb_train_vqvae_n_params(tv);
    size_t nw = 0;
    for (int i = 0; i < np; i++) nw += jb_train_vqvae_param(tv, i).n;
    float *w0 = malloc(sizeof(float) * nw), *k0 = malloc(sizeof(float) * 3 * K * E * 2);
    int32_t *z0 = malloc(sizeof(int32_t) * N * T);
    int64_t T0 = T / hp.hop_lengths[0];
    for (int i = 0, o = 0; i < np; o += (int)jb_train_vqvae_param(tv, i).n, i++)
        memcpy(w0 + o, jb_train_vqvae_param(tv, i).w, sizeof(float) * jb_train_vqvae_param(tv, i).n);
    for (int L = 0; L < 2; L++) {
        const float *k, *ks, *ke;
        jb_train_vqvae_codebook(tv, L, &k, &ks, &ke);
        memcpy(k0 + (size_t)L * 3 * K * E, k, sizeof(float) * K * E);
        memcpy(k0 + (size_t)L * 3 * K * E + K * E, ks, sizeof(float) * K * E);
        memcpy(k0 + (size_t)L * 3 * K * E + 2 * K * E, ke, sizeof(float) * K);
    }
    jb_train_vqvae_freeze_encoders(tv);
    for (int it = 0; it < 3; it++) {
        JB_CHECK_OK(jb_train_vqvae_step(tv, x, &res, &err), &err, "frozen step");
        if (it == 0) memcpy(z0, res.zs[0], sizeof(int32_t) * N * T0);
        for (int i = 0; i < np; i++) {
            jb_tvq_param_t p = jb_train_vqvae_param(tv, i);
            for (int64_t j = 0; j < p.n; j++) p.w[j] -= 0.05f * p.g[j];
        }
    }
    int enc_same = 1, dec_moved = 0, n_enc = 0;
    for (int i = 0, o = 0; i < np; o += (int)jb_train_vqvae_param(tv, i).n, i++) {
        jb_tvq_param_t p = jb_train_vqvae_param(tv, i);
        int same = !memcmp(w0 + o, p.w, sizeof(float) * p.n);
        if (!strncmp(p.name, "encoders.", 9)) enc_same &= same, n_enc++;
        else if (!strncmp(p.name, "decoders.", 9)) dec_moved |= !same;
    }
    JB_CHECK(n_enc > 0 && enc_same, "frozen: the %d encoder tensors are unchanged", n_enc);
    JB_CHECK(dec_moved, "frozen: the decoders moved");
    int books_same = 1;
    for (int L = 0; L < 2; L++) {
        const float *k, *ks, *ke;
        jb_train_vqvae_codebook(tv, L, &k, &ks, &ke);
        books_same &= !memcmp(k0 + (size_t)L * 3 * K * E, k, sizeof(float) * K * E);
        books_same &= !memcmp(k0 + (size_t)L * 3 * K * E + K * E, ks, sizeof(float) * K * E);
        books_same &= !memcmp(k0 + (size_t)L * 3 * K * E + 2 * K * E, ke, sizeof(float) * K);
    }
    JB_CHECK(books_same, "frozen: codebooks and their EMA state unchanged");
    JB_CHECK(!memcmp(z0, res.zs[0], sizeof(int32_t) * N * T0), "frozen: the same codes");
    free(w0), free(k0), free(z0), free(x);
    free_model(&m);
}

static void check_tied_upsampling(void) {
    for (int L = 0; L < 2; L++) {
        int tied_u, tied_t;
        double ru = const_code_ripple(0, L, &tied_u), rt = const_code_ripple(1, L, &tied_t);
        JB_CHECK(ru > 1e-3, "level %d untied: a constant code sequence decodes to a ripple "
                 "(peak-to-peak / peak %.3g)", L, ru);
        JB_CHECK(rt >= 0 && rt < 1e-5, "level %d tied: it decodes to a constant (%.3g)", L, rt);
        JB_CHECK(!tied_u, "level %d untied: the taps differ after a step", L);
        JB_CHECK(tied_t, "level %d tied: weights and gradients stay tied after a step", L);
    }
}

int main(void) {
    const geo_t geos[] = {
        {37, 3, 5, 3, 1, 1, 1, 0},   // kernel 3, padding 1
        {40, 4, 6, 3, 1, 3, 3, 0},   // dilated (resnet conv)
        {40, 4, 6, 3, 1, 9, 9, 0},   // dilation 9
        {32, 2, 5, 4, 2, 1, 1, 0},   // strided encoder conv: kernel 2s, padding s/2
        {36, 3, 4, 6, 3, 1, 1, 0},   // stride 3
        {27, 5, 3, 1, 1, 0, 1, 0},   // 1x1
        {16, 4, 3, 4, 2, 1, 1, 1},   // transposed decoder conv
        {12, 3, 5, 8, 4, 2, 1, 1},   // transposed stride 4
        {11, 2, 3, 3, 2, 0, 1, 1},   // transposed, k < 2s
    };
    for (size_t i = 0; i < sizeof geos / sizeof geos[0]; i++) check_conv(&geos[i]);
    check_res(33, 4, 4, 1);
    check_res(33, 4, 4, 3);
    check_res(33, 3, 5, 1);
    check_res(33, 5, 3, 1);
    check_res(33, 3, 5, 3);
    check_stft(64, 16, 48, 200);
    check_stft(128, 50, 100, 301);
    check_stft(60, 7, 60, 97);   // not a power of two
    jb_vqvae_loss_hparams_t lh = base_loss();
    check_step_fd("lmix + spectral + multispectral", &lh);
    lh = base_loss();
    lh.use_nonrelative_specloss = 0, lh.loss_fn = JB_TVQ_LOSS_L2;
    check_step_fd("l2 + spectral convergence", &lh);
    lh = base_loss();
    lh.loss_fn = JB_TVQ_LOSS_L1, lh.spectral = 0.0, lh.multispectral = 0.0;
    check_step_fd("l1", &lh);
    lh = base_loss();
    lh.loss_fn = JB_TVQ_LOSS_LINF, lh.spectral = 0.0;
    check_step_fd("linf + multispectral", &lh);
    check_revival();
    check_real_shape();
    check_fresh_and_save();
    check_tied_upsampling();
    check_freeze_encoders();
    return jb_test_summary("test_jb_train_vqvae");
}
